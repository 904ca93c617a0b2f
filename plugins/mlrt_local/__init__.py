"""The ``local`` launch backend: each worker is a process on this machine.

Workers get the container contract's environment plus the torch distributed
variables (``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``), so a torch DDP script runs unchanged, and
``GLOO_SOCKET_IFNAME`` and ``NCCL_SOCKET_IFNAME`` name the loopback
interface, so gloo and NCCL listen on it alone. What they inherit of this process's own environment is decided in
:mod:`mlrt_local.environment` (everything for ``mlrt submit``, an allow-list
for the controller service). Each worker
runs in its own session (signals reach its children too), its stdout and
stderr are copied into its own log file (within ``MLRT_MAX_LOG_BYTES``, see
:mod:`mlrt_local.logs`), and it is killed if the controller that started it
dies (Linux parent-death signal), so no worker outlives the process that
watches it. ``compute.cpu`` caps the math libraries' threads per worker, and
the directory of the Python running mlrt comes first on ``PATH``, so
``command: [python, train.py]`` uses mlrt's own environment.
``compute.memory`` is each worker's limit: a worker whose processes use more
is killed and fails with ``out of memory: ...``, as Kubernetes reports
OOMKilled; see :mod:`mlrt_local.memory`.

With ``compute.warm`` (on by default for tuning trials) a Python worker is
forked from a pre-started interpreter instead of started cold; see
:mod:`mlrt_local.warm`.

With ``spec.contract: sagemaker`` the workers also get SageMaker's ``SM_*``
variables naming the run's folders, and ``SAGEMAKER_BASE_DIR`` a folder of the
attempt laid out like ``/opt/ml``, written at launch
(:mod:`mlrt.sagemaker_contract`).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from mlrt import hookimpl, sagemaker_contract
from mlrt.launchers import LaunchContext, Launcher, LaunchError, LaunchRequest, WorkerRequest, WorkerStatus
from mlrt.states import RunState
from mlrt.units import parse_memory
from mlrt_local import environment
from mlrt_local.lifetime import die_with_parent
from mlrt_local.logs import OutputCopy
from mlrt_local.memory import OOM_EXIT_CODE, MemoryLimit, apply_backstop, backstop_bytes, limit_bytes
from mlrt_local.warm import Zygote, eligible

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Read when an interpreter starts or imports: a zygote is only shared by workers that agree on them.
_STARTUP_VARIABLES = (
    *_THREAD_VARIABLES,
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "MLRT_LOAD_PLUGINS",
    "MLRT_DISABLE_PLUGINS",
)


# Below Linux's ephemeral range (32768-60999): outgoing connections are handed
# ports from that range, so one could take a rendezvous port between plan and bind.
_PORT_RANGE = (20000, 32000)


def _free_port() -> int:
    """A port nothing listens on now, outside the ephemeral range."""
    for _ in range(100):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LaunchError(f"no free port for the rendezvous in {_PORT_RANGE[0]}-{_PORT_RANGE[1]}")


def _loopback_interface() -> str:
    """The name of the network interface that holds 127.0.0.1 (``lo`` on Linux)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addresses):
            return name
    return "lo"


def describe_exit(code: int) -> str:
    """``exited with code 3`` or ``killed by signal SIGKILL`` for a process's return code."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalLauncher(Launcher):
    """Runs every worker as a child process of the controller."""

    name: ClassVar[str] = "local"
    description: ClassVar[str] = "worker processes on this machine"
    runs_on_host: ClassVar[bool] = True
    contracts: ClassVar[tuple[str, ...]] = ("mlrt", "sagemaker")
    launch_concurrency: ClassVar[int] = 1  # forks from one thread: PR_SET_PDEATHSIG follows the forking thread

    def __init__(self) -> None:
        self._processes: dict[str, list[subprocess.Popen[bytes] | WarmProcess]] = {}
        self._zygotes: dict[tuple[tuple[str, ...], tuple[str, ...]], Zygote] = {}
        self._pidfds: dict[int, int] = {}  # cold worker pid -> pidfd, readable once it exits
        self._copies: dict[str, list[OutputCopy]] = {}  # attempt -> its workers' output copies
        self._limits: dict[str, list[MemoryLimit]] = {}  # attempt -> its workers' memory limits, by rank

    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        workers = int(ctx.compute.get("workers", 1))
        port = _free_port()
        threads = {}
        if ctx.compute.get("cpu"):
            threads = dict.fromkeys(_THREAD_VARIABLES, str(max(1, int(ctx.compute["cpu"]))))
        limit = limit_bytes(ctx.compute)
        inherited = environment.inherited()
        loopback = _loopback_interface()
        requests = []
        for rank in range(workers):
            env = {
                **threads,
                # gloo's and NCCL's sockets on the loopback interface, next to the rendezvous on
                # MASTER_ADDR (without it gloo binds the address this machine's hostname resolves
                # to, NCCL the first interface that is not loopback).
                "GLOO_SOCKET_IFNAME": loopback,
                "NCCL_SOCKET_IFNAME": loopback,
                **ctx.env,
                # ``python`` in a command means the interpreter running mlrt, even
                # when its virtual environment is not activated.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), inherited.get("PATH", "")]),
                "PYTHONUNBUFFERED": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(workers),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(workers),
            }
            if ctx.contract == "sagemaker":
                env.update(sagemaker_contract.worker_env(ctx, rank, local=True))
                python_path = env.get("PYTHONPATH", inherited.get("PYTHONPATH"))
                env["PYTHONPATH"] = sagemaker_contract.hosts_pythonpath(python_path)  # algo-N -> 127.0.0.1
            log_path = str(Path(ctx.log_dir) / f"worker-{rank}.log")
            requests.append(WorkerRequest(rank=rank, argv=list(ctx.argv), env=env, cwd=ctx.cwd, log_path=log_path))
        allowed = environment.allow_list()
        details: dict[str, Any] = {"inherits_environment": "all" if allowed is None else allowed, "warm": False}
        if limit is not None:
            cores = int(threads[_THREAD_VARIABLES[0]]) if threads else os.cpu_count() or 1
            details.update(memory_limit=str(ctx.compute["memory"]), data_limit=backstop_bytes(limit, cores))
        if ctx.contract == "sagemaker":
            details["sagemaker"] = [sagemaker_contract.host_folders(ctx, r, local=True) for r in range(workers)]
        if ctx.compute.get("warm") and eligible(list(ctx.argv), requests[0].env):
            details.update(warm=True, preload=_preload(ctx))
        return LaunchRequest(
            backend=self.name,
            run_id=ctx.run_id,
            attempt=ctx.attempt,
            workers=requests,
            details=details,
        )

    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        key = f"{request.run_id}/{request.attempt}"
        processes: list[subprocess.Popen[bytes] | WarmProcess] = []
        self._processes[key] = processes
        copies = self._copies[key] = []
        workers = []
        data_limit = request.details.get("data_limit")
        for folders in request.details.get("sagemaker") or []:
            sagemaker_contract.write_host_folders(folders)
        try:
            for worker in request.workers:
                Path(worker.log_path).parent.mkdir(parents=True, exist_ok=True)
                copy = OutputCopy(worker.log_path)
                copies.append(copy)
                env = {**environment.inherited(), **worker.env}
                if request.details.get("warm"):
                    startup = {k: env[k] for k in _STARTUP_VARIABLES if k in env}
                    zygote = self._zygote(startup, request.details["preload"])
                    pid = zygote.spawn(worker.argv, env, worker.cwd, copy.named_pipe(), data_limit)
                    processes.append(WarmProcess(zygote, pid))
                    workers.append({"rank": worker.rank, "pid": pid, "started": time.time(), "warm": True})
                    continue
                with os.fdopen(copy.pipe(), "wb") as log:
                    process = subprocess.Popen(
                        worker.argv,
                        env=env,
                        cwd=worker.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=functools.partial(_become_worker, data_limit),
                    )
                processes.append(process)
                workers.append({"rank": worker.rank, "pid": process.pid, "started": time.time()})
                if hasattr(os, "pidfd_open"):
                    self._pidfds[process.pid] = os.pidfd_open(process.pid)
        except OSError as exc:
            self.stop({"key": key, "workers": workers}, grace_period=0)
            program = request.workers[0].argv[0]
            # A program that is missing or not executable stays so on the next attempt.
            missing = isinstance(exc, (FileNotFoundError, PermissionError, NotADirectoryError))
            raise LaunchError(f"cannot start {program!r}: {exc.strerror or exc}", retry=not missing) from None
        limit = request.details.get("memory_limit")
        if limit:
            self._limits[key] = [MemoryLimit(worker["pid"], parse_memory(limit), limit) for worker in workers]
        return {"key": key, "workers": workers}

    def _zygote(self, startup: dict[str, str], preload: list[str]) -> Zygote:
        # The zygote's own environment block is what its forks see in /proc/self/environ: it
        # holds what workers may inherit (one zygote per such environment), never all of this one.
        inherited = {k: v for k, v in environment.inherited().items() if k not in _STARTUP_VARIABLES}
        base = {**inherited, **startup}
        key = (tuple(sorted(base.items())), tuple(preload))
        zygote = self._zygotes.get(key)
        if zygote is None or not zygote.alive():
            zygote = self._zygotes[key] = Zygote(base, preload)
        return zygote

    def _process(self, handle: dict[str, Any], rank: int) -> subprocess.Popen[bytes] | WarmProcess | None:
        processes = self._processes.get(handle["key"], [])
        return processes[rank] if rank < len(processes) else None

    def poll(self, handle: dict[str, Any]) -> list[WorkerStatus]:
        statuses = []
        for worker in handle["workers"]:
            process = self._process(handle, worker["rank"])
            if process is None:
                statuses.append(
                    WorkerStatus(
                        worker["rank"],
                        RunState.RUNNING if _alive(worker["pid"]) else RunState.FAILED,
                        reason=""
                        if _alive(worker["pid"])
                        else "the worker process is gone; its exit status is unknown",
                    )
                )
                continue
            code = process.poll()
            if code is not None:
                self._output_copied(handle, worker["rank"])
            limit = self._limit(handle, worker["rank"])
            if limit is not None and (limit.reason is not None or code is None and limit.over()):
                statuses.append(
                    WorkerStatus(worker["rank"], RunState.FAILED, exit_code=OOM_EXIT_CODE, reason=limit.reason or "")
                )
            elif code is None:
                statuses.append(WorkerStatus(worker["rank"], RunState.RUNNING))
            elif code == 0:
                statuses.append(WorkerStatus(worker["rank"], RunState.SUCCEEDED, exit_code=0))
            else:
                statuses.append(
                    WorkerStatus(worker["rank"], RunState.FAILED, exit_code=code, reason=describe_exit(code))
                )
        return statuses

    def _output_copied(self, handle: dict[str, Any], rank: int) -> None:
        """Let an ended worker's last output reach its log before its end is reported (the
        controller reads the log's last line as the failure's reason)."""
        copies = self._copies.get(handle["key"], [])
        if rank < len(copies):
            copies[rank].wait_after_exit(1.0)

    def _limit(self, handle: dict[str, Any], rank: int) -> MemoryLimit | None:
        limits = self._limits.get(handle["key"], [])
        return limits[rank] if rank < len(limits) else None

    def stop(self, handle: dict[str, Any], grace_period: float) -> None:
        pids = [w["pid"] for w in handle["workers"]]
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_period
        while time.monotonic() < deadline and any(self._running(handle, w) for w in handle["workers"]):
            time.sleep(0.05)
        for worker in handle["workers"]:
            if self._running(handle, worker):
                _signal_group(worker["pid"], signal.SIGKILL)
        for worker in handle["workers"]:
            process = self._process(handle, worker["rank"])
            if process is not None:
                process.wait()

    def _running(self, handle: dict[str, Any], worker: dict[str, Any]) -> bool:
        process = self._process(handle, worker["rank"])
        return process.poll() is None if process is not None else _alive(worker["pid"])

    def wakeup_fds(self) -> list[int]:
        # Called from the reconcile thread while launches in the pool add zygotes and processes:
        # iterate over copies (a dict that grows during iteration raises).
        fds = []
        for zygote in list(self._zygotes.values()):
            if zygote.alive():
                zygote.drain()
                fds.append(zygote.fileno())
        pidfds = dict(self._pidfds)
        for processes in list(self._processes.values()):
            for process in list(processes):
                if isinstance(process, subprocess.Popen) and process.returncode is None and process.pid in pidfds:
                    fds.append(pidfds[process.pid])
        return fds

    def cleanup(self, handle: dict[str, Any]) -> None:
        """Finish copying the workers' output into their logs, then forget the attempt."""
        for copy in self._copies.pop(handle["key"], []):
            copy.join(10.0)
        self._processes.pop(handle["key"], None)
        self._limits.pop(handle["key"], None)
        for worker in handle["workers"]:
            fd = self._pidfds.pop(worker["pid"], None)
            if fd is not None:
                os.close(fd)


class WarmProcess:
    """A worker forked by a zygote, with the part of ``Popen``'s interface the launcher uses."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid

    def poll(self) -> int | None:
        code = self.zygote.returncode(self.pid)
        if code is None and not self.zygote.alive():
            return -signal.SIGKILL  # it died with its zygote (parent-death signal)
        return code

    def wait(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(0.01)
        return code


def _preload(ctx: LaunchContext) -> list[str]:
    """What a zygote imports before forking: the worker and its algorithm's plugin, or mlrt's SDK."""
    if ctx.argv[1:3] != ["-m", "mlrt.worker"]:
        return ["mlrt"]
    import json

    from mlrt import plugins

    algorithm = plugins.algorithms().get(json.loads(ctx.env["MLRT_SPEC"]).get("algorithm"))
    return ["mlrt.worker"] + ([type(algorithm).__module__] if algorithm is not None else [])


def _become_worker(data_limit: int | None) -> None:
    """In a cold worker between fork and exec: die with the controller, and the memory backstop."""
    die_with_parent()
    apply_backstop(data_limit)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@hookimpl(trylast=True)
def mlrt_launchers() -> list[Launcher]:
    return [LocalLauncher()]
