"""Helpers shared by the rules: comparing values under a goal, formatting them."""

from __future__ import annotations

import math

from mlrt.tuning import Goal


def loss(value: float, goal: Goal) -> float:
    """``value`` turned into "lower is better", for ranking; NaN (a diverged trial) is the worst of all."""
    if math.isnan(value):
        return math.inf
    return value if goal == "minimize" else -value


def unloss(value: float, goal: Goal) -> float:
    """Undo :func:`loss` to show a value as the trial logged it."""
    return value if goal == "minimize" else -value


def best_up_to(values: dict[int, float], step: int, goal: Goal) -> float | None:
    """The best of ``values`` at steps <= ``step`` (as logged), or None when there are none."""
    candidates = [value for at, value in values.items() if at <= step]
    return min(candidates, key=lambda value: loss(value, goal)) if candidates else None


def show(value: float) -> str:
    """A short rendering for reasons: ``0.5213``, ``1.2e-05``, ``nan``."""
    return f"{value:.4g}"
