"""Tree ensembles: random forests and histogram gradient boosting.

Trees need no feature scaling and handle missing numeric values themselves,
so numeric columns reach them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mlrt.algorithms import Hyperparameter, TrainContext
from mlrt_sklearn.base import CLASS_WEIGHT, SklearnAlgorithm

# max_features choice -> scikit-learn's value ("all" is its None).
_MAX_FEATURES = {"sqrt": "sqrt", "log2": "log2", "all": None}


def _forest_hyperparameters(criteria: tuple[str, ...], max_features: str) -> dict[str, Hyperparameter]:
    return {
        "n_estimators": Hyperparameter(int, 100, min=1, max=5000, help="Number of trees."),
        "criterion": Hyperparameter(str, criteria[0], choices=criteria, help="Split quality measure."),
        "max_depth": Hyperparameter(
            int,
            None,
            min=1,
            max=1000,
            nullable=True,
            help="Deepest a tree may grow; unset grows until leaves are pure.",
        ),
        "min_samples_split": Hyperparameter(int, 2, min=2, max=100_000, help="Fewest rows a node needs to split."),
        "min_samples_leaf": Hyperparameter(int, 1, min=1, max=100_000, help="Fewest rows in a leaf."),
        "max_features": Hyperparameter(
            str,
            max_features,
            choices=tuple(_MAX_FEATURES),
            help="Features considered per split: sqrt or log2 of their number, or all.",
        ),
        "bootstrap": Hyperparameter(bool, True, help="Fit each tree on a bootstrap sample of the rows."),
    }


class _Ensemble(SklearnAlgorithm):
    """An estimator from ``sklearn.ensemble`` named by ``estimator``; trees need no scaling."""

    estimator: ClassVar[str]
    scale = False

    def parameters(self, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """The estimator's keyword arguments for resolved ``hyperparameters``."""
        return dict(hyperparameters)

    def build_estimator(self, hyperparameters: Mapping[str, Any], seed: int) -> Any:
        """``sklearn.ensemble.<estimator>`` built from :meth:`parameters`."""
        from sklearn import ensemble

        return getattr(ensemble, self.estimator)(**self.parameters(hyperparameters), random_state=seed)


class _Forest(_Ensemble):
    """A random forest; its ``max_features`` choice names scikit-learn's value."""

    def parameters(self, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """``max_features`` mapped to scikit-learn's value."""
        return {**hyperparameters, "max_features": _MAX_FEATURES[hyperparameters["max_features"]]}


class RandomForestClassifier(_Forest):
    """``sklearn.ensemble.RandomForestClassifier``."""

    name = "sklearn.random_forest"
    task = "classification"
    description = "A random forest of decision trees, averaging their class probabilities."
    estimator = "RandomForestClassifier"
    hyperparameters = {
        **_forest_hyperparameters(("gini", "entropy", "log_loss"), "sqrt"),
        "class_weight": Hyperparameter(
            str,
            None,
            choices=("balanced", "balanced_subsample"),
            nullable=True,
            help=CLASS_WEIGHT.help + " balanced_subsample reweighs per bootstrap sample.",
        ),
    }


class RandomForestRegressor(_Forest):
    """``sklearn.ensemble.RandomForestRegressor``."""

    name = "sklearn.random_forest_regressor"
    task = "regression"
    description = "A random forest of regression trees, averaging their predictions."
    estimator = "RandomForestRegressor"
    hyperparameters = _forest_hyperparameters(("squared_error", "absolute_error", "poisson"), "all")


_BOOSTING_HYPERPARAMETERS = {
    "learning_rate": Hyperparameter(
        float, 0.1, min=1e-4, max=1.0, log=True, help="Shrinkage applied to each tree's contribution."
    ),
    "max_iter": Hyperparameter(int, 100, min=1, max=10_000, help="Most boosting iterations (trees per class)."),
    "max_leaf_nodes": Hyperparameter(int, 31, min=2, max=4096, help="Most leaves per tree."),
    "max_depth": Hyperparameter(
        int, None, min=1, max=1000, nullable=True, help="Deepest a tree may grow; unset limits only the leaves."
    ),
    "min_samples_leaf": Hyperparameter(int, 20, min=1, max=100_000, help="Fewest rows in a leaf."),
    "l2_regularization": Hyperparameter(float, 0.0, min=0.0, max=1000.0, help="L2 penalty on leaf values."),
    "max_bins": Hyperparameter(int, 255, min=2, max=255, help="Bins per numeric feature."),
    "early_stopping": Hyperparameter(
        bool,
        None,
        nullable=True,
        help="Stop when the holdout loss stops improving; unset stops early only above 10,000 training rows.",
    ),
    "validation_fraction": Hyperparameter(
        float, 0.1, min=0.01, max=0.5, help="Share of training rows held out for early stopping."
    ),
    "n_iter_no_change": Hyperparameter(
        int, 10, min=1, max=1000, help="Iterations without improvement before early stopping."
    ),
}


class _Boosting(_Ensemble):
    """Histogram gradient boosting; logs its loss curves when it stops early.

    With early stopping on, each iteration's loss is logged as ``train_loss``
    (on a sample of the training rows) and ``holdout_loss`` (on the
    ``validation_fraction`` held out of the train channel, not the
    ``validation`` channel), with ``step`` = number of iterations so far (0 is
    the constant baseline). The loss is the estimator's own: log loss for
    classifiers, half the mean squared error for ``squared_error``.
    """

    dense = True  # histogram boosting rejects sparse input

    def parameters(self, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Unset ``early_stopping`` means ``"auto"``; scores are always the loss."""
        early_stopping = hyperparameters.get("early_stopping")
        return {
            **hyperparameters,
            "early_stopping": "auto" if early_stopping is None else early_stopping,
            "scoring": "loss",
        }

    def train(self, ctx: TrainContext) -> Any:
        """Fit, then log the per-iteration loss curves recorded for early stopping."""
        pipeline = super().train(ctx)
        model = pipeline.named_steps["model"]
        # The score arrays hold negative losses and are empty without early stopping.
        for key, scores in (("train_loss", model.train_score_), ("holdout_loss", model.validation_score_)):
            for step, score in enumerate(scores):
                ctx.log_metric(key, float(-score), step)
        return pipeline


class HistGradientBoostingClassifier(_Boosting):
    """``sklearn.ensemble.HistGradientBoostingClassifier``."""

    name = "sklearn.hist_gradient_boosting"
    task = "classification"
    description = "Gradient-boosted trees on binned features (LightGBM-style), for classes."
    estimator = "HistGradientBoostingClassifier"
    hyperparameters = {**_BOOSTING_HYPERPARAMETERS, "class_weight": CLASS_WEIGHT}


class HistGradientBoostingRegressor(_Boosting):
    """``sklearn.ensemble.HistGradientBoostingRegressor``."""

    name = "sklearn.hist_gradient_boosting_regressor"
    task = "regression"
    description = "Gradient-boosted trees on binned features (LightGBM-style), for numbers."
    estimator = "HistGradientBoostingRegressor"
    hyperparameters = {
        "loss": Hyperparameter(
            str,
            "squared_error",
            choices=("squared_error", "absolute_error", "poisson", "gamma"),
            help="Loss to minimize; poisson needs labels >= 0 and gamma labels > 0.",
        ),
        **_BOOSTING_HYPERPARAMETERS,
    }
