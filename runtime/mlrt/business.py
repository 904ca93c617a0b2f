"""Business metrics: what the project is judged on, defined in the spec.

``spec.business_metrics`` lists definitions the worker evaluates on every
labelled channel next to the ML metrics, as ``<channel>_<name>``, so a
tuning job can optimize them (``objective: {metric: validation_cost, goal:
minimize}``) and every run records them:

``cost_matrix``
    ``{actual: {predicted: cost}}``: the mean cost per example. Pairs not
    listed cost 0, so list the mistakes: ``{"1": {"0": 50}, "0": {"1": 1}}``
    says a missed positive costs fifty times a false alarm.
``weights``
    ``{metric: weight}``: a weighted sum of the channel's ML metrics
    (``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``, ``rmse`` ...).
"""

from __future__ import annotations

from typing import Any


def evaluate(definitions: list[dict[str, Any]], labels, predictions, metrics: dict[str, float]) -> dict[str, float]:
    """Each definition's value on one channel (``labels`` and ``predictions`` row-aligned)."""
    values: dict[str, float] = {}
    for definition in definitions:
        if definition.get("cost_matrix") is not None:
            costs = definition["cost_matrix"]
            total = sum(
                costs.get(str(actual), {}).get(str(predicted), 0.0)
                for actual, predicted in zip(labels.tolist(), list(predictions), strict=True)
            )
            values[definition["name"]] = total / max(len(labels), 1)
        else:
            missing = sorted(set(definition["weights"]) - set(metrics))
            if missing:
                raise ValueError(
                    f"business metric {definition['name']!r} weights {missing}, which this channel does not have"
                    f" (it has: {', '.join(sorted(metrics))})"
                )
            values[definition["name"]] = sum(w * metrics[k] for k, w in definition["weights"].items())
    return values
