"""Asynchronous successive halving (ASHA)."""

from __future__ import annotations

from typing import Any

from mlrt.algorithms import Hyperparameter
from mlrt.tuning import EarlyStopper, Goal, TrialProgress
from mlrt_early_stopping._values import loss, show


class Asha(EarlyStopper):
    """Asynchronous successive halving: at each rung, only the top 1/``reduction_factor`` go on.

    After Li et al., "A System for Massively Parallel Hyperparameter Tuning"
    (MLSys 2020, arXiv 2018). Rungs are the steps ``min_resource *
    reduction_factor**k`` for ``k = 0, 1, ...`` that are below
    ``max_resource`` (all of them when it is unset); messages number them
    from 1, so with the defaults rung 1 is step 1, rung 2 step 3, rung 3 step 9.

    A trial *reaches* a rung at its first logged step at or after the rung's
    step (steps may be sparse), and its *value at the rung* is the value it
    logged at that step: the objective after spending at least the rung's
    resource, the same for every trial. The trial is judged once per rung,
    on the call where that first step is its latest step; when one step
    crosses several rungs, only the highest is judged.

    At its rung the trial is compared with every trial that reached the
    rung, running or finished, itself included: with ``n`` of them it goes
    on if fewer than ``max(1, n // reduction_factor)`` of them have a
    strictly better value there (so ties go on, and the best trial is never
    stopped). While fewer than ``reduction_factor`` trials have reached the
    rung the trial goes on: ASHA promotes when it cannot yet rank, rather
    than waiting for the rung to fill; the cost is that some early trials
    run further than synchronous halving would let them.

    The rule keeps no state between calls, so it relies on being asked
    about a trial at each step it logs: a trial that crossed a rung between
    two calls and logged more steps since is not judged at that rung.

    Settings:

    ``min_resource`` (default 1)
        The step of the first rung.
    ``reduction_factor`` (default 3)
        Keep the top 1/``reduction_factor`` at each rung; rungs are this
        factor apart.
    ``max_resource`` (optional)
        The steps a trial runs at most; no rung at or past it.

    "Better" is lower for ``minimize`` and higher for ``maximize``; a NaN
    value is worse than any number.
    """

    name = "asha"
    description = "Asynchronous successive halving: at each rung, keep the top 1/reduction_factor of the trials."
    settings = {
        "min_resource": Hyperparameter(int, 1, min=1, help="The step of the first rung."),
        "reduction_factor": Hyperparameter(
            int, 3, min=2, help="Keep the top 1/reduction_factor at each rung; rungs are this factor apart."
        ),
        "max_resource": Hyperparameter(int, None, min=1, help="The steps a trial runs at most; no rung at or past it."),
    }

    def should_stop(
        self, trial: TrialProgress, others: list[TrialProgress], goal: Goal, settings: dict[str, Any]
    ) -> str | None:
        """A reason when ``trial`` just reached a rung and is not in its top 1/``reduction_factor``."""
        if trial.finished or not trial.values:
            return None
        factor = settings["reduction_factor"]
        step = max(trial.values)
        rung = _latest_rung(step, settings["min_resource"], factor, settings.get("max_resource"))
        if rung is None:
            return None
        number, rung_step = rung
        if _first_step_at(trial.values, rung_step) != step:
            return None  # judged when it reached this rung, and still running: promoted
        value = trial.values[step]
        own = loss(value, goal)
        competitors = [own]
        for other in others:
            at = _first_step_at(other.values, rung_step)
            if at is not None:
                competitors.append(loss(other.values[at], goal))
        n = len(competitors)
        if n < factor:
            return None
        keep = max(1, n // factor)
        if sum(value < own for value in competitors) < keep:
            return None
        return (
            f"asha rung {number} (step {rung_step}): value {show(value)} "
            f"is not in the top {keep} of {n} trials that reached this rung"
        )


def _latest_rung(step: int, min_resource: int, factor: int, max_resource: int | None) -> tuple[int, int] | None:
    """``(rung number from 1, rung step)`` of the highest rung at or before ``step``, or None."""
    latest = None
    number, rung_step = 1, min_resource
    while rung_step <= step and (max_resource is None or rung_step < max_resource):
        latest = (number, rung_step)
        number, rung_step = number + 1, rung_step * factor
    return latest


def _first_step_at(values: dict[int, float], rung_step: int) -> int | None:
    """The first step of ``values`` at or after ``rung_step``, or None when it has not got there."""
    reached = [at for at in values if at >= rung_step]
    return min(reached) if reached else None
