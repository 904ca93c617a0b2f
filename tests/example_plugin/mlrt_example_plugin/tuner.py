"""``example.hillclimb``: a tuner with a setting, ``spec.tuner: {algorithm: example.hillclimb, step: 0.2}``.

The first trial takes the middle of every range (the first of every
categorical parameter's values); each later trial steps at random, by at most
``step`` of each range, away from the best trial so far.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from mlrt.algorithms import Hyperparameter
from mlrt.tuning import Goal, Parameter, TrialResult, Tuner


class HillClimb(Tuner):
    """Greedy random steps from the best trial so far."""

    name: ClassVar[str] = "example.hillclimb"
    description: ClassVar[str] = "The middle of every range first, then random steps from the best trial so far."
    settings = {
        "step": Hyperparameter(float, 0.1, min=0.01, max=1.0, help="Largest step, as a share of each range."),
    }

    def configure(self, settings: dict[str, Any]) -> None:
        self.step = settings["step"]

    def start(self, space: list[Parameter], goal: Goal, seed: int, parallel: int, history: list[TrialResult]) -> None:
        self.space, self.goal, self.random = space, goal, random.Random(seed)
        self.best: TrialResult | None = None
        for result in history:
            self.observe(result)

    def suggest(self, number: int) -> dict[str, Any] | None:
        around = self.best.params if self.best is not None else {}
        return {p.name: self._value(p, around.get(p.name)) for p in self.space}

    def observe(self, result: TrialResult) -> None:
        if result.state != "SUCCEEDED" or result.value is None:
            return
        if self.best is None or (result.value > self.best.value) == (self.goal == "maximize"):
            self.best = result

    def _value(self, p: Parameter, around: Any) -> Any:
        if p.type == "categorical":
            if around is None:
                return p.values[0]
            return around if self.random.random() > self.step else self.random.choice(p.values)
        # An int parameter's bounds are floats too (2.0, 9.0): the value is rounded into them.
        if around is None:
            value = (p.min + p.max) / 2
        else:
            value = around + self.random.uniform(-1, 1) * self.step * (p.max - p.min)
        value = min(p.max, max(p.min, value))
        return min(int(p.max), max(int(p.min), round(value))) if p.type == "int" else value
