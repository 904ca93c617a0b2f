"""The median stopping rule."""

from __future__ import annotations

from typing import Any

from mlrt.algorithms import Hyperparameter
from mlrt.tuning import EarlyStopper, Goal, TrialProgress
from mlrt_early_stopping._values import best_up_to, loss, show, unloss


class MedianStopping(EarlyStopper):
    """Stop a trial whose best value so far is worse than the other trials' median.

    The median stopping rule of Google Vizier (Golovin et al., 2017), also
    optuna's ``MedianPruner``. Let ``s`` be the trial's latest step. The trial
    is stopped at ``s`` when its best value over its steps <= ``s`` is
    strictly worse than the median of the other trials' best values over
    *their* steps <= ``s``. Only other trials that have reached step ``s``
    (logged a value at ``s`` or later), running or finished, take part, and
    each of them needs a value at some step <= ``s``; a trial that leads the
    field is therefore never judged against trials that are behind it.

    Settings:

    ``warmup_steps`` (default 1)
        Never stop a trial before this step: early values are noisy.
    ``min_trials`` (default 3)
        Judge only when at least this many other trials take part at ``s``.
    ``interval`` (default 1)
        Judge at steps ``warmup_steps + k * interval``. Steps may be sparse,
        so the check runs when such a step lies after the trial's previous
        logged step and at or before its latest one.

    "Worse" is higher for ``minimize`` and lower for ``maximize``; a NaN
    value counts as worse than any number. Ties are not stopped.
    """

    name = "median"
    description = "Stop a trial whose best value so far is worse than the other trials' median at the same step."
    settings = {
        "warmup_steps": Hyperparameter(int, 1, min=0, help="Never stop a trial before this step."),
        "min_trials": Hyperparameter(
            int, 3, min=1, help="Least number of other trials with a value at the step for the rule to apply."
        ),
        "interval": Hyperparameter(int, 1, min=1, help="Judge every this many steps after the warmup."),
    }

    def should_stop(
        self, trial: TrialProgress, others: list[TrialProgress], goal: Goal, settings: dict[str, Any]
    ) -> str | None:
        """A reason when ``trial``'s best so far is worse than the others' median at its latest step."""
        if trial.finished or not trial.values:
            return None
        step = max(trial.values)
        if not _is_check_step(trial.values, step, settings["warmup_steps"], settings["interval"]):
            return None
        bests = []
        for other in others:
            if other.values and max(other.values) >= step:
                best = best_up_to(other.values, step, goal)
                if best is not None:
                    bests.append(loss(best, goal))
        if len(bests) < settings["min_trials"]:
            return None
        import statistics  # here: every mlrt command imports this plugin, few ever stop a trial

        median = statistics.median(bests)
        own = best_up_to(trial.values, step, goal)
        assert own is not None  # the trial has a value at ``step`` itself
        if loss(own, goal) <= median:
            return None
        return (
            f"median stopping at step {step}: best value so far {show(own)} is worse than "
            f"the median {show(unloss(median, goal))} of {len(bests)} other trials at this step"
        )


def _is_check_step(values: dict[int, float], step: int, warmup: int, interval: int) -> bool:
    """Whether a step ``warmup + k * interval`` lies in (previous logged step, ``step``]."""
    if step < warmup:
        return False
    earlier = [at for at in values if at < step]
    if not earlier or max(earlier) < warmup:
        return True  # the first step at or past the warmup
    # Check-step indices of the latest and previous steps differ when one was crossed.
    return (step - warmup) // interval > (max(earlier) - warmup) // interval
