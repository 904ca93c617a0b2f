"""Support vector machines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlrt.algorithms import Hyperparameter
from mlrt_sklearn.base import CLASS_WEIGHT, SklearnAlgorithm


class SVM(SklearnAlgorithm):
    """``sklearn.svm.SVC`` on standardized features, with Platt-scaled probabilities.

    The model is ``CalibratedClassifierCV(SVC(...), ensemble=False)``:
    scikit-learn's replacement for the deprecated ``SVC(probability=True)``,
    computing the same sigmoid calibration from 5-fold cross-validation. Its
    ``predict`` is the most probable class, so predictions and scores agree.
    """

    name = "sklearn.svm"
    task = "classification"
    description = "A kernel support vector classifier with calibrated class probabilities."
    hyperparameters = {
        "C": Hyperparameter(
            float, 1.0, min=1e-6, max=1e6, log=True, help="Inverse regularization strength; smaller is stronger."
        ),
        "kernel": Hyperparameter(str, "rbf", choices=("rbf", "linear", "poly", "sigmoid"), help="Kernel function."),
        "gamma": Hyperparameter(
            float,
            None,
            min=1e-6,
            max=1e3,
            log=True,
            nullable=True,
            help="Kernel coefficient for rbf, poly and sigmoid; unset uses 1 / (n_features * feature variance).",
        ),
        "degree": Hyperparameter(int, 3, min=1, max=10, help="Degree of the poly kernel."),
        "class_weight": CLASS_WEIGHT,
    }

    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """A calibrated ``SVC``; unset ``gamma`` means ``"scale"``."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        gamma = hyperparameters.get("gamma")
        svc = SVC(**{**hyperparameters, "gamma": "scale" if gamma is None else gamma}, random_state=seed)
        return CalibratedClassifierCV(svc, ensemble=False)
