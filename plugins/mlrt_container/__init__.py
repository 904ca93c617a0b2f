"""The ``container`` launch backend: each worker runs in a container (podman or docker CLI).

``compute: {backend: container}`` runs every worker with ``ENGINE run -d``:
``image:`` jobs in the user's image, ``algorithm:`` jobs in mlrt's training
image (``containers/train.Containerfile``; ``MLRT_TRAINING_IMAGE`` names
another). The engine and the machine's extra ``run`` arguments are settings
of the machine, see :mod:`mlrt_container.engine`.

- **Paths** are the contract's, unchanged: each data channel (read-only),
  the output and checkpoint folders, the log folder (``MLRT_FAILURE_FILE``),
  ``MLRT_INIT_FROM``/``MLRT_RESUME_FROM`` (read-only), the working directory
  (also ``--workdir``) and the folder of a ``sqlite:///`` tracking database
  are bind-mounted at the same path, so the SDK inside writes to the same
  store. A path that passes through a symbolic link inside a folder workers
  write to is refused (:func:`check_links`), at plan and again at launch. A tracking database on this machine's loopback (unreachable from a
  container) becomes ``MLRT_TRACKING_URI=log:``: the SDK writes its records
  to the log, which the controller reads back.
- **Environment**: the contract's variables, ``PYTHONUNBUFFERED=1``, the torch
  variables and the thread caps, never this machine's ``PATH``. Values go
  to the engine on its stdin (``--env-file /dev/stdin``), so none appears in
  ``ps``; the printed plan and the stored request show the names of
  ``spec.env`` variables, not their values.
- **Command line**: no value from a spec can be read as an engine option:
  every value travels inside an ``--option=value`` argument, the image
  (checked against the OCI reference grammar, :mod:`mlrt.names`) is the
  first positional argument, and the worker's command follows it, where
  the engines read no more options. Environment names are POSIX names.
- **Several workers** share a private network ``mlrt-RUN-ATTEMPT``; each
  container's hostname is its name, which the network's DNS resolves (gloo
  binds the address its own hostname resolves to), and
  ``MASTER_ADDR`` is rank 0's name with ``MASTER_PORT=29500``.
- **Resources**: ``compute.cpu`` -> ``--cpus`` (and the math libraries'
  thread caps), ``compute.memory`` -> ``--memory``, ``compute.gpus`` ->
  podman ``--device nvidia.com/gpu=I`` (CDI) or docker ``--gpus device=I,..``,
  worker ``r`` getting GPUs ``r*N .. r*N+N-1``.
- **Watching**: per worker, ``ENGINE logs -f`` copies the log into
  ``worker-RANK.log`` and ``ENGINE wait`` exits with the container (its pidfd
  wakes the controller). ``--init`` puts a minimal init as PID 1, so SIGTERM
  from ``stop`` reaches a program that installed no handler.
- **Images**: a ``localhost/`` image (mlrt's training image by default) cannot
  be pulled from anywhere, so a launch checks that this machine has it and
  otherwise fails with how to build it.
- **Stop and cleanup**: ``ENGINE stop -t GRACE`` (SIGTERM, then SIGKILL), then
  ``ENGINE rm -f`` and the network is removed: no container is left behind.
- **SageMaker contract** (``spec.contract: sagemaker``): each worker also sees
  ``/opt/ml`` (its config files, the channels under ``input/data``, the run's
  output ``model/`` and ``data/``, its checkpoints, its own ``output/failure``)
  through more bind mounts, written at launch, and on a network it has the
  alias ``algo-<rank+1>`` (:mod:`mlrt.sagemaker_contract`).
- **Adoption**: containers outlive the controller; a new one finds them by
  their labels (``mlrt.run-id``, ``mlrt.attempt``, ``mlrt.rank``,
  ``mlrt.managed-by=mlrt``) and resumes their logs where the file ends.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlrt import hookimpl, sagemaker_contract
from mlrt.launchers import (
    LaunchContext,
    Launcher,
    LaunchError,
    LaunchRequest,
    WorkerRequest,
    WorkerStatus,
    is_loopback,
)
from mlrt.logfile import output_size
from mlrt.names import env_name_problem, image_problem
from mlrt.secrets import HIDDEN, hide_values
from mlrt.states import RunState
from mlrt.units import parse_memory
from mlrt_container import engine as engines
from mlrt_container.follow import LogFollower, Waiter

if TYPE_CHECKING:  # pragma: no cover
    from mlrt_container.settings import ContainerSettings

MASTER_PORT = 29500
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_TORCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_ADDED = {*_THREAD_VARIABLES, *_TORCH_VARIABLES, "PYTHONUNBUFFERED"}
# Values that cannot travel in an env file (one line each, at most 64 KiB for the
# engines' line scanners) go as ``--env NAME`` with the value in the engine's environment.
_ENV_FILE_MAX = 32 * 1024
# Folders a container's own system lives in: bind-mounting one of them over the image breaks it.
_SYSTEM_PATHS = frozenset("/ /bin /boot /dev /etc /lib /lib64 /proc /run /sbin /sys /usr /var".split())
LOG_FLUSH_TIMEOUT = 10.0


def _check_image(engine: str, image: str) -> None:
    """Refuse to launch a ``localhost/`` image this machine does not have: no registry can
    supply it (the engine would try to pull it from this machine's port 443 and fail with a
    connection refused), so say how to make it."""
    from mlrt.launchers import training_image

    if image.split("/", 1)[0] != "localhost":
        return
    try:
        if engines.run([engine, "image", "inspect", "--format={{.Id}}", image], check=False).returncode == 0:
            return
    except engines.EngineError:
        return  # the engine does not answer: `run` will say why
    kind = engines.engine_kind(engine)
    if image == training_image():
        fix = (
            f"build it from mlrt's checkout with `{kind} build -t {image} -f containers/train.Containerfile .`"
            " (or name another image in MLRT_TRAINING_IMAGE)"
        )
    else:
        fix = f"build it here (`{kind} build -t {image} ...`) or load it (`{kind} load`)"
    raise LaunchError(f"image {image} not found on this machine: {fix}", retry=False)


def _image_digest(engine: str, container: str) -> str | None:
    """The id of the image a started container runs (``sha256:...``, the digest of the image's
    configuration, as the engine reports it), for the run's lineage; None when the engine does not say."""
    try:
        result = engines.run([engine, "container", "inspect", "--format={{.Image}}", container], check=False)
    except engines.EngineError:
        return None
    found = result.stdout.strip()
    if result.returncode != 0 or not found:
        return None
    return found if found.startswith("sha256:") else f"sha256:{found}"


def container_prefix(run_id: str, attempt: int) -> str:
    """``mlrt-RUN-ATTEMPT``: the network's name and the start of each container's.

    A container's name is also its hostname and its DNS name on the network, so
    it must fit a DNS label (63 characters): a long run id is cut and a hash of
    it keeps the name unique."""
    if len(run_id) > 40:
        run_id = f"{run_id[:31].rstrip('-')}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return f"mlrt-{run_id}-{attempt}"


def container_name(run_id: str, attempt: int, rank: int) -> str:
    return f"{container_prefix(run_id, attempt)}-{rank}"


class ContainerLaunchRequest(LaunchRequest):
    """A :class:`LaunchRequest` whose plain-data form (printed by ``mlrt validate``,
    stored with the attempt) shows ``spec.env`` variables by name only."""

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for worker in data["workers"]:
            worker["env"] = hide_values(worker["env"], self.details.get("env_hidden") or [])
        return data


class ContainerLauncher(Launcher):
    """Runs each worker in its own container through the podman or docker CLI."""

    name: ClassVar[str] = "container"
    description: ClassVar[str] = "each worker in a container (podman or docker)"
    runs_images: ClassVar[bool] = True
    survives_controller: ClassVar[bool] = True
    runs_on_host: ClassVar[bool] = True
    contracts: ClassVar[tuple[str, ...]] = ("mlrt", "sagemaker")

    def settings_model(self) -> type[ContainerSettings]:
        """``spec.compute.container``: :class:`mlrt_container.settings.ContainerSettings`."""
        from mlrt_container.settings import ContainerSettings  # pydantic: only once something is planned

        return ContainerSettings

    def __init__(self) -> None:
        self._followers: dict[str, LogFollower] = {}  # container name -> its log follower
        self._waiters: dict[str, Waiter] = {}  # container name -> its waiter
        self._ended: dict[str, WorkerStatus] = {}  # container name -> its final status, once known

    # -- plan ----------------------------------------------------------------------

    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        engine = engines.configured_engine()
        kind = engines.engine_kind(engine)
        extra = engines.run_args()
        workers = int(ctx.compute.get("workers", 1))
        image = ctx.container_image()
        problem = image_problem(image)
        if problem:
            raise LaunchError(f"image {image[:200]!r}: {problem}", retry=False)
        argv = ctx.container_argv()
        network = container_prefix(ctx.run_id, ctx.attempt) if workers > 1 else None
        names = [container_name(ctx.run_id, ctx.attempt, rank) for rank in range(workers)]
        base_env, tracking_dir = _contract_env(ctx)
        hidden = sorted(k for k in ctx.env if not k.startswith("MLRT_") and k not in _ADDED)
        bad = [k for k in ctx.env if env_name_problem(k)]
        if bad:
            raise LaunchError(f"spec.env: {bad[0][:80]!r} is not a valid environment variable name", retry=False)
        mounts = _mounts(ctx, tracking_dir)
        settings = self.settings_model().model_validate(ctx.compute.get(self.name) or {})
        requests, commands = [], []
        for rank, name in enumerate(names):
            env = {
                **base_env,
                "MASTER_ADDR": names[0] if network else "127.0.0.1",
                "MASTER_PORT": str(MASTER_PORT),
                "WORLD_SIZE": str(workers),
                "RANK": str(rank),
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
            }
            sagemaker = ctx.contract == "sagemaker"
            if sagemaker:
                env.update(sagemaker_contract.worker_env(ctx, rank, local=False))
            log_path = str(Path(ctx.log_dir) / f"worker-{rank}.log")
            requests.append(WorkerRequest(rank=rank, argv=list(argv), env=env, cwd=ctx.cwd, log_path=log_path))
            # Every value rides in an --option=value argument, so none can be read as an option
            # of its own; the image is the first positional argument and everything after it
            # is the worker's command (the engines stop reading options there).
            command = [engine, "run", "-d", f"--name={name}", f"--hostname={name}"]
            command += _labels(ctx.run_id, ctx.attempt, rank)
            command += ["--init"]
            if network:
                command += [f"--network={network}"]
                command += [f"--network-alias={sagemaker_contract.host(rank)}"] if sagemaker else []
            command += ["--env-file=/dev/stdin"]
            command += [f"--env={key}" for key in sorted(env) if not _fits_env_file(env[key])]
            for path, read_only in mounts:
                command += [f"--mount=type=bind,source={path},destination={path}" + (",ro" if read_only else "")]
            for source, destination, read_only in sagemaker_contract.container_mounts(ctx, rank) if sagemaker else []:
                command += [f"--mount=type=bind,source={source},destination={destination}" + (",ro" * read_only)]
            if argv:  # an image-only job keeps its image's own working directory
                command += [f"--workdir={ctx.cwd}"]
            command += _resources(ctx.compute, kind, rank)
            if settings.shm_size:
                command += [f"--shm-size={parse_memory(settings.shm_size)}b"]
            command += extra
            command += [image, *argv, *ctx.image_args()]
            commands.append(command)
        details: dict[str, Any] = {
            "engine": engine,
            "image": image,
            "network": network,
            "containers": names,
            "network_command": [engine, "network", "create", *_labels(ctx.run_id, ctx.attempt), network]
            if network
            else None,
            "commands": commands,
            "env": sorted(requests[0].env),
            "env_hidden": hidden,
            "env_via": "each worker's variables are written to the engine's stdin (--env-file /dev/stdin)",
            "memory_limit": str(ctx.compute["memory"]) if ctx.compute.get("memory") else None,
            "mounts": [[path, read_only] for path, read_only in mounts],
        }
        if ctx.contract == "sagemaker":  # each worker's /opt/ml: folders written at launch, mounted
            details["sagemaker"] = [sagemaker_contract.host_folders(ctx, r, local=False) for r in range(workers)]
            details["sagemaker_mounts"] = [
                source for r in range(workers) for source, _, _ in sagemaker_contract.container_mounts(ctx, r)
            ]
        return ContainerLaunchRequest(
            backend=self.name, run_id=ctx.run_id, attempt=ctx.attempt, workers=requests, details=details
        )

    # -- launch --------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        details = request.details
        for worker in request.workers:
            if HIDDEN in worker.env.values():
                raise LaunchError(
                    f"attempt {request.attempt}'s request was read back from the database, which holds no"
                    " spec.env values; plan the attempt again to launch it"
                )
        for folders in details.get("sagemaker") or []:
            sagemaker_contract.write_host_folders(folders)
        # Checked again now: a worker of another attempt may have planted a link since the plan.
        mounts = [(path, read_only) for path, read_only in details.get("mounts") or []]
        check_links(mounts + [(path, True) for path in details.get("sagemaker_mounts") or []])
        engine = engines.resolve(details["engine"])
        network = details.get("network")
        handle: dict[str, Any] = {
            "engine": engine,
            "network": None,
            "workers": [],
            "memory_limit": details.get("memory_limit"),
            "started": time.time(),
        }
        _check_image(engine, details["image"])
        what = f"network {network}"
        try:
            if network:
                if engines.run([engine, "network", "inspect", network], check=False).returncode != 0:
                    engines.run([engine, *details["network_command"][1:]])
                handle["network"] = network
            for worker, command in zip(request.workers, details["commands"], strict=True):
                what = f"worker {worker.rank}'s container ({details['image']})"
                Path(worker.log_path).parent.mkdir(parents=True, exist_ok=True)
                env_file = "".join(f"{k}={v}\n" for k, v in worker.env.items() if _fits_env_file(v))
                overflow = {k: v for k, v in worker.env.items() if not _fits_env_file(v)}
                result = engines.run(
                    [engine, *command[1:]],
                    input=env_file,
                    env={**os.environ, **overflow} if overflow else None,
                    timeout=None,  # the engine may pull the image first
                )
                name = details["containers"][worker.rank]
                handle["workers"].append(
                    {"rank": worker.rank, "name": name, "id": result.stdout.strip(), "log_path": worker.log_path}
                )
        except (engines.EngineError, OSError) as exc:
            # Nothing of a failed launch stays behind: a `run` the OCI runtime refused has still
            # created its container (which also keeps the network in use), so every container
            # name of the attempt goes, whether or not its `run` answered.
            planned = [{"name": name} for name in details["containers"]]
            self._remove({**handle, "network": network, "workers": planned})
            raise LaunchError(f"cannot start {what}: {exc}") from None
        for worker in handle["workers"]:
            self._watch(engine, worker, resume=False)
        handle["image_digest"] = _image_digest(engine, handle["workers"][0]["id"])
        return handle

    def _watch(self, engine: str, worker: dict[str, Any], *, resume: bool) -> None:
        """Start the log follower and the waiter of one worker's container.

        ``resume``: the log file already holds the start of the container's log
        (an adopted container), so the follower appends only what it lacks."""
        name = worker["name"]
        self._forget(name)
        skip = output_size(worker["log_path"]) if resume else 0
        self._followers[name] = LogFollower(engine, name, worker["log_path"], skip=skip)
        self._waiters[name] = Waiter(engine, name)

    def _forget(self, name: str) -> None:
        follower = self._followers.pop(name, None)
        if follower is not None:
            follower.kill()
        waiter = self._waiters.pop(name, None)
        if waiter is not None:
            waiter.close()
        self._ended.pop(name, None)

    # -- watch ---------------------------------------------------------------------

    def poll(self, handle: dict[str, Any]) -> list[WorkerStatus]:
        statuses: dict[int, WorkerStatus] = {}
        unknown = []
        for worker in handle["workers"]:
            name, rank = worker["name"], worker["rank"]
            waiter = self._waiters.get(name)
            if worker.get("missing"):
                reason = "never started: the controller that launched the attempt stopped first"
                statuses[rank] = WorkerStatus(rank, RunState.FAILED, reason=reason)
            elif name in self._ended:
                statuses[rank] = self._ended[name]
            elif waiter is not None and not waiter.finished():
                follower = self._followers.get(name)
                if follower is not None and follower.done():  # killed from outside: copy on where it stopped
                    self._followers[name] = LogFollower(
                        _engine(handle), name, worker["log_path"], skip=output_size(worker["log_path"])
                    )
                statuses[rank] = WorkerStatus(rank, RunState.RUNNING)
            else:
                unknown.append(worker)
        if unknown:  # a waiter returned, or this process watches nothing of the attempt: ask the engine
            engine = _engine(handle)
            states = _inspect(engine, [w["name"] for w in unknown])
            for worker in unknown:
                name = worker["name"]
                waiter = self._waiters.get(name)
                status = _status(worker, states.get(name), waiter, handle.get("memory_limit"))
                if status.state is RunState.RUNNING:
                    if waiter is not None:  # the waiter gave up early (an engine hiccup): wait again
                        waiter.close()
                        self._waiters[name] = Waiter(engine, name)
                else:
                    follower = self._followers.get(name)
                    if follower is not None:  # the whole log is in the file before anyone reads its last line
                        follower.join(LOG_FLUSH_TIMEOUT)
                    if waiter is not None:
                        self._ended[name] = status
                statuses[worker["rank"]] = status
        return [statuses[w["rank"]] for w in handle["workers"]]

    def wakeup_fds(self) -> list[int]:
        return [
            waiter.pidfd
            for waiter in list(self._waiters.values())  # launches in the pool add waiters meanwhile
            if waiter.pidfd is not None and waiter.process.returncode is None
        ]

    # -- stop and clean up ---------------------------------------------------------------

    def stop(self, handle: dict[str, Any], grace_period: float) -> None:
        engine = _engine(handle)
        names = [w["name"] for w in handle["workers"] if not w.get("missing")]
        if not names:
            return
        grace = max(0, math.ceil(grace_period))
        ignore = ["--ignore"] if engines.engine_kind(engine) == "podman" else []
        try:
            engines.run([engine, "stop", *ignore, "-t", str(grace), *names], check=False, timeout=grace + 60)
        except engines.EngineError:
            pass
        running = [n for n, s in _inspect(engine, names).items() if s and s.get("Running")]
        if running:  # the engine could not stop them in time: force it
            try:
                engines.run([engine, "kill", *running], check=False)
            except engines.EngineError:
                pass

    def cleanup(self, handle: dict[str, Any]) -> None:
        for worker in handle["workers"]:
            follower = self._followers.pop(worker["name"], None)
            if follower is not None and not follower.join(LOG_FLUSH_TIMEOUT):
                follower.kill()
        self._remove(handle)
        for worker in handle["workers"]:
            self._forget(worker["name"])

    def _remove(self, handle: dict[str, Any]) -> None:
        """Remove the attempt's containers (running ones too) and its network; idempotent."""
        engine = _engine(handle)
        names = [w["name"] for w in handle["workers"] if not w.get("missing")]
        try:
            # Only names that exist: podman 4's `rm -f` removes nothing when one of its names is missing.
            for _ in range(3):
                names = [name for name, state in _inspect(engine, names).items() if state is not None]
                if not names:
                    break
                engines.run([engine, "rm", "-f", *names], check=False)
            if handle.get("network"):
                engines.run([engine, "network", "rm", handle["network"]], check=False)
        except engines.EngineError:
            pass

    # -- adopt ---------------------------------------------------------------------------

    def adopt(self, request: LaunchRequest, handle: dict[str, Any] | None) -> dict[str, Any] | None:
        engine = engines.resolve(_engine(handle if handle and handle.get("engine") else request.details))
        found = _find(engine, request.run_id, request.attempt)
        if not found:
            return None
        adopted: dict[str, Any] = {
            **(handle or {}),
            "engine": engine,
            "network": request.details.get("network"),
            "workers": [],
        }
        adopted.setdefault("started", time.time())
        adopted.setdefault("memory_limit", request.details.get("memory_limit"))
        for worker in request.workers:
            name = found.get(worker.rank)
            entry = {
                "rank": worker.rank,
                "name": name or container_name(request.run_id, request.attempt, worker.rank),
                "log_path": worker.log_path,
            }
            if name is None:
                entry["missing"] = True
            adopted["workers"].append(entry)
        for entry in adopted["workers"]:
            if not entry.get("missing"):
                self._watch(engine, entry, resume=True)
        return adopted


# -- the plan's parts ---------------------------------------------------------------------


def _contract_env(ctx: LaunchContext) -> tuple[dict[str, str], str | None]:
    """The environment every worker shares, and the folder of a SQLite tracking database."""
    threads = {}
    if ctx.compute.get("cpu"):
        threads = dict.fromkeys(_THREAD_VARIABLES, str(max(1, int(ctx.compute["cpu"]))))
    # ctx.env is the contract plus spec.env: this machine's PATH is not in it (the image's applies).
    env = {**threads, **ctx.env, "PYTHONUNBUFFERED": "1"}
    uri = env.get("MLRT_TRACKING_URI", "")
    tracking_dir = None
    if uri.startswith("sqlite:///"):
        path, query = (uri.removeprefix("sqlite:///").split("?", 1) + [""])[:2]
        if path and path != ":memory:":
            path = os.path.abspath(path)  # the same file from the container's working directory too
            env["MLRT_TRACKING_URI"] = f"sqlite:///{path}" + (f"?{query}" if query else "")
            tracking_dir = str(Path(path).parent)
    elif "://" in uri and is_loopback(uri):
        from mlrt import sdk

        env["MLRT_TRACKING_URI"] = getattr(sdk, "LOG_TRACKING_URI", uri)
    return env, tracking_dir


def _mounts(ctx: LaunchContext, tracking_dir: str | None) -> list[tuple[str, bool]]:
    """``(path, read_only)`` for every folder the worker shares with this machine, once each."""
    wanted: list[tuple[str | None, bool]] = [
        *[(v, True) for k, v in sorted(ctx.env.items()) if k.startswith("MLRT_CHANNEL_")],
        (ctx.env.get("MLRT_INIT_FROM"), True),
        (ctx.env.get("MLRT_RESUME_FROM"), True),
        (ctx.env.get("MLRT_OUTPUT_DIR"), False),
        (ctx.env.get("MLRT_CHECKPOINT_DIR"), False),
        (ctx.log_dir, False),
        (ctx.cwd, False),
        (tracking_dir, False),
    ]
    mounts: dict[str, bool] = {}
    for path, read_only in wanted:
        if not path or not os.path.isabs(path):
            continue  # e.g. a channel `mlrt validate` shows as "materialized at launch"
        path = os.path.normpath(path)
        if path in _SYSTEM_PATHS:
            raise LaunchError(
                f"cannot bind-mount {path} into a container (it would hide the image's own {path});"
                " use a project folder (spec.working_dir, spec.output.path)",
                retry=False,
            )
        if "," in path:
            raise LaunchError(
                f"cannot bind-mount {path!r} into a container: the engines' --mount cannot take a ','", retry=False
            )
        mounts[path] = mounts.get(path, True) and read_only
    check_links(list(mounts.items()))
    return list(mounts.items())


def check_links(mounts: list[tuple[str, bool]]) -> None:
    """Refuse a mount whose path passes through a symbolic link inside a folder that workers
    write to: one this attempt mounts read-write, or one the operator shares with every job
    (``MLRT_ALLOWED_PATHS``). A worker could have planted the link there after the spec was
    checked (an earlier trial of a search, another job) to have this container mount any
    folder of the machine."""
    shared = [p for p in os.environ.get("MLRT_ALLOWED_PATHS", "").split(os.pathsep) if p.strip()]
    shared = [os.path.normpath(os.path.expanduser(p)) for p in shared]
    writable = [path for path, read_only in mounts if not read_only]
    writable += shared + [os.path.realpath(p) for p in shared]
    for path, _ in mounts:
        for folder in writable:
            if not path.startswith(folder + os.sep):
                continue
            current = folder
            for part in Path(path).relative_to(folder).parts:
                current = os.path.join(current, part)
                if os.path.islink(current):
                    raise LaunchError(
                        f"cannot bind-mount {path}: {current} is a symbolic link inside {folder},"
                        " a folder the workers write to"
                    )


def _labels(run_id: str, attempt: int, rank: int | None = None) -> list[str]:
    labels = [f"mlrt.run-id={run_id}", f"mlrt.attempt={attempt}"]
    if rank is not None:
        labels.append(f"mlrt.rank={rank}")
    labels.append("mlrt.managed-by=mlrt")
    return [f"--label={label}" for label in labels]


def _resources(compute: dict[str, Any], kind: str, rank: int) -> list[str]:
    args = []
    if compute.get("cpu"):
        args += [f"--cpus={float(compute['cpu']):g}"]
    memory = compute.get("memory")
    if memory:
        args += [f"--memory={memory if isinstance(memory, int) else parse_memory(memory)}"]
    gpus = int(compute.get("gpus") or 0)
    if gpus:
        devices = range(rank * gpus, rank * gpus + gpus)
        if kind == "podman":
            args += [f"--device=nvidia.com/gpu={index}" for index in devices]
        else:
            args += ['--gpus="device=' + ",".join(str(i) for i in devices) + '"']
    return args


def _fits_env_file(value: str) -> bool:
    return "\n" not in value and "\r" not in value and len(value) <= _ENV_FILE_MAX


# -- reading the engine's state ------------------------------------------------------------


def _engine(handle: dict[str, Any]) -> str:
    engine = handle.get("engine") or engines.configured_engine()
    if os.path.isabs(engine) and not os.path.exists(engine):
        engine = engines.configured_engine()
    return engine


def _inspect(engine: str, names: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each container's ``State`` (None when the container does not exist)."""
    states: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
    try:
        result = engines.run([engine, "inspect", "--type", "container", *names], check=False)
        data = json.loads(result.stdout or "[]")
    except (engines.EngineError, json.JSONDecodeError):
        return states
    for entry in data or []:
        name = str(entry.get("Name", "")).lstrip("/")
        if name in states:
            states[name] = entry.get("State") or {}
    return states


def _status(
    worker: dict[str, Any], state: dict[str, Any] | None, waiter: Waiter | None, memory_limit: str | None = None
) -> WorkerStatus:
    rank = worker["rank"]
    if state is None:
        code = waiter.exit_code() if waiter is not None else None
        if code is None:
            return WorkerStatus(
                rank, RunState.FAILED, reason=f"its container {worker['name']} is gone; exit status unknown"
            )
    elif state.get("Running") or str(state.get("Status", "")).lower() in ("created", "configured", "initialized"):
        return WorkerStatus(rank, RunState.RUNNING)
    else:
        code = int(state.get("ExitCode", 0))
    if code == 0:
        return WorkerStatus(rank, RunState.SUCCEEDED, exit_code=0)
    reason = describe_exit(code, bool(state and state.get("OOMKilled")), memory_limit)
    return WorkerStatus(rank, RunState.FAILED, exit_code=code, reason=reason)


def describe_exit(code: int, oom_killed: bool = False, memory_limit: str | None = None) -> str:
    """``exited with code 3``, ``killed by signal SIGTERM (exit code 143)``, or for a container the
    kernel's OOM killer stopped (the engine's ``State.OOMKilled``) a reason that starts
    ``out of memory:``, names the limit and the fix, as the local backend's does.

    Some hosts (cgroup v1 without OOM events, sandboxes) never report an OOM
    kill: a SIGKILL under a memory limit, which mlrt did not send (its own stops
    end the run as cancelled or timed out before this is asked), is then
    reported out of memory too, saying that the host did not confirm it."""
    fix = "raise spec.compute.memory or use less memory"
    if oom_killed:
        limit = (
            f" at its memory limit of {memory_limit}"
            if memory_limit
            else " (no spec.compute.memory: the machine ran out)"
        )
        return f"out of memory: OOM-killed by the kernel{limit} (exit code {code}); {fix}"
    if code == 128 + signal.SIGKILL and memory_limit:
        return (
            f"out of memory: killed by signal SIGKILL (exit code {code}) under its memory limit of {memory_limit},"
            f" most likely by the kernel's OOM killer (this host does not report OOM kills); {fix}"
        )
    if code > 128:
        try:
            return f"killed by signal {signal.Signals(code - 128).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


def _find(engine: str, run_id: str, attempt: int) -> dict[int, str]:
    """The attempt's containers by rank, found by their labels."""
    argv = [engine, "ps", "-a", "--filter", f"label=mlrt.run-id={run_id}", "--filter", f"label=mlrt.attempt={attempt}"]
    try:
        result = engines.run([*argv, "--format", "json"])
    except engines.EngineError as exc:
        raise LaunchError(f"cannot list the containers of {run_id} attempt {attempt}: {exc}") from None
    text = result.stdout.strip()
    if not text:
        return {}
    try:
        entries = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    except json.JSONDecodeError as exc:
        raise LaunchError(f"cannot read `{engine} ps --format json`: {exc}") from None
    found = {}
    for entry in entries or []:
        labels = entry.get("Labels") or {}
        if isinstance(labels, str):  # docker: "k=v,k=v"
            labels = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        names = entry.get("Names") or []
        name = names[0] if isinstance(names, list) and names else str(names).split(",")[0]
        if labels.get("mlrt.run-id") == run_id and labels.get("mlrt.attempt") == str(attempt) and name:
            try:
                found[int(labels["mlrt.rank"])] = name
            except (KeyError, ValueError):
                continue
    return found


@hookimpl
def mlrt_launchers() -> list[Launcher]:
    return [ContainerLauncher()]
