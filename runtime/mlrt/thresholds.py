"""Operating points: a binary classifier's decision threshold, chosen on a data channel.

A classifier's ``predict`` says "positive" when the positive class's score is the
larger one, a threshold of 0.5 that suits neither a cost matrix nor a target
precision. With ``spec.evaluation.threshold`` the worker scores the channel it names
(default ``validation``) with the trained model's ``predict_proba``, picks a
threshold, and wraps the model in :class:`ThresholdedClassifier`, which predicts the
positive class (``classes_[1]``, the larger label) when its score is at least the
threshold. The wrapper is what the worker evaluates, so every channel's metrics,
business metrics, predictions and reports are at the chosen threshold; it is the
saved model (``model.joblib``) for algorithms that keep the default
:meth:`~mlrt.algorithms.Algorithm.save`, and :data:`THRESHOLD_FILE` beside the model
holds the choice for every algorithm. The run records ``decision_threshold`` as a
param and a metric.

Rules (``optimize``), over every distinct score of the channel as a candidate
(and one above the highest: nothing positive):

``min_cost``
    the lowest mean cost of the cost matrix ``{actual: {predicted: cost}}``;
``f_beta``
    the highest F-beta (``beta`` > 1 weighs recall higher);
``precision``
    the highest recall among thresholds whose precision is at least ``target``;
``recall``
    the highest precision among thresholds whose recall is at least ``target``.

When no threshold reaches the target, the one closest to it is used and
:attr:`OperatingPoint.note` says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

THRESHOLD_FILE = "threshold.json"
"""The chosen operating point, saved beside the model."""


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """A chosen threshold and what it achieves on the channel it was chosen on."""

    threshold: float
    optimize: str
    channel: str
    precision: float
    recall: float
    value: float
    """The optimized quantity at the threshold: mean cost, F-beta, recall or precision."""
    positive: Any
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Curve:
    """Precision and recall at every candidate threshold, highest threshold first."""

    thresholds: Any
    precision: Any
    recall: Any
    tp: Any
    fp: Any
    positives: float
    negatives: float


def curve(is_positive: Any, scores: Any) -> Curve:
    """The precision-recall curve of ``scores`` (the positive class's) against ``is_positive``
    (booleans): one point per distinct score, predicting positive at ``score >= threshold``,
    plus a first point above the highest score (nothing positive, precision 1)."""
    import numpy as np

    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(is_positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1] if len(ranked) else np.zeros(0, dtype=int)
    tp = np.r_[0.0, np.cumsum(hits)[last]]
    fp = np.r_[0.0, np.cumsum(~hits)[last]]
    top = np.nextafter(ranked[0], np.inf) if len(ranked) else 1.0
    thresholds = np.r_[top, ranked[last]]
    positives, negatives = float(positive.sum()), float((~positive).sum())
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    recall = tp / positives if positives else np.zeros_like(tp)
    return Curve(thresholds, precision, recall, tp, fp, positives, negatives)


def choose(
    labels: Any,
    scores: Any,
    classes: list[Any],
    setting: dict[str, Any],
    cost_matrix: dict[str, dict[str, float]] | None = None,
) -> OperatingPoint:
    """The operating point ``setting`` (``spec.evaluation.threshold``) asks for, from the
    channel's ``labels`` and positive-class ``scores``; ``classes`` is the model's
    ``[negative, positive]``; ``cost_matrix`` is needed for ``min_cost``."""
    import numpy as np

    negative, positive = classes
    points = curve(np.asarray(labels) == positive, scores)
    optimize, note = setting["optimize"], ""
    if optimize == "min_cost":
        costs = cost_matrix or {}

        def cost(actual: Any, predicted: Any) -> float:
            return float(costs.get(str(actual), {}).get(str(predicted), 0.0))

        fn, tn = points.positives - points.tp, points.negatives - points.fp
        total = (
            points.tp * cost(positive, positive)
            + fn * cost(positive, negative)
            + points.fp * cost(negative, positive)
            + tn * cost(negative, negative)
        )
        values = total / max(points.positives + points.negatives, 1.0)
        best = int(np.argmin(values))
    elif optimize == "f_beta":
        b2 = float(setting.get("beta", 1.0)) ** 2
        p, r = points.precision, points.recall
        denominator = b2 * p + r
        values = np.divide((1 + b2) * p * r, denominator, out=np.zeros_like(p), where=denominator > 0)
        best = int(np.argmax(values))
    else:
        target = float(setting["target"])
        met, wanted = (
            (points.precision, points.recall) if optimize == "precision" else (points.recall, points.precision)
        )
        values = wanted
        # predicting nothing has precision 1 by convention, but it is no operating point
        usable = points.tp + points.fp > 0
        reached = (met >= target - 1e-12) & usable
        if reached.any():
            best = int(np.flatnonzero(reached)[np.argmax(wanted[reached])])
        else:
            best = int(np.flatnonzero(usable)[np.argmax(met[usable])])
            note = f"no threshold reaches {optimize} {target:g}; the closest ({met[best]:.4g}) is used"
    return OperatingPoint(
        threshold=float(points.thresholds[best]),
        optimize=optimize,
        channel=str(setting.get("channel", "validation")),
        precision=float(points.precision[best]),
        recall=float(points.recall[best]),
        value=float(values[best]),
        positive=_plain(positive),
        note=note,
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class ThresholdedClassifier:
    """A binary classifier whose ``predict`` applies a chosen threshold to the positive
    class's score; ``predict_proba`` and ``classes_`` are the wrapped model's."""

    def __init__(self, model: Any, threshold: float) -> None:
        self.model = model
        self.threshold = float(threshold)
        self.classes_ = model.classes_

    def predict_proba(self, features: Any) -> Any:
        """The wrapped model's class scores."""
        return self.model.predict_proba(features)

    def predict(self, features: Any) -> Any:
        """``classes_[1]`` where its score is at least :attr:`threshold`, else ``classes_[0]``."""
        import numpy as np

        scores = self.predict_proba(features)[:, 1]
        return np.where(scores >= self.threshold, self.classes_[1], self.classes_[0])
