"""Driving a TuningJob: suggest trials, run them as ordinary runs, learn, stop.

A tuning job has a run of its own (the *tuning run*); each trial is a
TrainingJob run with ``parent_id`` = the tuning run and ``trial`` = its
number, owned and launched by the same controller like any other run. Each
reconcile pass over a RUNNING tuning run:

1. reports every newly finished trial to the tuner (``observe``);
2. replays every newly logged step of the objective metric of each running
   trial to the early-stopping rule, and ends a trial PRUNED when it says so;
3. checks completion: too many failed trials (FAILED), the target reached,
   no improvement for N trials, ``completion.max_runtime``, or every trial
   done (``max_trials`` or the tuner's space exhausted);
4. otherwise starts new trials up to ``parallel_trials``.

When the search completes, running trials are cancelled and the best trial's
output (its model) is copied into the tuning run's output as its artifacts.
A controller that takes a running search over (the controller service after
its leader stopped) rebuilds it from the database: the run's finished trials
become the tuner's history, running trials are watched and observed when they
end, and numbering goes on after the last trial.
``--resume-from`` a stopped tuning job continues it: its trials that finished
with a result (SUCCEEDED, PRUNED or FAILED_GATE) count toward ``max_trials``,
seed the tuner and compete for best, and are not run again; trials it lost
when its controller stopped are. ``warm_start`` jobs only seed the tuner.

A tuner or early-stopping rule that raises (or a tuner that suggests something
that is not a mapping of its parameters) ends the search FAILED with one line
naming it and its distribution (:class:`mlrt.plugins.PluginFailure`); its
traceback is kept as an event of the tuning run. The controller goes on.

Gates in the template are constraints: a trial that misses one ends
FAILED_GATE, never becomes the best trial and does not count against
``max_failed_trials``; the tuner sees its objective with its
``gate_violation`` (see :class:`mlrt.tuning.TrialResult`).
"""

from __future__ import annotations

import copy
import shutil
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mlrt import plugins
from mlrt.spec import SpecError
from mlrt.states import RunState
from mlrt.store.models import Run, utcnow
from mlrt.submission import local_prefix
from mlrt.tuning import TrialProgress, TrialResult
from mlrt.tuning_results import WITH_RESULT, best_params, best_trial, inherited_trials, objectives_of, pareto_front
from mlrt.tuning_spec import load_trial, search_space, tuner_choice, tuner_settings

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.controller import Controller


class Study:
    """One tuning run's search, kept in memory by the controller that drives it."""

    def __init__(self, controller: Controller, run: Run):
        self.controller = controller
        self.store = controller.store
        self.run_id = run.id
        job = self.store.get_job(run.job_id)
        self.name = job.name
        self.resolved = job.spec_resolved
        self.spec = self.resolved["spec"]
        self.objectives = objectives_of(self.spec)
        self.metric, self.goal = self.objectives[0].metric, self.objectives[0].goal
        self.multi = len(self.objectives) > 1
        self.inherited = inherited_trials(self.store, run.record.get("resume_from"))
        warm_jobs = {other: inherited_trials(self.store, other) for other in self.spec.get("warm_start") or []}
        warm = [t for trials in warm_jobs.values() for t in trials]
        # Trials the run already has: another controller drove this search and stopped.
        own = self.store.trials(run.id)
        done = [t for t in own if RunState(t.state).is_terminal()]
        self.values: dict[str, float] = {}  # objective of every finished trial, read once
        self.scores: dict[str, tuple[float, ...]] = {}  # every objective, of trials that logged them all
        self.violations: dict[str, float] = {}  # gate_violation of FAILED_GATE trials
        self.valued: set[str] = set()
        self._learn_values(self.inherited + warm + done)
        history = [self._result(t) for t in self.inherited + warm + done]
        self.tuner_name, _ = tuner_choice(self.spec)
        if self.tuner_name not in plugins.tuners():
            raise RuntimeError(plugins.unknown("tuners", self.tuner_name))
        self.tuner = copy.deepcopy(plugins.tuners()[self.tuner_name])
        self.space = search_space(self.spec)
        goal = tuple(o.goal for o in self.objectives) if self.multi else self.goal
        try:
            with plugins.blame("tuners", self.tuner_name):
                self.tuner.configure(tuner_settings(self.spec)[0])
                self.tuner.start(self.space, goal, self.spec["seed"], self.spec["parallel_trials"], history)
        except plugins.PluginFailure as failure:
            self._keep_traceback(failure)
            raise
        stopping = self.spec.get("early_stopping")
        self.stopper_name = stopping["algorithm"] if stopping else ""
        self.stopper = plugins.early_stoppers().get(self.stopper_name) if stopping else None
        if stopping and self.stopper is None:
            raise RuntimeError(plugins.unknown("early_stoppers", self.stopper_name))
        if self.stopper is not None:
            from mlrt.algorithms import resolve_values

            options = {k: v for k, v in stopping.items() if k != "algorithm"}
            self.settings, _ = resolve_values(self.stopper.settings, options, stopping["algorithm"], noun="setting")
        self.finished: dict[str, Run] = {t.id: t for t in done}  # a finished trial never changes again
        self.unfinished: set[str] = {t.id for t in own} - set(self.finished)
        self.finished_series: dict[str, dict[int, float]] = {}
        self.observed: set[str] = {t.id for t in done}
        self.judged: dict[str, int] = {}
        self.unstartable = 0
        self.next_number = max((t.trial or 0 for t in self.inherited + own), default=0) + 1
        self.exhausted = False
        if warm_jobs and "warm_start" not in self.store.params(run.id):
            self._record_warm_start(warm_jobs)

    def _record_warm_start(self, warm_jobs: dict[str, list[Run]]) -> None:
        """Say once, as an event and the param ``warm_start``, which trials seeded the tuner."""
        counts = {job: len(trials) for job, trials in warm_jobs.items()}
        shown = ", ".join(f"{job} ({n} trial{'s' * (n != 1)})" for job, n in counts.items())
        self.store.add_event(
            self.run_id, f"warm start: the tuner learned from {sum(counts.values())} trials of {shown}"
        )
        self.store.log_params(self.run_id, {"warm_start": counts})

    def _learn_values(self, trials: list[Run]) -> None:
        """Read the objective of finished trials not read yet (one query); a finished
        trial's metrics no longer change."""
        new = [t for t in trials if t.id not in self.valued and RunState(t.state).is_terminal()]
        if new:
            ids = [t.id for t in new]
            per_metric = [self.store.last_values(ids, o.metric) for o in self.objectives]
            self.values.update(per_metric[0])
            self.scores.update({i: tuple(v[i] for v in per_metric) for i in ids if all(i in v for v in per_metric)})
            self.valued.update(ids)
        for trial in new:
            if trial.state == RunState.FAILED_GATE.value:
                violation = float(self.store.params(trial.id).get("gate_violation") or 0.0)
                self.violations[trial.id] = violation if violation > 0 else 1.0

    def _result(self, trial: Run) -> TrialResult:
        """A finished trial as the tuner sees it."""
        value = self.values.get(trial.id) if trial.state in WITH_RESULT else None
        values = self.scores.get(trial.id) if self.multi and trial.state in WITH_RESULT else None
        params = dict(trial.record.get("trial_params") or {})
        return TrialResult(trial.trial or 0, params, trial.state, value, self.violations.get(trial.id, 0.0), values)

    def _trials(self) -> list[Run]:
        """Every trial of this run, by number: finished ones from memory, the rest read
        again (with those unfinished last time, to see which ended)."""
        running = []
        for trial in self.store.trials(self.run_id, unfinished_or=self.unfinished):
            if RunState(trial.state).is_terminal():
                self.finished[trial.id] = trial
            else:
                running.append(trial)
        self.unfinished = {t.id for t in running}
        return sorted([*self.finished.values(), *running], key=lambda t: t.trial or 0)

    def _series(self, trial: Run) -> dict[int, float]:
        """The objective's intermediate values of ``trial`` by step (read once when it has finished)."""
        if trial.id in self.finished_series:
            return self.finished_series[trial.id]
        series = {p.step: p.value for p in self.store.metrics(trial.id, self.metric)}
        if RunState(trial.state).is_terminal():
            self.finished_series[trial.id] = series
        return series

    # -- one pass -------------------------------------------------------------

    def _keep_traceback(self, failure: plugins.PluginFailure) -> None:
        """Record a plugin's traceback as an event of the tuning run (its last 8,000 characters)."""
        details = f"; traceback:\n{failure.details[-8000:]}" if failure.details else ""
        self.store.add_event(self.run_id, failure.line + details)

    def reconcile(self, run: Run) -> None:
        """One pass; a tuner or early-stopping rule that raises ends the search FAILED, naming it."""
        try:
            self._reconcile(run)
        except plugins.PluginFailure as failure:
            self._keep_traceback(failure)
            self._complete(run, self._trials(), RunState.FAILED, failure.line)

    def _observe(self, result: TrialResult) -> None:
        with plugins.blame("tuners", self.tuner_name):
            self.tuner.observe(result)

    def _suggest(self, number: int) -> dict[str, Any] | None:
        """The tuner's parameters for trial ``number`` (None: the space is exhausted), checked to
        be a mapping of parameters the space has."""
        with plugins.blame("tuners", self.tuner_name):
            params = self.tuner.suggest(number)
        if params is None:
            return None
        known = {p.name for p in self.space}
        if not isinstance(params, dict) or not set(params) <= known:
            from mlrt.limits import shown

            raise plugins.PluginFailure(
                f"{plugins.label('tuners', self.tuner_name)} suggested {shown(params)} for trial {number}:"
                f" not a mapping of the space's parameters ({', '.join(sorted(known))})",
                "",
            )
        return params

    def _reconcile(self, run: Run) -> None:
        trials = self._trials()
        if run.cancel_requested:
            self._complete(run, trials, RunState.CANCELLED, "cancelled by user")
            return
        self._learn_values(trials)
        for trial in trials:
            if trial.id not in self.observed and RunState(trial.state).is_terminal():
                self.observed.add(trial.id)
                self._observe(self._result(trial))
        if self.stopper is not None:
            self._early_stop(trials)
            trials = self._trials()
        outcome = self._completion(run, trials)
        if outcome is not None:
            self._complete(run, trials, *outcome)
            return
        self._start_trials(run, trials)

    def _early_stop(self, trials: list[Run]) -> None:
        series = {t.id: self._series(t) for t in trials}
        for trial in trials:
            if trial.state != RunState.RUNNING.value:
                continue
            others = [
                TrialProgress(t.trial or 0, series[t.id], RunState(t.state).is_terminal())
                for t in trials
                if t.id != trial.id
            ]
            # Every newly logged step in order, so a rule judging "on arrival at a step" misses none.
            for step in sorted(s for s in series[trial.id] if s > self.judged.get(trial.id, -1)):
                self.judged[trial.id] = step
                seen = {s: v for s, v in series[trial.id].items() if s <= step}
                with plugins.blame("early_stoppers", self.stopper_name):
                    reason = self.stopper.should_stop(
                        TrialProgress(trial.trial or 0, seen, False), others, self.goal, self.settings
                    )
                if reason:
                    self.controller.finish_run(trial, RunState.PRUNED, f"pruned at step {step}: {reason}")
                    break

    def _completion(self, run: Run, trials: list[Run]) -> tuple[RunState, str] | None:
        spec, completion = self.spec, self.spec["completion"]
        finished = self.inherited + [t for t in trials if RunState(t.state).is_terminal()]
        active = [t for t in trials if not RunState(t.state).is_terminal()]
        failed = sum(t.state == "FAILED" for t in finished) + self.unstartable
        if failed > spec["max_failed_trials"]:
            return RunState.FAILED, f"{failed} trials failed, more than max_failed_trials ({spec['max_failed_trials']})"
        best = None if self.multi else best_trial(finished, self.values, self.goal)
        target = completion.get("target")
        if best and target is not None and (best[1] >= target if self.goal == "maximize" else best[1] <= target):
            return (
                RunState.SUCCEEDED,
                f"completion.target {target:g} reached by trial {best[0].trial} ({self.metric}={best[1]:.6g})",
            )
        patience = completion.get("no_improvement_trials")
        if best and patience:
            done = sorted((t for t in finished if t.state == "SUCCEEDED"), key=lambda t: (t.ended_at, t.trial or 0))
            since = len(done) - 1 - done.index(best[0])
            if since >= patience:
                return (
                    RunState.SUCCEEDED,
                    f"best {self.metric} did not improve for {since} trials (completion.no_improvement_trials {patience})",
                )
        limit = completion.get("max_runtime")
        if limit and run.started_at and utcnow() - run.started_at > timedelta(seconds=limit):
            return RunState.SUCCEEDED, f"completion.max_runtime of {limit:g}s reached"
        started = len(self.inherited) + len(trials) + self.unstartable
        if not active and (started >= spec["max_trials"] or self.exhausted):
            why = (
                "the tuner's search space is exhausted"
                if self.exhausted and started < spec["max_trials"]
                else f"all {started} trials finished"
            )
            return RunState.SUCCEEDED, why
        return None

    def _start_trials(self, run: Run, trials: list[Run]) -> None:
        active = sum(not RunState(t.state).is_terminal() for t in trials)
        started = len(self.inherited) + len(trials) + self.unstartable
        while active < self.spec["parallel_trials"] and started < self.spec["max_trials"] and not self.exhausted:
            number = self.next_number
            params = self._suggest(number)
            if params is None:
                self.exhausted = True
                return
            self.next_number += 1
            started += 1
            try:
                self._submit_trial(number, params)
                active += 1
            except SpecError as exc:
                self.unstartable += 1
                self._observe(TrialResult(number, params, "FAILED", None))
                self.store.add_event(self.run_id, f"trial {number} {params} is invalid: {'; '.join(exc.problems)}")

    def _submit_trial(self, number: int, params: dict[str, Any]) -> None:
        from mlrt.secrets import SecretError, reveal_resolved
        from mlrt.submission import submit

        # The template's env values are stored encrypted; the trial is built from them in clear
        # (checked like the user's spec) and submit encrypts them again (mlrt.secrets).
        try:
            template = reveal_resolved(self.resolved)
        except SecretError as exc:
            raise SpecError([str(exc)]) from None
        loaded = load_trial(template, f"{self.name[:56]}-t{number:03d}", params)
        run_id = submit(self.store, loaded, trial_of=(self.run_id, number, params), owner=self.controller.owner)
        self.unfinished.add(run_id)  # read next pass even if it has already ended by then

    # -- the end ----------------------------------------------------------------

    def _complete(self, run: Run, trials: list[Run], state: RunState, reason: str) -> None:
        for trial in trials:
            if not RunState(trial.state).is_terminal():
                self.controller.finish_run(trial, RunState.CANCELLED, f"the tuning job ended: {reason}")
        finished = self.inherited + self._trials()
        self._learn_values(finished)
        if self.multi:
            state, reason = self._front(finished, state, reason)
            self.controller.finish_run(run, state, reason)
            return
        best = best_trial(finished, self.values, self.goal)
        if best is None and state is RunState.SUCCEEDED:
            state, reason = RunState.FAILED, f"{reason}; no trial produced {self.metric}"
        if best is not None:
            trial, value = best
            self._promote(trial)
            self.store.log_params(
                self.run_id,
                {"best_trial": trial.id, "best_value": value, "best_params": best_params(self.spec, trial)},
            )
            reason = f"{reason}; best trial {trial.trial} ({trial.id}) {self.metric}={value:.6g}"
        self.controller.finish_run(run, state, reason)

    def _front(self, finished: list[Run], state: RunState, reason: str) -> tuple[RunState, str]:
        """Record the Pareto front of a multi-objective search (params ``pareto_front``, trial ids
        by number, and ``pareto_values``); the state and reason that end the search."""
        front = pareto_front(finished, self.scores, self.objectives)
        if not front:
            if state is RunState.SUCCEEDED:
                return RunState.FAILED, f"{reason}; no trial produced {', '.join(o.metric for o in self.objectives)}"
            return state, reason
        self.store.log_params(
            self.run_id,
            {
                "pareto_front": [t.id for t in front],
                "pareto_values": {
                    t.id: dict(zip([o.metric for o in self.objectives], self.scores[t.id], strict=True)) for t in front
                },
            },
        )
        numbers = ", ".join(str(t.trial) for t in front)
        return state, f"{reason}; Pareto front of {len(front)} trial{'s' * (len(front) != 1)}: {numbers}"

    def _promote(self, trial: Run) -> None:
        """Copy the best trial's output (model, predictions) into the tuning run's output."""
        source = local_prefix(trial.output_uri, trial.id) / "output"
        target = local_prefix(self.store.get_run(self.run_id).output_uri, self.run_id) / "output"
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
