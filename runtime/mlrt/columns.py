"""The roles of a channel's columns, and the columns a spec names, checked against its local data.

**Roles.** A data channel names its ``label`` and ``id`` columns, and may name
``features`` (the only columns the model sees) or ``exclude`` (columns it does not
see), a ``weight`` column (per-example weights) and ``analysis`` columns (read for
reports only). A channel that names none of the last four takes the ``train``
channel's. :class:`Roles` splits a loaded table: the model's features are every column
(or those in ``features``) but the label, id, weight, ``exclude`` and ``analysis``
columns and the protected attributes (``spec.protected``, unless ``features`` lists
them: a protected attribute enters the model only when asked for by name). The columns
the spec names for its reports (``spec.protected``, ``spec.slices``, ``spec.tags``) and
the ``analysis`` columns that are not features are kept beside them for the reports.

**Checks.** ``spec.slices``, ``spec.protected`` and ``spec.tags`` (a rule's ``column``,
``tags.column``) name columns of the data channels; a name that is not there would only
show up after training, as a report that skipped it; a wrong ``label`` or role column
would fail the worker. :func:`column_problems` reads the header of every ``file://``
channel (a CSV's first line, a Parquet file's schema; the first file of a folder) and
returns one problem per missing name, naming the field, the file and the columns it
has. Channels of other schemes (``builtin://``, ``s3://``) are not read here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ROLE_KEYS = ("features", "exclude", "weight", "analysis")
"""The channel keys that give columns a role; a channel that sets none takes ``train``'s."""

SHOWN_COLUMNS = 12
"""At most this many of a channel's columns are listed in a problem."""


def named_columns(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field path, column)`` for every column ``spec`` (a resolved TrainingJob's ``spec``)
    names for its reports."""
    named = []
    for index, entry in enumerate(spec.get("slices") or []):
        column = entry if isinstance(entry, str) else entry.get("column")
        named.append((f"spec.slices.{index}.column", column))
    for index, column in enumerate(spec.get("protected") or []):
        named.append((f"spec.protected.{index}", column))
    tags = spec.get("tags") or {}
    for name, rule in (tags.get("rules") or {}).items():
        if rule.get("column"):
            named.append((f"spec.tags.rules.{name}.column", rule["column"]))
    if tags.get("column"):
        named.append(("spec.tags.column", tags["column"]))
    return [(field, column) for field, column in named if isinstance(column, str)]


@dataclasses.dataclass(frozen=True)
class Roles:
    """The roles of one channel's columns besides label and id (see the module docstring).

    ``own`` says whether the channel named them itself; columns taken from the ``train``
    channel may be missing from another channel without a complaint."""

    features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    weight: str | None = None
    analysis: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    own: bool = True

    def model_columns(self, columns: list[str]) -> list[str]:
        """Which of ``columns`` (label and id already removed) the model sees, in table order."""
        chosen = set(self.features) if self.features is not None else set(columns) - set(self.exclude)
        hidden = {self.weight, *self.analysis} | (set(self.protected) - set(self.features or ()))
        return [c for c in columns if c in chosen and c not in hidden]

    def split(self, channel: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series | None, pd.DataFrame]:
        """``frame`` (label and id removed) as model features, weights and report-only columns."""
        import numpy as np
        import pandas as pd

        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        if self.own:
            missing = [c for c in (*(self.features or ()), self.weight) if c is not None and c not in columns]
            if missing:
                raise ValueError(f"channel {channel}: no column {missing[0]!r} (columns: {_listed(columns)})")
        weights = None
        if self.weight is not None and self.weight in columns:
            weights = pd.to_numeric(frame[self.weight], errors="coerce")
            bad = ~np.isfinite(weights.to_numpy(dtype=float)) | (weights.to_numpy(dtype=float) < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"channel {channel}: weight column {self.weight!r} must hold numbers >= 0"
                    f" (row {row}: {str(frame[self.weight].iloc[row])!r})"
                )
            if not weights.sum() > 0:
                raise ValueError(f"channel {channel}: weight column {self.weight!r} is 0 on every row")
        model = self.model_columns(columns)
        extra = [*self.analysis, *self.protected, *self.reported]
        report_only = [c for c in dict.fromkeys(extra) if c in columns and c not in model]
        return frame[model], weights, frame[report_only]


def roles(spec: dict[str, Any], channel: str) -> Roles:
    """The column roles of ``spec``'s (a resolved TrainingJob ``spec``) data channel ``channel``."""
    data = spec.get("data") or {}
    entry = data.get(channel) or {}
    own = any(entry.get(key) not in (None, []) for key in ROLE_KEYS)
    source = entry if own or channel == "train" else data.get("train") or {}
    return Roles(
        features=tuple(source["features"]) if source.get("features") is not None else None,
        exclude=tuple(source.get("exclude") or ()),
        weight=source.get("weight"),
        analysis=tuple(source.get("analysis") or ()),
        protected=tuple(spec.get("protected") or ()),
        reported=tuple(column for field, column in named_columns(spec) if not field.startswith("spec.protected")),
        own=own,
    )


def _listed(columns: list[str]) -> str:
    """``a, b, c`` (at most :data:`SHOWN_COLUMNS` of them), or ``no columns``."""
    text = ", ".join(columns[:SHOWN_COLUMNS]) + (", ..." if len(columns) > SHOWN_COLUMNS else "")
    return text or "no columns"


def role_columns(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field under the channel, column)`` for the label and every role column a channel
    entry names itself."""
    named = [(key, entry[key]) for key in ("label", "id", "weight") if isinstance(entry.get(key), str)]
    for key in ("features", "exclude", "analysis"):
        named += [(f"{key}.{i}", c) for i, c in enumerate(entry.get(key) or []) if isinstance(c, str)]
    return named


def header(path: Path, declared_format: str | None) -> list[str]:
    """The column names of a CSV or Parquet file, or of the first such file of a folder."""
    from mlrt.data import infer_format

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".parquet", ".pq"))
        if not files:
            return []
        path = files[0]
    if infer_format(path, declared_format) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def column_problems(spec: dict[str, Any]) -> list[str]:
    """One line per column that ``spec`` names but one of its ``file://`` channels lacks:
    the columns named for reports in every channel, each channel's own ``label``, ``id``
    and role columns in that channel. The default label (``label``) may be missing
    (an unlabelled channel), except from the ``train`` channel of an ``algorithm`` job."""
    from mlrt import plugins
    from mlrt.data import uri_scheme

    named = named_columns(spec)
    problems = []
    for channel, entry in (spec.get("data") or {}).items():
        if uri_scheme(entry["uri"]) != "file":
            continue
        scheme = plugins.data_schemes()["file"]
        path = scheme.local_path(entry["uri"], Path())
        try:
            columns = header(path, entry.get("format"))
        except (OSError, ValueError):
            continue  # an unreadable channel is the data check's problem, reported there
        shown = _listed(columns)
        for field, column in named:
            if column not in columns:
                problems.append(f"{field}: no column {column!r} in data channel {channel} ({path} has: {shown})")
        default_label = scheme.default_label(entry["uri"])
        for key, column in role_columns(entry):
            if column in columns:
                continue
            if key == "label" and column == default_label and not (spec.get("algorithm") and channel == "train"):
                continue  # a channel without labels, e.g. data to predict on
            problems.append(f"spec.data.{channel}.{key}: column {column!r} is not in {path.name} (columns: {shown})")
    return problems
