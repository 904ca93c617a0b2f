"""The built-in tuners (grid, random, tpe), driven as the controller drives them.

Each test takes a registered tuner, deep-copies it, starts it, then suggests
and observes. Every search is seeded, so the comparisons below are exact
repeats, not statistical tests that could flake.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest

from mlrt import plugins
from mlrt.tuning import Parameter, TrialResult, Tuner

X = Parameter("x", "float", "hyperparameters.x", min=-5.0, max=5.0)
Y = Parameter("y", "float", "hyperparameters.y", min=-5.0, max=5.0)
PLANE = [X, Y]
OPTIMUM = (1.7, -2.3)


def quadratic(params: dict[str, Any]) -> float:
    """A bowl with its minimum (0) away from the centre of PLANE."""
    return (params["x"] - OPTIMUM[0]) ** 2 + (params["y"] - OPTIMUM[1]) ** 2


def distance(params: dict[str, Any]) -> float:
    return math.dist((params["x"], params["y"]), OPTIMUM)


def started(
    name: str,
    space: list[Parameter],
    *,
    goal: str = "minimize",
    seed: int = 0,
    parallel: int = 1,
    history: list[TrialResult] | None = None,
) -> Tuner:
    tuner = copy.deepcopy(plugins.tuners()[name])
    tuner.start(space, goal, seed, parallel, history or [])  # type: ignore[arg-type]
    return tuner


def best_after(
    name: str, objective: Callable[[dict[str, Any]], float], trials: int, seed: int, parallel: int = 1
) -> float:
    """Run a search of ``trials`` trials, ``parallel`` at a time; return the best value found."""
    tuner = started(name, PLANE, seed=seed, parallel=parallel)
    best = math.inf
    number = 0
    while number < trials:
        batch = []
        for _ in range(min(parallel, trials - number)):
            batch.append((number, tuner.suggest(number)))
            number += 1
        for n, params in batch:
            assert params is not None
            value = objective(params)
            best = min(best, value)
            tuner.observe(TrialResult(n, params, "SUCCEEDED", value))
    return best


def test_builtin_tuners_are_registered() -> None:
    tuners = plugins.tuners()
    assert {"grid", "random", "tpe"} <= set(tuners)
    for name in ("grid", "random", "tpe"):
        assert tuners[name].description
        assert tuners[name].__doc__
    assert not tuners["grid"].parallel_aware
    assert tuners["random"].parallel_aware and tuners["tpe"].parallel_aware


# grid

GRID = [
    Parameter("kernel", "categorical", "hyperparameters.kernel", values=("rbf", "linear")),
    Parameter("depth", "int", "hyperparameters.depth", min=1, max=5, step=2),
    Parameter("alpha", "float", "hyperparameters.alpha", min=0.0, max=0.3, step=0.1),
]
GRID_VALUES = [("rbf", "linear"), (1, 3, 5), (0.0, 0.1, 0.2, 0.3)]


def drain(tuner: Tuner, first: int = 0) -> list[dict[str, Any]]:
    suggestions = []
    while (params := tuner.suggest(first + len(suggestions))) is not None:
        suggestions.append(params)
        assert len(suggestions) <= 1000
    return suggestions


def test_grid_enumerates_the_product_in_order_then_stops() -> None:
    tuner = started("grid", GRID)
    suggestions = drain(tuner)
    expected = [
        dict(zip(("kernel", "depth", "alpha"), combo, strict=True)) for combo in itertools.product(*GRID_VALUES)
    ]
    assert suggestions == expected  # exact floats: 0.3, not 0.30000000000000004
    assert len(suggestions) == 24
    assert tuner.suggest(24) is None
    assert all(type(s["depth"]) is int and type(s["alpha"]) is float for s in suggestions)
    assert drain(started("grid", GRID)) == suggestions  # deterministic


def test_grid_skips_combinations_in_history() -> None:
    history = [
        TrialResult(0, {"kernel": "rbf", "depth": 1, "alpha": 0.0}, "SUCCEEDED", 0.5),
        # values as they come back from JSON: an int stored as a float, float drift
        TrialResult(1, {"kernel": "linear", "depth": 3.0, "alpha": 0.30000000000000004}, "FAILED", None),
        TrialResult(2, {"kernel": "rbf", "depth": 5, "alpha": 0.2}, "PRUNED", 0.9),
        # not on this grid: ignored
        TrialResult(3, {"kernel": "poly", "depth": 1, "alpha": 0.0}, "SUCCEEDED", 0.1),
        TrialResult(4, {"kernel": "rbf", "depth": 2, "alpha": 0.0}, "SUCCEEDED", 0.1),
        TrialResult(5, {"kernel": "rbf", "depth": 1}, "SUCCEEDED", 0.1),
    ]
    suggestions = drain(started("grid", GRID, history=history), first=6)
    assert len(suggestions) == 21
    seen = {(s["kernel"], s["depth"], s["alpha"]) for s in suggestions}
    assert len(seen) == 21
    assert not seen & {("rbf", 1, 0.0), ("linear", 3, 0.3), ("rbf", 5, 0.2)}


def test_grid_check() -> None:
    grid = plugins.tuners()["grid"]
    assert grid.check(GRID) is None
    lr = Parameter("lr", "float", "hyperparameters.lr", min=0.001, max=0.1)
    assert grid.check([lr]) == "grid needs values or a step for float parameter 'lr'"
    huge = [Parameter(f"p{i}", "int", f"hyperparameters.p{i}", min=1, max=10) for i in range(6)]
    problem = grid.check(huge)
    assert problem and "1,000,000 combinations" in problem and "\n" not in problem
    assert grid.check(huge[:5]) is None  # exactly 100,000 is allowed


@pytest.mark.parametrize("name", ["grid", "random", "tpe"])
def test_log_scale_with_a_step_is_refused_by_every_tuner(name: str) -> None:
    lr = Parameter("lr", "float", "hyperparameters.lr", min=0.001, max=0.1, scale="log", step=0.001)
    problem = plugins.tuners()[name].check([lr])
    assert problem and "'lr'" in problem and "log" in problem
    assert plugins.tuners()[name].check([Parameter("n", "int", "h.n", min=1, max=1000, scale="log")]) is None


# random


def test_random_stays_in_bounds_with_plain_types() -> None:
    space = [
        X,
        Parameter("n", "int", "hyperparameters.n", min=2, max=9),
        Parameter("q", "float", "hyperparameters.q", min=0.0, max=1.0, step=0.25),
        Parameter("opt", "categorical", "hyperparameters.opt", values=("adam", "sgd", None, (64, 64))),
    ]
    tuner = started("random", space, seed=3)
    suggestions = [tuner.suggest(i) for i in range(200)]
    for s in suggestions:
        assert s is not None
        assert type(s["x"]) is float and -5.0 <= s["x"] <= 5.0
        assert type(s["n"]) is int and 2 <= s["n"] <= 9
        assert s["q"] in (0.0, 0.25, 0.5, 0.75, 1.0) and type(s["q"]) is float
        assert s["opt"] in ("adam", "sgd", None, (64, 64))
    assert {s["n"] for s in suggestions} == set(range(2, 10))
    assert len({repr(s["opt"]) for s in suggestions}) == 4


def test_random_log_scale_spreads_across_decades() -> None:
    lr = Parameter("lr", "float", "hyperparameters.lr", min=1e-5, max=1e-1, scale="log")
    tuner = started("random", [lr], seed=0)
    draws = [tuner.suggest(i)["lr"] for i in range(200)]  # type: ignore[index]
    assert all(1e-5 <= d <= 1e-1 for d in draws)
    per_decade = [sum(10.0**e <= d < 10.0 ** (e + 1) for d in draws) for e in range(-5, -1)]
    assert all(count >= 25 for count in per_decade), per_decade  # 50 each expected; linear would give ~0 below 1e-2


def test_random_same_seed_same_suggestions() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        tuner = started("random", PLANE, seed=seed)
        return [tuner.suggest(i) for i in range(10)]  # type: ignore[misc]

    assert run(7) == run(7)
    assert run(7) != run(8)


# tpe


def test_tpe_finds_better_values_than_random_in_the_same_budget() -> None:
    seeds = range(5)
    tpe = sum(best_after("tpe", quadratic, 40, seed) for seed in seeds) / len(seeds)
    rnd = sum(best_after("random", quadratic, 40, seed) for seed in seeds) / len(seeds)
    assert tpe < rnd / 2, (tpe, rnd)


def test_tpe_same_seed_same_search() -> None:
    assert best_after("tpe", quadratic, 20, seed=4) == best_after("tpe", quadratic, 20, seed=4)


def _outstanding_spread(parallel: int, seed: int) -> float:
    """The closest two of 4 suggestions made while all 4 are still running."""
    tuner = started("tpe", PLANE, seed=seed, parallel=parallel)
    for i in range(12):  # past the random startup phase
        params = tuner.suggest(i)
        assert params is not None
        tuner.observe(TrialResult(i, params, "SUCCEEDED", quadratic(params)))
    batch = [tuner.suggest(12 + j) for j in range(4)]
    assert all(b is not None for b in batch)
    for j, params in enumerate(batch):
        tuner.observe(TrialResult(12 + j, params, "SUCCEEDED", quadratic(params)))  # type: ignore[arg-type]
    return min(distance_between(a, b) for a, b in itertools.combinations(batch, 2))  # type: ignore[arg-type]


def distance_between(a: dict[str, Any], b: dict[str, Any]) -> float:
    return math.dist((a["x"], a["y"]), (b["x"], b["y"]))


def test_tpe_parallel_suggestions_differ() -> None:
    spread = [_outstanding_spread(4, seed) for seed in range(5)]
    assert all(s > 0.05 for s in spread), spread
    # the constant liar is what keeps them apart: without it (parallel=1) they bunch up
    unaware = [_outstanding_spread(1, seed) for seed in range(5)]
    assert sum(spread) > 1.5 * sum(unaware), (spread, unaware)


def _known_history() -> list[TrialResult]:
    import random

    rng = random.Random(123)
    history = []
    for i in range(20):
        params = {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}
        history.append(TrialResult(i, params, "SUCCEEDED", quadratic(params)))
    return history


def test_tpe_warm_start_uses_history() -> None:
    # 20 finished trials are past the startup phase: the first suggestions are
    # already modelled, so they land nearer the optimum than a cold start's.
    warm, cold = [], []
    for seed in range(5):
        tuner = started("tpe", PLANE, seed=seed, history=_known_history())
        warm += [distance(tuner.suggest(100 + i)) for i in range(5)]  # type: ignore[arg-type]
        tuner = started("tpe", PLANE, seed=seed)
        cold += [distance(tuner.suggest(i)) for i in range(5)]  # type: ignore[arg-type]
    assert sum(warm) < 0.5 * sum(cold), (sum(warm) / len(warm), sum(cold) / len(cold))


def test_tpe_maximizes_when_the_goal_says_so() -> None:
    bests = []
    for seed in range(3):
        tuner = started("tpe", PLANE, goal="maximize", seed=seed)
        best = -math.inf
        for i in range(30):
            params = tuner.suggest(i)
            assert params is not None
            value = -quadratic(params)  # maximum 0 at OPTIMUM
            best = max(best, value)
            tuner.observe(TrialResult(i, params, "SUCCEEDED", value))
        bests.append(best)
    assert sum(bests) / len(bests) > -0.5, bests


ODD_RESULTS = [
    TrialResult(0, {"x": 1.0, "y": 1.0}, "FAILED", None),
    TrialResult(1, {"x": 2.0, "y": -2.0}, "PRUNED", 0.5),
    TrialResult(2, {"x": -1.0, "y": 0.0}, "PRUNED", None),
    TrialResult(3, {"x": 0.0, "y": 0.0}, "SUCCEEDED", None),
    TrialResult(4, {"x": 0.5, "y": 0.5}, "SUCCEEDED", float("nan")),
    TrialResult(5, {"x": 0.5, "y": 4.0}, "CANCELLED", None),
    TrialResult(6, {"x": 3.0, "y": -3.0}, "SUCCEEDED", 1.9),
]
MISMATCHED = [
    TrialResult(10, {"x": 1.0}, "SUCCEEDED", 0.1),  # missing a parameter
    TrialResult(11, {"x": 1.0, "y": 1.0, "z": 3}, "SUCCEEDED", 0.1),  # another space
    TrialResult(12, {"x": 50.0, "y": 1.0}, "SUCCEEDED", 0.1),  # out of range
    TrialResult(13, {"x": "a", "y": 1.0}, "SUCCEEDED", 0.1),  # wrong type
    TrialResult(14, {"x": True, "y": 1.0}, "SUCCEEDED", 0.1),
]


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_odd_and_mismatched_history_does_not_crash(name: str) -> None:
    tuner = started(name, PLANE, seed=1, history=ODD_RESULTS + MISMATCHED)
    # only the 7 entries of this space were replayed (a look inside the Optuna study)
    assert len(tuner._study.trials) == len(ODD_RESULTS)  # type: ignore[attr-defined]
    for i, result in enumerate(ODD_RESULTS + MISMATCHED):
        params = tuner.suggest(100 + i)
        assert params is not None and -5 <= params["x"] <= 5 and -5 <= params["y"] <= 5
        tuner.observe(TrialResult(100 + i, params, result.state, result.value))
    tuner.observe(TrialResult(999, {"x": 9.0, "y": 9.0}, "SUCCEEDED", 1.0))  # never suggested, off-space
    assert tuner.suggest(200) is not None


def test_only_mismatched_history_leaves_tpe_in_its_random_phase() -> None:
    history = [TrialResult(i, {"lr": 0.1 * i, "x": 1.0}, "SUCCEEDED", 0.0) for i in range(30)]
    tuner = started("tpe", PLANE, seed=2, history=history)
    assert len(tuner._study.trials) == 0  # type: ignore[attr-defined]
    assert tuner.suggest(30) is not None


def test_resume_is_deterministic_and_does_not_repeat_draws() -> None:
    first = started("random", PLANE, seed=5)
    history = []
    for i in range(5):
        params = first.suggest(i)
        assert params is not None
        history.append(TrialResult(i, params, "SUCCEEDED", quadratic(params)))
    a = started("random", PLANE, seed=5, history=history)
    b = started("random", PLANE, seed=5, history=history)
    resumed = [a.suggest(5 + i) for i in range(5)]
    assert resumed == [b.suggest(5 + i) for i in range(5)]
    assert not any(r == h.params for r in resumed for h in history)


GATE_X_MIN = 3.0  # a gate that only trials with x >= 3 pass; the bowl's minimum lies outside it


def _gated_search(seed: int, tell_violation: bool, trials: int = 40) -> tuple[float, int]:
    """TPE on the quadratic where x < GATE_X_MIN misses a gate. With ``tell_violation``
    the tuner hears FAILED_GATE with the objective and how far x fell short (as the
    controller reports it); without, it hears a plain FAILED trial (no result).
    Returns the best feasible value and how many suggestions after the first 5 were feasible."""
    tuner = started("tpe", PLANE, seed=seed)
    best, feasible = math.inf, 0
    for number in range(trials):
        params = tuner.suggest(number)
        assert params is not None
        value = quadratic(params)
        if params["x"] >= GATE_X_MIN:
            tuner.observe(TrialResult(number, params, "SUCCEEDED", value))
            best, feasible = min(best, value), feasible + (number >= 5)
        elif tell_violation:
            tuner.observe(TrialResult(number, params, "FAILED_GATE", value, GATE_X_MIN - params["x"]))
        else:
            tuner.observe(TrialResult(number, params, "FAILED", None))
    return best, feasible


def test_tpe_learns_the_feasible_region_from_gate_violations() -> None:
    seeds = range(5)
    told = [_gated_search(seed, tell_violation=True) for seed in seeds]
    blind = [_gated_search(seed, tell_violation=False) for seed in seeds]
    assert sum(f for _, f in told) >= 2 * sum(f for _, f in blind), (told, blind)
    told_best = sum(b for b, _ in told) / len(told)
    blind_best = sum(b for b, _ in blind) / len(blind)
    assert told_best < blind_best / 1.5, (told_best, blind_best)
    assert min(b for b, _ in told) >= (GATE_X_MIN - OPTIMUM[0]) ** 2  # only feasible trials count as best


def test_gate_violations_reach_the_optuna_study_as_constraints() -> None:
    history = [
        TrialResult(0, {"x": 0.0, "y": 0.0}, "FAILED_GATE", 1.0, 0.25),
        TrialResult(1, {"x": 4.0, "y": 0.0}, "SUCCEEDED", 2.0),
    ]
    tuner = started("tpe", PLANE, history=history)
    params = tuner.suggest(2)
    assert params is not None
    tuner.observe(TrialResult(2, params, "FAILED_GATE", 0.5, 0.0))  # no amount given: still infeasible
    trials = tuner._study.get_trials(deepcopy=False)
    assert [t.constraints for t in trials] == [{"gates": 0.25}, {}, {"gates": 1.0}]
    assert [t.value for t in trials] == [1.0, 2.0, 0.5]


def test_tpe_startup_trials_setting_ends_the_random_phase_sooner() -> None:
    """Two searches with the same seed and results agree while both are random, and part once
    the one configured with ``startup_trials: 2`` starts modelling (the default waits for 5)."""
    default, early = started("tpe", PLANE, seed=4), copy.deepcopy(plugins.tuners()["tpe"])
    early.configure({"startup_trials": 2})
    early.start(PLANE, "minimize", 4, 1, [])
    suggestions = []
    for number in range(1, 5):
        pair = default.suggest(number), early.suggest(number)
        suggestions.append(pair)
        for tuner, params in zip((default, early), pair, strict=True):
            tuner.observe(TrialResult(number, params, "SUCCEEDED", quadratic(params)))
    assert [a == b for a, b in suggestions] == [True, True, False, False]
