"""``example://``: generated two-moons data, with its settings in the URI's query.

``example://moons?rows=300&noise=0.25&seed=0&split=train`` is a CSV of two
interleaving half circles (``x0``, ``x1``, ``label``); every fifth row is in
the ``validation`` split, the others in ``train``. The settings are checked by
mlrt before :meth:`MoonsScheme.check` runs and reach the scheme typed, with
defaults filled in (:meth:`mlrt.data.DataScheme.settings_of`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from mlrt.algorithms import Hyperparameter
from mlrt.data import DataScheme


class MoonsScheme(DataScheme):
    """Two moons from ``sklearn.datasets.make_moons``, generated in the controller's cache."""

    scheme: ClassVar[str] = "example"
    description: ClassVar[str] = "generated two-moons data: example://moons?rows=N&noise=F&seed=N&split=train"
    settings = {
        "rows": Hyperparameter(int, 300, min=20, max=1_000_000, help="Rows before the split."),
        "noise": Hyperparameter(float, 0.25, min=0.0, max=2.0, help="Standard deviation of the noise."),
        "seed": Hyperparameter(int, 0, min=0, help="Random seed of the generator."),
        "split": Hyperparameter(str, "train", choices=("train", "validation"), help="Which part of the rows."),
    }

    def check(self, uri: str) -> str | None:
        dataset = urlsplit(uri).netloc
        return None if dataset == "moons" else f"example:// has one dataset, moons, not {dataset!r}"

    def local_path(self, uri: str, cache_dir: Path) -> Path:
        settings, _ = self.settings_of(uri)
        name = "moons-{rows}-{noise}-{seed}-{split}.csv".format(**settings)
        return cache_dir / "example" / name

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        import pandas as pd
        from sklearn.datasets import make_moons

        path = self.local_path(uri, cache_dir)
        if path.exists():
            return path
        settings, _ = self.settings_of(uri)
        features, labels = make_moons(settings["rows"], noise=settings["noise"], random_state=settings["seed"])
        frame = pd.DataFrame(features, columns=["x0", "x1"]).assign(label=labels)
        validation = frame.index % 5 == 0
        frame = frame[validation if settings["split"] == "validation" else ~validation]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        frame.to_csv(partial, index=False)
        partial.replace(path)  # never a half-written channel for another job reading the cache
        return path
