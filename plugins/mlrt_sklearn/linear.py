"""Linear models: logistic regression, ridge and ordinary least squares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlrt.algorithms import Hyperparameter
from mlrt_sklearn.base import CLASS_WEIGHT, SklearnAlgorithm

FIT_INTERCEPT = Hyperparameter(bool, True, help="Fit an intercept (bias) term.")
# penalty -> l1_ratio; elasticnet takes the l1_ratio hyperparameter.
_L1_RATIO = {"l2": 0.0, "l1": 1.0, "none": 0.0}


class LogisticRegression(SklearnAlgorithm):
    """``sklearn.linear_model.LogisticRegression`` on standardized features.

    ``penalty`` picks the solver: lbfgs for l2 and none, saga for l1 and
    elasticnet.
    """

    name = "sklearn.logistic_regression"
    task = "classification"
    description = "Regularized logistic regression (multinomial for more than two classes)."
    hyperparameters = {
        "C": Hyperparameter(
            float, 1.0, min=1e-6, max=1e6, log=True, help="Inverse regularization strength; smaller is stronger."
        ),
        "penalty": Hyperparameter(
            str, "l2", choices=("l2", "l1", "elasticnet", "none"), help="Regularization penalty; none ignores C."
        ),
        "l1_ratio": Hyperparameter(
            float, 0.5, min=0.0, max=1.0, help="Share of L1 in the elasticnet penalty; used only with elasticnet."
        ),
        "max_iter": Hyperparameter(int, 1000, min=1, max=100_000, help="Most solver iterations."),
        "tol": Hyperparameter(float, 1e-4, min=1e-10, max=1.0, log=True, help="Solver stopping tolerance."),
        "fit_intercept": FIT_INTERCEPT,
        "class_weight": CLASS_WEIGHT,
    }

    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """A ``LogisticRegression`` with the penalty mapped to ``C``, ``l1_ratio`` and a solver."""
        from sklearn.linear_model import LogisticRegression as Estimator

        penalty = hyperparameters["penalty"]
        return Estimator(
            C=math.inf if penalty == "none" else hyperparameters["C"],
            l1_ratio=_L1_RATIO.get(penalty, hyperparameters["l1_ratio"]),
            solver="lbfgs" if penalty in ("l2", "none") else "saga",
            max_iter=hyperparameters["max_iter"],
            tol=hyperparameters["tol"],
            fit_intercept=hyperparameters["fit_intercept"],
            class_weight=hyperparameters.get("class_weight"),
            random_state=seed,
        )


class Ridge(SklearnAlgorithm):
    """``sklearn.linear_model.Ridge`` on standardized features."""

    name = "sklearn.ridge"
    task = "regression"
    description = "Least squares with an L2 penalty."
    hyperparameters = {
        "alpha": Hyperparameter(
            float, 1.0, min=1e-6, max=1e6, log=True, help="Regularization strength; larger is stronger."
        ),
        "fit_intercept": FIT_INTERCEPT,
    }

    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """A ``Ridge`` regressor."""
        from sklearn.linear_model import Ridge as Estimator

        return Estimator(**hyperparameters, random_state=seed)


class LinearRegression(SklearnAlgorithm):
    """``sklearn.linear_model.LinearRegression`` (ordinary least squares) on standardized features."""

    name = "sklearn.linear_regression"
    task = "regression"
    description = "Ordinary least squares, optionally with non-negative coefficients."
    hyperparameters = {
        "fit_intercept": FIT_INTERCEPT,
        "positive": Hyperparameter(bool, False, help="Force every coefficient to be non-negative."),
    }

    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """A ``LinearRegression``; it has no randomness, so ``seed`` is unused."""
        from sklearn.linear_model import LinearRegression as Estimator

        return Estimator(**hyperparameters)
