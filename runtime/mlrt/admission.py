"""Which queued runs the controller launches now, in which order, and why the others wait.

Each reconcile pass hands the runs that are ready to launch (QUEUED, backoff
over, not cancelled) to :meth:`Admission.order`, then asks
:meth:`Admission.hold` for each in that order; a run held back keeps its
reason in ``runs.waiting`` (shown by ``mlrt status`` and the API), a run let
through is charged to the usage the pass's later runs are checked against.

**Order.** Higher ``spec.priority`` first. Within one priority, fair share:
the run of the project that holds the fewest active runs goes first (its
launches in this pass count), so a project that queued a thousand jobs does
not make another project's first job wait behind them; then first come,
first served. Local jobs (no project) form one group.

**Project limits** (:class:`~mlrt.store.models.ProjectLimit`, set with
``mlrt projects limit``): the runs of a project that are STARTING, RUNNING or
FINALIZING, with the resources they asked for, may not exceed its limits. A
tuning run does not count (it only drives its trials, which do).

**Priority cap.** A project's ``max_priority`` limit is the highest
``spec.priority`` its submissions may ask for (:func:`priority_problem`,
checked when the API takes a job), so a project cannot put all its jobs ahead
of every other project's.

**The machine** (backends whose workers run on the controller's host, see
:attr:`~mlrt.launchers.Launcher.runs_on_host`): the cores and memory that the
host's active runs of those backends asked for, in every controller process
on it, may not exceed the machine's (``os.cpu_count()``, total memory). A
worker without ``compute.cpu`` counts as one core; one without
``compute.memory`` counts no memory. A run asking for more than the whole
machine still starts once nothing else runs there, so it is never stuck.
Controllers on one host take their decisions one at a time (a lock file
under ``MLRT_HOME``), so two of them never fill the same free core.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlrt.folders import exclusive
from mlrt.store import Store, mlrt_home
from mlrt.units import format_bytes, parse_memory

ACTIVE_STATES = ("STARTING", "RUNNING", "FINALIZING")
"""The states in which a run holds what it asked for."""


def run_resources(spec: dict[str, Any]) -> tuple[float, int, int]:
    """``(cores, memory bytes, gpus)`` a TrainingJob's resolved ``spec`` asks for, summed over
    its workers: what admission charges the run."""
    compute = spec.get("compute") or {}
    workers = int(compute.get("workers") or 1)
    cpus = float(compute.get("cpu") or 1.0)
    memory = parse_memory(compute["memory"]) if compute.get("memory") else 0
    return workers * cpus, workers * memory, workers * int(compute.get("gpus") or 0)


@dataclasses.dataclass
class Usage:
    """What a group of active runs asked for."""

    runs: int = 0
    cpus: float = 0.0
    memory: int = 0
    gpus: int = 0

    def add(self, cpus: float, memory: int, gpus: int) -> None:
        self.runs += 1
        self.cpus += cpus
        self.memory += memory
        self.gpus += gpus


def _amount(value: float) -> str:
    return f"{value:g}"


class Admission:
    """One pass's view of who holds what; see the module docstring."""

    def __init__(self, store: Store, host_backends: frozenset[str]):
        self.store = store
        self.host_backends = host_backends
        self.projects: dict[str | None, Usage] = {}
        self.limits: dict[str, Any] = {}
        self.machine = Usage()
        self.capacity = (float(os.cpu_count() or 1), _total_memory())

    def refresh(self) -> None:
        """Read the current usage from the database (at the start of a pass)."""
        projects, machine = self.store.active_usage(ACTIVE_STATES, self.host_backends, socket.gethostname())
        self.projects = {project: Usage(*usage) for project, *usage in projects}
        self.machine = Usage(*machine)
        self.limits = {limit.project: limit for limit in self.store.project_limits()}

    def order(self, runs: list[Any], projects: dict[str, str | None]) -> list[Any]:
        """``runs`` in the order they are considered: priority, then fair share, then age."""
        held = Counter({project: usage.runs for project, usage in self.projects.items()})
        by_priority: dict[int, list[Any]] = {}
        for run in sorted(runs, key=lambda r: (r.created_at, r.id)):
            by_priority.setdefault(run.priority, []).append(run)
        ordered = []
        for priority in sorted(by_priority, reverse=True):
            queues: dict[str | None, list[Any]] = {}
            for run in by_priority[priority]:
                queues.setdefault(projects.get(run.id), []).append(run)
            # Round robin by how much each project holds: the least served project's oldest run next.
            heads = {project: 0 for project in queues}
            while heads:
                project = min(heads, key=lambda p: (held[p], queues[p][heads[p]].created_at))
                ordered.append(queues[project][heads[project]])
                held[project] += 1
                heads[project] += 1
                if heads[project] == len(queues[project]):
                    del heads[project]
        return ordered

    def hold(self, run: Any, project: str | None) -> str:
        """Why ``run`` must wait ("" when it may launch now; it is then charged)."""
        usage = self.projects.setdefault(project, Usage())
        limit = self.limits.get(project) if project is not None else None
        if limit is not None:
            checks = (
                (limit.max_running, usage.runs, 1, "running runs", str),
                (limit.max_cpus, usage.cpus, run.cpus, "CPUs", _amount),
                (limit.max_gpus, usage.gpus, run.gpus, "GPUs", _amount),
                (limit.max_memory, usage.memory, run.memory, "memory", format_bytes),
            )
            for maximum, held, asked, what, shown in checks:
                if maximum is not None and asked and held + asked > maximum:
                    asks = "" if what == "running runs" else f"; the run asks for {shown(asked)}"
                    return f"project {project} is at its limit of {shown(maximum)} {what}{asks}"
        if run.backend in self.host_backends and self.machine.runs:
            cores, memory = self.capacity
            if self.machine.cpus + run.cpus > cores:
                free = max(cores - self.machine.cpus, 0)
                return f"this machine has {_amount(free)} of {_amount(cores)} CPUs free; the run asks for {_amount(run.cpus)}"
            if run.memory and self.machine.memory + run.memory > memory:
                free = max(memory - self.machine.memory, 0)
                return f"this machine has {format_bytes(free)} of {format_bytes(memory)} memory free; the run asks for {format_bytes(run.memory)}"
        usage.add(run.cpus, run.memory, run.gpus)
        if run.backend in self.host_backends:
            self.machine.add(run.cpus, run.memory, run.gpus)
        return ""

    @contextmanager
    def deciding(self, needed: bool) -> Iterator[None]:
        """Hold the host's admission lock while deciding (when any run is host-bound), so the
        controllers on one machine admit one after the other."""
        if not needed:
            yield
            return
        with exclusive(mlrt_home() / "admission.lock"):
            yield


def _total_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def priority_problem(project: str | None, cap: int | None, priority: int) -> str | None:
    """One line when ``priority`` is above ``cap``, ``project``'s ``max_priority`` limit (None:
    none), else None."""
    if project is None or cap is None or priority <= cap:
        return None
    return (
        f"spec.priority: {priority} is above project {project}'s limit of {cap}"
        f" (set by its operator with `mlrt projects limit {project} --max-priority N`); use {cap} or less"
    )
