"""The ``builtin`` scheme: scikit-learn's bundled datasets with a fixed split.

::

    builtin://sklearn/<name>?split=train|validation|test|all[&seed=N]

``name`` is one of iris, digits, wine, breast_cancer (classification) or
diabetes (regression). Rows are split 60/20/20 into train, validation and
test, stratified by label for classification, with ``random_state=seed``
(default 0); the same URI always yields the same rows, and the three splits
of one seed are disjoint. ``split`` defaults to ``all`` (every row, in the
dataset's own order).

A split is written once as CSV under
``<cache_dir>/builtin/sklearn/<name>/<seed>/<split>.csv``: one column per
feature, named after scikit-learn's feature names made into identifiers
(``sepal length (cm)`` becomes ``sepal_length_cm``), and the target in a
column named ``label``. Nothing is downloaded: the data ships with
scikit-learn.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from mlrt.algorithms import Hyperparameter
from mlrt.data import DataScheme

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SOURCE = "sklearn"
DATASETS = {
    "breast_cancer": "classification",
    "diabetes": "regression",
    "digits": "classification",
    "iris": "classification",
    "wine": "classification",
}
SPLITS = ("train", "validation", "test", "all")
SETTINGS = {
    "split": Hyperparameter(str, "all", choices=SPLITS, help="which rows: a 60/20/20 split, or all of them"),
    "seed": Hyperparameter(int, 0, min=0, help="random_state of the split"),
}
"""The query parameters of a ``builtin://`` URI (the scheme's settings)."""
LABEL = "label"
# Fractions of all rows; train gets the rest (0.6).
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class BuiltinRef:
    """A parsed ``builtin://`` URI."""

    name: str
    split: str = "all"
    seed: int = 0

    @property
    def task(self) -> str:
        """``classification`` or ``regression``."""
        return DATASETS[self.name]


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(values)


def parse(uri: str) -> tuple[BuiltinRef | None, str | None]:
    """Return ``(ref, None)`` for a valid ``builtin://`` URI, else ``(None, problem)``.

    ``problem`` is one line naming what is wrong and what is allowed.
    """
    parts = urlsplit(uri)
    if parts.scheme != "builtin":
        return None, f"not a builtin:// URI: {uri!r}"
    if parts.netloc != SOURCE:
        return None, f"unknown builtin source {parts.netloc!r} (allowed: {SOURCE})"
    name = parts.path.strip("/")
    if name not in DATASETS:
        return None, f"unknown builtin dataset {name!r} (allowed: {_allowed(DATASETS)})"
    settings, problems = BuiltinScheme().settings_of(uri)
    if problems:
        return None, problems[0]
    return BuiltinRef(name, settings["split"], settings["seed"]), None


def column_name(feature: str) -> str:
    """``feature`` as a lowercase identifier: ``mean radius`` -> ``mean_radius``."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", feature).strip("_").lower()
    return name if name and not name[0].isdigit() else f"f_{name}"


def load_frame(name: str) -> pd.DataFrame:
    """Every row of dataset ``name``: sanitized feature columns plus ``label``."""
    import pandas as pd
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    frame = pd.DataFrame(bunch.data, columns=[column_name(f) for f in bunch.feature_names])
    frame[LABEL] = bunch.target
    return frame


def split_frame(frame: pd.DataFrame, ref: BuiltinRef) -> pd.DataFrame:
    """The rows of ``frame`` that belong to ``ref.split``."""
    from sklearn.model_selection import train_test_split

    if ref.split == "all":
        return frame
    stratify = ref.task == "classification"
    rest, test = train_test_split(
        frame, test_size=TEST_FRACTION, random_state=ref.seed, stratify=frame[LABEL] if stratify else None
    )
    if ref.split == "test":
        return test
    train, validation = train_test_split(
        rest,
        test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION),
        random_state=ref.seed,
        stratify=rest[LABEL] if stratify else None,
    )
    return train if ref.split == "train" else validation


def _write_csv_atomically(frame: pd.DataFrame, target: Path) -> None:
    # Write beside the target and rename, so a concurrent reader or writer
    # never sees a partial file; the last rename wins with identical content.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, index=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; workers may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BuiltinScheme(DataScheme):
    """scikit-learn's bundled datasets, split 60/20/20 into train, validation and test."""

    scheme: ClassVar[str] = "builtin"
    settings = SETTINGS
    description: ClassVar[str] = (
        f"scikit-learn's bundled datasets: builtin://sklearn/<{'|'.join(DATASETS)}>?split=<{'|'.join(SPLITS)}>[&seed=N]"
    )

    def check(self, uri: str) -> str | None:
        """One line naming the unknown dataset, split or query parameter, else None."""
        return parse(uri)[1]

    def local_path(self, uri: str, cache_dir: Path) -> Path | None:
        """The CSV path ``materialize`` writes, computed without writing it."""
        ref, _ = parse(uri)
        if ref is None:
            return None
        return cache_dir / "builtin" / SOURCE / ref.name / str(ref.seed) / f"{ref.split}.csv"

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        """Write the split's CSV under ``cache_dir`` unless it is there already; return its path."""
        ref, problem = parse(uri)
        if ref is None:
            raise ValueError(problem)
        target = self.local_path(uri, cache_dir)
        if not target.exists():
            _write_csv_atomically(split_frame(load_frame(ref.name), ref), target)
        return target

    def default_label(self, uri: str) -> str:
        """``label``: the column the target is written to."""
        return LABEL
