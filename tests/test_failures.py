"""Failures that explain themselves: the failing worker's last log lines with the reason, and
``spec.retries.on`` (infrastructure by default) choosing what is retried."""

from __future__ import annotations

import json

import pytest

from conftest import command_spec
from mlrt.failures import is_infrastructure


def test_a_code_bug_is_not_retried_by_default_and_shows_the_last_20_log_lines(cli, write_spec):
    program = """
        for i in range(30):
            print(f"loading shard {i}")
        rows = {"price": "n/a"}
        float(rows["price"])
    """
    spec = write_spec(
        command_spec("bug", "[python, bug.py]", "  retries: {max: 2, backoff: 0.1s}\n"), files={"bug.py": program}
    )
    result = cli("submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert result.exit_code == 1
    assert (run["state"], run["attempts"]) == ("FAILED", 1)
    assert "worker 0 exited with code 1" in run["reason"]
    assert "not retried" in run["reason"] and "spec.retries.on: any" in run["reason"]

    status = cli("status", run["id"])
    assert "last 20 lines of the failing worker's log (attempt 1):" in status.output
    shown = [line.removeprefix("  | ") for line in status.output.splitlines() if line.startswith("  | ")]
    assert len(shown) == 20
    assert shown[-1] == "ValueError: could not convert string to float: 'n/a'"
    assert "Traceback (most recent call last):" in shown
    assert "loading shard 29" in shown and "loading shard 10" not in shown
    details = json.loads(cli("runs", "show", run["id"], "--json").stdout)
    assert details["attempts"][0]["log_tail"].splitlines() == shown
    assert "  | ValueError: could not convert" in cli("runs", "show", run["id"]).output


def test_a_killed_worker_is_retried_by_default_and_any_retries_code_bugs_too(cli, write_spec):
    program = """
        import os, signal, sys
        if os.environ["MLRT_ATTEMPT"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(3 if os.environ["MLRT_ATTEMPT"] == "2" else 0)
    """
    files = {"flaky.py": program}
    spec = write_spec(command_spec("killed", "[python, flaky.py]", "  retries: {max: 2, backoff: 0.1s}\n"), files=files)
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    # Attempt 1 died of a signal (retried), attempt 2 exited 3 with its own code (not retried).
    assert (run["state"], run["attempts"]) == ("FAILED", 2), run["reason"]
    assert "exited with code 3" in run["reason"] and "not retried" in run["reason"]
    attempts = json.loads(cli("runs", "show", run["id"], "--json").stdout)["attempts"]
    assert "killed by signal SIGKILL" in attempts[0]["reason"]

    spec = write_spec(
        command_spec("any", "[python, flaky.py]", "  retries: {max: 2, backoff: 0.1s, on: any}\n"),
        name="any.yaml",
        files=files,
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert (run["state"], run["attempts"]) == ("SUCCEEDED", 3), run["reason"]


def test_retries_on_is_checked_at_validate(cli, write_spec):
    result = cli("validate", str(write_spec(command_spec("x", "[python]", "  retries: {max: 1, on: code}\n"))))
    assert result.exit_code == 2
    assert "spec.retries.on" in result.output and "infrastructure" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("exit_code", "reason", "tail", "infrastructure"),
    [
        (1, "worker 0 exited with code 1: KeyError: 'label'", ["Traceback (most recent call last):"], False),
        (2, "worker 0 exited with code 2", ["usage: train.py [-h]"], False),
        (137, "worker 0 out of memory: OOM-killed by the kernel (exit code 137)", [], True),
        (-9, "worker 0 killed by signal SIGKILL", [], True),
        (1, "worker 0 exited with code 1: RuntimeError: CUDA out of memory.", [], True),
        (1, "worker 1 exited with code 1", ["torch.distributed.DistNetworkError: Connection refused"], True),
        (1, "worker 0 exited with code 1", ["RendezvousConnectionError: The connection to the C10d store"], True),
        (1, "worker 1 exited with code 1: RuntimeError: worker 1 of 2 could not join the rendezvous at h:1", [], True),
        (None, "worker 0 pod train-0 failed (Evicted)", [], True),
        (None, "worker 0 the worker process is gone; its exit status is unknown", [], True),
        (None, "worker 0 pod train-0 cannot pull its image (ErrImagePull)", [], False),
    ],
)
def test_which_failures_come_from_the_infrastructure(exit_code, reason, tail, infrastructure):
    assert is_infrastructure(exit_code, reason, tail) is infrastructure
