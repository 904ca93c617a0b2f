"""``python -m mlrt.s3sync``: keep a pod's run folder in step with its ``s3://`` output.

Kubernetes workers write to ``/mlrt/run`` in their pod, which the controller
cannot read. When a run's output is an ``s3://`` prefix, two containers of
mlrt's training image carry it there:

- ``restore RUN_DIR URI`` (an init container) downloads the checkpoints an
  earlier attempt uploaded to ``URI/checkpoints/`` into ``RUN_DIR/checkpoints``,
  so a retry resumes from them;
- ``watch RUN_DIR URI --attempt N --worker R`` (a native sidecar: it starts
  before the worker and is stopped with SIGTERM after the worker exits)
  uploads ``RUN_DIR/checkpoints`` every ``--every`` seconds while the worker
  runs, then, on SIGTERM, the output and the checkpoints one last time, and
  exits. Unchanged files are not sent again (:func:`mlrt.s3.upload_tree`).

Retries
    The restore and the final upload are retried whole with the pauses of
    ``MLRT_S3_UPLOAD_BACKOFF`` (:func:`mlrt.s3.retried`), on top of boto3's
    retries of each request (``AWS_MAX_ATTEMPTS``); the pod gets both
    settings from the controller. A checkpoint upload that fails is tried
    again at the next round. When S3 still fails, the command prints one
    ``error: ...`` line (no traceback) and exits 1.

Completion marker
    After the final upload succeeded, ``watch`` writes the object
    ``URI/.mlrt/attempt-N/worker-R.json`` (:func:`marker_uri`): a JSON
    summary ``{"attempt": N, "worker": R, "files": [{"path", "size",
    "sha256"}, ...], "skipped": [...]}`` of what the pod's final upload holds
    (paths relative to ``URI``, like ``output/model.bin``). A native
    sidecar's exit code does not fail its pod, so the controller requires
    every worker's marker before the run can end SUCCEEDED
    (:func:`missing_markers`). A pod's uploader removes its worker's marker
    when it starts (or at the first round S3 answers), so a pod replacing a
    disrupted one is not taken for done on its predecessor's word, unless S3
    never answered it at all. Markers live outside ``URI/output/`` and are
    never registered as artifacts.

Credentials come from the pod (its ServiceAccount's role, or
``compute.kubernetes.env_from_secrets``), as for every boto3 client.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from mlrt import s3

PREFIX = "[mlrt s3sync]"
MARKER_FOLDER = ".mlrt"


def marker_uri(uri: str, attempt: int, worker: int) -> str:
    """The completion marker of worker ``worker`` of attempt ``attempt`` below the run's output ``uri``."""
    return f"{uri.rstrip('/')}/{MARKER_FOLDER}/attempt-{attempt}/worker-{worker}.json"


def _say(text: str) -> None:
    print(f"{PREFIX} {text}", flush=True)


def _retrying(what: str) -> Callable[[int, Exception, float], None]:
    """An ``on_retry`` for :func:`mlrt.s3.retried` that says each failed try in the pod's log."""

    def on_retry(tries: int, exc: Exception, pause: float) -> None:
        _say(f"{what} try {tries} failed ({type(exc).__name__}: {exc}); next try in {pause:g}s")

    return on_retry


def restore(run_dir: Path, uri: str) -> int:
    """Download ``URI/checkpoints/`` into ``RUN_DIR/checkpoints``; how many files."""
    try:
        objects = s3.list_objects(f"{uri.rstrip('/')}/checkpoints/")
    except FileNotFoundError:
        return 0  # a first attempt: nothing to resume from
    s3.download_objects(objects, run_dir / "checkpoints")
    return len(objects)


def upload(run_dir: Path, uri: str, parts: tuple[str, ...]) -> int:
    """Upload the named sub-folders of ``run_dir``; how many files were sent."""
    return sum(o.uploaded for o in _upload_parts(run_dir, uri, parts)[0])


def _upload_parts(run_dir: Path, uri: str, parts: tuple[str, ...]) -> tuple[list[s3.UploadedObject], list[str]]:
    """Upload the named sub-folders; every file (its ``path`` relative to ``uri``) and the paths skipped."""
    files: list[s3.UploadedObject] = []
    skipped: list[str] = []
    for part in parts:
        objects, left = s3.upload_tree(run_dir / part, f"{uri.rstrip('/')}/{part}")
        files += [dataclasses.replace(o, path=f"{part}/{o.path}") for o in objects]
        skipped += [f"{part}/{path}" for path in left]
    return files, skipped


def final_upload(run_dir: Path, uri: str, attempt: int, worker: int) -> int:
    """Upload the output and the checkpoints, then write the worker's completion marker
    (:func:`marker_uri`); how many files were sent. One try: :func:`watch` retries it."""
    files, skipped = _upload_parts(run_dir, uri, ("output", "checkpoints"))
    summary = {
        "attempt": attempt,
        "worker": worker,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        "skipped": skipped,
    }
    bucket, key = s3.parse_uri(marker_uri(uri, attempt, worker))
    body = json.dumps(summary, indent=1).encode()
    s3.client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return sum(f.uploaded for f in files)


def _remove_marker(uri: str, attempt: int, worker: int) -> bool:
    """Remove this worker's marker left by a pod this one replaces; whether that worked (tried again later if not)."""
    bucket, key = s3.parse_uri(marker_uri(uri, attempt, worker))
    try:
        s3.client().delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        _say(f"could not remove an old completion marker yet: {type(exc).__name__}: {exc}")
        return False
    return True


class StopSignals:
    """SIGTERM and SIGINT, noted for :meth:`wait` without running Python code where they land.

    Python runs a signal handler in the main thread between two bytecodes,
    wherever that thread is, even inside ``threading.Event.wait`` holding the
    event's lock: a handler that took that lock (``Event.set``) would wait
    for itself for ever, and the pod's output would never be uploaded. The
    handlers installed here do nothing; the interpreter's C-level handler
    writes each signal to a pipe (:func:`signal.set_wakeup_fd`), which
    :meth:`wait` polls. Create in the main thread.
    """

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(write, False)  # as set_wakeup_fd requires: a full pipe drops a wakeup, never blocks
        signal.set_wakeup_fd(write)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        self._poller = select.poll()
        self._poller.register(self._read, select.POLLIN)

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True once a stop signal has arrived (then at once, every time)."""
        return bool(self._poller.poll(seconds * 1000))


def watch(run_dir: Path, uri: str, every: float, attempt: int, worker: int) -> int:
    """Upload checkpoints every ``every`` seconds until SIGTERM, then everything once more and
    the completion marker, retried with backoff; 0 when it is all in S3, else 1 (one ``error:`` line)."""
    stop = StopSignals()
    removed = _remove_marker(uri, attempt, worker)
    while not stop.wait(every):
        removed = removed or _remove_marker(uri, attempt, worker)
        try:
            sent = upload(run_dir, uri, ("checkpoints",))
            if sent:
                _say(f"{sent} checkpoint file(s) -> {uri}/checkpoints")
        except Exception as exc:  # keep watching: the final upload retries everything
            _say(f"checkpoint upload failed, trying again later: {type(exc).__name__}: {exc}")
    try:
        sent = s3.retried(lambda: final_upload(run_dir, uri, attempt, worker), _retrying("final upload"))
    except (s3.UploadFailed, ValueError) as exc:  # ValueError: a bad setting or key, not retried
        print(f"error: output not uploaded to {uri}: {exc}", file=sys.stderr, flush=True)
        return 1
    _say(f"final upload: {sent} file(s) -> {uri}; completion marker {marker_uri(uri, attempt, worker)}")
    return 0


def missing_markers(uri: str, attempt: int, workers: int) -> list[int]:
    """The workers of attempt ``attempt`` (``workers`` of them) whose completion marker is not
    under the run's output ``uri``: their final upload did not finish. One listing, not retried:
    S3 errors propagate."""
    try:
        found = s3.list_objects(f"{uri.rstrip('/')}/{MARKER_FOLDER}/attempt-{attempt}/")
    except FileNotFoundError:
        found = []
    names = {obj.relative for obj in found}
    return [worker for worker in range(workers) if f"worker-{worker}.json" not in names]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mlrt.s3sync``: 0 when done, 1 when S3 still failed (one ``error:`` line)."""
    parser = argparse.ArgumentParser(prog="python -m mlrt.s3sync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("restore", "watch"):
        command = commands.add_parser(name)
        command.add_argument("run_dir", type=Path)
        command.add_argument("uri")
        if name == "watch":
            command.add_argument("--every", type=float, default=60.0, help="seconds between checkpoint uploads")
            command.add_argument("--attempt", type=int, required=True, help="the attempt's number, for its marker")
            command.add_argument("--worker", type=int, required=True, help="the pod's worker rank, for its marker")
    args = parser.parse_args(argv)
    if args.command == "watch":
        return watch(args.run_dir, args.uri, args.every, args.attempt, args.worker)
    try:
        count = s3.retried(lambda: restore(args.run_dir, args.uri), _retrying("restore"))
    except (s3.UploadFailed, ValueError) as exc:
        print(f"error: checkpoints not restored from {args.uri}/checkpoints: {exc}", file=sys.stderr, flush=True)
        return 1
    _say(f"restored {count} checkpoint file(s) from {args.uri}/checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
