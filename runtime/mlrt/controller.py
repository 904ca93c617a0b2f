"""The controller: a reconcile loop that drives runs to a terminal state.

Each pass looks at the runs this controller owns and moves each one step:
a QUEUED run whose backoff has passed is materialized, planned and launched
(STARTING -> RUNNING); a RUNNING run is polled, its log scanned for metric
patterns, and it is cancelled, timed out, retried, failed or finished as its
workers' states say. The database is the source of truth: every decision is
made from rows, and every transition is an event with a reason.

A controller owns the runs it is asked to drive (``owner`` =
``host:pid:start-time``) and refreshes a heartbeat. :func:`reap_orphans`
deals with the runs whose owner died, so no run stays RUNNING forever after
its controller was killed; ``mlrt status``, ``mlrt logs -f`` and every new
controller call it. Workers of backends that outlive their controller
(containers, pods) are adopted: a new detached controller takes the run over
(compare-and-set on the owner, so only one does), re-attaches to the running
workers through the backend's ``adopt`` and drives the run to its end without
launching it twice. Other runs (local processes die with their controller)
are failed with the reason.

``python -m mlrt.controller --db URL RUN_ID...`` runs a controller until the
given runs finish; ``mlrt submit --detach`` starts one that way.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import heapq
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mlrt import artifacts, failures, plugins, s3, s3sync, sanity
from mlrt.admission import Admission
from mlrt.folders import NotWritable, ensure_writable
from mlrt.launchers import LaunchContext, LaunchDeferred, Launcher, LaunchError, LaunchRequest, WorkerRequest
from mlrt.lineage import note_image
from mlrt.logscan import LogMetricScanner, LogRecords, last_line
from mlrt.logship import LogShipper
from mlrt.records import RunRecord
from mlrt.sdk import LOG_TRACKING_URI
from mlrt.secrets import mask_request
from mlrt.states import RunState
from mlrt.store import Store, mlrt_home
from mlrt.store.engine import is_database_fault
from mlrt.store.models import Attempt, Run, utcnow
from mlrt.store.repository import BusySignature
from mlrt.submission import launch_context, local_prefix
from mlrt.tuning_controller import Study
from mlrt.tuning_spec import tuner_choice

if TYPE_CHECKING:  # pragma: no cover
    from mlrt import report_runner

HEARTBEAT_EVERY = 2.0
FIRST_POLL = 0.005
# A run whose owner runs elsewhere counts as orphaned after this long without a heartbeat.
HEARTBEAT_STALE = timedelta(seconds=30)
# A QUEUED run nobody claimed (its submitter died before starting a controller).
UNCLAIMED_STALE = timedelta(seconds=60)
# A run whose handling raises is tried again after 1, 2, 4... s and failed at the last try.
RECONCILE_TRIES = 4
RECONCILE_BACKOFF = 1.0
# Workers that could not be stopped (the backend unreachable) are stopped again after 1, 2, 4... s, up to this;
STOP_RETRY_CAP = 60.0
# and their run ends anyway (saying they may still run) when stops have failed for this long.
STOP_GIVE_UP = 900.0
# A pass reads the rows of the runs it owns again at least this often, however often the
# database's digest of them (Store.active_digest) says that nothing changed.
SIGNATURE_REREAD = 60.0
FINALIZE_CONCURRENCY = 4
# A running run's log bytes go to the database at most this often (and once at its end).
SHIP_EVERY = 1.0

NOT_RETRIED = "not retried: another attempt would meet the same problem"

_log = logging.getLogger("mlrt.controller")


@dataclasses.dataclass
class _Trouble:
    """Consecutive failures to reconcile one run, and when to try it again."""

    failures: int = 0
    retry_at: float = 0.0


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start-time``, unique for a process even when pids are reused."""
    import psutil

    process = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def owner_alive(run: Run, heartbeats: Mapping[str, datetime]) -> bool:
    """Whether the controller that owns ``run`` is still there to drive it: on this host, its
    process; elsewhere, its last heartbeat (``heartbeats``, :meth:`Store.owner_heartbeats`)
    or, before its first, when it took the run over."""
    if run.owner is None:
        return utcnow() - run.created_at < UNCLAIMED_STALE
    host, pid, started = run.owner.rsplit(":", 2)
    if host == socket.gethostname():
        import psutil

        try:
            process = psutil.Process(int(pid))
            # A killed controller whose parent has not reaped it yet is a zombie: gone.
            return f"{process.create_time():.2f}" == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    last = max(filter(None, (heartbeats.get(run.owner), run.heartbeat_at)), default=None)
    return last is not None and utcnow() - last < HEARTBEAT_STALE


def close_orphaned_attempt(store: Store, run_id: str, state: RunState, reason: str, grace_period: float) -> None:
    """End the latest attempt of a run no controller drives: stop whatever is left of
    its workers, then record the attempt as ``state`` with ``reason``."""
    attempt = store.latest_attempt(run_id)
    if attempt is None or attempt.ended_at is not None:
        return
    launcher = plugins.launchers().get(attempt.backend) if attempt.handle else None
    if launcher is not None:
        launcher.stop(attempt.handle, grace_period)
        launcher.cleanup(attempt.handle)
    store.finish_attempt(attempt.id, state, reason, None)


def request_cancel(store: Store, run: Run, who: str) -> bool:
    """Cancel ``run`` for ``who`` (``mlrt cancel``, the web UI). When a controller drives it, ask that
    controller to stop it (SIGTERM, its grace period, SIGKILL) and return True; when none does,
    stop what is left of its workers here, end it CANCELLED and return False."""
    if run.owner is not None and owner_alive(run, store.owner_heartbeats()):
        store.update_run(run.id, cancel_requested=True)
        store.add_event(run.id, f"cancel requested by {who}")
        return True
    close_orphaned_attempt(store, run.id, RunState.CANCELLED, "cancelled by user", grace_period=5.0)
    reason = f"cancelled by {who} (no controller was driving it)"
    store.transition(run.id, RunState.CANCELLED, reason, ended_at=utcnow())
    return False


def spawn_controller(db_url: str, run_ids: list[str], log_file: Path, *, adopt: bool = False) -> subprocess.Popen:
    """Start a detached controller process for ``run_ids``, logging to ``log_file``.

    With ``adopt`` it drives only the runs whose ownership the caller hands it
    (:meth:`Store.transfer_owner`) instead of claiming them."""
    argv = [sys.executable, "-m", "mlrt.controller", "--db", db_url, *(["--adopt"] if adopt else []), *run_ids]
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")
    except OSError:
        # A read-only or full log folder: the controller probes its runs' log folders
        # before launching and fails them naming the folder; its own output is lost.
        out = open(os.devnull, "ab")
    with out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def adoptable(store: Store, run: Run) -> bool:
    """Whether ``run``'s workers outlive its controller, so another can take it over (a
    FINALIZING run has no workers left: another controller finalizes it again)."""
    if run.state == RunState.FINALIZING.value:
        return True
    if run.state not in (RunState.RUNNING.value, RunState.STARTING.value):
        return False
    attempt = store.latest_attempt(run.id)
    if attempt is None or attempt.number != run.attempts or attempt.ended_at is not None:
        return False
    launcher = plugins.launchers().get(attempt.backend)
    return launcher is not None and launcher.survives_controller


def _hand_over(store: Store, run: Run) -> bool:
    """Start a controller that adopts ``run``; False when another process got there first."""
    from mlrt.submission import log_dir

    child = spawn_controller(store.url, [run.id], log_dir(run.id, 0).parent / "controller.log", adopt=True)
    heir = process_identity(child.pid)
    if store.transfer_owner(run.id, run.owner, heir):
        who = f"controller {run.owner}" if run.owner else "no controller"
        store.add_event(run.id, f"{who} stopped; controller {heir} adopted the running workers")
        return True
    child.kill()
    child.wait()
    return False


def reap_orphans(store: Store) -> list[str]:
    """Hand over or fail every active run whose controller is gone; return their ids."""
    reaped = []
    heartbeats = store.owner_heartbeats()
    for run in store.active_runs():
        if owner_alive(run, heartbeats):
            continue
        if adoptable(store, run):
            _hand_over(store, run)
            continue
        who = f"controller {run.owner}" if run.owner else "no controller"
        reason = f"{who} stopped while the run was {run.state}; its workers were stopped"
        if store.get_job(run.job_id).kind == "TuningJob":
            reason += (
                f"; continue the search with `mlrt submit SPEC --resume-from {run.id}`"
                " (its finished trials are not run again)"
            )
        try:
            close_orphaned_attempt(store, run.id, RunState.FAILED, reason, grace_period=2.0)
        except Exception as exc:
            if is_database_fault(exc):
                raise
            # Its workers may still run: the run stays as it is, and the next look tries again.
            _log.warning("run %s: stopping the workers its controller left raised", run.id, exc_info=exc)
            continue
        try:
            store.transition(run.id, RunState.FAILED, reason)
        except Exception:  # another process reaped or finished it first
            continue
        reaped.append(run.id)
    return reaped


@dataclasses.dataclass
class _View:
    """What a pass knows of the runs its controller owns, made when their rows are read
    (:meth:`Controller._busy_view`) and kept while the database's digest of them stays the same."""

    signature: BusySignature
    ids: frozenset[str]
    """Every busy run (:meth:`Store.busy_runs`)."""
    running: frozenset[str]
    """The RUNNING runs without a cancel request: a pass handles one only when it is due for a
    poll, unsettled or past its ``max_runtime``."""
    others: list[tuple[str, str, bool]]
    """``(id, state, cancel_requested)`` of the rest, which every pass handles."""
    unsettled: set[str]
    """Running runs not settled yet (:meth:`Controller._settled`): every pass handles them until they are."""


@dataclasses.dataclass
class _Active:
    """What the controller keeps in memory about a launched attempt."""

    attempt: Attempt
    launcher: Launcher
    handle: dict[str, Any]
    scanner: LogMetricScanner
    spec: dict[str, Any]
    shipper: LogShipper | None
    """Copies the workers' logs into the database, where every controller replica reads them
    (for the controller service, :attr:`WorkerTracking.ships_logs`)."""
    shipped_at: float = 0.0
    waiting: dict[int, str] = dataclasses.field(default_factory=dict)
    """The last reason each worker gave for not running yet (reported once as an event)."""
    stop_failures: int = 0
    """Tries to stop the workers that raised in a row (the backend could not be reached): the run
    stays active, and they are stopped again from ``stop_again_at`` (:meth:`Controller._stop_again`)."""
    stop_again_at: float = 0.0
    stop_failing_since: float = 0.0


@dataclasses.dataclass
class _Launched:
    """What a launch in a backend's pool came to: workers (``handle``), or why not."""

    attempt: Attempt | None = None
    launcher: Launcher | None = None
    request: LaunchRequest | None = None
    handle: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    failed: str = ""
    """The attempt failed (retried if the run has retries left)."""
    fatal: str = ""
    """The run fails without a retry (a folder it cannot write, a ``LaunchError(retry=False)``)."""
    deferred: LaunchDeferred | None = None
    """The backend could not launch now (:class:`~mlrt.launchers.LaunchDeferred`): queued again, not charged."""


class _Planned(NamedTuple):
    """A planned attempt, and what is to be stored before it launches."""

    ctx: LaunchContext
    request: LaunchRequest
    record: dict[str, Any] | None
    """The run's record with what planning added (data hashes); None when unchanged."""
    rows: list[Any]
    """Rows for the workers (their tracking token, :meth:`WorkerTracking.environment`)."""


@dataclasses.dataclass
class _Finalizing:
    """An attempt being closed in the finalizing pool: a run whose workers succeeded being
    finalized, or (``ending``) one whose workers are being stopped and cleaned up."""

    attempt: Attempt
    future: Future
    abandoned: threading.Event
    ending: tuple[RunState, str, int | None] | None = None
    """For an ending: the state, reason and exit code it ends with (the pool may change the first two:
    an output that did not arrive)."""
    failed_worker: int | None = None
    """For an ending: the rank of the worker whose failure ended the attempt. Its log's last
    lines are kept with the attempt, and the attempt is retried if the run has retries left
    and ``spec.retries.on`` covers the failure (:mod:`mlrt.failures`)."""
    active: _Active | None = None
    """For an ending: the attempt as it ran, which is active again when its workers could not be stopped."""


class _StopFailed(Exception):
    """Stopping an attempt's workers raised (its ``__cause__``): they may still run."""


_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
# Written when work in a pool ends (or a stop signal arrives), so a controller waiting between
# passes wakes up. Each process has its own: a child forked from the resident process
# (:mod:`mlrt.resident`), which imported this module, must not wake its siblings or drain their wakeups.
_DONE_READ, _DONE_WRITE = -1, -1


def _new_wakeup_pipe() -> None:
    global _DONE_READ, _DONE_WRITE
    for fd in (_DONE_READ, _DONE_WRITE):
        if fd >= 0:
            os.close(fd)
    _DONE_READ, _DONE_WRITE = os.pipe()
    os.set_blocking(_DONE_READ, False)
    os.set_blocking(_DONE_WRITE, False)


_new_wakeup_pipe()
os.register_at_fork(after_in_child=_new_wakeup_pipe)


class _Abandoned(Exception):
    """The run was cancelled or timed out while it was finalizing: stop finalizing it."""


def pool_size(variable: str, backend: str, default: int) -> int:
    """A pool's size from ``variable``: ``N`` for every backend or ``BACKEND=N,...``; else ``default``.
    An unusable value is a :class:`mlrt.settings.SettingError` naming the variable (one line)."""
    from mlrt.settings import SettingError

    value = os.environ.get(variable, "").strip()
    sizes = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, size = part.rpartition("=")
        if not size.isdigit() or int(size) < 1:
            raise SettingError(f"{variable}: {value!r} is not N or BACKEND=N,... with N a whole number from 1")
        sizes[name.strip() or "*"] = int(size)
    return sizes.get(backend, sizes.get("*", default))


def check_pool_sizes() -> None:
    """Read ``MLRT_LAUNCH_CONCURRENCY`` and ``MLRT_FINALIZE_CONCURRENCY`` once, so a bad value stops a
    controller at its start rather than in the middle of a pass."""
    pool_size("MLRT_LAUNCH_CONCURRENCY", "", 1)
    pool_size("MLRT_FINALIZE_CONCURRENCY", "", 1)


LAUNCH_DEFER_LIMIT = 1800.0
"""Seconds a run's launch may keep being deferred (:class:`~mlrt.launchers.LaunchDeferred`, a
cluster throttling its API) before the attempt counts as failed, charged to the run's retries: a
cluster that never stops throttling must not hold a run QUEUED for ever. ``MLRT_LAUNCH_DEFER_LIMIT``
sets another number of seconds."""


def launch_defer_limit() -> float:
    """:data:`LAUNCH_DEFER_LIMIT`, or ``MLRT_LAUNCH_DEFER_LIMIT``; an unusable value is a
    :class:`mlrt.settings.SettingError` naming the variable (one line)."""
    from mlrt.settings import SettingError

    value = os.environ.get("MLRT_LAUNCH_DEFER_LIMIT", "").strip()
    if not value:
        return LAUNCH_DEFER_LIMIT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 30 * 86400:
        raise SettingError(f"MLRT_LAUNCH_DEFER_LIMIT: {value!r} is not a number of seconds from 0 to 2592000")
    return seconds


class WorkerTracking:
    """Where an attempt's workers send metrics and params (``MLRT_TRACKING_URI``).

    The default is the metadata database itself, which local workers can
    open. The controller service replaces it with its HTTP tracking endpoint
    and a run-scoped token per attempt (:mod:`mlrt.service`)."""

    ships_logs = False
    """Whether worker logs are copied into the database for other processes to serve (the
    controller service's replicas); one user's controller serves them from the files."""

    def __init__(self, store: Store):
        self.store = store

    def environment(self, run_id: str) -> tuple[dict[str, str], list[Any]]:
        """Variables that tell the workers of ``run_id`` where and how to report, and the
        rows (such as a token) to store before the workers start."""
        return {"MLRT_TRACKING_URI": self.store.url}, []

    def attempt_ended(self, run_id: str) -> None:
        """The attempt's workers are gone: revoke whatever was issued to them."""


class Controller:
    """Drives the runs it owns; see the module docstring."""

    def __init__(self, store: Store, *, poll_interval: float = 0.1, tracking: WorkerTracking | None = None):
        self.store = store
        self.poll_interval = poll_interval
        self.tracking = tracking or WorkerTracking(store)
        self.wakeup_fds: list[int] = []
        """More descriptors that end a wait between passes (the service's submissions)."""
        self.owner = process_identity()
        self._active: dict[str, _Active] = {}
        self._launching: dict[str, tuple[str, Future]] = {}  # run id -> (backend, its launch)
        self._finalizing: dict[str, _Finalizing] = {}
        self._polled: dict[str, str] = {}  # run id -> its backend, for each running run polled at least once
        self._poll_queues: dict[str, dict[str, float]] = {}  # backend -> {run id: last poll}, oldest poll first
        self._deadline_heap: list[tuple[datetime, str]] = []  # (max_runtime reached, run id) of running runs
        self._overdue: set[str] = set()  # running runs past their max_runtime, handled every pass until they end
        self._stop_retries: dict[str, float] = {}  # run id -> when to poll it again to stop its workers again
        self._view: _View | None = None
        self._view_until = 0.0
        self._deferred_since: dict[str, float] = {}  # run id -> when its launch was first deferred
        self.launch_defer_limit = launch_defer_limit()
        host_backends = frozenset(name for name, launcher in plugins.launchers().items() if launcher.runs_on_host)
        self.admission = Admission(store, host_backends)
        self.wakeup_fds.append(_DONE_READ)
        check_pool_sizes()
        self._ended_this_pass: set[str] = set()
        self._studies: dict[str, Study] = {}
        self._kinds: dict[str, str] = {}
        self._deadlines: dict[str, datetime | None] = {}
        """When each running training run reaches its ``max_runtime`` (None: never), once handled."""
        self._troubles: dict[str, _Trouble] = {}
        self._last_heartbeat = 0.0
        self._stop_signal: int | None = None

    @contextmanager
    def stopped_by_signals(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
        """While inside, ``signals`` do not interrupt this thread wherever it happens to be
        (half-way through a database write, a launch, a lock): they are noted, wake the wait
        between passes, and :meth:`run_until_done` raises :class:`KeyboardInterrupt` at the
        start of its next pass, where nothing is half done; the caller then cancels
        (:meth:`cancel_all`). Call from the main thread (the only one that gets signals)."""

        def note(signum: int, _frame: Any) -> None:
            self._stop_signal = signum
            try:
                os.write(_DONE_WRITE, b"!")
            except BlockingIOError:
                pass  # full: a wakeup is pending anyway

        previous = {signum: signal.signal(signum, note) for signum in signals}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- ownership -----------------------------------------------------------

    def claim(self, run_id: str) -> None:
        """Take ownership of ``run_id``."""
        self.store.update_run(run_id, owner=self.owner, heartbeat_at=utcnow())

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_EVERY:
            self.store.heartbeat(self.owner)
            self._last_heartbeat = now

    # -- the loop ------------------------------------------------------------

    def run_until_done(
        self, run_ids: list[str], on_tick: Callable[[], None] | None = None, *, adopt: bool = False
    ) -> None:
        """Reconcile until every run in ``run_ids`` is terminal.

        With ``adopt`` the runs are not claimed: the process that started this
        controller hands them over (see :func:`reap_orphans`); a run it did not
        get within a few seconds is left to whoever owns it."""
        reap_orphans(self.store)
        if adopt:
            run_ids = self._await_handover(run_ids)
        else:
            for run_id in run_ids:
                self.claim(run_id)
        delay = FIRST_POLL
        while True:
            if self._stop_signal is not None:
                raise KeyboardInterrupt(f"signal {signal.Signals(self._stop_signal).name}")
            changed = self.reconcile()
            if on_tick is not None:
                on_tick()
            if not self.busy() and all(RunState(self.store.get_run(r).state).is_terminal() for r in run_ids):
                return
            # Right after something changed (a launch, an exit, a new trial) pass
            # again at once: one change often enables the next (a trial ends, the
            # tuning run submits another, which is launched). Otherwise wait, for
            # longer and longer up to the poll interval, or until a launcher
            # signals that a worker exited.
            if changed:
                delay = FIRST_POLL
                continue
            self.wait(delay)
            delay = min(self.poll_interval, delay * 1.5)

    def _await_handover(self, run_ids: list[str], timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            mine = [r for r in run_ids if self.store.get_run(r).owner == self.owner]
            if len(mine) == len(run_ids) or time.monotonic() > deadline:
                return mine
            time.sleep(0.05)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a launcher signals that a worker changed, or a
        launch or finalization in a pool ended."""
        fds = [fd for launcher in plugins.launchers().values() for fd in launcher.wakeup_fds()] + self.wakeup_fds
        poller = select.poll()  # not select(): a long-lived process may hold descriptors past 1024
        for fd in fds:
            poller.register(fd, select.POLLIN)
        if any(fd == _DONE_READ for fd, _ in poller.poll(seconds * 1000)):
            try:
                while os.read(_DONE_READ, 4096):
                    pass
            except BlockingIOError:
                pass

    def reconcile(self) -> bool:
        """One pass over the runs this controller owns; True when any of them changed
        state, ended or appeared during it.

        A pass never waits for a backend or for finalizing: launches run in a
        pool per backend (:attr:`Launcher.launch_concurrency`, or
        ``MLRT_LAUNCH_CONCURRENCY`` = ``N`` or ``BACKEND=N,...``) and
        finalizing (reports, gates, artifact hashing and upload) in another
        (``MLRT_FINALIZE_CONCURRENCY``, default 4); the pass records what they
        came to. Queued runs are launched in the order, and within the limits,
        of :mod:`mlrt.admission`. A running run is polled when its backend
        says its workers changed (:meth:`Launcher.changed_runs`), else every
        :attr:`Launcher.resync_interval` seconds; cancel requests and
        ``max_runtime`` are acted on every pass.

        One run cannot stall the others: when handling a run raises, the error is
        an event on that run, the run is left alone for a while (1 s, 2 s, 4 s...)
        and the :data:`RECONCILE_TRIES`-th failure in a row fails it with
        "controller could not handle the run: ...". A database fault is not the
        run's doing: it ends the pass (the caller passes again later) and no run
        is charged for it."""
        self._heartbeat()
        self._ended_this_pass = set()
        changed = self._collect()
        view = self._busy_view()
        if len(self._kinds) > 2 * len(view.ids) + 1000:  # what is kept of ended runs stays bounded
            self._kinds = {run_id: kind for run_id, kind in self._kinds.items() if run_id in view.ids}
            self._deadlines = {run_id: at for run_id, at in self._deadlines.items() if run_id in view.ids}
            self._polled = {run_id: name for run_id, name in self._polled.items() if run_id in view.ids}
            self._deadline_heap = [(at, run_id) for at, run_id in self._deadline_heap if run_id in view.ids]
            heapq.heapify(self._deadline_heap)
        due = self._due_for_poll(view)
        # Only the runs with something to do are read whole: a running run that is not due for
        # a poll, has no cancel request and is within its max_runtime costs the pass nothing.
        wanted = self._wanted(view, due)
        if 2 * len(wanted) > len(view.ids):
            runs = [run for run in self.store.busy_runs(self.owner) if run.id in wanted]
        else:
            runs = self.store.busy_runs_by_id(wanted)
        # Trials before their tuning runs, so a tuning run sees the trials that
        # ended in this very pass and starts their successors at once.
        for run in sorted(runs, key=lambda r: self.kind(r) == "TuningJob"):
            if run.id in self._ended_this_pass:
                continue  # a trial its tuning run stopped earlier in this pass
            trouble = self._troubles.get(run.id)
            if trouble is not None and time.monotonic() < trouble.retry_at:
                continue
            self._guarded(run, lambda run=run: self._reconcile_run(run, run.id in due))
        heads = self._admit() if view.signature.queued else set()
        self._troubles = {run_id: t for run_id, t in self._troubles.items() if run_id in view.ids or run_id in heads}
        return changed or self._changed_since(view.signature)

    def _busy_view(self) -> _View:
        """The runs this controller owns (:meth:`Store.active_signature`). On PostgreSQL their
        rows are read again only when the database's digest of them changed since they were
        last read, or :data:`SIGNATURE_REREAD` seconds later: a pass over thousands of running
        runs of which none changed reads one row, not thousands."""
        cached = self._view
        if cached is not None and cached.signature.digest is not None and time.monotonic() < self._view_until:
            if self.store.active_digest(self.owner) == (cached.signature.queued, cached.signature.digest):
                return cached
        signature = self.store.active_signature(self.owner)
        running = frozenset(
            run_id for run_id, state, cancel in signature.rows if state == RunState.RUNNING.value and not cancel
        )
        others = [row for row in signature.rows if row[0] not in running]
        unsettled = {run_id for run_id in running if not self._settled(run_id)}
        self._view = _View(signature, frozenset(row[0] for row in signature.rows), running, others, unsettled)
        self._view_until = time.monotonic() + SIGNATURE_REREAD
        self._overdue &= running
        return self._view

    def _changed_since(self, before: BusySignature) -> bool:
        """Whether the runs this controller owns changed since ``before`` was read."""
        if before.digest is not None:
            return self.store.active_digest(self.owner) != (before.queued, before.digest)
        return self.store.active_signature(self.owner) != before

    def _guarded(self, run: Run, handle: Callable[[], None]) -> None:
        """Run ``handle`` for ``run``; a failure is the run's trouble, a database fault the pass's."""
        try:
            handle()
        except Exception as exc:
            if is_database_fault(exc):
                raise
            self._run_trouble(run, exc)
        else:
            self._troubles.pop(run.id, None)

    def _due_for_poll(self, view: _View) -> set[str]:
        """The running runs to poll in this pass: those never polled, those their backend names
        as changed (all of its runs when it cannot tell), those polled
        :attr:`Launcher.resync_interval` ago, and those whose handling failed and whose backoff
        has passed. Costs what is due, not what runs: each backend's runs are kept in the order
        they were last polled."""
        now = time.monotonic()
        due = {run_id for run_id in view.unsettled if run_id not in self._polled}
        for name, queue in self._poll_queues.items():
            if not queue:
                continue
            launcher = plugins.launchers()[name]
            changed = launcher.changed_runs()
            due.update(queue if changed is None else changed)
            interval = launcher.resync_interval
            gone = []
            for run_id, polled in queue.items():
                if now - polled < interval:
                    break
                if run_id in view.running and self._polled.get(run_id) == name:
                    due.add(run_id)
                else:
                    gone.append(run_id)
            for run_id in gone:
                del queue[run_id]
        due.update(run_id for run_id, trouble in self._troubles.items() if now >= trouble.retry_at)
        again = [run_id for run_id, at in self._stop_retries.items() if now >= at]
        for run_id in again:
            del self._stop_retries[run_id]
        due.update(again)
        due = {run_id for run_id in due if run_id in view.running and run_id in self._active}
        for run_id in due:
            name = self._active[run_id].launcher.name
            if self._polled.get(run_id) not in (None, name):
                self._poll_queues[self._polled[run_id]].pop(run_id, None)
            self._polled[run_id] = name
            queue = self._poll_queues.setdefault(name, {})
            queue.pop(run_id, None)
            queue[run_id] = now
        return due

    def _wanted(self, view: _View, due: set[str]) -> set[str]:
        """The runs this pass handles: every busy run except a starting one whose launch is
        under way in a pool and a running training run that is settled, not due for a poll and
        within its ``max_runtime`` (:attr:`_deadlines`, noted the first time it was handled)."""
        view.unsettled = {run_id for run_id in view.unsettled if not self._settled(run_id)}
        wanted = due | view.unsettled
        wanted.update(
            run_id
            for run_id, state, _ in view.others
            if not (state == RunState.STARTING.value and run_id in self._launching)
        )
        now = utcnow()
        while self._deadline_heap and self._deadline_heap[0][0] < now:
            deadline, run_id = heapq.heappop(self._deadline_heap)
            if self._deadlines.get(run_id) == deadline:
                self._overdue.add(run_id)
        self._overdue &= view.running
        return wanted | self._overdue

    def _settled(self, run_id: str) -> bool:
        """Whether a running run needs a pass only when it is due for a poll or past its
        ``max_runtime``: a training run this controller drives, polled and handled before."""
        return (
            run_id in self._active
            and self._kinds.get(run_id) == "TrainingJob"
            and run_id in self._deadlines
            and run_id in self._polled
        )

    def _note_deadline(self, run_id: str, deadline: datetime | None) -> None:
        """Keep when ``run_id`` reaches its ``max_runtime`` (None: never)."""
        if run_id in self._deadlines and self._deadlines[run_id] == deadline:
            return
        self._deadlines[run_id] = deadline
        if deadline is not None:
            heapq.heappush(self._deadline_heap, (deadline, run_id))

    def _reconcile_run(self, run: Run, poll: bool = True) -> None:
        """Move one run one step (see the module docstring)."""
        state = RunState(run.state)
        if self.kind(run) == "TuningJob":
            self._reconcile_tuning(run)
        elif state is RunState.QUEUED:  # cancelled before launch
            self.store.transition(run.id, RunState.CANCELLED, "cancelled before launch")
            self._notify_finished(run.id)
        elif run.id in self._launching:
            return  # its launch is under way in the backend's pool
        elif state is RunState.FINALIZING:
            self._reconcile_finalizing(run)
        elif run.id in self._finalizing:
            return  # its workers are being stopped and cleaned up in the finalizing pool
        elif run.id not in self._active and state in (RunState.STARTING, RunState.RUNNING):
            self._adopt(run)
        elif state is RunState.RUNNING:
            self._reconcile_running(run, poll)

    def _run_trouble(self, run: Run, exc: Exception) -> None:
        """Handling ``run`` raised ``exc``: back off, or fail the run after too many tries."""
        _log.warning("run %s: reconciling raised", run.id, exc_info=exc)
        problem = failures.exception_line(exc)
        trouble = self._troubles.setdefault(run.id, _Trouble())
        trouble.failures += 1
        if trouble.failures >= RECONCILE_TRIES:
            del self._troubles[run.id]
            self._give_up(run, f"controller could not handle the run: {problem}")
            return
        delay = RECONCILE_BACKOFF * 2 ** (trouble.failures - 1)
        trouble.retry_at = time.monotonic() + delay
        self.store.add_event(
            run.id,
            f"controller could not handle the run ({problem}); trying again in {delay:g}s"
            f" (failure {trouble.failures} of {RECONCILE_TRIES})",
        )

    def _give_up(self, run: Run, reason: str) -> None:
        """Fail ``run`` with ``reason``, stopping its workers; when even that raises,
        record the end without the usual clean-up, so the run never stays active."""
        current = self.store.get_run(run.id)
        if RunState(current.state).is_terminal():
            return
        self._studies.pop(run.id, None)
        try:
            self._finish(current, RunState.FAILED, reason, stop=True)
        except Exception as exc:
            if is_database_fault(exc):
                raise
            _log.warning("run %s: ending it raised", run.id, exc_info=exc)
            self._active.pop(run.id, None)
            self._ended_this_pass.add(run.id)
            if not RunState(self.store.get_run(run.id).state).is_terminal():
                clean_up = failures.exception_line(exc)
                self.store.transition(run.id, RunState.FAILED, f"{reason}; its clean-up failed too ({clean_up})")

    def kind(self, run: Run) -> str:
        """The kind of ``run``'s job (``TrainingJob`` or ``TuningJob``), read once."""
        if run.id not in self._kinds:
            self._kinds[run.id] = self.store.get_job(run.job_id).kind
        return self._kinds[run.id]

    def _reconcile_tuning(self, run: Run) -> None:
        study = self._studies.get(run.id)
        if study is not None:
            study.reconcile(run)
            return
        # A new search, or one taken over from a controller that stopped: build it from the database.
        spec = self.store.get_job(run.job_id).spec_resolved["spec"]
        fresh = run.state == RunState.QUEUED.value
        if fresh:
            starting = f"starting the search with the {tuner_choice(spec)[0]} tuner"
            self.store.transition(run.id, RunState.STARTING, starting)
        try:
            study = self._studies[run.id] = Study(self, run)
        except Exception as exc:
            verb = "start" if fresh else "resume"
            self.finish_run(self.store.get_run(run.id), RunState.FAILED, f"could not {verb} the search: {exc}")
            return
        if not fresh:
            finished = len(study.observed)
            self.store.add_event(run.id, f"controller {self.owner} resumed the search after {finished} finished trials")
        if fresh or run.state == RunState.STARTING.value:
            self.store.transition(
                run.id,
                RunState.RUNNING,
                f"searching: up to {spec['max_trials']} trials, {spec['parallel_trials']} at a time",
            )
        if not fresh:
            study.reconcile(self.store.get_run(run.id))

    def finish_run(self, run: Run, state: RunState, reason: str) -> None:
        """End ``run`` in ``state``: its workers are stopped first if it has any running."""
        self._finish(run, state, reason, stop=True)

    def cancel_all(self, reason: str, within: float | None = None) -> list[str]:
        """Stop every run this controller owns (used on Ctrl-C / SIGTERM) and return once they
        have ended, launches and endings in the pools included; with ``within``, return after
        that many seconds at the latest. Returns the runs still active then: their workers could
        not be stopped (:meth:`_stop_again`), and the next controller or ``mlrt status`` takes
        them over."""
        give_up_at = None if within is None else time.monotonic() + within
        forced = False
        while True:
            self._collect()
            for run in self.store.active_runs(owner=self.owner):
                if run.id not in self._launching:
                    self._finish(run, RunState.CANCELLED, reason, stop=True)
            if self._stop_signal is not None and not forced:  # see cancel_on_signal
                forced = True
                self._stop_at_once()
            self._collect()
            left = self.store.active_runs(owner=self.owner)
            if not left and not self.busy():
                return []
            if give_up_at is not None and time.monotonic() > give_up_at:
                return sorted(run.id for run in left)
            self.wait(0.1)

    def cancel_on_signal(self, reason: str) -> list[str]:
        """:meth:`cancel_all` within :meth:`stop_deadline`, for a process a stop signal
        interrupted: its workers get their grace period, and a second SIGINT or SIGTERM while
        they have it (Ctrl-C again) stops them at once instead of leaving them running. Call
        from the main thread, after :meth:`stopped_by_signals` has let go."""
        self._stop_signal = None
        with self.stopped_by_signals():
            return self.cancel_all(reason, self.stop_deadline())

    def _stop_at_once(self) -> None:
        """Stop the workers of the runs being wound down without waiting out their grace period.
        A launcher's ``stop`` is idempotent: the stop the pool is waiting on returns once they are gone."""
        for run_id, finalizing in list(self._finalizing.items()):
            active = finalizing.active
            if active is None:
                continue
            try:
                active.launcher.stop(active.handle, 0.0)
            except Exception as exc:  # the pool's own stop goes on, and retries if it fails too
                _log.warning("run %s: stopping its workers at once failed: %s", run_id, exc)

    def stop_deadline(self) -> float:
        """Seconds :meth:`cancel_all` may take on a stop signal: the longest grace period of the
        runs this controller drives, and :data:`STOP_RETRY_CAP` for workers that do not stop at once."""
        graces = [active.spec["stopping"]["grace_period"] for active in self._active.values()]
        return max(graces, default=0.0) + STOP_RETRY_CAP

    def busy(self) -> bool:
        """Whether launches or endings are still under way in the pools."""
        return bool(self._launching or self._finalizing)

    # -- QUEUED --------------------------------------------------------------

    def _admit(self) -> set[str]:
        """Launch the QUEUED runs that admission lets through, in its order; record why the
        others wait; return the ids of the queued runs it considered.

        Only the head of each queue is read (:meth:`Store.queue_heads`): a backend's pool
        takes at most twice its size of launches at a time, so no more runs of a project
        could be launched in this pass. A pass stays short however long the queue is."""
        room = {}
        for name in plugins.launchers():
            left = 2 * self._pool(name)._max_workers - self._in_flight(name)
            if left > 0:
                room[name] = left
        if not room:
            return set()  # every pool is full: the queue waits for the next pass
        heads = self.store.queue_heads(self.owner, sorted(room), max(room.values()), utcnow())
        ready = []
        projects: dict[str, str | None] = {}
        for run, project in heads:
            trouble = self._troubles.get(run.id)
            if trouble is None or time.monotonic() >= trouble.retry_at:
                ready.append(run)
                projects[run.id] = project
        if not ready:
            return {run.id for run, _ in heads}
        backends = {run.id: run.backend or self._backend(run) for run in ready}
        host_bound = any(backends[run.id] in self.admission.host_backends for run in ready)
        starting: list[Run] = []
        with self.admission.deciding(host_bound):
            self.admission.refresh()
            for run in self.admission.order(ready, projects):
                if room.get(backends[run.id], 0) <= 0:
                    if not any(left > 0 for left in room.values()):
                        break
                    continue
                why = self.admission.hold(run, projects.get(run.id))
                if why:
                    if why != run.waiting:
                        self._guarded(run, lambda run=run, why=why: self.store.update_run(run.id, waiting=why))
                    continue
                room[backends[run.id]] -= 1
                starting.append(run)
            self._launch(starting, backends)
        return {run.id for run, _ in heads}

    def _backend(self, run: Run) -> str:
        """The backend of a run stored before runs had a ``backend`` column."""
        return self.store.get_job(run.job_id).spec_resolved["spec"]["compute"]["backend"]

    @staticmethod
    def _pool(backend: str) -> ThreadPoolExecutor:
        """The launch pool of ``backend``; the finalizing pool is ``_pool("")``.

        One per process, shared by its controllers, whose threads live as long as the
        process: a worker (or warm-worker zygote) forked from a thread that exits would be
        killed with it (``PR_SET_PDEATHSIG`` follows the forking thread)."""
        with _POOLS_LOCK:
            if backend not in _POOLS:
                if backend:
                    launcher = plugins.launchers().get(backend)
                    default = launcher.launch_concurrency if launcher is not None else 1
                    size = pool_size("MLRT_LAUNCH_CONCURRENCY", backend, default)
                else:
                    size = pool_size("MLRT_FINALIZE_CONCURRENCY", "", FINALIZE_CONCURRENCY)
                _POOLS[backend] = ThreadPoolExecutor(size, thread_name_prefix=f"mlrt-{backend or 'finalize'}")
            return _POOLS[backend]

    def _in_flight(self, backend: str) -> int:
        return sum(1 for name, _ in self._launching.values() if name == backend)

    def _submit(self, backend: str, work: Callable[..., Any], *args: Any) -> Future:
        """Run ``work`` in ``backend``'s pool; the controller wakes when it is done."""
        future = self._pool(backend).submit(work, *args)
        future.add_done_callback(self._poke)
        return future

    @staticmethod
    def _poke(_future: Future) -> None:
        try:
            os.write(_DONE_WRITE, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the controller wakes anyway

    def _launch(self, runs: list[Run], backends: dict[str, str]) -> None:
        """Start attempt N+1 of each of ``runs``: STARTING now, in one transaction for all of
        them (one per run where that is refused: a refused run is its own trouble), then plan
        and launch in the pool of its backend (``backends``: run id -> backend)."""
        if not runs:
            return
        try:
            self.store.transitions([self._starting(run) for run in runs])
        except Exception as exc:
            if is_database_fault(exc):
                raise
            for run in runs:
                self._guarded(run, lambda run=run: self._launch_one(run, backends[run.id]))
            return
        specs = self.store.resolved_specs({run.job_id for run in runs})
        for run in runs:
            self._kinds[run.id] = "TrainingJob"  # the queue holds no tuning runs (Store.queue_heads)
            self._submit_launch(run, backends[run.id], specs[run.job_id])

    def _launch_one(self, run: Run, backend: str) -> None:
        run_id, to, reason, fields = self._starting(run)
        self.store.transition(run_id, to, reason, **fields)
        self._submit_launch(run, backend, self.store.get_job(run.job_id).spec_resolved)

    @staticmethod
    def _starting(run: Run) -> tuple[str, RunState, str, dict[str, Any]]:
        """The transition that starts ``run``'s next attempt."""
        number = run.attempts + 1
        return (
            run.id,
            RunState.STARTING,
            f"starting attempt {number} of {run.max_attempts}",
            {"attempts": number, "waiting": ""},
        )

    def _submit_launch(self, run: Run, backend: str, resolved: dict[str, Any]) -> None:
        """Plan and launch attempt N+1 of ``run`` (now STARTING; ``resolved``: its job's resolved
        spec) in ``backend``'s pool."""
        number = run.attempts + 1
        self._launching[run.id] = (backend, self._submit(backend, self._prepare_and_launch, run, number, resolved))

    def _prepare_and_launch(self, run: Run, number: int, resolved: dict[str, Any]) -> _Launched:
        """In a launch pool: materialize the data, plan, check the folders, record the attempt, launch."""
        spec = resolved["spec"]
        try:
            launcher = plugins.launchers()[spec["compute"]["backend"]]
            planned = self._plan(run, resolved, number, launcher)
            ctx, request = planned.ctx, planned.request
        except LaunchError as exc:
            if exc.retry:
                return _Launched(failed=f"could not prepare attempt {number}: {exc}")
            return _Launched(fatal=f"could not prepare attempt {number}: {exc} ({NOT_RETRIED})")
        except Exception as exc:
            if is_database_fault(exc):
                raise
            return _Launched(failed=f"could not prepare attempt {number}: {exc}")
        try:
            for what, path in (
                ("output", ctx.env["MLRT_OUTPUT_DIR"]),
                ("checkpoint", ctx.env["MLRT_CHECKPOINT_DIR"]),
                ("log", ctx.log_dir),
            ):
                ensure_writable(Path(path), what)
        except NotWritable as exc:
            return _Launched(fatal=f"{exc} (not retried: fix the folder and submit again)")
        attempt = Attempt(
            run_id=run.id,
            number=number,
            state=RunState.STARTING.value,
            backend=launcher.name,
            request=mask_request(request.to_dict(), spec),  # as the database keeps it
            log_dir=ctx.log_dir,
        )
        self.store.add_attempt(attempt, record=planned.record, rows=planned.rows)
        try:
            handle = launcher.launch(request)
        except LaunchDeferred as exc:
            return _Launched(attempt=attempt, deferred=exc)
        except LaunchError as exc:
            if exc.retry:
                return _Launched(attempt=attempt, failed=str(exc))
            return _Launched(attempt=attempt, fatal=f"{exc} ({NOT_RETRIED})")
        return _Launched(attempt, launcher, request, handle, spec)

    def _collect(self) -> bool:
        """Record the launches and finalizations that ended since the last pass; True if any.
        The runs of the launches are read in one query, and the launches that started workers
        are recorded together (:meth:`_started`)."""
        ended = [run_id for run_id, (_, future) in self._launching.items() if future.done()]
        runs = {run.id: run for run in self.store.busy_runs_by_id(ended)}
        started: list[tuple[Run, _Launched]] = []
        for run_id in ended:
            _, future = self._launching.pop(run_id)
            run = runs.get(run_id) or self.store.get_run(run_id)
            self._guarded(run, lambda run=run, future=future: self._launched(run, future, started))
        self._started(started)
        collected = bool(ended)
        for run_id, finalizing in list(self._finalizing.items()):
            if finalizing.future.done():
                del self._finalizing[run_id]
                collected = True
                run = self.store.get_run(run_id)
                self._guarded(run, lambda run=run, finalizing=finalizing: self._finalized(run, finalizing))
        return collected

    def _launched(self, run: Run, future: Future, started: list[tuple[Run, _Launched]]) -> None:
        """Act on what launching ``run`` came to; a launch that started workers joins ``started``."""
        try:
            launched: _Launched = future.result()
        except Exception as exc:
            if is_database_fault(exc):
                raise
            _log.warning("run %s: launching raised", run.id, exc_info=exc)
            problem = failures.exception_line(exc)
            launched = _Launched(attempt=self.store.latest_attempt(run.id), failed=f"could not launch: {problem}")
            if launched.attempt is not None and launched.attempt.number != run.attempts:
                launched.attempt = None
        if launched.handle is not None:
            started.append((run, launched))
        elif launched.fatal:
            if launched.attempt is not None:
                self.store.finish_attempt(launched.attempt.id, RunState.FAILED, launched.fatal, None)
            self._finish(run, RunState.FAILED, launched.fatal)
        elif launched.deferred is not None:
            self._defer(run, launched.attempt, launched.deferred)
        else:
            self._attempt_failed(run, launched.attempt, launched.failed, None)

    def _defer(self, run: Run, attempt: Attempt | None, deferred: LaunchDeferred) -> None:
        """Queue ``run`` again after a :class:`~mlrt.launchers.LaunchDeferred`: the same attempt
        number is launched again later (its objects, named after it, are taken over where some were
        made), so the run's retries are not charged for the backend's state."""
        number = run.attempts
        since = self._deferred_since.setdefault(run.id, time.monotonic())
        waited = time.monotonic() - since
        if waited >= self.launch_defer_limit:
            self._deferred_since.pop(run.id, None)
            self._attempt_failed(
                run,
                attempt,
                f"{deferred}; the launch was deferred for {waited:.0f} s, past the limit of "
                f"{self.launch_defer_limit:g} s",
                None,
            )
            return
        self.tracking.attempt_ended(run.id)  # the next launch gets a fresh token
        if attempt is not None:
            self.store.delete_attempt(attempt.id)
        if self.store.get_run(run.id).cancel_requested:
            self._deferred_since.pop(run.id, None)
            self.store.transition(run.id, RunState.CANCELLED, "cancelled by user")
            self._notify_finished(run.id)
            return
        self.store.transition(
            run.id,
            RunState.QUEUED,
            f"attempt {number} not launched: {deferred}; launching it again in {deferred.after:g}s"
            " (not charged to the retries)",
            attempts=number - 1,
            not_before=utcnow() + timedelta(seconds=deferred.after),
        )

    def _started(self, started: list[tuple[Run, _Launched]], adopted: bool = False) -> None:
        """Record running workers (launched now, or adopted) and start watching them: the
        attempts and the runs' RUNNING transitions of all of ``started`` in one transaction
        (one per run where that is refused: a refused run is its own trouble)."""
        if not started:
            return
        try:
            self._record_running(started, adopted)
        except Exception as exc:
            if is_database_fault(exc):
                raise
            recorded: list[tuple[Run, _Launched]] = []

            def record(one: tuple[Run, _Launched]) -> None:
                self._record_running([one], adopted)
                recorded.append(one)

            for one in started:
                self._guarded(one[0], functools.partial(record, one))
            started = recorded
        steps = self.store.max_steps_of([run.id for run, _ in started])
        for run, launched in started:
            next_steps = {key: step + 1 for key, step in steps.get(run.id, {}).items()}
            self._guarded(run, functools.partial(self._watch, run, launched, next_steps, adopted))

    def _record_running(self, started: list[tuple[Run, _Launched]], adopted: bool) -> None:
        verb = "adopted" if adopted else "started"
        changes = []
        for run, launched in started:
            if run.state != RunState.RUNNING.value:
                workers = len(launched.request.workers)
                reason = f"attempt {launched.attempt.number}: {workers} worker{'s' * (workers > 1)} {verb}"
                changes.append((run.id, RunState.RUNNING, reason, {}))
        self.store.record_running([(launched.attempt.id, launched.handle) for _, launched in started], changes)

    def _watch(self, run: Run, launched: _Launched, next_steps: dict[str, int], adopted: bool) -> None:
        """Keep what polling ``run``'s started attempt needs: its handle, its log scanner
        (continuing each metric at ``next_steps``) and, for a service, its log shipper."""
        self._deferred_since.pop(run.id, None)
        note_image(self.store, run.id, launched.handle.get("image_digest"))  # the run's lineage
        attempt, request, handle = launched.attempt, launched.request, launched.handle
        first = request.workers[0]
        scanner = LogMetricScanner(
            Path(first.log_path),
            launched.spec.get("metrics") or [],
            next_steps,
            sdk_records=first.env.get("MLRT_TRACKING_URI") == LOG_TRACKING_URI,
            logs=[Path(worker.log_path) for worker in request.workers],
        )
        scanner.offset = int(handle.get("scanned", 0))
        attempt.handle = handle
        shipper = None
        if self.tracking.ships_logs:
            logs = [Path(worker.log_path) for worker in request.workers]
            shipper = LogShipper(self.store, run.id, attempt.number, logs)
        self._active[run.id] = _Active(attempt, launched.launcher, handle, scanner, launched.spec, shipper)
        if not adopted:
            self._notify(run.id, "mlrt_run_started")

    def _adopt(self, run: Run) -> None:
        """Take over the workers of a run whose controller is gone (see :func:`reap_orphans`)."""
        attempt = self.store.latest_attempt(run.id)
        launcher = plugins.launchers().get(attempt.backend) if attempt is not None else None
        if attempt is None or launcher is None or not launcher.survives_controller:
            self.finish_run(run, RunState.FAILED, "its controller stopped and its workers cannot be adopted")
            return
        resolved = self.store.get_job(run.job_id).spec_resolved
        spec = resolved["spec"]
        request = _request_from_row(attempt.request)
        try:
            handle = launcher.adopt(request, attempt.handle)
            if handle is None:  # the old controller died before the workers started
                self.store.add_event(run.id, f"attempt {attempt.number} had no workers yet; launching them")
                # Plan again: a stored request lacks what must not be stored (spec.env values).
                planned = self._plan(run, resolved, attempt.number, launcher)
                self.store.keep_planned(run.id, planned.record, planned.rows)
                request = planned.request
                handle = launcher.launch(request)
        except (LaunchError, RuntimeError) as exc:
            self._attempt_failed(run, attempt, str(exc), None)
            return
        self._started([(run, _Launched(attempt, launcher, request, handle, spec))], adopted=True)

    def _plan(self, run: Run, resolved: dict[str, Any], number: int, launcher: Launcher) -> _Planned:
        """Materialize the data channels and plan attempt ``number`` of ``run``; what is to be
        stored before it launches comes back with the plan, so the caller stores it at once."""
        paths, record = self._materialize(run, resolved["spec"])
        ctx = launch_context(resolved, run.id, number, self.store.url, paths, run.record)
        variables, rows = self.tracking.environment(run.id)
        ctx.env.update(variables)
        return _Planned(ctx, launcher.plan(ctx), record, rows)

    def _ingest(self, run_id: str, active: _Active, final: bool = False) -> None:
        """Store what the workers' logs gained since the last scan: the rank-0 log's pattern
        metrics and SDK records, and (at most every :data:`SHIP_EVERY` seconds, and once
        ``final``ly) the bytes themselves."""
        now = time.monotonic()
        if active.shipper is not None and (final or now - active.shipped_at >= SHIP_EVERY):
            active.shipper.ship()
            active.shipped_at = now
        found: LogRecords = active.scanner.scan()
        for kind, value in found.entries:
            if kind == "metrics":
                self.store.insert_metrics(run_id, value)
            elif kind == "batch":
                self.store.insert_metrics(run_id, value[0], batch_id=value[1])
            elif kind == "params":
                self.store.log_params(run_id, value)
            elif kind == "event":
                self.store.add_event(run_id, value)
            else:
                self.store.delete_metrics(run_id, *value)
        if found and active.launcher.survives_controller:
            # An adopting controller resumes reading here, so nothing is stored twice.
            active.handle["scanned"] = active.scanner.offset
            self.store.update_attempt(active.attempt.id, handle=active.handle)

    def _materialize(self, run: Run, spec: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Local paths for every data channel, and the run's record with their content hashes
        where it lacks them (None when it has them all)."""
        from mlrt.data import content_hash, uri_scheme

        schemes = plugins.data_schemes()
        cache = mlrt_home() / "cache"
        paths: dict[str, str] = {}
        data_record = dict(run.record.get("data") or {})
        for name, channel in (spec.get("data") or {}).items():
            try:  # a scheme that raises is named, with its traceback kept as an event
                with plugins.blame("data_schemes", uri_scheme(channel["uri"])):
                    path = schemes[uri_scheme(channel["uri"])].materialize(channel["uri"], cache)
            except plugins.PluginFailure as failure:
                self.store.add_event(run.id, f"{failure.line}; traceback:\n{failure.details[-8000:]}")
                raise RuntimeError(f"data channel {name!r} ({channel['uri']}): {failure.line}") from None
            if name not in data_record:
                data_record[name] = {"uri": channel["uri"], "path": str(path), "sha256": content_hash(Path(path))}
            if run.record.get("sanity") and not spec.get("algorithm"):
                path, done = self._sanity_channel(run, name, Path(path), spec["seed"], data_record[name].get("sanity"))
                data_record[name] = {**data_record[name], "sanity": done}
            paths[name] = str(path)
        if data_record != run.record.get("data"):
            return paths, {**run.record, "data": data_record}
        return paths, None

    def _sanity_channel(self, run: Run, name: str, path: Path, seed: int, said: str | None) -> tuple[Path, str]:
        """The subsample a sanity run's command reads instead of channel ``name`` (see
        :mod:`mlrt.sanity`) and what it holds, said in the run's events unless ``said`` already."""
        target = mlrt_home() / "cache" / "sanity" / run.id / name
        done = sanity.subsample_channel(path, target, seed)
        if said != done:
            self.store.add_event(run.id, f"sanity run: channel {name}: {done}")
        return sanity.channel_path(target, path), done

    # -- RUNNING -------------------------------------------------------------

    def _reconcile_running(self, run: Run, poll: bool = True) -> None:
        active = self._active.get(run.id)
        if active is None:  # launched by a process that is gone; nothing to poll
            return
        if poll:
            self._ingest(run.id, active)
        stopping = active.spec["stopping"]
        if run.cancel_requested:
            self._finish(run, RunState.CANCELLED, "cancelled by user", stop=True)
            return
        max_runtime = stopping.get("max_runtime")
        if run.started_at:
            self._note_deadline(run.id, run.started_at + timedelta(seconds=max_runtime) if max_runtime else None)
        if max_runtime and run.started_at and utcnow() - run.started_at > timedelta(seconds=max_runtime):
            self._finish(
                run,
                RunState.TIMED_OUT,
                f"exceeded stopping.max_runtime of {max_runtime:g}s; workers stopped",
                stop=True,
            )
            return
        if not poll:
            return
        statuses = active.launcher.poll(active.handle)
        for status in statuses:
            note_image(self.store, run.id, status.image_digest)
            if status.state is RunState.RUNNING and status.reason and active.waiting.get(status.rank) != status.reason:
                active.waiting[status.rank] = status.reason
                self.store.add_event(run.id, f"worker {status.rank}: {status.reason}")
        failed = [s for s in statuses if s.state is RunState.FAILED]
        if failed:
            # The worker whose own exit ended the attempt, rather than one the backend reports
            # failed with it (a Kubernetes Job that failed while that worker's pod still ran).
            first = next((s for s in failed if s.exit_code is not None), failed[0])
            detail = self._failure_detail(active, first.rank)
            reason = f"worker {first.rank} {first.reason}" + (f": {detail}" if detail else "")
            self._end_in_pool(
                run, active, RunState.FAILED, reason, first.exit_code, stop=True, failed_worker=first.rank
            )
        elif all(s.state is RunState.SUCCEEDED for s in statuses):
            reason = f"all {len(statuses)} workers exited with code 0"
            stop_reason = self.store.params(run.id).get("stop_reason")  # set by iterative algorithms
            reason = f"{stop_reason}; {reason}" if stop_reason else reason
            self._begin_finalizing(run, active, reason)

    # -- FINALIZING ------------------------------------------------------------

    def _begin_finalizing(self, run: Run, active: _Active | None, reason: str) -> None:
        """The workers succeeded: FINALIZING now, then reports, gates and the output in the
        finalizing pool (:meth:`_finalize`); :meth:`_collect` records the end."""
        if run.state != RunState.FINALIZING.value:
            self.store.transition(run.id, RunState.FINALIZING, f"{reason}; finalizing (reports, gates, output)")
        self._active.pop(run.id, None)
        self._polled.pop(run.id, None)
        attempt = active.attempt if active is not None else self.store.latest_attempt(run.id)
        abandoned = threading.Event()
        future = self._submit("", self._finalize, run, attempt, active, reason, abandoned)
        self._finalizing[run.id] = _Finalizing(attempt, future, abandoned)

    def _finalize(
        self, run: Run, attempt: Attempt, active: _Active | None, reason: str, abandoned: threading.Event
    ) -> tuple[RunState, str]:
        """In the finalizing pool: the logs' last lines, reports and gates, then the output
        (registered, or uploaded to ``s3://``); returns how the run ends."""
        if active is not None:
            active.launcher.cleanup(active.handle)  # finishes copying the logs first
            self._ingest(run.id, active, final=True)
        else:  # finalizing again after a controller stopped in the middle
            launcher = plugins.launchers().get(attempt.backend)
            if launcher is not None and attempt.handle:
                launcher.cleanup(attempt.handle)
        self.tracking.attempt_ended(run.id)
        spec = active.spec if active is not None else self.store.get_job(run.job_id).spec_resolved["spec"]
        state = RunState.SUCCEEDED
        failures = self._reports_and_gates(run, spec, attempt, abandoned)
        if failures:
            lines = "; ".join(f.line for f in failures)
            state, reason = RunState.FAILED_GATE, f"{reason}, but it failed {len(failures)} gate(s): {lines}"
        if abandoned.is_set():
            raise _Abandoned
        return self._settle_output(run, state, reason, attempt, active, abandoned)

    def _finalized(self, run: Run, finalizing: _Finalizing) -> None:
        """Record how a finalization or an ending ended (unless the run was stopped meanwhile)."""
        if RunState(run.state).is_terminal() or finalizing.abandoned.is_set():
            return
        if finalizing.ending is not None:
            self._ended(run, finalizing)
            return
        try:
            state, reason = finalizing.future.result()
        except _Abandoned:
            return
        except Exception as exc:
            if is_database_fault(exc):
                # Not the run's doing: finalize it again in a later pass.
                self.store.add_event(run.id, f"finalizing stopped by a database fault ({exc}); starting it again")
                return
            _log.warning("run %s: finalizing raised", run.id, exc_info=exc)
            problem = failures.exception_line(exc)
            state, reason = RunState.FAILED, f"finalizing failed: {problem} (the workers had succeeded)"
        self.store.finish_attempt(finalizing.attempt.id, state, reason, 0)
        self.store.transition(run.id, state, reason)
        self._ended_this_pass.add(run.id)
        self._notify_finished(run.id)

    def _end_in_pool(
        self,
        run: Run,
        active: _Active,
        state: RunState,
        reason: str,
        exit_code: int | None,
        *,
        stop: bool,
        failed_worker: int | None = None,
    ) -> None:
        """End an attempt with workers off the loop: stop them (within their grace period), clean
        up, read the logs' last lines and register the output in the finalizing pool; the run
        keeps its state until :meth:`_ended` records the end (or the retry). Workers that could
        not be stopped a moment ago are left until their backoff has passed (:meth:`_stop_again`)."""
        if stop and active.stop_again_at > time.monotonic():
            return
        self._active.pop(run.id, None)
        self._polled.pop(run.id, None)
        abandoned = threading.Event()
        future = self._submit("", self._wind_down, run, active, state, reason, stop)
        self._finalizing[run.id] = _Finalizing(
            active.attempt, future, abandoned, (state, reason, exit_code), failed_worker, active
        )

    def _wind_down(self, run: Run, active: _Active, state: RunState, reason: str, stop: bool) -> tuple[RunState, str]:
        """In the finalizing pool: what :meth:`_end_in_pool` describes; returns how it ends."""
        if stop:
            try:
                active.launcher.stop(active.handle, active.spec["stopping"]["grace_period"])
            except Exception as exc:
                raise _StopFailed from exc
        active.launcher.cleanup(active.handle)  # finishes copying the logs first
        self._ingest(run.id, active, final=True)
        self.tracking.attempt_ended(run.id)
        return self._settle_output(run, state, reason, active.attempt, active)

    def _ended(self, run: Run, finalizing: _Finalizing) -> None:
        state, reason, exit_code = finalizing.ending
        try:
            state, reason = finalizing.future.result()
        except _StopFailed as failed:
            exc = failed.__cause__
            problem = failures.exception_line(exc)
            if self._stop_again(run, finalizing, problem):
                return
            reason = f"{reason}; its workers could not be stopped for {STOP_GIVE_UP:g}s ({problem}): they may still run"
        except Exception as exc:
            if is_database_fault(exc):
                raise
            _log.warning("run %s: ending it raised", run.id, exc_info=exc)
            problem = failures.exception_line(exc)
            reason = f"{reason}; its clean-up failed ({problem})"
        if finalizing.failed_worker is not None:
            request = finalizing.attempt.request
            tail = failures.tail_lines(Path(request["workers"][finalizing.failed_worker]["log_path"]))
            self.store.finish_attempt(finalizing.attempt.id, state, reason, exit_code, "\n".join(tail))
            self._retry_or_fail(run, reason, failures.is_infrastructure(exit_code, reason, tail))
            return
        self.store.finish_attempt(finalizing.attempt.id, state, reason, exit_code)
        self.store.transition(run.id, state, reason)
        self._ended_this_pass.add(run.id)
        self._notify_finished(run.id)

    def _stop_again(self, run: Run, finalizing: _Finalizing, problem: str) -> bool:
        """The workers of an attempt being ended could not be stopped (the backend could not be
        reached): they may still run, so the run is not ended yet. It is active again, and what
        ended it (a cancel, a timeout, a failed worker) ends it again in a pass after a backoff of
        1, 2, 4... s up to :data:`STOP_RETRY_CAP`, once its workers stop; True. After
        :data:`STOP_GIVE_UP` seconds of failed stops, False: the run ends anyway, saying its
        workers may still run. A controller that itself stops meanwhile leaves the run to the
        next one (:meth:`cancel_all`)."""
        active = finalizing.active
        assert active is not None and finalizing.ending is not None
        now = time.monotonic()
        if active.stop_failures == 0:
            active.stop_failing_since = now
        elif now - active.stop_failing_since > STOP_GIVE_UP:
            return False
        active.stop_failures += 1
        delay = min(STOP_RETRY_CAP, RECONCILE_BACKOFF * 2 ** (active.stop_failures - 1))
        active.stop_again_at = now + delay
        self._active[run.id] = active
        self._stop_retries[run.id] = active.stop_again_at
        _log.warning("run %s: stopping its workers failed: %s", run.id, problem)
        if delay < STOP_RETRY_CAP or active.stop_failures % 10 == 0:  # not an event a minute
            self.store.add_event(
                run.id,
                f"could not stop the workers to end the run {finalizing.ending[0].value} ({problem}); they may"
                f" still run: trying again in {delay:g}s (try {active.stop_failures})",
            )
        return True

    def _reconcile_finalizing(self, run: Run) -> None:
        """Cancel and ``max_runtime`` act on a finalizing run too; one whose finalizing was lost
        (its controller stopped) is finalized again."""
        finalizing = self._finalizing.get(run.id)
        if finalizing is None:
            self._begin_finalizing(run, None, run.reason.split("; finalizing")[0])
            return
        spec = self.store.get_job(run.job_id).spec_resolved["spec"]
        max_runtime = spec["stopping"].get("max_runtime")
        if run.cancel_requested:
            self._finish(run, RunState.CANCELLED, "cancelled by user while finalizing")
        elif max_runtime and run.started_at and utcnow() - run.started_at > timedelta(seconds=max_runtime):
            self._finish(run, RunState.TIMED_OUT, f"exceeded stopping.max_runtime of {max_runtime:g}s while finalizing")

    def _reports_and_gates(
        self, run: Run, spec: dict[str, Any], attempt: Attempt | None, abandoned: threading.Event
    ) -> list[report_runner.GateFailure]:
        """Build the run's reports (``spec.reports`` and what gates read); return gate failures.

        The backend builds them where the workers ran when it can (:meth:`Launcher.build_reports`:
        the kubernetes backend's finalizing pod), else this process does. A report that cannot be
        built is an event, not the run's fate, unless a gate needed it. A run with gates gets the
        param ``gate_violation``: the sum of its failures' excesses, 0 when it passed (a tuner's
        constraint)."""
        from mlrt import report_runner

        if not report_runner.needed_reports(spec):
            return []
        try:
            results = self._build_reports(run, attempt, abandoned)
        except _Abandoned:
            raise
        except Exception as exc:
            if abandoned.is_set():
                raise _Abandoned from None
            self.store.add_event(run.id, f"reports not built: {type(exc).__name__}: {exc}")
            failures = [report_runner.GateFailure(f"reports not built: {exc}", report_runner.UNAVAILABLE)]
        else:
            self.store.add_event(run.id, f"reports built: {', '.join(results)}")
            failures = report_runner.check_gates(self.store, run.id, results)
        if not spec.get("gates"):
            return []
        self.store.log_params(run.id, {"gate_violation": float(f"{sum(f.excess for f in failures):.6g}")})
        return failures

    def _build_reports(
        self, run: Run, attempt: Attempt | None, abandoned: threading.Event
    ) -> dict[str, dict[str, Any]]:
        from mlrt import report_runner

        launcher = plugins.launchers().get(attempt.backend) if attempt is not None else None
        if launcher is not None and attempt.request:
            log = str(Path(attempt.log_dir) / "finalize.log")
            metrics = self.store.latest_metrics(run.id)
            request = _request_from_row(attempt.request)
            results = launcher.build_reports(
                request, metrics, log, abandoned, lambda line: self.store.add_event(run.id, line)
            )
            if abandoned.is_set():
                raise _Abandoned
            if results is not None:
                return report_runner.keep(self.store, run.id, results)
        return report_runner.build(self.store, run.id)

    def _failure_detail(self, active: _Active, rank: int) -> str:
        """What the worker said about its failure: its failure file's last line (``MLRT_FAILURE_FILE``,
        else SageMaker's ``/opt/ml/output/failure``), else its log's (only the end of each is read: a
        worker may have written gigabytes there)."""
        from mlrt.sagemaker_contract import failure_file

        log_dir = Path(active.attempt.log_dir)
        detail = last_line(log_dir / "failure.txt") or last_line(failure_file(log_dir, rank))
        if detail:
            return detail
        request = active.attempt.request
        return last_line(Path(request["workers"][rank]["log_path"]))

    # -- endings ---------------------------------------------------------------

    def _attempt_failed(self, run: Run, attempt: Attempt | None, reason: str, exit_code: int | None) -> None:
        """Record a failed attempt, then retry with backoff or fail the run."""
        if attempt is None:
            self.store.add_event(run.id, f"attempt {run.attempts} did not start: {reason}")
        self._close_attempt(run, RunState.FAILED, reason, exit_code, attempt)
        self._retry_or_fail(run, reason)

    def _retry_or_fail(self, run: Run, reason: str, infrastructure: bool = True) -> None:
        """After a failed attempt: queue the run again with backoff, or fail (or cancel) it.

        ``infrastructure``: whether the failure came from where the attempt ran (a launch that
        did not happen, a signal, an OOM kill; :mod:`mlrt.failures`) rather than from its
        program; ``spec.retries.on`` says which of the two are retried."""
        current = self.store.get_run(run.id)
        retries = self.store.get_job(run.job_id).spec_resolved["spec"]["retries"]
        on = retries.get("on", failures.RETRY_ON[0])  # jobs stored before retries.on existed
        if current.cancel_requested:
            self.store.transition(run.id, RunState.CANCELLED, "cancelled by user")
        elif current.attempts < current.max_attempts and not failures.retried(on, infrastructure):
            self.store.transition(
                run.id,
                RunState.FAILED,
                f"{reason} (not retried: the program failed, not the machine it ran on;"
                " spec.retries.on: any retries such failures too)",
            )
        elif current.attempts < current.max_attempts:
            backoff = retries["backoff"] * 2 ** (current.attempts - 1)
            self.store.transition(
                run.id,
                RunState.QUEUED,
                f"attempt {current.attempts} failed ({reason}); retry {current.attempts} of "
                f"{current.max_attempts - 1} in {backoff:g}s",
                not_before=utcnow() + timedelta(seconds=backoff),
            )
            return
        else:
            tries = current.max_attempts
            suffix = f" (after {tries} attempts)" if tries > 1 else ""
            self.store.transition(run.id, RunState.FAILED, reason + suffix)
        self._notify_finished(run.id)

    def _finish(
        self, run: Run, state: RunState, reason: str, *, stop: bool = False, exit_code: int | None = None
    ) -> None:
        if run.id in self._finalizing and self._finalizing[run.id].ending is not None:
            return  # already ending
        active = self._active.get(run.id)
        if active is not None:
            self._end_in_pool(run, active, state, reason, exit_code, stop=stop)
            return
        finalizing = self._finalizing.pop(run.id, None)
        if finalizing is not None:  # its workers are gone; what finalizing does next is dropped
            finalizing.abandoned.set()
            self.store.finish_attempt(finalizing.attempt.id, state, reason, 0)
            self.store.transition(run.id, state, reason)
            self._ended_this_pass.add(run.id)
            self._notify_finished(run.id)
            return
        state, reason = self._close_attempt(run, state, reason, exit_code)
        self.store.transition(run.id, state, reason)
        self._ended_this_pass.add(run.id)
        self._notify_finished(run.id)

    def _close_attempt(
        self, run: Run, state: RunState, reason: str, exit_code: int | None, attempt: Attempt | None = None
    ) -> tuple[RunState, str]:
        """End an attempt without running workers (its launch failed, or it had none): revoke
        what its workers were given, register what output there is, close its row (``attempt``,
        if it has one); return the state and reason. Attempts with workers end in the
        finalizing pool (:meth:`_end_in_pool`)."""
        self.tracking.attempt_ended(run.id)
        state, reason = self._settle_output(run, state, reason, attempt, None)
        if attempt is not None:
            self.store.finish_attempt(attempt.id, state, reason, exit_code)
        return state, reason

    def _settle_output(
        self,
        run: Run,
        state: RunState,
        reason: str,
        attempt: Attempt | None,
        active: _Active | None,
        abandoned: threading.Event | None = None,
    ) -> tuple[RunState, str]:
        """Register (or upload) the attempt's output; return the state and reason the run ends with.

        The state follows the upload: an attempt that would have SUCCEEDED but
        whose output could not be uploaded ends FAILED with ``output not
        uploaded: ...``, or ``output not uploaded by the pod: ...`` when its
        workers upload it themselves (:attr:`Launcher.uploads_output`) and a
        completion marker is missing; other endings keep their state (the
        upload's failure is an event). ``abandoned`` stops the upload's retries."""
        markers = None
        if state is RunState.SUCCEEDED and attempt is not None and run.output_uri.startswith("s3://"):
            launcher = plugins.launchers().get(attempt.backend)
            if launcher is not None and launcher.uploads_output:
                markers = (attempt.number, len(attempt.request.get("workers") or []))
        problem = self._register_artifacts(run, markers, active, abandoned)
        if problem is not None and markers is not None:
            state, reason = RunState.FAILED, f"{problem} (the workers had finished: {reason})"
        elif problem is not None and state is RunState.SUCCEEDED:
            staging = local_prefix(run.output_uri, run.id)
            state, reason = (
                RunState.FAILED,
                f"output not uploaded: {problem}; the files stay in {staging} for "
                f"`mlrt artifacts push {run.id}` (the workers had finished: {reason})",
            )
        return state, reason

    def _register_artifacts(
        self,
        run: Run,
        markers: tuple[int, int] | None = None,
        active: _Active | None = None,
        abandoned: threading.Event | None = None,
    ) -> str | None:
        """Register the run's output files (size, sha256); for an ``s3://`` output, upload the
        output and the checkpoints first, retried with backoff (:func:`mlrt.artifacts.upload`).

        ``markers`` is ``(attempt number, workers)`` for workers that uploaded the output
        themselves: nothing is registered unless each one's completion marker is there
        (:func:`mlrt.s3sync.missing_markers`); ``active`` is their attempt, asked what their
        upload said. Returns why the output could not be uploaded (also an event; for such
        workers a whole reason, ``output not uploaded by the pod: ...``), else None."""
        local = local_prefix(run.output_uri, run.id)
        if run.output_uri.startswith("s3://"):

            def retrying(tries: int, exc: Exception, pause: float) -> None:
                if abandoned is not None and abandoned.is_set():
                    raise _Abandoned
                self._heartbeat()  # a failed run's upload retries hold up the pass: stay visibly alive
                self.store.add_event(
                    run.id, f"output upload try {tries} failed ({type(exc).__name__}: {exc}); next try in {pause:g}s"
                )

            try:
                if markers is not None:
                    missing = s3.retried(lambda: s3sync.missing_markers(run.output_uri, *markers), retrying)
                    if missing:
                        return self._pods_did_not_upload(run, markers[0], missing, active)
                found, skipped = artifacts.upload(run.id, local, run.output_uri, retrying)
            except (s3.UploadFailed, ValueError) as exc:  # ValueError: a bad key or setting, not retried
                problem = str(exc)
                if markers is not None:  # nothing was staged here: there is nothing to push later
                    problem = f"output not checked: the controller could not read the completion markers: {problem}"
                    self.store.add_event(run.id, problem)
                    return problem
                self.store.add_event(
                    run.id,
                    f"output not uploaded to {run.output_uri}: {problem}; the files stay in {local} "
                    f"until `mlrt artifacts push {run.id}` uploads them",
                )
                return problem
        else:
            try:
                found, skipped = artifacts.collect(run.id, local / "output")
            except OSError as exc:
                self.store.add_event(run.id, f"artifacts not registered: could not read {local / 'output'}: {exc}")
                return None
        self.store.put_artifacts(found)
        for path in skipped:
            self.store.add_event(run.id, f"artifact {path!r} skipped: it points outside the run's output")
        return None

    def _pods_did_not_upload(self, run: Run, attempt: int, missing: list[int], active: _Active | None) -> str:
        """Why a run whose pods upload their output themselves lacks it (also an event), with what
        the first missing worker's upload said last: the workers' files were in their pods, so
        unlike a staged output nothing can push them later."""
        where = s3sync.marker_uri(run.output_uri, attempt, missing[0]).rsplit("/", 1)[0]
        workers = ", ".join(str(worker) for worker in missing)
        said = ""
        if active is not None:
            try:
                said = active.launcher.upload_problem(active.handle, missing[0])
            except Exception as exc:  # the cluster may be gone by now; the reason stands without it
                self.store.add_event(run.id, f"could not read worker {missing[0]}'s upload log: {exc}")
        why = f"its upload said: {said}" if said else "the log of the pod's upload sidecar, mlrt.s3sync, says why"
        problem = (
            f"output not uploaded by the pod: no completion marker from worker {workers} under {where}/ "
            f"({why}); the files were in the pod and went with it"
        )
        self.store.add_event(run.id, problem)
        return problem

    def _notify_finished(self, run_id: str) -> None:
        self._notify(run_id, "mlrt_run_finished")

    def _notify(self, run_id: str, hook: str) -> None:
        """Call a lifecycle hook plugin by plugin; an exception becomes an event naming the plugin
        (with its traceback), never the run's fate, and the other plugins are still called."""
        if not plugins.listens(hook):
            return  # nobody listens: skip loading the record
        for failure in plugins.notify(hook, run=RunRecord.load(self.store, run_id)):
            self.store.add_event(run_id, f"{failure.line}; traceback:\n{failure.details[-8000:]}")


def _request_from_row(row: dict[str, Any]) -> LaunchRequest:
    """The :class:`LaunchRequest` an attempt row stored (``LaunchRequest.to_dict``)."""
    workers = [WorkerRequest(**w) for w in row["workers"]]
    return LaunchRequest(**{**row, "workers": workers})


def left_behind(run_id: str) -> str:
    """What a controller that stops says of a run :meth:`Controller.cancel_all` could not end."""
    return (
        f"mlrt: {run_id}: its workers could not be stopped (see `mlrt status {run_id}`); the next controller"
        " or `mlrt status` takes the run over"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of a detached controller process."""
    parser = argparse.ArgumentParser(prog="python -m mlrt.controller")
    parser.add_argument("--db", required=True)
    parser.add_argument("--adopt", action="store_true", help="drive the runs handed over to this process")
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)
    controller = Controller(Store(args.db))

    try:
        with controller.stopped_by_signals():
            controller.run_until_done(args.run_ids, adopt=args.adopt)
    except KeyboardInterrupt:
        for run_id in controller.cancel_on_signal("the controller was asked to stop (SIGTERM/SIGINT)"):
            print(left_behind(run_id), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
