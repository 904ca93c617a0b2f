"""``python -m mlrt.s3sync``: keep a pod's run folder in step with its ``s3://`` output.

Kubernetes workers write to ``/mlrt/run`` in their pod, which the controller
cannot read. When a run's output is an ``s3://`` prefix, two containers of
mlrt's training image carry it there:

- ``restore RUN_DIR URI`` (an init container) downloads the checkpoints an
  earlier attempt uploaded to ``URI/checkpoints/`` into ``RUN_DIR/checkpoints``,
  so a retry resumes from them;
- ``watch RUN_DIR URI`` (a native sidecar: it starts before the worker and is
  stopped with SIGTERM after the worker exits) uploads ``RUN_DIR/checkpoints``
  every ``--every`` seconds while the worker runs, then, on SIGTERM, the
  output and the checkpoints one last time, and exits. Unchanged files are not
  sent again (:func:`mlrt.s3.upload_tree`).

Credentials come from the pod (its ServiceAccount's role, or
``compute.kubernetes.env_from_secrets``), as for every boto3 client.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from mlrt import s3


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
    sent = 0
    for part in parts:
        objects, _ = s3.upload_tree(run_dir / part, f"{uri.rstrip('/')}/{part}")
        sent += sum(o.uploaded for o in objects)
    return sent


def watch(run_dir: Path, uri: str, every: float) -> int:
    """Upload checkpoints every ``every`` seconds until SIGTERM, then everything once more."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop.wait(every):
        try:
            sent = upload(run_dir, uri, ("checkpoints",))
            if sent:
                print(f"[mlrt s3sync] {sent} checkpoint file(s) -> {uri}/checkpoints", flush=True)
        except Exception as exc:  # keep watching: the final upload retries everything
            print(f"[mlrt s3sync] checkpoint upload failed, retrying later: {exc}", flush=True)
    sent = upload(run_dir, uri, ("output", "checkpoints"))
    print(f"[mlrt s3sync] final upload: {sent} file(s) -> {uri}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlrt.s3sync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("restore", "watch"):
        command = commands.add_parser(name)
        command.add_argument("run_dir", type=Path)
        command.add_argument("uri")
        if name == "watch":
            command.add_argument("--every", type=float, default=60.0, help="seconds between checkpoint uploads")
    args = parser.parse_args(argv)
    if args.command == "restore":
        count = restore(args.run_dir, args.uri)
        print(f"[mlrt s3sync] restored {count} checkpoint file(s) from {args.uri}/checkpoints", flush=True)
        return 0
    return watch(args.run_dir, args.uri, args.every)


if __name__ == "__main__":
    sys.exit(main())
