"""The container engine CLI (podman or docker) that runs the workers.

Which engine, and what extra arguments every ``run`` gets, are settings of the
machine, not of a job (a spec must run unchanged elsewhere), so they come from
the environment of the process that launches the workers:

``MLRT_CONTAINER_ENGINE``
    ``podman``, ``docker`` or a path to either (a docker-compatible CLI such as
    ``nerdctl`` is treated like docker). Default: podman if it is on ``PATH``,
    else docker.
``MLRT_CONTAINER_RUN_ARGS``
    Extra arguments for every ``ENGINE run``, split like a shell would
    (``shlex``), e.g. ``--runtime runc --ulimit nofile=1024:1024``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from mlrt.launchers import LaunchError

ENGINE_VARIABLE = "MLRT_CONTAINER_ENGINE"
RUN_ARGS_VARIABLE = "MLRT_CONTAINER_RUN_ARGS"
# Engine commands other than ``run`` (which may pull an image) answer in seconds.
COMMAND_TIMEOUT = 120.0


class EngineError(RuntimeError):
    """An engine command failed; the message is the engine's own one-line reason."""


def configured_engine() -> str:
    """The engine as configured (a name or a path), without checking that it exists."""
    configured = os.environ.get(ENGINE_VARIABLE, "").strip()
    if configured:
        return configured
    for name in ("podman", "docker"):
        if shutil.which(name):
            return name
    return "podman"


def engine_kind(engine: str) -> str:
    """``podman`` or ``docker`` (the flavour of command-line options the engine takes)."""
    return "podman" if Path(engine).name.startswith("podman") else "docker"


def run_args() -> list[str]:
    """The machine's extra ``run`` arguments (``MLRT_CONTAINER_RUN_ARGS``)."""
    value = os.environ.get(RUN_ARGS_VARIABLE, "")
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise LaunchError(f"{RUN_ARGS_VARIABLE}={value!r} cannot be split into arguments: {exc}") from None


def resolve(engine: str) -> str:
    """The engine's executable, or a :class:`LaunchError` that says how to fix a missing one."""
    path = shutil.which(engine)
    if path is None:
        if os.environ.get(ENGINE_VARIABLE, "").strip():
            fix = f"install it or point {ENGINE_VARIABLE} at a podman or docker executable"
        else:
            fix = f"install podman or docker, or set {ENGINE_VARIABLE} to the path of one"
        raise LaunchError(f"container engine {engine!r} not found: {fix}", retry=False)
    return path


def one_line(stderr: str) -> str:
    """The engine's reason from its stderr: the last ``Error:`` line, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "docker: error"))]
    line = (errors or lines or [""])[-1]
    for prefix in ("docker: Error response from daemon: ", "Error response from daemon: ", "Error: ", "error: "):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return line


def run(
    argv: list[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run one engine command (``argv[0]`` is the engine); :class:`EngineError` when it fails."""
    # Engine helpers (podman's conmon) may drop files such as ``oom`` in their
    # working directory: give them a folder of their own, not the user's.
    from mlrt.store import mlrt_home  # SQLAlchemy: only when an engine command runs, not at plugin load

    workdir = mlrt_home() / "engine"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"`{shlex.join(argv[:2])}` did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise EngineError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    if check and result.returncode != 0:
        reason = one_line(result.stderr) or f"`{shlex.join(argv[:2])}` exited with code {result.returncode}"
        raise EngineError(reason)
    return result
