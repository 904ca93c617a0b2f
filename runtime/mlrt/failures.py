"""Why a worker failed, and whether another attempt could help.

``spec.retries.on`` chooses which failed attempts are retried (up to
``spec.retries.max``):

- ``infrastructure`` (the default, as SageMaker does it): failures that come
  from where the program ran, not from the program: a signal (a process killed
  or stopped, exit codes above 128), running out of memory (an OOM kill, exit
  137, or "out of memory" / ``MemoryError`` in the log), an evicted or
  preempted pod, a lost node or worker, an unreachable rendezvous of a
  distributed job (torch's ``Rendezvous...Error``, ``DistNetworkError``,
  ``DistStoreError``), and launches the backend could not make but marked
  retryable (:class:`mlrt.launchers.LaunchError`). A program that exits with a
  code of its own (a Python traceback and exit 1) is a bug in the code or the
  data: another attempt would fail the same way, so the run fails at once.
- ``any``: every failed attempt is retried.

A failed attempt keeps the last :data:`LOG_TAIL_LINES` lines of the failing
worker's log (``mlrt status`` and ``mlrt runs show`` print them under the reason).
"""

from __future__ import annotations

import re
from pathlib import Path

LOG_TAIL_LINES = 20
"""How many of the failing worker's last log lines a failed attempt keeps."""

RETRY_ON = ("infrastructure", "any")
"""The values of ``spec.retries.on``; the first is the default."""

_INFRASTRUCTURE = re.compile(
    r"out of memory|\bOOM\b|OOM-?killed|\bMemoryError\b"
    r"|\bevicted\b|\bpreempt(?:ed|ion)\b|\bNodeLost\b|node (?:was )?lost|\bis gone\b"
    r"|\bRendezvous\w*Error\b|\bDistNetworkError\b|\bDistStoreError\b|could not join the rendezvous",
    re.IGNORECASE,
)
"""What a reason or log says when the machine, not the program, ended a worker."""


def is_infrastructure(exit_code: int | None, reason: str, log_tail: list[str]) -> bool:
    """Whether a worker that ended with ``exit_code`` (None: unknown) and ``reason`` (the
    backend's words), its log ending in ``log_tail``, failed because of where it ran (see
    the module docstring) rather than because of its program."""
    if exit_code is not None and (exit_code < 0 or exit_code > 128):
        return True
    return any(_INFRASTRUCTURE.search(text) for text in (reason, *log_tail))


def exception_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` in one line for a reason or an event: its type and the first line of its message,
    cut to ``limit`` characters (an exception's text may carry a whole server answer)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:limit]


def retried(on: str, infrastructure: bool) -> bool:
    """Whether ``spec.retries.on`` = ``on`` retries a failure (of the infrastructure or not)."""
    return on == "any" or infrastructure


def tail_lines(path: Path, count: int = LOG_TAIL_LINES, limit: int = 300) -> list[str]:
    """The last ``count`` lines of the log at ``path`` that are not SDK records, each cut to
    ``limit`` characters (only the end of the file is read: a worker may have written
    gigabytes); [] when there is no such file."""
    from mlrt.logscan import is_sdk_record

    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = tail.splitlines()
    if size > 64 * 1024:
        lines = lines[1:]  # the first line read is likely the end of a longer one
    kept = [line.rstrip()[:limit] for line in lines if line.strip() and not is_sdk_record(line)]
    return kept[-count:]
