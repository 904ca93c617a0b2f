"""The ``random``, ``tpe`` and ``nsga2`` tuners: an in-memory Optuna study driven by ask/tell.

Optuna is imported on first use, not with the plugin, so ``mlrt --help`` and
every command that never tunes stay fast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from mlrt.algorithms import Hyperparameter
from mlrt.tuning import Goal, Parameter, TrialResult, Tuner
from mlrt_tuners.space import as_number, category_index, space_problem


@contextmanager
def _quiet() -> Iterator[Any]:
    """Import optuna with its per-trial INFO lines and advisory warnings silenced.

    The controller reports trials itself; Optuna's "Trial 3 finished" lines and
    warnings about our own fixed settings would only be noise in its log."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield optuna


def _sampler_seed(seed: int, history: list[TrialResult]) -> int:
    # With no history the seed is used as given, so a fresh job reproduces.
    # With history it is mixed with the history's size: still the same answer
    # for the same history, but a resumed job does not replay the very draws
    # it made before the restart (a random sampler's stream ignores history).
    if not history:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**32, len(history)]).generate_state(1)[0])


GATES = "gates"
"""The name of the one constraint a FAILED_GATE trial carries in the Optuna study."""


def _violation(result: TrialResult) -> float:
    # Optuna calls a constraint <= 0 feasible; a FAILED_GATE trial never is.
    return result.violation if result.violation > 0 and math.isfinite(result.violation) else 1.0


class _OptunaTuner(Tuner):
    """Shared ask/tell plumbing; subclasses choose the Optuna sampler."""

    def __init__(self) -> None:
        self._space: list[Parameter] = []
        self._study: Any = None
        self._distributions: dict[str, Any] = {}
        self._pending: dict[int, Any] = {}  # trial number -> optuna Trial awaiting its result
        self._suggested: dict[int, dict[str, Any]] = {}
        self._multi = False

    def check(self, space: list[Parameter]) -> str | None:
        """Refuse malformed spaces; any well-formed space can be sampled."""
        return space_problem(space)

    def _sampler(self, seed: int, parallel: int, space: list[Parameter]) -> Any:
        raise NotImplementedError

    def start(
        self,
        space: list[Parameter],
        goal: Goal | tuple[Goal, ...],
        seed: int,
        parallel: int,
        history: list[TrialResult],
    ) -> None:
        """Create the study (direction from ``goal``, or one direction per objective) and replay
        ``history`` into it.

        History entries whose parameters do not fit this space (a warm start
        from a job with another space) are skipped, not an error."""
        problem = self.check(space)
        if problem:
            raise ValueError(problem)
        if isinstance(goal, tuple) and not self.multi_objective:
            raise ValueError(f"tuner {self.name} searches one objective, not {len(goal)}")
        self._space = list(space)
        self._pending = {}
        self._suggested = {}
        self._multi = isinstance(goal, tuple)
        directions = list(goal) if isinstance(goal, tuple) else [goal]
        with _quiet() as optuna:
            self._distributions = {p.name: self._distribution(optuna, p) for p in space}
            sampler = self._sampler(_sampler_seed(seed, history), parallel, self._space)
            self._study = optuna.create_study(directions=directions, sampler=sampler)
            for result in history:
                self._add(optuna, result)

    def suggest(self, number: int) -> dict[str, Any] | None:
        """Ask the study for a point; plain Python values (float, int, or a listed category)."""
        if number in self._suggested:  # asked again for the same trial: same answer
            return dict(self._suggested[number])
        with _quiet():
            trial = self._study.ask(self._distributions)
        params = {p.name: self._external(p, trial.params[p.name]) for p in self._space}
        self._pending[number] = trial
        self._suggested[number] = params
        return dict(params)

    def observe(self, result: TrialResult) -> None:
        """Tell the study how trial ``result.number`` ended.

        SUCCEEDED with a finite value is COMPLETE; FAILED_GATE with a value is
        COMPLETE too, with its ``violation`` as the constraint ``gates`` (TPE
        then ranks it below every feasible trial, by violation, and learns
        where the feasible region is); PRUNED keeps its last value (if any) as
        its score; anything else is FAIL, which the samplers ignore. A result
        for a trial this tuner did not suggest is added like history; a second
        result for the same trial is ignored."""
        trial = self._pending.pop(result.number, None)
        with _quiet() as optuna:
            if trial is None:
                if result.number not in self._suggested:
                    self._add(optuna, result)
                return
            state, value, constraints = self._outcome(optuna, result)
            if state == optuna.trial.TrialState.COMPLETE:
                for key, violation in (constraints or {}).items():
                    trial.set_constraint(key, violation)
                self._study.tell(trial, value)
            else:
                if value is not None:
                    trial.report(value, 0)  # tell() makes the last report a pruned trial's score
                self._study.tell(trial, state=state)

    @staticmethod
    def _distribution(optuna: Any, p: Parameter) -> Any:
        d = optuna.distributions
        if p.type == "categorical":
            # Optuna sees the index; the values themselves may be anything a
            # spec can hold (lists, None), which Optuna's choices cannot all be.
            return d.CategoricalDistribution(tuple(range(len(p.values))))
        log = p.scale == "log"
        if p.type == "int":
            return d.IntDistribution(int(p.min), int(p.max), log=log, step=int(p.step or 1))
        return d.FloatDistribution(float(p.min), float(p.max), log=log, step=p.step)

    @staticmethod
    def _external(p: Parameter, value: Any) -> Any:
        if p.type == "categorical":
            return p.values[int(value)]
        return int(value) if p.type == "int" else float(value)

    def _internal(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """``params`` as the study stores them, or None when they do not fit this space."""
        if set(params) != set(self._distributions):
            return None
        internal: dict[str, Any] = {}
        for p in self._space:
            value = params[p.name]
            if p.type == "categorical":
                value = category_index(p.values, value)
            else:
                value = as_number(p, value)
            if value is None:
                return None
            dist = self._distributions[p.name]
            if not dist._contains(dist.to_internal_repr(value)):  # off the step grid
                return None
            internal[p.name] = value
        return internal

    def _outcome(self, optuna: Any, result: TrialResult) -> tuple[Any, Any, dict[str, float] | None]:
        """The Optuna state, score (a list of scores in a multi-objective study) and constraints
        (FAILED_GATE only) of ``result``."""
        states = optuna.trial.TrialState
        if self._multi:
            values = result.values
            if values is None or not all(math.isfinite(v) for v in values):
                return states.FAIL, None, None
            if result.state in ("SUCCEEDED", "FAILED_GATE"):
                constraints = {GATES: _violation(result)} if result.state == "FAILED_GATE" else None
                return states.COMPLETE, [float(v) for v in values], constraints
            return states.FAIL, None, None
        value = result.value
        if value is not None and not math.isfinite(value):
            value = None
        if result.state == "SUCCEEDED" and value is not None:
            return states.COMPLETE, float(value), None
        if result.state == "FAILED_GATE" and value is not None:
            return states.COMPLETE, float(value), {GATES: _violation(result)}
        if result.state == "PRUNED":
            return states.PRUNED, None if value is None else float(value), None
        return states.FAIL, None, None

    def _add(self, optuna: Any, result: TrialResult) -> None:
        params = self._internal(result.params)
        if params is None:
            return
        state, value, constraints = self._outcome(optuna, result)
        # A pruned trial's score is its last intermediate value, as tell() records it.
        pruned_score = {0: value} if state == optuna.trial.TrialState.PRUNED and value is not None else None
        self._study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=self._distributions,
                **({"values": value} if self._multi else {"value": value}),
                state=state,
                intermediate_values=pruned_score,
                constraints=constraints,
            )
        )


class RandomTuner(_OptunaTuner):
    """Independent uniform draws: Optuna's ``RandomSampler`` seeded with the job's seed.

    Floats and ints are drawn uniformly over ``[min, max]``, or uniformly in
    log space for ``scale: log`` (so each decade gets an equal share); a
    ``step`` restricts draws to ``min + k * step``. Categorical values are
    equally likely. Draws ignore results, so suggestions stay diverse however
    many trials run at once (``parallel_aware``). The same seed gives the same
    sequence; a resumed job or warm start mixes the history's size into the
    seed so it does not repeat the draws of the earlier run.
    """

    name: ClassVar[str] = "random"
    description: ClassVar[str] = "Independent random draws (log scale and steps respected)"
    parallel_aware: ClassVar[bool] = True
    multi_objective: ClassVar[bool] = True

    def _sampler(self, seed: int, parallel: int, space: list[Parameter]) -> Any:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


def startup_trials(space: list[Parameter]) -> int:
    """How many completed trials TPE waits for before modelling: 2 per parameter, 5 to 10.

    Optuna's default is always 10. A small space needs fewer random points
    before the model is useful, and in a budget of a few dozen trials every
    random point spent is one not spent near the optimum; 10 caps it for
    larger spaces, where TPE's per-dimension densities need more data anyway.
    """
    return min(10, max(5, 2 * len(space)))


class TPETuner(_OptunaTuner):
    """Bayesian optimisation with Optuna's Tree-structured Parzen Estimator.

    Until :func:`startup_trials` trials have finished (2 per parameter,
    between 5 and 10; the setting ``startup_trials`` chooses another number:
    ``tuner: {algorithm: tpe, startup_trials: 3}``), suggestions are random; after that TPE splits the finished trials into the best
    few and the rest, models each group's density over the space, and
    suggests the point most likely under the good model relative to the bad.
    Parameters are modelled jointly (``multivariate``), so correlated
    parameters such as learning rate and batch size are learned together.

    Trials in ``history`` (a resumed job, or a warm start from an earlier
    job) count as finished trials: a warm start with enough of them skips
    the random phase entirely. Pruned trials count as worse than every
    completed one, ranked among themselves by their last value; failed
    trials are ignored.

    With ``parallel > 1`` the "constant liar" strategy treats trials still
    running as if they had scored badly, which pushes concurrent suggestions
    apart (``parallel_aware``) instead of handing out the same point several
    times. Only finished trials end the random phase, so with many trials
    in flight the first batches are random.
    """

    name: ClassVar[str] = "tpe"
    description: ClassVar[str] = "Tree-structured Parzen Estimator (Bayesian; learns from finished trials)"
    parallel_aware: ClassVar[bool] = True
    settings: ClassVar[dict[str, Hyperparameter]] = {
        "startup_trials": Hyperparameter(
            int, None, min=1, max=1000, help="random trials before TPE models (default: 2 per parameter, 5 to 10)"
        )
    }

    def _sampler(self, seed: int, parallel: int, space: list[Parameter]) -> Any:
        import optuna

        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=self.options.get("startup_trials") or startup_trials(space),
            multivariate=True,
            constant_liar=parallel > 1,
        )


class NSGA2Tuner(_OptunaTuner):
    """Multi-objective search with Optuna's NSGA-II sampler (``spec.objectives``).

    A genetic algorithm: the first ``population_size`` trials are random; each later
    generation breeds new points (crossover, then mutation) from the parents that rank
    best by non-domination and crowding distance, so the population spreads along the
    Pareto front of the objectives instead of converging on one point. Also searches a
    single objective. Trials that failed or produced no objective are left out; a
    FAILED_GATE trial counts as infeasible. The search's result is its Pareto front
    (:mod:`mlrt.tuning_results`).
    """

    name: ClassVar[str] = "nsga2"
    description: ClassVar[str] = "NSGA-II genetic search (multi-objective: finds the Pareto front)"
    parallel_aware: ClassVar[bool] = True
    multi_objective: ClassVar[bool] = True
    settings: ClassVar[dict[str, Hyperparameter]] = {
        "population_size": Hyperparameter(int, 20, min=2, max=1000, help="trials per generation"),
    }

    def _sampler(self, seed: int, parallel: int, space: list[Parameter]) -> Any:
        import optuna

        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.options.get("population_size") or 20)
