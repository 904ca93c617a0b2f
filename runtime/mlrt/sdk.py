"""The worker SDK: record metrics, params and artifacts from inside a job.

The SDK reads the container contract's environment (``MLRT_RUN_ID``,
``MLRT_TRACKING_URI``, ``MLRT_OUTPUT_DIR``, ``RANK``). Metric points are
buffered in memory and written in batches by a background thread (every
second, or sooner once many are waiting) and at interpreter exit, so
``log_metric`` costs microseconds and never waits on the database. In a
distributed job only rank 0 records, the convention torch code follows for
logging; other ranks' calls are accepted and dropped.

Outside an mlrt job (``MLRT_RUN_ID`` unset) every call is a no-op, after one
warning on stderr, so a training script runs unchanged on its own.

Workers of the controller service get ``MLRT_TRACKING_URI=http(s)://...``
and ``MLRT_TRACKING_TOKEN`` (a token that can write this run only): batches
go to the service's tracking endpoint, retried with backoff while it is
unreachable (a restarting controller loses no points).

A worker that cannot reach the store (a pod of a controller whose store is a
SQLite file) gets ``MLRT_TRACKING_URI=log:``: the SDK then writes each batch as
one ``##mlrt {json}`` line on stdout, and the controller, which copies every
worker's log anyway, reads them back into the store (:mod:`mlrt.logscan`).
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from mlrt.retry_after import retry_after_seconds

FLUSH_INTERVAL = 1.0
FLUSH_AT = 20_000
BATCH_POINTS = 10_000
"""Points per batch: one POST to the tracking endpoint, one transaction in the store."""
MAX_BUFFERED = int(os.environ.get("MLRT_TRACKING_BUFFER", "100000"))
"""Unsent points kept while the store is unreachable (``MLRT_TRACKING_BUFFER``); beyond it the oldest are dropped."""
FINAL_WAIT = float(os.environ.get("MLRT_TRACKING_FINAL_WAIT", "30"))
"""Seconds the flush at interpreter exit may wait for an unreachable store (``MLRT_TRACKING_FINAL_WAIT``)."""
RETRY_FOR = 120.0
PARAMS_WAIT = 10.0
"""Seconds an explicit :func:`flush` (and params, discards, max steps over HTTP) keeps retrying."""
MAX_PAUSE = 30.0
LOG_TRACKING_URI = "log:"
LOG_RECORD_PREFIX = "##mlrt "
DROPPED_PARAM = "mlrt_points_dropped"
"""The param a run gets when its worker dropped points while the store was unreachable (how many)."""
_POINTS_PER_LINE = 500

Point = tuple[str, int, float, float]


class _LogSink:
    """The store's write side as ``##mlrt {json}`` lines on stdout (``MLRT_TRACKING_URI=log:``).

    Records: ``{"metrics": [[key, step, value, timestamp], ...], "batch": id}``,
    ``{"params": {key: value}}`` and ``{"discard": [keys], "from_step": n}``.
    Each is written with one ``write`` call on file descriptor 1, so a line is
    never split by the program's own output. Nothing is retried (a write to
    stdout either happens or raises); a line's batch id lets the store
    recognise a line read twice (a controller that stops between storing the
    points and recording how far it read, and the one that adopts the run)."""

    def max_steps(self, run_id: str, *, deadline: float) -> dict[str, int]:
        return {}  # write-only: implicit steps start at 0 in every attempt

    def insert_metrics(self, run_id: str, points: list[Point], *, batch_id: str, deadline: float) -> None:
        for line, start in enumerate(range(0, len(points), _POINTS_PER_LINE)):
            chunk = points[start : start + _POINTS_PER_LINE]
            self._write({"metrics": [list(p) for p in chunk], "batch": f"{batch_id}-{line}"})

    def log_params(self, run_id: str, params: dict[str, Any], *, deadline: float) -> None:
        self._write({"params": params})

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        self._write({"discard": keys, "from_step": from_step})

    @staticmethod
    def _write(record: dict[str, Any]) -> None:
        sys.stdout.flush()
        os.write(1, f"{LOG_RECORD_PREFIX}{json.dumps(record, default=str)}\n".encode())


class _DatabaseSink:
    """The metadata database itself (a local worker's ``MLRT_TRACKING_URI`` is its URL)."""

    def __init__(self, url: str):
        from mlrt.store import Store

        self._store = Store(url)

    def max_steps(self, run_id: str, *, deadline: float) -> dict[str, int]:
        return self._store.max_steps(run_id)

    def insert_metrics(self, run_id: str, points: list[Point], *, batch_id: str, deadline: float) -> None:
        self._store.insert_metrics(run_id, points, batch_id=batch_id)

    def log_params(self, run_id: str, params: dict[str, Any], *, deadline: float) -> None:
        self._store.log_params(run_id, params)

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        self._store.delete_metrics(run_id, keys, from_step)


class _HttpSink:
    """The store's write side over the controller service's tracking endpoint."""

    def __init__(self, base_url: str, token: str, run_id: str):
        from urllib.parse import quote

        import httpx

        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/api/v1/runs/{quote(run_id)}/tracking",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    def _send(self, method: str, path: str, body: Any = None, deadline: float | None = None) -> Any:
        """One request, retried with backoff until ``deadline`` (monotonic; default ``RETRY_FOR`` from now)."""
        import httpx

        deadline = time.monotonic() + RETRY_FOR if deadline is None else deadline
        pause = 0.5
        while True:
            timeout = min(30.0, max(5.0, deadline - time.monotonic()))
            try:
                response = self._http.request(method, path, json=body, timeout=timeout)
                if response.status_code < 500 and response.status_code != 429:
                    response.raise_for_status()
                    return response.json() if response.content else None
                problem = f"HTTP {response.status_code}"
                wait = retry_after_seconds(response.headers.get("Retry-After"), default=0.0)
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
                wait = 0.0
            pause = max(pause, wait)  # a 429's Retry-After: this run's workers have their share in flight
            if time.monotonic() + pause > deadline:
                raise RuntimeError(f"tracking endpoint unavailable: {problem}")
            time.sleep(pause)
            pause = min(pause * 2, 10.0)

    def max_steps(self, run_id: str, *, deadline: float) -> dict[str, int]:
        return self._send("GET", "/max-steps", deadline=deadline)

    def insert_metrics(self, run_id: str, points: list[Point], *, batch_id: str, deadline: float) -> None:
        self._send("POST", "/metrics", {"points": [list(p) for p in points], "batch": batch_id}, deadline)

    def log_params(self, run_id: str, params: dict[str, Any], *, deadline: float) -> None:
        self._send("POST", "/params", json.loads(json.dumps(params, default=str)), deadline)

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        self._send("POST", "/discard", {"keys": keys, "from_step": from_step})


@dataclasses.dataclass
class _Batch:
    """Points on their way to the store, with the id that makes sending them again harmless."""

    points: list[Point]
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


class _Tracker:
    """Buffers points for one run and writes them to the tracking store in batches.

    ``log_metrics`` only appends to memory. A background thread forms batches
    (each with a uuid4, kept when a batch is sent again) and writes them; while
    the store is unreachable it retries with backoff (1 s doubling to 30 s) and
    training goes on. At most ``MAX_BUFFERED`` unsent points are kept: beyond
    that the oldest are dropped, with a warning on stderr, and once the store
    answers again the run gets the param ``mlrt_points_dropped`` (the total).
    A point logged without a step while the store's last steps are not known
    yet is numbered relative to them and gets its step when the store answers
    (numbering goes on after the stored points; dropped points keep their
    numbers)."""

    def __init__(self, run_id: str, tracking_uri: str, output_dir: str | None):
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.output_dir = Path(output_dir) if output_dir else None
        # (key, step, value, timestamp, relative): a relative step is the point's number among
        # its key's points logged without a step since the store's last steps were known.
        self._buffer: list[tuple[str, int, float, float, bool]] = []
        self._relative: dict[str, int] = {}
        self._pending: collections.deque[_Batch] = collections.deque()
        self._steps: dict[str, int] | None = None
        self._dropped = 0
        self._dropped_reported = 0
        self._params: dict[str, Any] = {}  # params not written yet
        self._failing: str | None = None  # the store's last error while it is unreachable
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._store = None
        self._thread = threading.Thread(target=self._loop, name="mlrt-metrics", daemon=True)
        self._thread.start()
        atexit.register(self._final_flush)

    @property
    def store(self):
        if self._store is None:
            if self.tracking_uri == LOG_TRACKING_URI:
                self._store = _LogSink()
            elif self.tracking_uri.startswith(("http://", "https://")):
                self._store = _HttpSink(self.tracking_uri, os.environ.get("MLRT_TRACKING_TOKEN", ""), self.run_id)
            else:
                self._store = _DatabaseSink(self.tracking_uri)
        return self._store

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        """Buffer points (one lock and one clock read for the whole dict); never waits on the store."""
        now = time.time()
        with self._lock:
            if step is None:
                for key, value in metrics.items():
                    if self._steps is None:
                        number = self._relative[key] = self._relative.get(key, -1) + 1
                        self._buffer.append((key, number, float(value), now, True))
                    else:
                        next_step = self._steps.get(key, -1) + 1
                        self._steps[key] = next_step
                        self._buffer.append((key, next_step, float(value), now, False))
            else:
                step = int(step)
                for key, value in metrics.items():
                    if self._steps is not None and step > self._steps.get(key, -1):
                        self._steps[key] = step
                    self._buffer.append((key, step, float(value), now, False))
            self._bound()
            full = len(self._buffer) >= FLUSH_AT and self._failing is None
        if full:
            self._wake.set()

    def _bound(self) -> None:
        """Drop the oldest unsent points beyond ``MAX_BUFFERED`` (called with the lock held)."""
        excess = len(self._buffer) + sum(len(b.points) for b in self._pending) - MAX_BUFFERED
        if excess <= 0:
            return
        if not self._dropped or self._dropped == self._dropped_reported:
            print(
                f"mlrt: {MAX_BUFFERED} metric points wait for an unreachable tracking store"
                f" ({self._failing or 'not answering'}); dropping the oldest (MLRT_TRACKING_BUFFER)",
                file=sys.stderr,
            )
        self._dropped += excess
        while excess and self._pending:
            batch = self._pending[0]
            if len(batch.points) <= excess:
                excess -= len(self._pending.popleft().points)
            else:
                del batch.points[:excess]
                excess = 0
        del self._buffer[:excess]

    def _batches(self, deadline: float) -> None:
        """Move the buffer into batches, numbering points logged without a step (may ask the store)."""
        stored = None
        with self._lock:
            relative = self._steps is None and bool(self._relative)
        if relative:
            stored = self.store.max_steps(self.run_id, deadline=deadline)
        with self._lock:
            entries, self._buffer = self._buffer, []
            points = [entry[:4] for entry in entries]
            if any(entry[4] for entry in entries):
                if stored is None:  # logged while this pass began: numbered in the next one
                    self._buffer[:0] = entries
                    return
                steps = dict(stored)
                points = []
                for key, step, value, stamp, is_relative in entries:
                    if is_relative:
                        step += stored.get(key, -1) + 1
                    steps[key] = max(step, steps.get(key, -1))
                    points.append((key, step, value, stamp))
                if self._steps is None:
                    self._steps, self._relative = steps, {}
            for start in range(0, len(points), BATCH_POINTS):
                self._pending.append(_Batch(points[start : start + BATCH_POINTS]))

    def log_params(self, params: dict[str, Any]) -> None:
        """Write params now (waiting at most ``PARAMS_WAIT`` seconds); while the store is unreachable
        they wait with the metric points instead, so training goes on."""
        with self._lock:
            self._params.update(params)
        if self._failing is not None:
            self._wake.set()
            return
        try:
            self.flush(PARAMS_WAIT)
        except Exception as exc:  # kept; the background thread writes them once the store answers
            print(f"mlrt: params not recorded yet ({exc}); retrying in the background", file=sys.stderr)

    def _send_params(self, deadline: float) -> None:
        with self._lock:
            params = dict(self._params)
        if params:
            self.store.log_params(self.run_id, params, deadline=deadline)
            with self._lock:
                for key, value in params.items():
                    if self._params.get(key) is value:  # not replaced meanwhile
                        del self._params[key]

    def _send(self, deadline: float) -> None:
        """Write params and every pending batch, oldest first, retrying until ``deadline``; raises when the store fails."""
        self._send_params(deadline)
        self._batches(deadline)
        while True:
            with self._lock:
                if not self._pending:
                    break
                batch = self._pending[0]
                points = list(batch.points)
            self.store.insert_metrics(self.run_id, points, batch_id=batch.id, deadline=deadline)
            with self._lock:
                if self._pending and self._pending[0] is batch:  # not dropped meanwhile
                    self._pending.popleft()
        if self._failing is not None:
            self._failing = None
            print("mlrt: the tracking store answers again; buffered metric points sent", file=sys.stderr)
        if self._dropped > self._dropped_reported:
            dropped = self._dropped
            print(
                f"mlrt: {dropped} metric points were dropped while the tracking store was unreachable", file=sys.stderr
            )
            with self._lock:
                self._params[DROPPED_PARAM] = dropped
            self._dropped_reported = dropped
            self._send_params(deadline)

    def flush(self, wait: float = RETRY_FOR) -> None:
        """Write every buffered point, retrying for up to ``wait`` seconds; raises when the store stays away."""
        deadline = time.monotonic() + wait
        if not self._write_lock.acquire(timeout=max(0.0, wait)):
            raise RuntimeError("the tracking store did not answer in time (another write is still retrying)")
        try:
            self._send(deadline)
        finally:
            self._write_lock.release()

    def unsent(self) -> int:
        """Points logged but not yet stored."""
        with self._lock:
            return len(self._buffer) + sum(len(b.points) for b in self._pending)

    def _final_flush(self) -> None:
        """At interpreter exit: send what is left, waiting at most ``FINAL_WAIT`` seconds."""
        try:
            self.flush(FINAL_WAIT)
        except Exception as exc:
            print(f"mlrt: {self.unsent()} metric points not recorded at exit: {exc}", file=sys.stderr)

    def _loop(self) -> None:
        pause = FLUSH_INTERVAL
        while True:
            self._wake.wait(pause)
            self._wake.clear()
            if not self._write_lock.acquire(blocking=False):
                continue  # an explicit flush is writing
            try:
                self._send(time.monotonic())  # one try each; the backoff is this loop's
                pause = FLUSH_INTERVAL
            except Exception as exc:  # keep training alive; retry later
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self._failing is None:
                    print(f"mlrt: could not record metrics yet ({problem}); retrying", file=sys.stderr)
                self._failing = problem
                pause = min(max(pause * 2, 1.0), MAX_PAUSE)
            finally:
                self._write_lock.release()


_tracker: _Tracker | None = None
_tracker_lock = threading.Lock()
_warned = False


def _active() -> _Tracker | None:
    global _tracker, _warned
    if _tracker is not None:
        return _tracker
    run_id = os.environ.get("MLRT_RUN_ID")
    if not run_id:
        if not _warned:
            print("mlrt: not inside an mlrt job (MLRT_RUN_ID is unset); nothing is recorded", file=sys.stderr)
            _warned = True
        return None
    if os.environ.get("RANK", "0") != "0":
        return None
    with _tracker_lock:
        if _tracker is None:
            _tracker = _Tracker(run_id, os.environ["MLRT_TRACKING_URI"], os.environ.get("MLRT_OUTPUT_DIR"))
    return _tracker


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Record ``value`` for metric ``key`` at ``step`` (default: the key's next step)."""
    tracker = _active()
    if tracker is not None:
        tracker.log_metrics({key: value}, step)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Record several metrics at the same ``step``."""
    tracker = _active()
    if tracker is not None:
        tracker.log_metrics(metrics, step)


def log_params(params: dict[str, Any]) -> None:
    """Record run parameters (written at once; later values replace earlier ones). While the
    tracking store is unreachable they are kept and written when it answers, like metric points."""
    tracker = _active()
    if tracker is not None and params:
        tracker.log_params(params)


def log_param(key: str, value: Any) -> None:
    """Record one run parameter."""
    log_params({key: value})


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> None:
    """Copy a file or folder into the run's output; it is registered, with size and
    sha256, when the attempt ends. ``name`` is the path inside the output
    (default: the file's name) and cannot leave it."""
    tracker = _active()
    if tracker is None:
        return
    if tracker.output_dir is None:
        raise RuntimeError("MLRT_OUTPUT_DIR is unset; this job has no output location")
    source = Path(path)
    root = tracker.output_dir.resolve()
    target = (root / (name or source.name)).resolve()
    if not target.is_relative_to(root) or target == root:
        raise ValueError(f"artifact name {name!r} must stay inside the run's output")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def discard_metrics(keys: tuple[str, ...] | list[str], from_step: int) -> None:
    """Delete this run's points of ``keys`` at ``from_step`` or later.

    An algorithm that resumes from a checkpoint calls this so the steps it is
    about to log again replace those an interrupted attempt logged after the
    checkpoint, instead of duplicating them."""
    tracker = _active()
    if tracker is not None:
        tracker.flush()
        tracker.store.delete_metrics(tracker.run_id, list(keys), from_step)
        with tracker._lock:
            tracker._steps = None


def flush() -> None:
    """Write buffered metric points now (also done every second and at exit)."""
    if _tracker is not None:
        _tracker.flush()
