"""Registering the files a run wrote as artifacts, with size and sha256.

Artifact paths are relative to the run's output folder and can never point
outside it: a symlink that leads elsewhere is skipped, not followed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
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


def collect(run_id: str, output_dir: Path) -> tuple[list[Artifact], list[str]]:
    """Artifacts for every file under ``output_dir``, and the paths skipped for escaping it."""
    from mlrt.store.models import Artifact  # SQLModel: only when artifacts are collected, not at plugin load

    root = output_dir.resolve()
    found: list[Artifact] = []
    skipped: list[str] = []
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
