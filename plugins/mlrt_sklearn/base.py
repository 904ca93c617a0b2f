"""What every scikit-learn algorithm shares: preprocessing and the fitted Pipeline.

A trained model is a ``sklearn.pipeline.Pipeline`` of two steps:

``preprocess``
    A ``ColumnTransformer``. Numeric columns are median-imputed and
    standardized for scale-sensitive models, and passed through as they are
    for trees (which handle missing values themselves). Every other column
    (text, categories, booleans) is one-hot encoded; categories unseen in
    training encode as all zeros.
``model``
    The estimator, built from the job's hyperparameters. Hyperparameter
    names are scikit-learn's parameter names wherever the meaning is the
    same, so scikit-learn's documentation applies to them.

The Pipeline offers ``predict``, and for classifiers ``predict_proba`` and
``classes_``, as mlrt's evaluation expects. A training channel's ``weight``
column reaches the estimator's ``fit`` as ``sample_weight``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from mlrt.algorithms import Algorithm, Dataset, Hyperparameter, TrainContext

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

CLASS_WEIGHT = Hyperparameter(
    str,
    None,
    choices=("balanced",),
    nullable=True,
    help="'balanced' weighs each class inversely to its frequency; unset weighs every row equally.",
)


def preprocessor(scale: bool, dense: bool) -> ColumnTransformer:
    """The ``preprocess`` step: see the module docstring.

    ``scale`` imputes and standardizes numeric columns; ``dense`` forces a
    dense output for estimators that reject sparse input.
    """
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()) if scale else "passthrough"
    return ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_exclude="number")),
        ],
        sparse_threshold=0.0 if dense else 0.3,
    )


def train_channel(ctx: TrainContext, algorithm: str) -> Dataset:
    """``ctx.channels["train"]``, which must have labels."""
    train = ctx.channels.get("train")
    if train is None:
        raise ValueError(f"{algorithm} needs a 'train' channel (got: {', '.join(ctx.channels) or 'none'})")
    if train.labels is None:
        raise ValueError(f"{algorithm} needs labels: the 'train' channel has no label column")
    return train


class SklearnAlgorithm(Algorithm):
    """An algorithm whose model is a preprocessing + estimator ``Pipeline``.

    Subclasses declare ``name``, ``task``, ``description`` and
    ``hyperparameters`` and implement :meth:`build_estimator`. ``scale`` says
    whether the estimator needs standardized numeric features; ``dense``
    whether it rejects sparse input.
    """

    scale: ClassVar[bool] = True
    dense: ClassVar[bool] = False
    takes_weights = True

    @abc.abstractmethod
    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """The unfitted estimator for resolved ``hyperparameters`` and random ``seed``."""

    def train(self, ctx: TrainContext) -> Pipeline:
        """Fit preprocessing and estimator on the ``train`` channel; its weights, when it has
        a ``weight`` column, are the estimator's ``sample_weight``."""
        from sklearn.pipeline import Pipeline

        train = train_channel(ctx, self.name)
        pipeline = Pipeline(
            [
                ("preprocess", preprocessor(scale=self.scale, dense=self.dense)),
                ("model", self.build_estimator(ctx.hyperparameters, ctx.seed)),
            ]
        )
        weights = {} if train.weights is None else {"model__sample_weight": train.weights.to_numpy(dtype=float)}
        return pipeline.fit(train.features, train.labels, **weights)
