"""What a launch backend implements: plan (pure), then act.

The controller builds a backend-neutral :class:`LaunchContext` for an attempt
(the command, the contract's environment, the working directory, the compute
request). A backend's ``plan`` turns it into a :class:`LaunchRequest` with one
:class:`WorkerRequest` per worker (adding the distributed-training variables);
``mlrt validate`` prints that request and launches nothing. ``launch`` starts
the workers and returns a JSON-serializable handle, which the controller
stores and later passes to ``poll``, ``stop`` and ``cleanup``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

from mlrt.states import RunState


@dataclasses.dataclass
class LaunchContext:
    """Backend-neutral description of one attempt of a run.

    ``env`` holds the container contract's variables (``MLRT_RUN_ID``,
    ``MLRT_TRACKING_URI``, ``MLRT_HYPERPARAMETERS``, ``MLRT_CHANNEL_<NAME>``,
    ``MLRT_OUTPUT_DIR``, ``MLRT_CHECKPOINT_DIR`` ...); the backend adds
    ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and
    ``LOCAL_RANK`` per worker. ``compute`` is ``spec.compute`` as a dict.
    """

    run_id: str
    attempt: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_dir: str
    compute: dict[str, Any]
    image: str | None = None


@dataclasses.dataclass
class WorkerRequest:
    """How one worker is started: argv, its full contract environment, cwd and log file."""

    rank: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str


@dataclasses.dataclass
class LaunchRequest:
    """The printable plan for one attempt: what ``launch`` will do, exactly."""

    backend: str
    run_id: str
    attempt: int
    workers: list[WorkerRequest]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form for ``mlrt validate --json`` and the database."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class WorkerStatus:
    """What ``poll`` reports for one worker."""

    rank: int
    state: RunState
    exit_code: int | None = None
    reason: str = ""


class LaunchError(RuntimeError):
    """The backend could not start an attempt's workers; the message says why."""


class Launcher(abc.ABC):
    """Base class for launch backends (``spec.compute.backend``)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    runs_images: ClassVar[bool] = False
    """True when the backend runs ``spec.image``; jobs with an image are rejected otherwise."""

    @abc.abstractmethod
    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        """Return the exact request for ``ctx`` without side effects."""

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        """Start every worker of ``request`` and return a JSON-serializable handle.

        Raise :class:`LaunchError` with a one-line reason when the workers
        cannot start (program not found, image missing); the attempt fails
        with that reason."""

    @abc.abstractmethod
    def poll(self, handle: dict[str, Any]) -> list[WorkerStatus]:
        """Report each worker's state; RUNNING until it exits."""

    @abc.abstractmethod
    def stop(self, handle: dict[str, Any], grace_period: float) -> None:
        """Ask every worker to stop (SIGTERM or equivalent), force it after
        ``grace_period`` seconds, and return once all are gone. Idempotent."""

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Release what the attempt left behind (containers, pods). Default: nothing."""
