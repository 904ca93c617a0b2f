"""Built-in scikit-learn algorithms.

Each trains a ``Pipeline`` of preprocessing and one estimator (see
:mod:`mlrt_sklearn.base`). Registered through the ``mlrt`` entry-point group
like any third-party plugin.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.algorithms import Algorithm
from mlrt_sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from mlrt_sklearn.linear import LinearRegression, LogisticRegression, Ridge
from mlrt_sklearn.svm import SVM

ALGORITHMS: tuple[type[Algorithm], ...] = (
    LogisticRegression,
    RandomForestClassifier,
    RandomForestRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    SVM,
    Ridge,
    LinearRegression,
)


@hookimpl(trylast=True)
def mlrt_algorithms() -> list[Algorithm]:
    """One instance of each algorithm in ``ALGORITHMS``."""
    return [algorithm() for algorithm in ALGORITHMS]
