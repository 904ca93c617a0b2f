"""Columns a spec names for its reports, checked against its local data at submit time.

``spec.slices``, ``spec.protected`` and ``spec.tags`` (a rule's ``column``, ``tags.column``)
name columns of the data channels; a name that is not there would only show up after
training, as a report that skipped it. :func:`column_problems` reads the header of every
``file://`` channel (a CSV's first line, a Parquet file's schema; the first file of a
folder) and returns one problem per missing name, naming the field, the channel and the
columns it has. Channels of other schemes (``builtin://``, ``s3://``) are not read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """One line per column that ``spec`` names but one of its ``file://`` channels lacks."""
    named = named_columns(spec)
    if not named:
        return []
    from mlrt import plugins
    from mlrt.data import uri_scheme

    problems = []
    for channel, entry in (spec.get("data") or {}).items():
        if uri_scheme(entry["uri"]) != "file":
            continue
        path = plugins.data_schemes()["file"].local_path(entry["uri"], Path())
        try:
            columns = header(path, entry.get("format"))
        except (OSError, ValueError):
            continue  # an unreadable channel is the data check's problem, reported there
        for field, column in named:
            if column not in columns:
                shown = ", ".join(columns[:SHOWN_COLUMNS]) + (", ..." if len(columns) > SHOWN_COLUMNS else "")
                problems.append(
                    f"{field}: no column {column!r} in data channel {channel} ({path} has: {shown or 'no columns'})"
                )
    return problems
