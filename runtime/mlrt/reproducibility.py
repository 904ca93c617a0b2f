"""The reproducibility record kept with every run.

It answers "what exactly produced this model?": the spec as submitted and as
resolved, the ``--set`` overrides, the git commit of the working directory
(and whether it had uncommitted changes), the content hash of every data
channel, the Python version and every installed distribution (or, for workers
in a container or pod, the image and its digest), the source bundle's digest
(:mod:`mlrt.sources`) and the random seed. :mod:`mlrt.lineage` reads it.
"""

from __future__ import annotations

import email.parser
import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# Where a metadata file's headers end (its description, the message body, follows).
_HEADERS_END = re.compile(r"\r?\n\r?\n")


def git_state(directory: Path) -> dict[str, Any] | None:
    """Commit and dirty flag (tracked files changed) of the repository holding ``directory``."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = next((line.split()[2] for line in status if line.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":
        return None
    return {"commit": commit, "dirty": any(not line.startswith("#") for line in status)}


@functools.cache
def installed_distributions() -> dict[str, str]:
    """Every distribution installed in this Python, name (normalized, PEP 503) to version, sorted.

    Read once per process: packages installed under a running controller do
    not change the code it already imported. Where ``sys.path`` holds a folder, a
    ``NAME-VERSION.dist-info`` folder in it names its distribution (the wheel format
    escapes any ``-`` in either part to ``_``), so only other kinds of metadata
    (``.egg-info``, a zip, an unescaped name) are opened and parsed: at every submit,
    parsing each of a hundred packages' metadata took a tenth of a second."""
    found: dict[str, str] = {}
    for entry in sys.path:
        for name, version in _distributions_in(entry or "."):
            if name:
                found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return dict(sorted(found.items()))


def _distributions_in(entry: str) -> list[tuple[str, str]]:
    """``(name, version)`` of each distribution ``importlib.metadata`` finds in one ``sys.path`` entry."""
    try:
        children = os.listdir(entry)
    except OSError:  # a zip or a missing folder: importlib.metadata knows how to read it
        children = None
    if children is None:
        return [_parsed(dist) for dist in importlib.metadata.distributions(path=[entry])]
    found = []
    for child in children:
        stem, dot, kind = child.rpartition(".")
        if not dot or kind not in ("dist-info", "egg-info"):
            continue
        parts = stem.split("-")
        if kind == "dist-info" and len(parts) == 2 and all(parts):
            found.append((parts[0], parts[1]))
        else:
            found.append(_parsed(importlib.metadata.PathDistribution(Path(entry, child))))
    return found


def _parsed(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    headers = email.parser.HeaderParser().parsestr(_metadata_headers(dist))
    return headers["Name"] or "", headers["Version"] or ""


def _metadata_headers(dist: importlib.metadata.Distribution) -> str:
    """The header block of a distribution's metadata file, found as ``dist.metadata`` finds it.

    ``dist.metadata["Name"]`` and ``dist.version`` would each parse the whole file, long
    description included, as a MIME message."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""
    return _HEADERS_END.split(text, 1)[0]


def packages_digest(packages: dict[str, str]) -> str:
    """One sha256 of a package list: of its ``name==version`` lines, sorted, so two environments
    with the same distributions have the same digest whatever order they were read in."""
    lines = "".join(f"{name}=={version}\n" for name, version in sorted(packages.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


_UNSET: Any = object()


def base_record(
    working_dir: Path, seed: int, *, git: dict[str, Any] | None = _UNSET, image: str | None = None
) -> dict[str, Any]:
    """Everything known at submission; data hashes are added when channels are materialized,
    an image's digest when a container or pod runs it.

    ``git`` is the repository state when the caller already has it (a tuning
    trial takes its tuning job's); otherwise it is read from ``working_dir``.
    ``image`` is the image the workers run in (container and Kubernetes
    backends): then ``packages`` is None, as this machine's packages say nothing
    of the image's, and ``image`` names it. Otherwise ``packages`` lists every
    installed distribution and ``packages_sha256`` hashes the list."""
    packages = None if image else installed_distributions()
    return {
        "git": git_state(working_dir) if git is _UNSET else git,
        "python": None if image else sys.version.split()[0],
        "platform": None if image else platform.platform(),
        "packages": packages,
        "packages_sha256": packages_digest(packages) if packages is not None else None,
        "image": image,
        "seed": seed,
        "data": {},
    }
