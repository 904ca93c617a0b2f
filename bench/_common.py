"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def tool(name: str) -> str | None:
    """The console script ``name`` next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def bench_env(workdir: Path, *, bytecode_cache: bool) -> dict[str, str]:
    """The environment every measured command gets.

    With ``bytecode_cache`` (the default), compiled bytecode is cached under
    ``workdir`` even when the calling shell sets PYTHONDONTWRITEBYTECODE, so
    the figures match an ordinary installation (where site-packages and the
    editable source have .pyc files) and no __pycache__ lands in the repo.
    """
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    # Keep peers off the network and quiet.
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.setdefault("TORCHX_DISABLE_TELEMETRY", "1")
    return env


def machine_line() -> str:
    return (
        f"python {platform.python_version()} ({sys.executable}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )


def peer_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def write_json(path: str, summary: dict) -> None:
    """Write a benchmark's figures to ``path`` (``--json``) and say where."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
