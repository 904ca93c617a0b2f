"""A trained network packaged like a scikit-learn estimator, and its file format.

:class:`TorchModel` holds the network, the fitted feature preprocessing and
the class labels, and offers ``predict``, ``predict_proba`` and ``classes_``
so mlrt evaluates and predicts with it like any other model. ``model.pt``
holds all of it (``torch.save`` of plain data: weights, network config,
preprocessing statistics, classes), so another run can start from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlrt_torch.networks import build

MODEL_FILE = "model.pt"


class Preprocessor:
    """Numeric columns standardized (NaN -> train mean), other columns one-hot encoded."""

    def __init__(self, state: dict[str, Any]):
        self.state = state

    @classmethod
    def fit(cls, frame) -> Preprocessor:
        numeric = [c for c in frame.columns if np.issubdtype(frame[c].dtype, np.number)]
        categorical = [c for c in frame.columns if c not in numeric]
        values = frame[numeric].to_numpy(dtype=np.float64)
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(len(numeric))
        std = np.nan_to_num(np.nanstd(values, axis=0)) if len(values) else np.ones(len(numeric))
        std[std == 0] = 1.0
        categories = {c: sorted(map(str, frame[c].dropna().unique())) for c in categorical}
        return cls({"numeric": numeric, "mean": mean.tolist(), "std": std.tolist(), "categories": categories})

    @property
    def width(self) -> int:
        return len(self.state["numeric"]) + sum(len(v) for v in self.state["categories"].values())

    def transform(self, frame) -> np.ndarray:
        numeric = frame[self.state["numeric"]].to_numpy(dtype=np.float64)
        mean = np.asarray(self.state["mean"])
        numeric = (np.where(np.isnan(numeric), mean, numeric) - mean) / np.asarray(self.state["std"])
        parts = [numeric]
        for column, categories in self.state["categories"].items():
            values = frame[column].astype(str).to_numpy()
            parts.append((values[:, None] == np.asarray(categories)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1).astype(np.float32)


class TorchModel:
    """A network with its preprocessing and label encoding; sklearn-style predict API."""

    def __init__(self, kind: str, config: dict[str, Any], network, preprocessor: Preprocessor, classes: list | None):
        self.kind = kind
        self.config = config
        self.network = network
        self.preprocessor = preprocessor
        self.classes_ = None if classes is None else np.asarray(classes)

    def _outputs(self, frame) -> torch.Tensor:
        self.network.eval()
        device = next(self.network.parameters()).device
        with torch.no_grad():
            x = torch.from_numpy(self.preprocessor.transform(frame)).to(device)
            return torch.cat([self.network(chunk) for chunk in torch.split(x, 4096)]).cpu()

    def predict(self, frame) -> np.ndarray:
        outputs = self._outputs(frame)
        if self.classes_ is None:
            return outputs.squeeze(1).numpy()
        return self.classes_[outputs.argmax(1).numpy()]

    def predict_proba(self, frame) -> np.ndarray:
        return torch.softmax(self._outputs(frame), dim=1).numpy()

    def save(self, directory: Path) -> Path:
        path = directory / MODEL_FILE
        torch.save(
            {
                "kind": self.kind,
                "config": self.config,
                "state_dict": {k: v.cpu() for k, v in self.network.state_dict().items()},
                "preprocessor": self.preprocessor.state,
                "classes": None if self.classes_ is None else self.classes_.tolist(),
            },
            path,
        )
        return path


def load_saved(path: Path) -> dict[str, Any]:
    """The saved model dict from ``model.pt`` (or from a folder holding it)."""
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} at {path}")
    return torch.load(file, map_location="cpu", weights_only=True)


def load_model(path: Path) -> TorchModel:
    """A :class:`TorchModel` from a ``model.pt`` written by :meth:`TorchModel.save`."""
    saved = load_saved(path)
    network = build(saved["kind"], saved["config"])
    network.load_state_dict(saved["state_dict"])
    return TorchModel(saved["kind"], saved["config"], network, Preprocessor(saved["preprocessor"]), saved["classes"])
