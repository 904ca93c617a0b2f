"""The state machine every run follows."""

import pytest

from mlrt.states import IllegalTransition, RunState, check_transition


def test_terminal_states():
    terminal = {s for s in RunState if s.is_terminal()}
    assert terminal == {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.TIMED_OUT,
        RunState.PRUNED,
        RunState.FAILED_GATE,
    }


@pytest.mark.parametrize("state", [s for s in RunState if s.is_terminal()])
def test_nothing_leaves_a_terminal_state(state):
    for target in RunState:
        with pytest.raises(IllegalTransition):
            check_transition(state, target)


def test_the_paths_a_run_can_take():
    for current, target in [
        ("QUEUED", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
        ("RUNNING", "FINALIZING"),
        ("FINALIZING", "SUCCEEDED"),
        ("FINALIZING", "FAILED_GATE"),
        ("FINALIZING", "CANCELLED"),
        ("RUNNING", "QUEUED"),
        ("RUNNING", "PRUNED"),
        ("RUNNING", "TIMED_OUT"),
        ("QUEUED", "CANCELLED"),
    ]:
        check_transition(RunState(current), RunState(target))
    with pytest.raises(IllegalTransition):
        check_transition(RunState.QUEUED, RunState.SUCCEEDED)
