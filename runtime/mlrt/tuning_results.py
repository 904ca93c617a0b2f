"""A tuning job's result, by one rule everywhere: its trials, its best trial, its Pareto front.

``mlrt status``, ``mlrt runs compare JOB``, the web UI and the tuning run's own
``best_trial``/``best_params`` params all read the result through this module,
so they name the same trial, also after ``--resume-from``:

- The *trials of a search* are its own trials plus, for a job resumed from
  earlier ones, the earlier jobs' trials that finished with a result
  (SUCCEEDED, PRUNED, FAILED_GATE), following the resume chain; those were
  not run again and competed for best. ``warm_start`` jobs only seed the tuner:
  their trials are not the job's.
- The *objective* of a trial is the last value of each objective metric.
- The *best trial* (one objective) is the SUCCEEDED trial with the best
  objective; the earliest of equal ones (by trial number) wins.
- The *Pareto front* (several objectives, ``spec.objectives``) is the set of
  SUCCEEDED trials with every objective that no other such trial dominates
  (at least as good in every objective and better in one), by trial number.
- ``best_params`` are the winning trial's parameters that applied to it:
  a parameter limited to other algorithms (``algorithms: [...]``) is left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlrt.tuning_spec import applicable

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.store import Store
    from mlrt.store.models import Run

WITH_RESULT = ("SUCCEEDED", "PRUNED", "FAILED_GATE")
"""Trial states that carry an objective value: such trials are never run again."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective of a search: a metric the trials log and its direction."""

    metric: str
    goal: str

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a > b if self.goal == "maximize" else a < b


def objectives_of(spec: Mapping[str, Any]) -> list[Objective]:
    """The objectives of a TuningJob's ``spec``: ``objectives`` if given, else the one ``objective``."""
    listed = spec.get("objectives") or [spec["objective"]]
    return [Objective(o["metric"], o["goal"]) for o in listed]


def inherited_trials(store: Store, resume_from: str | None) -> list[Run]:
    """The trials a search resumed from ``resume_from`` took over: that job's trials that finished
    with a result, following its own resume chain, oldest job first."""
    if not resume_from:
        return []
    run = store.get_run(resume_from)
    own = [t for t in store.trials(resume_from) if t.state in WITH_RESULT]
    return inherited_trials(store, run.record.get("resume_from")) + own


def search_trials(store: Store, tuning_run: Run) -> list[Run]:
    """Every trial of the search of ``tuning_run``: inherited ones first, then its own, by number."""
    return inherited_trials(store, tuning_run.record.get("resume_from")) + store.trials(tuning_run.id)


def scores(store: Store, trials: Sequence[Run], objectives: Sequence[Objective]) -> dict[str, tuple[float, ...]]:
    """Each trial's objective values, in ``objectives`` order (trials missing one are left out)."""
    ids = [t.id for t in trials]
    per_metric = [store.last_values(ids, o.metric) for o in objectives]
    return {i: tuple(values[i] for values in per_metric) for i in ids if all(i in values for values in per_metric)}


def best_trial(trials: Sequence[Run], values: Mapping[str, float], goal: str) -> tuple[Run, float] | None:
    """The SUCCEEDED trial with the best value in ``values`` (run id -> objective), the earliest
    by trial number among equal ones, and that value; None when no SUCCEEDED trial has one."""
    scored = sorted(
        ((t, values[t.id]) for t in trials if t.state == "SUCCEEDED" and t.id in values),
        key=lambda item: item[0].trial or 0,
    )
    if not scored:
        return None
    pick = max if goal == "maximize" else min
    return pick(scored, key=lambda item: item[1])


def pareto_front(
    trials: Sequence[Run], values: Mapping[str, tuple[float, ...]], objectives: Sequence[Objective]
) -> list[Run]:
    """The SUCCEEDED trials with all objectives that no other one dominates, by trial number."""
    scored = sorted((t for t in trials if t.state == "SUCCEEDED" and t.id in values), key=lambda t: t.trial or 0)

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        pairs = list(zip(a, b, objectives, strict=True))
        return all(not o.better(y, x) for x, y, o in pairs) and any(o.better(x, y) for x, y, o in pairs)

    return [t for t in scored if not any(dominates(values[o.id], values[t.id]) for o in scored if o is not t)]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search found so far: its trials, their objective values, the best trial and its
    value (one objective) or the Pareto front (several)."""

    objectives: list[Objective]
    trials: list[Run]
    values: dict[str, tuple[float, ...]]
    best: tuple[Run, float] | None
    front: list[Run]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def winners(self) -> list[Run]:
        """The best trial, or the Pareto front's trials."""
        return list(self.front) if self.multi else ([self.best[0]] if self.best else [])


def search_result(store: Store, tuning_run: Run, spec: Mapping[str, Any]) -> SearchResult:
    """The result of the search of ``tuning_run`` (TuningJob ``spec``) as the module docstring defines it."""
    objectives = objectives_of(spec)
    trials = search_trials(store, tuning_run)
    values = scores(store, trials, objectives)
    if len(objectives) > 1:
        return SearchResult(objectives, trials, values, None, pareto_front(trials, values, objectives))
    first = {run_id: v[0] for run_id, v in values.items()}
    return SearchResult(objectives, trials, values, best_trial(trials, first, objectives[0].goal), [])


def best_params(spec: Mapping[str, Any], trial: Run) -> dict[str, Any]:
    """The parameters of ``trial`` that applied to it (see the module docstring)."""
    return applicable(dict(spec), dict(trial.record.get("trial_params") or {}))
