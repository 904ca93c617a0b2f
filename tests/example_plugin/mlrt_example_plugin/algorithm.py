"""``example.nearest_centroid``: a nearest-centroid classifier.

Each class is represented by the mean (centroid) of its training rows, and a
row is predicted as the class of the nearest centroid. With
``shrink_threshold`` set, centroids are shrunk towards the overall mean,
which removes features that do not separate the classes ("nearest shrunken
centroid"). Numeric features are standardized first, so every feature counts
equally in the distance.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mlrt.algorithms import Algorithm, Hyperparameter, TrainContext


class NearestCentroid(Algorithm):
    """``sklearn.neighbors.NearestCentroid`` after standardizing the numeric features."""

    name: ClassVar[str] = "example.nearest_centroid"
    task: ClassVar[str] = "classification"
    description: ClassVar[str] = "Predicts the class whose centroid is nearest (optionally shrunken)."
    hyperparameters = {
        "metric": Hyperparameter(
            str, "euclidean", choices=("euclidean", "manhattan"), help="Distance from a row to a centroid."
        ),
        "shrink_threshold": Hyperparameter(
            float,
            None,
            min=0.0,
            nullable=True,
            help="Shrink centroids towards the overall mean by this much; unset does not shrink.",
        ),
        "standardize": Hyperparameter(bool, True, help="Scale numeric features to zero mean and unit variance."),
    }

    def train(self, ctx: TrainContext) -> Any:
        """Fit the scaler and the centroids on the ``train`` channel."""
        from sklearn.neighbors import NearestCentroid as Estimator
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        train = ctx.channels.get("train")
        if train is None or train.labels is None:
            raise ValueError(f"{self.name} needs a labelled 'train' channel")
        params = dict(ctx.hyperparameters)
        steps = [StandardScaler()] if params.pop("standardize", True) else []
        model = make_pipeline(*steps, Estimator(**params))
        return model.fit(train.features, train.labels)
