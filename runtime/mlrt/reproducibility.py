"""The reproducibility record kept with every run.

It answers "what exactly produced this model?": the spec as submitted and as
resolved, the ``--set`` overrides, the git commit of the working directory
(and whether it had uncommitted changes), the content hash of every data
channel, the Python and package versions, and the random seed.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# Packages whose version changes results; plugin distributions are added too.
_PACKAGES = ("mlrt", "numpy", "pandas", "scikit-learn", "scipy", "torch", "pyarrow")


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


@functools.lru_cache(maxsize=8)
def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones omitted).

    Read once per process: packages installed under a running controller do
    not change the code it already imported."""
    versions = {}
    for name in (*_PACKAGES, *extra):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


_UNSET: Any = object()


def base_record(
    working_dir: Path, seed: int, plugin_distributions: list[str], *, git: dict[str, Any] | None = _UNSET
) -> dict[str, Any]:
    """Everything known at submission; data hashes are added when channels are materialized.

    ``git`` is the repository state when the caller already has it (a tuning
    trial takes its tuning job's); otherwise it is read from ``working_dir``."""
    return {
        "git": git_state(working_dir) if git is _UNSET else git,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(package_versions(tuple(plugin_distributions))),
        "seed": seed,
        "data": {},
    }
