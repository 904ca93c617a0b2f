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
import copy
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from mlrt.states import RunState

if TYPE_CHECKING:  # pragma: no cover
    import threading
    from collections.abc import Callable

    from pydantic import BaseModel

RESYNC_INTERVAL = 5.0
"""Seconds between polls of a running run its backend did not name as changed (the default of
:attr:`Launcher.resync_interval`)."""


def channel_env(name: str) -> str:
    """The environment variable that holds data channel ``name``'s local path (``MLRT_CHANNEL_<NAME>``)."""
    return f"MLRT_CHANNEL_{name.upper()}"


@dataclasses.dataclass
class LaunchContext:
    """Backend-neutral description of one attempt of a run.

    ``env`` holds the container contract's variables (``MLRT_RUN_ID``,
    ``MLRT_TRACKING_URI``, ``MLRT_HYPERPARAMETERS``, ``MLRT_CHANNEL_<NAME>``,
    ``MLRT_OUTPUT_DIR``, ``MLRT_CHECKPOINT_DIR`` ...); the backend adds
    ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and
    ``LOCAL_RANK`` per worker. ``compute`` is the resolved ``spec.compute`` as a dict, the
    backend's own settings block (``compute[name]``, see :meth:`Launcher.settings_model`)
    included with its defaults filled in.
    """

    run_id: str
    attempt: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_dir: str
    compute: dict[str, Any]
    image: str | None = None
    algorithm: str | None = None
    channels: dict[str, str] = dataclasses.field(default_factory=dict)
    """Each data channel's URI, for backends whose workers fetch the data themselves."""
    stopping: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``spec.stopping``, for backends that enforce ``max_runtime`` on their side too."""
    source: str | None = None
    """The digest of the run's source bundle (:mod:`mlrt.sources`), for backends whose workers
    cannot see ``cwd`` and fetch the code themselves (None: no bundle)."""
    output_uri: str = ""
    """Where the run's output and checkpoints end up (``file://`` or ``s3://``); ``env`` has the
    local folders workers write to, which the controller uploads unless the backend's workers
    cannot be read from the controller's machine (then they upload it themselves)."""
    contract: str = "mlrt"
    """``spec.contract``: ``sagemaker`` asks the backend for SageMaker's layout and ``SM_*``
    variables as well (:mod:`mlrt.sagemaker_contract`); ``argv`` already ends with the
    hyperparameters as ``--name value`` arguments."""

    def container_image(self) -> str:
        """The image a container backend runs: ``spec.image``, else (for an
        ``algorithm:`` job) mlrt's training image, see :func:`training_image`."""
        return self.image or training_image()

    def container_argv(self) -> list[str]:
        """The argv inside a container: ``python -m mlrt.worker`` for an
        ``algorithm:`` job (the image's Python, not this machine's), else the
        spec's ``command`` (empty for an image-only job: the image's own entry point)."""
        return ["python", "-m", "mlrt.worker"] if self.algorithm else list(self.argv)

    def image_args(self) -> list[str]:
        """The arguments an image-only job's own entry point gets (its ``CMD``, a pod's ``args``):
        ``train`` under the SageMaker contract, as SageMaker runs a training image
        (``docker run IMAGE train``); none otherwise."""
        image_only = self.image and not self.algorithm and not self.argv
        return ["train"] if image_only and self.contract == "sagemaker" else []


def is_loopback(uri: str) -> bool:
    """Whether ``uri`` names this machine only (``localhost``, ``127.0.0.1``, ``::1``): an
    address a container or a pod cannot use to reach the controller."""
    from urllib.parse import urlsplit

    return (urlsplit(uri).hostname or "") in ("localhost", "127.0.0.1", "::1")


def training_image() -> str:
    """The image that runs ``algorithm:`` jobs on container backends:
    ``MLRT_TRAINING_IMAGE``, else ``localhost/mlrt-train:VERSION``, which
    ``podman build -t localhost/mlrt-train:VERSION -f containers/train.Containerfile .``
    builds from this checkout."""
    import os

    from mlrt import __version__

    return os.environ.get("MLRT_TRAINING_IMAGE") or f"localhost/mlrt-train:{__version__}"


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
        """A plain-data form for ``mlrt validate --json`` and the database: a deep copy, which
        the caller may change (:func:`mlrt.secrets.mask_request` hides values in place)."""
        return _plain(self)


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """What :func:`dataclasses.asdict` makes of ``value`` (tuples become lists), in a sixth of
    its time for a request's plain data, such as the Kubernetes manifests in its ``details``:
    ``asdict`` deep-copies every leaf, about 0.3 ms a launch."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return copy.deepcopy(value)


@dataclasses.dataclass
class WorkerStatus:
    """What ``poll`` reports for one worker."""

    rank: int
    state: RunState
    exit_code: int | None = None
    reason: str = ""
    image_digest: str | None = None
    """The digest of the image the worker runs (``sha256:...``), once the backend knows it
    (a pod's ``imageID``); it goes into the run's lineage."""


class LaunchError(RuntimeError):
    """The backend could not start an attempt's workers; the message says why.

    ``retry=False`` marks a problem that another attempt cannot fix (an image that is
    not on this machine, a program that does not exist, a name the engine refuses):
    the run then fails at once, its reason ending with "(not retried: ...)", instead
    of spending its retries and their backoff on the same error."""

    def __init__(self, message: str, *, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class LaunchDeferred(LaunchError):
    """The backend cannot launch now, for a reason that passes by itself: the cluster's API
    throttles its requests (429 Too Many Requests) beyond the client's own retries, or a
    connection to it dropped before an answer came. The run is
    queued again and the same attempt (same number, so the same object names: :meth:`Launcher.launch`
    must take over what it made before) is launched after ``after`` seconds, without charging the
    run's retries, as a Kubernetes controller requeues an object its API calls were throttled for."""

    def __init__(self, message: str, *, after: float = 5.0):
        super().__init__(message)
        self.after = after


class Launcher(abc.ABC):
    """Base class for launch backends (``spec.compute.backend``)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    runs_images: ClassVar[bool] = False
    """True when the backend runs ``spec.image``; jobs with an image are rejected otherwise."""
    survives_controller: ClassVar[bool] = False
    """True when workers keep running after the controller that launched them
    dies (containers, pods). A restarted controller then re-attaches to them
    with :meth:`adopt` instead of failing the run."""
    uploads_output: ClassVar[bool] = False
    """True when the workers upload an ``s3://`` output themselves, their files being out of
    the controller's reach (pods). Each worker then writes a completion marker after its final
    upload (:mod:`mlrt.s3sync`), and the run ends SUCCEEDED only when every marker is there."""

    contracts: ClassVar[tuple[str, ...]] = ("mlrt",)
    """The values of ``spec.contract`` the backend gives its workers; a spec asking for another
    is refused by ``mlrt validate`` and ``mlrt submit``."""

    runs_on_host: ClassVar[bool] = False
    """True when the workers run on the controller's own machine (processes, local
    containers): admission then starts a run only when the machine's free cores and memory
    fit what it asks for (:mod:`mlrt.admission`)."""
    launch_concurrency: ClassVar[int] = 4
    """How many launches the controller runs at once in this backend's pool (threads calling
    :meth:`launch`, which must be safe to call concurrently for different runs);
    ``MLRT_LAUNCH_CONCURRENCY=BACKEND=N`` overrides it."""

    def contract_problem(self, contract: str, compute: dict[str, Any]) -> str | None:
        """Why this backend cannot give its workers ``spec.contract: <contract>`` as ``compute``
        (``spec.compute``, as the spec gives it) asks for them, in one line, else None: ``mlrt
        validate`` and ``mlrt submit`` refuse the spec with it (``spec.contract: ...``). Default: a
        contract that is not in :attr:`contracts` is refused."""
        if contract in self.contracts:
            return None
        offered = ", ".join(self.contracts)
        return (
            f"the {self.name} backend does not offer the {contract!r} contract (it offers {offered});"
            " choose another backend or contract"
        )

    def settings_model(self) -> type[BaseModel] | None:
        """The pydantic model of this backend's own settings block, ``spec.compute.<name>``
        (``compute.kubernetes`` for the ``kubernetes`` backend), or None when it takes none.
        Default: None.

        ``mlrt validate`` and ``mlrt submit`` check the block with it, wherever it appears
        (a TuningJob's template too): each problem is one line naming the field,
        ``spec.compute.kubernetes.tolerations.0.effect: must be ...``. The resolved spec
        holds the block with every default filled in, and the job's own backend's block is
        there even when the spec leaves it out, so defaults are stated in the model and
        nowhere else. The backend reads it back typed, e.g.
        ``Model.model_validate(ctx.compute.get(self.name) or {})``. Give the model
        ``ConfigDict(extra="forbid")`` so that a misspelt field is refused, and import it
        inside this method so that loading the plugin stays cheap."""
        return None

    @abc.abstractmethod
    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        """Return the exact request for ``ctx`` without side effects."""

    def preflight(self, compute: dict[str, Any]) -> str | None:
        """A one-line problem that would make every launch from this process fail, such as no
        credentials for the cluster, else None. Checked when a job is submitted (not by
        ``mlrt validate``, which works without a cluster), so the job is refused with the fix
        instead of failing each attempt; ``compute`` is ``spec.compute``. Must be quick and
        change nothing. Default: None."""
        return None

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        """Start every worker of ``request`` and return a JSON-serializable handle.

        Raise :class:`LaunchError` with a one-line reason when the workers
        cannot start; the attempt fails with that reason and is retried (an
        infrastructure failure, see :mod:`mlrt.failures`), unless the error says
        ``retry=False`` (program not found, image missing)."""

    @abc.abstractmethod
    def poll(self, handle: dict[str, Any]) -> list[WorkerStatus]:
        """Report each worker's state; RUNNING until it exits."""

    @abc.abstractmethod
    def stop(self, handle: dict[str, Any], grace_period: float) -> None:
        """Ask every worker to stop (SIGTERM or equivalent), force it after
        ``grace_period`` seconds, and return once all are gone. Idempotent."""

    def adopt(self, request: LaunchRequest, handle: dict[str, Any] | None) -> dict[str, Any] | None:
        """Re-attach to the workers of an attempt that a controller now gone launched.

        ``handle`` is what that controller stored (``None`` when it died between
        starting the workers and storing it): find the workers by their labels,
        resume copying their logs into ``request.workers[i].log_path`` (appending
        only what the file lacks), and return a handle for :meth:`poll`. Return
        ``None`` when no worker of the attempt exists: the controller launches it
        then. Only called when :attr:`survives_controller` is true."""
        return None

    def wakeup_fds(self) -> list[int]:
        """File descriptors that become readable when a worker of this backend may
        have changed state (exited). Between passes the controller waits on them
        (``select``) instead of sleeping blindly, so it notices an exit at once
        without polling fast. Default: none (the controller polls, backing off to
        its poll interval)."""
        return []

    def changed_runs(self) -> set[str] | None:
        """The ids of the runs whose workers may have changed (state, log) since the last call,
        or None when the backend cannot tell. The controller polls the runs named here at once
        and the others only every :attr:`resync_interval` seconds, so a pass costs what
        changed, not what runs. Default: None (every run is polled every pass)."""
        return None

    @property
    def resync_interval(self) -> float:
        """Seconds between polls of a running run that :meth:`changed_runs` did not name: the
        safety net for a change the backend did not report. Read once per pass, so a backend
        can shorten it while its own change feed is down. Default: 5."""
        return RESYNC_INTERVAL

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Release what the attempt left behind (containers, pods). Default: nothing."""

    def build_reports(
        self,
        request: LaunchRequest,
        metrics: dict[str, float],
        log_path: str,
        stop: threading.Event,
        note: Callable[[str], None],
    ) -> dict[str, dict[str, Any]] | None:
        """Build the run's reports where its workers ran, out of the controller's process, once the
        workers of ``request``'s attempt have succeeded; return the results by report name, as
        :func:`mlrt.report_runner.compute` returns them (the controller stores them and checks the
        gates). ``metrics`` are the run's latest; the work's own log goes to ``log_path``. Called in
        the controller's finalizing pool, so it may wait: when ``stop`` is set (the run was
        cancelled or timed out) stop the work and return at once (anything). ``note(line)`` records
        a line about the work as an event on the run (where it runs, why it waits). Raise
        :class:`mlrt.report_runner.ReportError` with a one-line reason when the reports could not
        be built. Must take over work that a controller now gone started for the same attempt
        rather than start it twice. Default: None, the controller builds them in its own process."""
        return None

    def upload_problem(self, handle: dict[str, Any], rank: int) -> str:
        """What worker ``rank``'s own upload said last when it failed (see :attr:`uploads_output`),
        for the run's reason when the worker's completion marker is missing; "" when nothing is
        known. Called after :meth:`cleanup`. Default: ""."""
        return ""
