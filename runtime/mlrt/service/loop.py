"""The controller service's reconcile loop: the local controller, driven by the leader.

A background thread asks for leadership every pass (:mod:`mlrt.service.leader`).
While it leads, it takes over the runs of API-submitted jobs that it does not
drive yet, then runs one :meth:`Controller.reconcile` pass. Taking a run over:

- QUEUED: claimed, then launched by the pass like any queued run;
- STARTING/RUNNING on a backend whose workers outlive a controller
  (containers, pods): adopted, so the running workers are watched again,
  never launched twice;
- STARTING/RUNNING on the local backend (the workers died with the old
  leader): the attempt is closed as interrupted and the run queued again
  for one more attempt (the user's retry budget is not charged), which
  resumes from the run's latest checkpoint; points already recorded stay,
  and an algorithm that resumes discards the steps it will log again, so the
  series ends up with every step once;
- a tuning run: claimed; the pass rebuilds its search from the database
  (finished trials are the tuner's history and are not run again; its
  running trials are taken over like any run, above) and goes on in place.

A pass that fails (the database is unreachable, full or damaged) is logged
once per distinct error and shown by ``/readyz`` as degraded until a pass
succeeds again; the loop keeps passing, so the service recovers by itself
when the database returns. A run that cannot be taken over or handled is the
controller's per-run matter (:meth:`Controller.reconcile`): it never stops
the other runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from mlrt.controller import FIRST_POLL, Controller, WorkerTracking, adoptable, close_orphaned_attempt
from mlrt.service import auth
from mlrt.service.leader import LeaderLock
from mlrt.service.telemetry import Telemetry
from mlrt.states import RunState
from mlrt.store import Store
from mlrt.store.engine import is_database_fault
from mlrt.store.models import Run

STANDBY_RETRY = 1.0

_log = logging.getLogger("mlrt.service")


class ServiceTracking(WorkerTracking):
    """Workers report to the service's HTTP tracking endpoint with a token for their run; their
    logs are kept in the database, where every replica serves them."""

    ships_logs = True

    def __init__(self, store: Store, advertise_url: str):
        super().__init__(store)
        self.advertise_url = advertise_url.rstrip("/")

    def environment(self, run_id: str) -> tuple[dict[str, str], list[Any]]:
        row, token = auth.new_token("worker", user=f"run:{run_id}", run_id=run_id)
        return {"MLRT_TRACKING_URI": self.advertise_url, "MLRT_TRACKING_TOKEN": token}, [row]

    def attempt_ended(self, run_id: str) -> None:
        auth.revoke_run_tokens(self.store, run_id)


class ServiceLoop:
    """Leader election plus reconcile passes, in a daemon thread."""

    def __init__(self, store: Store, advertise_url: str, telemetry: Telemetry, *, poll_interval: float = 0.2):
        self.store = store
        self.telemetry = telemetry
        self.poll_interval = poll_interval
        self.controller = Controller(store, poll_interval=poll_interval, tracking=ServiceTracking(store, advertise_url))
        self.leader = LeaderLock(store)
        self._stop = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self.controller.wakeup_fds.append(self._wake_read)
        self._thread = threading.Thread(target=self._run, name="mlrt-reconcile", daemon=True)
        self.error: str | None = None
        """The error the last pass raised, None when it succeeded (``/readyz`` says degraded meanwhile)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current pass, then give up leadership (workers keep running)."""
        self._stop.set()
        self.wake()
        self._thread.join(timeout)
        self.leader.release()

    def wake(self) -> None:
        """Start the next pass now (a job was submitted or cancelled)."""
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass

    def _drain(self) -> bool:
        """Empty the wake-up pipe; True when something was written to it."""
        woken = False
        try:
            while os.read(self._wake_read, 4096):
                woken = True
        except BlockingIOError:
            pass
        return woken

    def _run(self) -> None:
        delay = FIRST_POLL
        last_take_over = float("-inf")
        while not self._stop.is_set():
            try:
                leading = self.leader.acquire()
            except Exception as exc:  # the database is unreachable: stay a standby, ask again
                leading = False
                self._failed(f"leader election: {type(exc).__name__}: {exc}", exc)
            self.telemetry.leader.set(1 if leading else 0)
            if not leading:
                self._stop.wait(STANDBY_RETRY)
                continue
            started = time.perf_counter()
            try:
                # Taking over is a query over every API run: at once when this replica's API
                # was used, else at most every poll interval (another replica's submissions).
                changed = False
                if self._drain() or started - last_take_over >= self.poll_interval:
                    changed = self.take_over()
                    last_take_over = started
                changed = self.controller.reconcile() | changed
                if self.error is not None:
                    _log.info("reconcile passes succeed again")
                self.error = None
            except Exception as exc:  # keep serving; the next pass starts from the database again
                changed = False
                self._failed(f"reconcile: {type(exc).__name__}: {exc}", exc)
            self.telemetry.reconcile_seconds.observe(time.perf_counter() - started)
            if changed:
                delay = FIRST_POLL
                continue
            self.controller.wait(delay)
            delay = min(self.poll_interval, delay * 1.5)

    def _failed(self, error: str, exc: Exception) -> None:
        """Record a failed pass for ``/readyz``; log it when the error is new (not every pass)."""
        self.telemetry.reconcile_failures.inc()
        first_line = (error.splitlines() or [error])[0]
        if first_line != self.error:
            _log.error("%s", first_line, exc_info=None if is_database_fault(exc) else exc)
        self.error = first_line

    # -- taking runs over ----------------------------------------------------

    def take_over(self) -> bool:
        """Drive every API run not driven yet (see the module docstring); True if any."""
        runs = self.store.project_runs_not_owned_by(self.controller.owner)
        # New submissions (queued, never driven) in one statement: a burst of them is the common case.
        fresh = [run.id for run in runs if run.owner is None and run.state == RunState.QUEUED.value]
        self.store.claim_unowned(fresh, self.controller.owner)
        for run in runs:
            if run.owner is None and run.state == RunState.QUEUED.value:
                continue
            try:
                self._take_over(run)
            except Exception as exc:
                if is_database_fault(exc):
                    raise
                # Whatever its backend said, the run is this controller's now: the
                # pass records the trouble on the run and fails it if it persists.
                _log.warning("run %s: taking it over raised", run.id, exc_info=exc)
                self.store.transfer_owner(run.id, run.owner, self.controller.owner)
        return bool(runs)

    def _take_over(self, run: Run) -> None:
        if (
            run.state in (RunState.QUEUED.value, RunState.FINALIZING.value)
            or run.owner is None
            or self.controller.kind(run) == "TuningJob"
        ):
            self.store.transfer_owner(run.id, run.owner, self.controller.owner)
        elif adoptable(self.store, run):
            if self.store.transfer_owner(run.id, run.owner, self.controller.owner):
                self.store.add_event(run.id, f"controller {self.controller.owner} adopted the running workers")
        else:
            self._requeue(run)

    def _requeue(self, run: Run) -> None:
        if not self.store.transfer_owner(run.id, run.owner, self.controller.owner):
            return
        reason = f"the controller stopped during attempt {run.attempts}; its workers stopped with it"
        close_orphaned_attempt(self.store, run.id, RunState.FAILED, reason, grace_period=2.0)
        self.controller.tracking.attempt_ended(run.id)
        self.store.transition(
            run.id,
            RunState.QUEUED,
            f"{reason}; attempt {run.attempts + 1} resumes from the latest checkpoint",
            max_attempts=run.max_attempts + 1,
            not_before=None,
        )
