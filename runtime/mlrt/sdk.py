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
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

FLUSH_INTERVAL = 1.0
FLUSH_AT = 20_000
LOG_TRACKING_URI = "log:"
LOG_RECORD_PREFIX = "##mlrt "
_POINTS_PER_LINE = 500


class _LogSink:
    """The store's write side as ``##mlrt {json}`` lines on stdout (``MLRT_TRACKING_URI=log:``).

    Records: ``{"metrics": [[key, step, value, timestamp], ...]}``,
    ``{"params": {key: value}}`` and ``{"discard": [keys], "from_step": n}``.
    Each is written with one ``write`` call on file descriptor 1, so a line is
    never split by the program's own output."""

    def max_steps(self, run_id: str) -> dict[str, int]:
        return {}  # write-only: implicit steps start at 0 in every attempt

    def insert_metrics(self, run_id: str, points: list[tuple[str, int, float, float]]) -> None:
        for start in range(0, len(points), _POINTS_PER_LINE):
            self._write({"metrics": [list(p) for p in points[start : start + _POINTS_PER_LINE]]})

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._write({"params": params})

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        self._write({"discard": keys, "from_step": from_step})

    @staticmethod
    def _write(record: dict[str, Any]) -> None:
        sys.stdout.flush()
        os.write(1, f"{LOG_RECORD_PREFIX}{json.dumps(record, default=str)}\n".encode())


class _HttpSink:
    """The store's write side over the controller service's tracking endpoint."""

    RETRY_FOR = 120.0
    POINTS_PER_REQUEST = 10_000

    def __init__(self, base_url: str, token: str, run_id: str):
        from urllib.parse import quote

        import httpx

        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/api/v1/runs/{quote(run_id)}/tracking",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        deadline = time.monotonic() + self.RETRY_FOR
        pause = 0.5
        while True:
            try:
                response = self._http.request(method, path, json=body)
                if response.status_code < 500 and response.status_code != 429:
                    response.raise_for_status()
                    return response.json() if response.content else None
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracking endpoint unavailable: {problem}")
            time.sleep(pause)
            pause = min(pause * 2, 10.0)

    def max_steps(self, run_id: str) -> dict[str, int]:
        return self._send("GET", "/max-steps")

    def insert_metrics(self, run_id: str, points: list[tuple[str, int, float, float]]) -> None:
        for start in range(0, len(points), self.POINTS_PER_REQUEST):
            self._send(
                "POST", "/metrics", {"points": [list(p) for p in points[start : start + self.POINTS_PER_REQUEST]]}
            )

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._send("POST", "/params", json.loads(json.dumps(params, default=str)))

    def delete_metrics(self, run_id: str, keys: list[str], from_step: int) -> None:
        self._send("POST", "/discard", {"keys": keys, "from_step": from_step})


class _Tracker:
    """Buffers points for one run and writes them to the tracking store."""

    def __init__(self, run_id: str, tracking_uri: str, output_dir: str | None):
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.output_dir = Path(output_dir) if output_dir else None
        self._buffer: list[tuple[str, int, float, float]] = []
        self._steps: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._store = None
        self._thread = threading.Thread(target=self._loop, name="mlrt-metrics", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    @property
    def store(self):
        if self._store is None:
            if self.tracking_uri == LOG_TRACKING_URI:
                self._store = _LogSink()
            elif self.tracking_uri.startswith(("http://", "https://")):
                self._store = _HttpSink(self.tracking_uri, os.environ.get("MLRT_TRACKING_TOKEN", ""), self.run_id)
            else:
                from mlrt.store import Store

                self._store = Store(self.tracking_uri)
        return self._store

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        """Buffer points (one lock and one clock read for the whole dict)."""
        now = time.time()
        with self._lock:
            if step is None:
                if self._steps is None:
                    self._steps = self.store.max_steps(self.run_id)
                for key, value in metrics.items():
                    next_step = self._steps.get(key, -1) + 1
                    self._steps[key] = next_step
                    self._buffer.append((key, next_step, float(value), now))
            else:
                step = int(step)
                for key, value in metrics.items():
                    if self._steps is not None and step > self._steps.get(key, -1):
                        self._steps[key] = step
                    self._buffer.append((key, step, float(value), now))
            full = len(self._buffer) >= FLUSH_AT
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                points, self._buffer = self._buffer, []
            if points:
                try:
                    self.store.insert_metrics(self.run_id, points)
                except Exception:
                    with self._lock:  # keep them for the next flush, in order
                        self._buffer[:0] = points
                    raise

    def _loop(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep training alive; the next flush retries
                print(f"mlrt: could not record metrics yet: {exc}", file=sys.stderr)


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
    """Record run parameters (written at once; later values replace earlier ones)."""
    tracker = _active()
    if tracker is not None and params:
        tracker.store.log_params(tracker.run_id, params)


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
