"""The built-in early-stopping rules, ``median`` and ``asha``, on synthetic learning curves."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from mlrt import hookimpl, plugins
from mlrt.tuning import EarlyStopper, TrialProgress


def stopper(name: str) -> EarlyStopper:
    return plugins.early_stoppers()[name]


def resolve(rule: EarlyStopper, **given: Any) -> dict[str, Any]:
    """Settings as the controller hands them over: checked against the schema, defaults filled in."""
    settings = {}
    for key, value in given.items():
        coerced, problem = rule.settings[key].check(value)
        assert problem is None, f"{key}: {problem}"
        settings[key] = coerced
    for key, hp in rule.settings.items():
        if key not in given and hp.default is not None:
            settings[key] = hp.default
    return settings


def progress(number: int, values: dict[int, float] | list[float], finished: bool = False) -> TrialProgress:
    if isinstance(values, list):
        values = dict(enumerate(values))
    return TrialProgress(number=number, values=values, finished=finished)


def curve(level: float, steps: int) -> list[float]:
    """A decreasing loss curve that flattens out at ``level``."""
    return [level + 1.0 / (step + 1) for step in range(steps)]


@pytest.mark.parametrize("name", ["median", "asha"])
def test_rules_are_registered_with_docs_and_a_settings_schema(name: str):
    rule = stopper(name)
    assert rule.name == name
    assert rule.description and len(type(rule).__doc__ or "") > 200
    assert resolve(rule)  # every setting has a valid default or is optional


class NeverStop(EarlyStopper):
    """A stand-in rule that takes the built-in ``median``'s name."""

    name = "median"

    def should_stop(self, trial, others, goal, settings):
        return None


class OverridingPlugin:
    @hookimpl
    def mlrt_early_stoppers(self) -> list[EarlyStopper]:
        return [NeverStop()]


def test_mlrt_early_stoppers_of_an_installed_plugin_override_a_builtin_rule_of_the_same_name():
    with plugins.registered(OverridingPlugin(), name="override"):
        assert isinstance(stopper("median"), NeverStop)
        assert stopper("asha").name == "asha"
    assert not isinstance(stopper("median"), NeverStop)


def test_invalid_settings_are_rejected_by_the_schema():
    assert stopper("asha").settings["reduction_factor"].check(1)[1]
    assert stopper("median").settings["interval"].check(0)[1]
    assert stopper("median").settings["warmup_steps"].check(1.5)[1]


# --- median ---------------------------------------------------------------------------------

GOOD_OTHERS = [progress(n, curve(0.2 + 0.02 * n, 5)) for n in range(1, 6)]  # best at step 4: 0.42..0.5


def test_median_stops_a_clearly_bad_trial_and_says_why():
    rule = stopper("median")
    bad = progress(0, curve(1.0, 5))
    reason = rule.should_stop(bad, GOOD_OTHERS, "minimize", resolve(rule))
    assert reason == (
        "median stopping at step 4: best value so far 1.2 is worse than the median 0.46 of 5 other trials at this step"
    )


def test_median_lets_a_good_trial_run():
    rule = stopper("median")
    good = progress(0, curve(0.1, 5))
    assert rule.should_stop(good, GOOD_OTHERS, "minimize", resolve(rule)) is None


def test_median_compares_the_best_value_so_far_not_the_latest():
    rule = stopper("median")
    wobbly = progress(0, [1.0, 0.3, 0.9, 0.9, 0.9])  # was the best at step 1
    assert rule.should_stop(wobbly, GOOD_OTHERS, "minimize", resolve(rule)) is None


def test_median_works_for_maximize():
    rule = stopper("median")
    others = [progress(n, [-v for v in curve(0.2 + 0.02 * n, 5)]) for n in range(1, 6)]
    low = progress(0, [-v for v in curve(1.0, 5)])
    high = progress(0, [-v for v in curve(0.1, 5)])
    reason = rule.should_stop(low, others, "maximize", resolve(rule))
    assert reason and "best value so far -1.2 is worse than the median -0.46" in reason
    assert rule.should_stop(high, others, "maximize", resolve(rule)) is None
    # the same values under the opposite goal swap the verdicts
    assert rule.should_stop(low, others, "minimize", resolve(rule)) is None
    assert rule.should_stop(high, others, "minimize", resolve(rule))


def test_median_respects_warmup():
    rule = stopper("median")
    bad = progress(0, curve(1.0, 1))  # only step 0
    assert rule.should_stop(bad, GOOD_OTHERS, "minimize", resolve(rule)) is None
    bad = progress(0, curve(1.0, 5))  # step 4
    assert rule.should_stop(bad, GOOD_OTHERS, "minimize", resolve(rule, warmup_steps=5)) is None
    assert rule.should_stop(bad, GOOD_OTHERS, "minimize", resolve(rule, warmup_steps=4))


def test_median_needs_min_trials_that_reached_the_step():
    rule = stopper("median")
    bad = progress(0, curve(1.0, 5))
    assert rule.should_stop(bad, GOOD_OTHERS[:2], "minimize", resolve(rule)) is None
    assert rule.should_stop(bad, GOOD_OTHERS[:2], "minimize", resolve(rule, min_trials=2))
    # trials that are behind (here at step 2) do not count at step 4
    behind = [progress(n, curve(0.1, 3)) for n in range(1, 6)]
    assert rule.should_stop(bad, behind, "minimize", resolve(rule)) is None
    # ...but finished trials that got there do
    done = [progress(n, curve(0.2, 10), finished=True) for n in range(1, 4)]
    assert rule.should_stop(bad, behind + done, "minimize", resolve(rule))


def test_median_uses_only_the_others_values_up_to_the_step():
    rule = stopper("median")
    # the others end up far better, but at step 2 they were worse than this trial
    late_bloomers = [progress(n, [2.0, 2.0, 2.0, 0.01, 0.01]) for n in range(1, 6)]
    trial = progress(0, [1.0, 1.0, 1.0])
    assert rule.should_stop(trial, late_bloomers, "minimize", resolve(rule)) is None


def test_median_interval_checks_every_nth_step_even_with_sparse_steps():
    rule = stopper("median")
    settings = resolve(rule, warmup_steps=1, interval=2)  # checks at steps 1, 3, 5...
    bad = curve(1.0, 5)
    assert rule.should_stop(progress(0, bad[:3]), GOOD_OTHERS, "minimize", settings) is None  # step 2
    assert rule.should_stop(progress(0, bad[:4]), GOOD_OTHERS, "minimize", settings)  # step 3
    sparse = {0: bad[0], 4: bad[4]}  # jumped over check step 3
    assert rule.should_stop(progress(0, sparse), GOOD_OTHERS, "minimize", settings)


def test_median_leaves_finished_and_empty_trials_alone_and_stops_nan():
    rule = stopper("median")
    settings = resolve(rule)
    assert rule.should_stop(progress(0, curve(1.0, 5), finished=True), GOOD_OTHERS, "minimize", settings) is None
    assert rule.should_stop(progress(0, {}), GOOD_OTHERS, "minimize", settings) is None
    assert rule.should_stop(progress(0, {}), [], "minimize", settings) is None
    diverged = progress(0, [math.nan] * 5)
    assert "best value so far nan" in (rule.should_stop(diverged, GOOD_OTHERS, "minimize", settings) or "")


# --- asha -----------------------------------------------------------------------------------

# Nine trials with a clear ranking: trial 0 is best at every step, trial 8 worst.
LEVELS = [0.1 * n for n in range(9)]


def test_asha_keeps_the_top_third_at_rung_1_and_the_top_ninth_at_rung_2():
    rule = stopper("asha")
    settings = resolve(rule)  # rungs at steps 1, 3, 9
    at_rung_1 = [progress(n, curve(LEVELS[n], 2)) for n in range(9)]
    verdicts = {
        t.number: rule.should_stop(t, [o for o in at_rung_1 if o is not t], "minimize", settings) for t in at_rung_1
    }
    assert [n for n, reason in verdicts.items() if reason is None] == [0, 1, 2]
    assert verdicts[3] and verdicts[3].startswith("asha rung 1 (step 1): value ")
    assert verdicts[3].endswith("is not in the top 3 of 9 trials that reached this rung")

    # the three survivors reach step 3 (rung 2); the stopped six stay at step 1
    stopped = [progress(n, curve(LEVELS[n], 2), finished=True) for n in range(3, 9)]
    at_rung_2 = [progress(n, curve(LEVELS[n], 4)) for n in range(3)]
    verdicts = {
        t.number: rule.should_stop(t, [o for o in at_rung_2 if o is not t] + stopped, "minimize", settings)
        for t in at_rung_2
    }
    assert verdicts[0] is None
    assert verdicts[1] == "asha rung 2 (step 3): value 0.35 is not in the top 1 of 3 trials that reached this rung"
    assert verdicts[2]


def test_asha_works_for_maximize():
    rule = stopper("asha")
    settings = resolve(rule)
    trials = [progress(n, curve(LEVELS[n], 2)) for n in range(9)]  # trial 8 is best when higher is better
    others = {t.number: [o for o in trials if o is not t] for t in trials}
    kept = [t.number for t in trials if rule.should_stop(t, others[t.number], "maximize", settings) is None]
    assert kept == [6, 7, 8]


def test_asha_lets_a_trial_on_while_fewer_than_reduction_factor_reached_the_rung():
    rule = stopper("asha")
    best = progress(0, curve(0.0, 2))
    worst = progress(1, curve(5.0, 2))
    assert rule.should_stop(worst, [best], "minimize", resolve(rule)) is None
    assert rule.should_stop(worst, [best], "minimize", resolve(rule, reduction_factor=2))
    # trials still before the rung do not count
    early = [progress(n, curve(0.0, 1)) for n in range(2, 9)]
    assert rule.should_stop(worst, [best, *early], "minimize", resolve(rule)) is None


def test_asha_judges_a_trial_once_per_rung_when_it_reaches_it():
    rule = stopper("asha")
    settings = resolve(rule)
    others = [progress(n, curve(LEVELS[n], 3)) for n in range(8)]
    worst = curve(LEVELS[8] + 1, 9)
    assert rule.should_stop(progress(8, worst[:2]), others, "minimize", settings)  # step 1: rung 1
    assert rule.should_stop(progress(8, worst[:3]), others, "minimize", settings) is None  # step 2: between rungs
    assert rule.should_stop(progress(8, worst[:1]), others, "minimize", settings) is None  # step 0: before rung 1
    # with sparse steps, the first step at or past the rung is where it is judged, with that step's value
    assert rule.should_stop(progress(8, {0: worst[0], 2: worst[2]}), others, "minimize", settings)


def test_asha_has_no_rung_at_or_past_max_resource():
    rule = stopper("asha")
    others = [progress(n, curve(LEVELS[n], 4)) for n in range(8)]
    worst = progress(8, curve(5.0, 4))  # latest step 3: rung 2 with max_resource unset
    assert rule.should_stop(worst, others, "minimize", resolve(rule))
    assert rule.should_stop(worst, others, "minimize", resolve(rule, max_resource=3)) is None
    assert rule.should_stop(worst, others, "minimize", resolve(rule, min_resource=5)) is None


def test_asha_leaves_finished_and_empty_trials_alone_and_ranks_nan_last():
    rule = stopper("asha")
    settings = resolve(rule)
    others = [progress(n, curve(LEVELS[n], 2)) for n in range(8)]
    assert rule.should_stop(progress(8, curve(5.0, 2), finished=True), others, "minimize", settings) is None
    assert rule.should_stop(progress(8, {}), others, "minimize", settings) is None
    assert "value nan" in (rule.should_stop(progress(8, [math.nan, math.nan]), others, "minimize", settings) or "")


def simulate_asha(seed: int, max_steps: int = 27, parallel: int = 3) -> tuple[dict[int, int], dict[int, str]]:
    """Nine trials run ``parallel`` at a time, one random running trial logging a step per tick.

    The stopper is asked about a trial after each step it logs, as the controller would.
    Returns steps run per trial and the reasons of the stopped trials.
    """
    rule = stopper("asha")
    settings = resolve(rule, max_resource=max_steps)
    rng = random.Random(seed)
    queue = list(range(9))
    rng.shuffle(queue)
    values: dict[int, dict[int, float]] = {}
    running: list[int] = []
    done: set[int] = set()
    reasons: dict[int, str] = {}
    noise = {n: [rng.uniform(-0.03, 0.03) for _ in range(max_steps)] for n in range(9)}
    while queue or running:
        while queue and len(running) < parallel:
            running.append(queue.pop(0))
            values[running[-1]] = {}
        number = rng.choice(running)
        step = len(values[number])
        values[number][step] = LEVELS[number] + 1.0 / (step + 1) + noise[number][step]
        finished = step + 1 == max_steps
        trial = TrialProgress(number, dict(values[number]), finished)
        others = [TrialProgress(n, dict(v), n in done) for n, v in values.items() if n != number]
        reason = None if finished else rule.should_stop(trial, others, "minimize", settings)
        if finished or reason:
            running.remove(number)
            done.add(number)
            if reason:
                reasons[number] = reason
    return {n: len(v) for n, v in values.items()}, reasons


@pytest.mark.parametrize("seed", range(10))
def test_asha_saves_resource_and_never_stops_the_best_trial(seed: int):
    steps, reasons = simulate_asha(seed)
    assert steps[0] == 27 and 0 not in reasons
    assert reasons and sum(steps.values()) < 9 * 27
    # trials stop only where they reach a rung: steps 1, 3 or 9 (2, 4 or 10 steps run)
    assert {steps[n] for n in reasons} <= {2, 4, 10}


def test_asha_uses_well_under_half_the_resource_on_average():
    # early trials are promoted while rungs fill up, so single orders vary (68 to 193 of 243 steps)
    total = sum(sum(simulate_asha(seed)[0].values()) for seed in range(10))
    assert total / 10 < 9 * 27 / 2
