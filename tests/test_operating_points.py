"""Choosing a binary classifier's decision threshold (mlrt.thresholds): each rule on a worked example,
minimum cost against brute force, and the thresholded model."""

from __future__ import annotations

import numpy as np
import pytest

from mlrt.thresholds import ThresholdedClassifier, choose, curve

LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
# predicting positive at score >= t:  t:  0.9   0.8   0.7   0.6   0.5   0.4   0.3   0.2
#                              precision: 1     1     .667  .75   .6    .5    .571  .5
#                                 recall: .25   .5    .5    .75   .75   .75   1     1


@pytest.mark.parametrize(
    ("setting", "costs", "threshold", "precision", "recall"),
    [
        ({"optimize": "precision", "target": 0.75}, None, 0.6, 0.75, 0.75),  # highest recall with precision >= .75
        ({"optimize": "precision", "target": 1.0}, None, 0.8, 1.0, 0.5),
        ({"optimize": "recall", "target": 0.9}, None, 0.3, 4 / 7, 1.0),  # highest precision with recall >= .9
        ({"optimize": "f_beta", "beta": 1.0}, None, 0.6, 0.75, 0.75),  # F1 .75 beats .727 at 0.3
        ({"optimize": "f_beta", "beta": 2.0}, None, 0.3, 4 / 7, 1.0),  # recall weighs more
        ({"optimize": "min_cost"}, {"1": {"0": 10.0}, "0": {"1": 1.0}}, 0.3, 4 / 7, 1.0),  # misses are dear
        ({"optimize": "min_cost"}, {"1": {"0": 1.0}, "0": {"1": 10.0}}, 0.8, 1.0, 0.5),  # false alarms are dear
    ],
)
def test_each_rule_picks_the_threshold_worked_out_by_hand(setting, costs, threshold, precision, recall):
    point = choose(LABELS, SCORES, [0, 1], setting, costs)
    assert point.threshold == pytest.approx(threshold)
    assert (point.precision, point.recall) == pytest.approx((precision, recall))
    assert point.note == ""


def test_min_cost_is_the_brute_force_minimum_and_an_unreachable_target_says_so():
    rng = np.random.default_rng(3)
    labels = np.where(rng.random(500) < 0.2, "churn", "stay")
    scores = np.clip(rng.normal(np.where(labels == "churn", 0.6, 0.4), 0.2), 0, 1).round(2)
    costs = {"churn": {"stay": 7.0}, "stay": {"churn": 1.0}}
    point = choose(labels, scores, ["churn", "stay"][::-1], {"optimize": "min_cost"}, costs)  # classes: stay, churn

    def cost(t: float) -> float:
        predicted = np.where(scores >= t, "churn", "stay")
        return sum(costs.get(a, {}).get(p, 0.0) for a, p in zip(labels, predicted, strict=True)) / len(labels)

    best = min(cost(t) for t in [*np.unique(scores), 1.01])
    assert point.value == pytest.approx(best)
    assert cost(point.threshold) == pytest.approx(best)
    assert point.positive == "churn"

    # the two highest scores are negatives: precision never passes 0.5
    hopeless = choose(1 - LABELS, SCORES, [0, 1], {"optimize": "precision", "target": 0.99})
    assert hopeless.note == "no threshold reaches precision 0.99; the closest (0.5) is used"
    assert (hopeless.threshold, hopeless.recall) == (0.4, 0.75)  # predicting nothing is no operating point


def test_the_thresholded_model_predicts_at_its_threshold():
    class Scores:
        classes_ = np.array(["no", "yes"])

        def predict_proba(self, features):
            return np.column_stack([1 - features, features])

    model = ThresholdedClassifier(Scores(), 0.3)
    assert model.predict(np.array([0.1, 0.3, 0.6])).tolist() == ["no", "yes", "yes"]
    assert model.classes_.tolist() == ["no", "yes"]
    points = curve(LABELS == 1, SCORES)
    assert points.thresholds[0] > SCORES.max() and points.precision[0] == 1.0 and points.recall[-1] == 1.0
