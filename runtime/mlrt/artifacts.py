"""Registering the files a run wrote as artifacts, with size and sha256.

Artifact paths are relative to the run's output folder and can never point
outside it: a symlink that leads elsewhere is skipped, not followed. A run
with a ``file://`` output is registered in place (:func:`collect`); one with
an ``s3://`` output is uploaded from its staging folder first
(:func:`upload`), and its staged files stay there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.store import Store
    from mlrt.store.models import Artifact


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_path_problem(relative: str) -> str | None:
    """Why ``relative`` cannot be used as a path below a prefix or folder, or None if it can.

    Allowed: ``/``-separated segments, none empty, ``.`` or ``..``, with no
    backslash or NUL and no leading ``/``.
    """
    if not relative:
        return "is empty"
    if "\0" in relative:
        return "contains NUL"
    if "\\" in relative:
        return "contains a backslash"
    if relative.startswith("/"):
        return "is absolute"
    segments = relative.split("/")
    if "" in segments:
        return "has an empty segment"
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment"
    return None


def walk_root(folder: Path) -> Path | None:
    """``folder`` resolved, as the root of a run's files to register, upload or serve; None when
    ``folder`` or the run's own folder above it is a symbolic link.

    Workers can write next to their output (a tuning trial below a shared output path, for one),
    so they could plant ``RUN/output -> /anywhere`` before the controller walks it: followed,
    the controller would hash, upload and serve the files of wherever it points."""
    if folder.is_symlink() or folder.parent.is_symlink():
        return None
    return folder.resolve()


def collect(run_id: str, output_dir: Path) -> tuple[list[Artifact], list[str]]:
    """Artifacts for every file under ``output_dir``, and the paths skipped for escaping it
    (``output_dir``'s own name when it is a symbolic link, see :func:`walk_root`)."""
    from mlrt.store.models import Artifact  # SQLModel: only when artifacts are collected, not at plugin load

    found: list[Artifact] = []
    skipped: list[str] = []
    root = walk_root(output_dir)
    if root is None:
        return found, [output_dir.name]
    if not root.is_dir():
        return found, skipped
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            skipped.append(relative)
            continue
        if not path.is_file():
            continue
        found.append(
            Artifact(
                run_id=run_id,
                path=relative,
                uri=path.resolve().as_uri(),
                size=path.stat().st_size,
                sha256=sha256_file(path),
            )
        )
    return found, skipped


def upload(
    run_id: str, staging: Path, output_uri: str, on_retry: Callable[[int, Exception, float], None] | None = None
) -> tuple[list[Artifact], list[str]]:
    """Upload a run's staged ``output`` and ``checkpoints`` folders below its ``s3://`` output; return the
    artifacts and the paths skipped (see :func:`mlrt.s3.upload_tree`).

    The artifacts are every object under ``OUTPUT_URI/output/``, also those
    a pod uploaded itself, with the sha256 recorded at upload. Unchanged files
    are not sent again. The whole upload, listing included, is retried with
    backoff (:func:`mlrt.s3.retried`, which calls ``on_retry``); raises
    :class:`mlrt.s3.UploadFailed` when it still fails.
    """
    from mlrt import s3

    def send() -> tuple[list[Artifact], list[str]]:
        uploaded, skipped = s3.upload_tree(staging / "output", f"{output_uri}/output")
        s3.upload_tree(staging / "checkpoints", f"{output_uri}/checkpoints")
        return _s3_artifacts(run_id, output_uri, {o.path: o.sha256 for o in uploaded}), skipped

    return s3.retried(send, on_retry)


def _s3_artifacts(run_id: str, output_uri: str, known: dict[str, str]) -> list[Artifact]:
    """Every object under ``OUTPUT_URI/output/``, with the sha256 recorded at upload (``known``: path ->
    sha256 of what was just uploaded, else the object's metadata)."""
    from mlrt import s3
    from mlrt.store.models import Artifact

    try:
        objects = s3.list_objects(f"{output_uri}/output/")
    except FileNotFoundError:
        return []
    return [
        Artifact(
            run_id=run_id,
            path=obj.relative,
            uri=obj.uri,
            size=obj.size,
            sha256=known.get(obj.relative) or s3.sha256_of(obj.uri) or "",
        )
        for obj in objects
    ]


class PushRefused(Exception):
    """A run whose output cannot be pushed: not finished, not ``s3://``, or nothing staged (the message says)."""


def push(store: Store, run_id: str, on_retry: Callable[[int, Exception, float], None] | None = None) -> list[Artifact]:
    """Upload the staged files of a finished run to its ``s3://`` output and register its artifacts.

    For a run that ended ``output not uploaded: ...``: its files stayed in
    its staging folder under ``$MLRT_HOME/staging`` (on the machine of the
    controller that drove it). The run keeps its state, since a run's ending
    is final; the upload is an event on the run. Returns the run's artifacts.
    Raises :class:`PushRefused`, or :class:`mlrt.s3.UploadFailed` when S3
    still fails after the retries.
    """
    from mlrt.states import RunState
    from mlrt.submission import local_prefix

    run = store.get_run(run_id)
    if not RunState(run.state).is_terminal():
        raise PushRefused(f"run {run_id} is {run.state}: its controller uploads the output when it ends")
    if not run.output_uri.startswith("s3://"):
        raise PushRefused(f"run {run_id} writes to {run.output_uri} directly: there is nothing to push")
    staging = local_prefix(run.output_uri, run_id)
    if not staging.is_dir():
        raise PushRefused(f"run {run_id} has no staged files here ({staging} does not exist)")
    found, skipped = upload(run_id, staging, run.output_uri, on_retry)
    store.put_artifacts(found)
    for path in skipped:
        store.add_event(run_id, f"artifact {path!r} skipped: it points outside the run's output")
    store.add_event(
        run_id, f"output pushed from {staging} to {run.output_uri}: {len(found)} artifact(s) registered with sha256"
    )
    return found
