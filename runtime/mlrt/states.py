"""The one state machine every run follows, whatever launches it.

A run moves QUEUED -> STARTING -> RUNNING and ends SUCCEEDED, FAILED,
CANCELLED or TIMED_OUT; a run whose workers all succeeded is FINALIZING while
its reports are built and its output registered or uploaded (off the
controller's reconcile loop), then ends; a tuning trial may also end PRUNED, and a run whose
workers succeeded but whose reports fail one of ``spec.gates`` ends
FAILED_GATE. A failed attempt with retries left sends the run back
to QUEUED; the next attempt is a new row of the same run. Backends map their
native states (exit codes, pod phases) into these values.
"""

from __future__ import annotations

import enum


class RunState(str, enum.Enum):
    """Lifecycle state of a run (and of each of its attempts)."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    FINALIZING = "FINALIZING"  # the workers succeeded; reports, gates and output upload are under way
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    PRUNED = "PRUNED"  # a tuning trial stopped early by the job's early-stopping rule
    FAILED_GATE = "FAILED_GATE"  # the workers succeeded, but the run failed one of spec.gates

    def is_terminal(self) -> bool:
        """True once the run can no longer change state."""
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.TIMED_OUT,
        RunState.PRUNED,
        RunState.FAILED_GATE,
    }
)

_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.STARTING, RunState.CANCELLED, RunState.FAILED}),
    RunState.STARTING: frozenset({RunState.RUNNING, RunState.QUEUED, RunState.FAILED, RunState.CANCELLED}),
    RunState.RUNNING: frozenset(
        {
            RunState.SUCCEEDED,
            RunState.FAILED,
            RunState.CANCELLED,
            RunState.TIMED_OUT,
            RunState.PRUNED,
            RunState.FAILED_GATE,
            RunState.QUEUED,  # a failed attempt with retries left
            RunState.FINALIZING,
        }
    ),
    RunState.FINALIZING: frozenset(
        {RunState.SUCCEEDED, RunState.FAILED, RunState.FAILED_GATE, RunState.CANCELLED, RunState.TIMED_OUT}
    ),
}


class IllegalTransition(RuntimeError):
    """Raised when code asks for a transition the state machine forbids."""


def check_transition(current: RunState, target: RunState) -> None:
    """Raise IllegalTransition unless ``current -> target`` is allowed."""
    if target not in _ALLOWED.get(current, frozenset()):
        raise IllegalTransition(f"a run cannot go from {current} to {target}")
