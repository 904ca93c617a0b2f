"""``compute.memory`` on the local backend: each worker's memory limit, measured and enforced.

**What is measured.** A worker's use is the resident set size (RSS, as ``ps``
shows it) summed over its process and every descendant, close to what
Kubernetes counts against a container's limit. Shared pages count in
each process that maps them, so a warm worker (forked from a zygote that
already imported torch) starts with the zygote's RSS, exactly as the same
worker started cold would reach it after its imports.

**How it is enforced.** The launcher checks every guarded worker on each
``poll`` (:meth:`MemoryLimit.over`); a worker over its limit has its whole
process tree killed (SIGKILL) and is reported FAILED with a reason that starts
``out of memory:`` and exit code 137, as Kubernetes reports OOMKilled (a
worker that ends between two polls is judged by its exit alone). Between two
polls (a tenth of a second or so) a worker can allocate past its limit; two
kernel settings keep such a spike from taking the machine down
(:func:`apply_backstop`, in the worker before it runs any user code):

- ``RLIMIT_DATA`` (Linux >= 4.7 counts private writable mappings: the heap,
  anonymous ``mmap``, thread stacks) set to :func:`backstop_bytes` of the
  limit. An allocation past it fails (Python's ``MemoryError``) instead of
  growing. It is not the limit itself because it counts *virtual* memory.
  Measured with torch 2.13 and numpy 2.4 on Linux 6.18 (2 cores): numpy's
  OpenBLAS maps about 40 MiB per thread at its first product (128 MiB of
  data for 44 MiB resident), so with ``RLIMIT_DATA`` at a 100 MiB limit a
  1000x1000 product fails although the process holds 44 MiB; torch with 64
  threads held 271 MiB resident and 1,589 MiB of data mappings (310 MiB
  with 2 threads). ``RLIMIT_AS`` is worse still (it also counts code,
  shared mappings and the address space torch reserves and never touches),
  and Linux does not enforce ``RLIMIT_RSS``. So the backstop leaves room for
  the threads a worker may start (``compute.cpu``'s thread cap, else the
  machine's cores): twice the limit plus 64 MiB per thread
  (:func:`backstop_bytes`). It applies to each process of the worker.
- ``oom_score_adj`` 1000: when the machine runs out of memory all the same,
  the kernel's OOM killer takes a worker, not the controller or the user's
  other programs. Every local worker gets it, with or without a limit.

A cgroup (``memory.max``) would be exact, but needs a delegated cgroup v2
tree, which a laptop's or a CI runner's session often lacks; the container
backend gets one from its engine (``--memory``).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
import time
from typing import Any

from mlrt.units import parse_memory

BACKSTOP_PER_THREAD = 64 * 2**20
"""Data mappings one more thread may add to a worker (a stack and an allocator's or BLAS's buffers)."""
TREE_REFRESH = 1.0
"""Seconds between two look-ups of a worker's descendants (see :class:`MemoryLimit`)."""
OOM_EXIT_CODE = 128 + signal.SIGKILL
"""The exit code an out-of-memory worker reports: 137, as Kubernetes shows OOMKilled."""


def limit_bytes(compute: dict[str, Any]) -> int | None:
    """``compute.memory`` in bytes (per worker), or None when the spec sets no limit."""
    memory = compute.get("memory")
    return parse_memory(memory) if memory else None


def backstop_bytes(limit: int, threads: int) -> int:
    """The ``RLIMIT_DATA`` of a worker with memory limit ``limit`` that runs up to ``threads`` threads
    per math library: twice the limit plus :data:`BACKSTOP_PER_THREAD` per thread (see the module)."""
    return 2 * limit + BACKSTOP_PER_THREAD * max(1, threads)


def apply_backstop(data_limit: int | None) -> None:
    """In a worker, before its program runs: cap its data mappings at ``data_limit`` bytes (none when
    None) and make it the kernel OOM killer's first choice. Linux only; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    if data_limit is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))
    try:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write("1000")
    except OSError:
        pass  # a sandbox without /proc: the limit still applies


def process_tree(pid: int) -> list[Any]:
    """Process ``pid`` and all its descendants as ``psutil.Process`` objects (empty when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def resident(processes: list[Any]) -> int:
    """The resident memory in bytes of ``processes`` together (one that exited counts 0)."""
    import psutil

    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


KILL_WAIT = 5.0
"""Seconds :func:`kill_tree` waits for the killed descendants to be gone."""


def kill_tree(pid: int) -> None:
    """SIGKILL process ``pid``, its process group, and descendants that left the group; return once
    the descendants have exited (at most :data:`KILL_WAIT` seconds), as Kubernetes reports a
    container OOMKilled once its processes are gone: a process that frees a large heap takes a
    moment to exit after SIGKILL. (``pid`` itself is its launcher's child, reaped by its poll.)"""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for target in (pid, *(p.pid for p in descendants)):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + KILL_WAIT
    for process in descendants:
        while time.monotonic() < deadline:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    break  # exited; its new parent reaps it
            except psutil.NoSuchProcess:
                break
            time.sleep(0.005)


def amount(size: int) -> str:
    """``size`` bytes for a reason: ``412Mi``, ``1.50Gi``, rounded up, so that an amount over a
    limit never reads as the limit itself (200.3 MiB is ``201Mi``, not ``200Mi``)."""
    if size >= 2**30:
        return f"{math.ceil(size * 100 / 2**30) / 100:.2f}Gi"
    return f"{math.ceil(size / 2**20)}Mi"


def out_of_memory(used: int, limit: str) -> str:
    """The reason of a worker killed at its limit (``limit`` as the spec wrote it)."""
    return (
        f"out of memory: its processes used {amount(used)}, over its limit of {limit}, and were killed"
        f" (exit code {OOM_EXIT_CODE}, as Kubernetes reports OOMKilled); raise spec.compute.memory or use less memory"
    )


class MemoryLimit:
    """One worker's limit as the launcher checks it on each poll.

    Reading a process's RSS costs microseconds, but finding its descendants
    means reading every process of the machine (about 1 ms for 140); so the
    tree's members are looked up again at most every :data:`TREE_REFRESH`
    seconds, and their memory is read on every check."""

    def __init__(self, pid: int, limit: int, text: str):
        self.pid = pid
        self.limit = limit
        self.text = text
        self.reason: str | None = None
        """Set once the worker was killed for its memory: the reason poll reports from then on."""
        self._tree: list[Any] = []
        self._listed = -math.inf

    def used(self) -> int:
        """The bytes the worker's process tree holds now."""
        now = time.monotonic()
        if now - self._listed >= TREE_REFRESH:
            self._tree, self._listed = process_tree(self.pid), now
        return resident(self._tree)

    def over(self) -> bool:
        """Measure the worker; when it is over its limit, kill its tree, record the reason and say True."""
        if self.reason is not None:
            return True
        used = self.used()
        if used <= self.limit:
            return False
        kill_tree(self.pid)
        self.reason = out_of_memory(used, self.text)
        return True
