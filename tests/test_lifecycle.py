"""Every state a run can end in, driven through the CLI with real worker processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from conftest import command_spec, pid_alive, run_json, wait_for
from mlrt.store import Store


def submit_json(cli, spec_path, *args):
    result = cli("submit", str(spec_path), "--json", *args)
    return result, json.loads(result.stdout)


def transitions(cli, run_id):
    return [(e["from_state"], e["to_state"]) for e in run_json(cli, run_id)["events"] if e["to_state"]]


def test_success_records_every_transition(cli, write_spec):
    spec = write_spec(command_spec("ok", "[python, -c, 'print(1)']"))
    result, run = submit_json(cli, spec)
    assert result.exit_code == 0
    assert run["state"] == "SUCCEEDED"
    assert transitions(cli, run["id"]) == [
        (None, "QUEUED"),
        ("QUEUED", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "FINALIZING"),
        ("FINALIZING", "SUCCEEDED"),
    ]


def test_timeout_sends_sigterm_then_marks_timed_out(cli, write_spec, tmp_path):
    program = """
        import signal, sys, time
        def on_term(*_):
            open("got-sigterm", "w").write("yes")
            sys.exit(143)
        signal.signal(signal.SIGTERM, on_term)
        print("started", flush=True)
        time.sleep(60)
    """
    spec = write_spec(
        command_spec("slow", "[python, slow.py]", "  stopping: {max_runtime: 1s, grace_period: 5s}\n"),
        files={"slow.py": program},
    )
    result, run = submit_json(cli, spec)
    assert result.exit_code == 1
    assert run["state"] == "TIMED_OUT"
    assert "max_runtime of 1s" in run["reason"]
    assert (tmp_path / "got-sigterm").read_text() == "yes"
    assert transitions(cli, run["id"])[-1] == ("RUNNING", "TIMED_OUT")


def test_worker_ignoring_sigterm_is_killed_after_grace_period(cli, write_spec, tmp_path):
    program = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('pid', 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    spec = write_spec(
        command_spec("stubborn", "[python, stubborn.py]", "  stopping: {max_runtime: 1s, grace_period: 1s}\n"),
        files={"stubborn.py": program},
    )
    _, run = submit_json(cli, spec)
    assert run["state"] == "TIMED_OUT"
    assert run["duration_s"] < 15
    assert not pid_alive(int((tmp_path / "pid").read_text()))


def test_retry_then_succeed(cli, write_spec):
    program = """
        import os, sys
        attempt = os.environ["MLRT_ATTEMPT"]
        print("attempt", attempt)
        sys.exit(3 if attempt == "1" else 0)
    """
    spec = write_spec(
        command_spec("flaky", "[python, flaky.py]", "  retries: {max: 2, backoff: 0.1s, on: any}\n"),
        files={"flaky.py": program},
    )
    result, run = submit_json(cli, spec)
    assert result.exit_code == 0
    assert run["state"] == "SUCCEEDED"
    assert run["attempts"] == 2
    details = run_json(cli, run["id"])
    assert [(a["number"], a["state"], a["exit_code"]) for a in details["attempts"]] == [
        (1, "FAILED", 3),
        (2, "SUCCEEDED", 0),
    ]
    retry = [e for e in details["events"] if e["from_state"] == "RUNNING" and e["to_state"] == "QUEUED"]
    assert len(retry) == 1 and "retry 1 of 2" in retry[0]["reason"]
    assert transitions(cli, run["id"]) == [
        (None, "QUEUED"),
        ("QUEUED", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "QUEUED"),
        ("QUEUED", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "FINALIZING"),
        ("FINALIZING", "SUCCEEDED"),
    ]


def test_retries_exhausted_fail_with_the_workers_reason(cli, write_spec):
    program = "import sys\nprint('loading data')\nprint('ValueError: column price has strings', file=sys.stderr)\nsys.exit(3)\n"
    spec = write_spec(
        command_spec("broken", "[python, broken.py]", "  retries: {max: 1, backoff: 0.1s, on: any}\n"),
        files={"broken.py": program},
    )
    result, run = submit_json(cli, spec)
    assert result.exit_code == 1
    assert run["state"] == "FAILED"
    assert run["attempts"] == 2
    assert "worker 0 exited with code 3" in run["reason"]
    assert "ValueError: column price has strings" in run["reason"]
    assert "after 2 attempts" in run["reason"]
    status = cli("status", run["id"])
    assert "column price has strings" in status.output


def test_failure_file_reason_is_shown(cli, write_spec):
    program = """
        import os, sys
        open(os.environ["MLRT_FAILURE_FILE"], "w").write("label column 'y' not found in train.csv\\n")
        print("noise on the last line")
        sys.exit(2)
    """
    spec = write_spec(command_spec("reasoned", "[python, r.py]"), files={"r.py": program})
    _, run = submit_json(cli, spec)
    assert run["state"] == "FAILED"
    assert "label column 'y' not found" in run["reason"]


def test_failing_worker_stops_its_siblings(cli, write_spec, tmp_path):
    program = """
        import os, sys, time
        rank = os.environ["RANK"]
        open(f"pid-{rank}", "w").write(str(os.getpid()))
        if rank == "1":
            while not os.path.exists("pid-0"):  # fail once the sibling is up (else it may never start)
                time.sleep(0.05)
            sys.exit(1)
        time.sleep(60)
    """
    spec = write_spec(
        command_spec("siblings", "[python, w.py]", "  compute: {workers: 2}\n  stopping: {grace_period: 2s}\n"),
        files={"w.py": program},
    )
    result, run = submit_json(cli, spec)
    assert run["state"] == "FAILED"
    assert "worker 1 exited with code 1" in run["reason"]
    assert run["duration_s"] < 20
    assert not pid_alive(int((tmp_path / "pid-0").read_text()))


def test_two_workers_see_distinct_ranks_and_one_master(cli, write_spec, tmp_path):
    program = """
        import json, os
        keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "MLRT_RUN_ID"]
        json.dump({k: os.environ[k] for k in keys}, open(f"env-{os.environ['RANK']}.json", "w"))
    """
    spec = write_spec(
        command_spec("ddp-env", "[python, env.py]", "  compute: {workers: 2}\n"), files={"env.py": program}
    )
    _, run = submit_json(cli, spec)
    assert run["state"] == "SUCCEEDED"
    envs = [json.loads((tmp_path / f"env-{rank}.json").read_text()) for rank in (0, 1)]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"] == "127.0.0.1"
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert {e["MLRT_RUN_ID"] for e in envs} == {run["id"]}


def test_worker_killed_from_outside_fails_the_run(cli, write_spec, tmp_path):
    program = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    spec = write_spec(command_spec("victim", "[python, victim.py]"), files={"victim.py": program})
    result = cli("submit", str(spec), "--detach", "--json")
    run_id = json.loads(result.stdout)["run_id"]
    pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
    os.kill(pid, signal.SIGKILL)
    store = Store()
    run = wait_for(lambda: (r := store.get_run(run_id)).state == "FAILED" and r)
    assert "worker 0 killed by signal SIGKILL" in run.reason


def test_cancel_stops_a_detached_run(cli, write_spec, tmp_path):
    program = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    spec = write_spec(command_spec("cancel-me", "[python, sleeper.py]"), files={"sleeper.py": program})
    run_id = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)["run_id"]
    pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
    result = cli("cancel", run_id)
    assert result.exit_code == 0
    assert "CANCELLED" in result.output
    assert wait_for(lambda: not pid_alive(pid), timeout=10)
    assert transitions(cli, run_id)[-1] == ("RUNNING", "CANCELLED")
    again = cli("cancel", run_id)
    assert again.exit_code == 0 and "already CANCELLED" in again.output


def test_killed_controller_never_leaves_the_run_running(cli, write_spec, tmp_path):
    program = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    spec = write_spec(command_spec("orphan", "[python, sleeper.py]"), files={"sleeper.py": program})
    submitted = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)
    run_id = submitted["run_id"]
    worker_pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
    os.kill(submitted["controller_pid"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(worker_pid), timeout=10), "the worker outlived its controller"
    status = json.loads(cli("status", run_id, "--json").stdout)
    assert status["state"] == "FAILED"
    assert "stopped while the run was RUNNING" in status["reason"]


def test_logs_follow_a_detached_run_to_its_end(cli, write_spec):
    program = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.3)\n"
    spec = write_spec(command_spec("chatty", "[python, chatty.py]"), files={"chatty.py": program})
    run_id = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)["run_id"]
    result = cli("logs", run_id, "-f")
    assert result.exit_code == 0
    assert result.output.splitlines() == ["line 0", "line 1", "line 2"]
    assert json.loads(cli("status", run_id, "--json").stdout)["state"] == "SUCCEEDED"


def test_missing_program_fails_at_once_with_a_clear_reason_and_no_retry(cli, write_spec):
    # Retries with a long backoff: a retried launch error would keep the run QUEUED for minutes.
    spec = write_spec(command_spec("typo", "[no-such-program-xyz]", "  retries: {max: 2, backoff: 10m}\n"))
    _, run = submit_json(cli, spec)
    assert run["state"] == "FAILED"
    assert "cannot start 'no-such-program-xyz'" in run["reason"]
    assert "not retried" in run["reason"]
    shown = json.loads(cli("runs", "show", run["id"], "--json").stdout)
    assert [a["state"] for a in shown["attempts"]] == ["FAILED"]


def test_command_job_outputs_become_artifacts_with_sha256(cli, write_spec):
    program = """
        import hashlib, os, pathlib
        out = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
        (out / "weights.bin").write_bytes(b"0123456789" * 1000)
        os.symlink("/etc/hostname", out / "escape")
    """
    spec = write_spec(command_spec("arty", "[python, art.py]"), files={"art.py": program})
    _, run = submit_json(cli, spec)
    artifacts = json.loads(cli("artifacts", run["id"], "--json").stdout)
    assert [a["path"] for a in artifacts] == ["weights.bin"]
    import hashlib

    assert artifacts[0]["sha256"] == hashlib.sha256(b"0123456789" * 1000).hexdigest()
    assert artifacts[0]["size"] == 10000
    assert Path(artifacts[0]["uri"].removeprefix("file://")).is_file()
    events = [e["reason"] for e in run_json(cli, run["id"])["events"]]
    assert any("'escape' skipped" in reason for reason in events)


NOTES_SIGTERM_RUNS_ON = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: open('got-term', 'w').close())  # noted, not obeyed\n"
    "open('pid', 'w').write(str(os.getpid()))\n"
    "while True:\n"
    "    time.sleep(1)\n"
)
"""A worker that writes its pid, notes SIGTERM in the file ``got-term`` and runs on: only SIGKILL stops it."""


def submit_until_the_worker_runs(spec: Path, home: Path, pid_file: Path):
    """`mlrt submit -q SPEC` in a process of its own (a signal reaches it alone), once its
    worker has written its pid to ``pid_file``: the process and the worker's pid."""
    import subprocess

    from conftest import MLRT_SCRIPT

    process = subprocess.Popen(
        [str(MLRT_SCRIPT), "submit", "-q", str(spec)],
        env={**os.environ, "MLRT_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))


def test_interrupting_submit_cancels_the_run(write_spec, tmp_path, home):
    program = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    spec = write_spec(command_spec("interrupted", "[python, sleeper.py]"), files={"sleeper.py": program})
    process, worker = submit_until_the_worker_runs(spec, home, tmp_path / "pid")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert "CANCELLED" in out and "interrupted in the submitting terminal" in out, (out, err)
    assert not pid_alive(worker)
    run = Store().list_runs()[0]
    assert run.state == "CANCELLED"


def test_interrupting_submit_stops_a_worker_that_ignores_sigterm_within_the_stop_deadline(write_spec, tmp_path, home):
    """SIGTERM to `mlrt submit`: its controller asks the worker to stop (SIGTERM), waits the grace
    period, then kills it; the command waits for that (its stop deadline is the longest grace
    period and the stop retries), so no run is left behind with its worker still running."""
    spec = write_spec(
        command_spec("stubborn-interrupted", "[python, stubborn.py]", "  stopping: {grace_period: 2s}\n"),
        files={"stubborn.py": NOTES_SIGTERM_RUNS_ON},
    )
    process, worker = submit_until_the_worker_runs(spec, home, tmp_path / "pid")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "CANCELLED" in out, (out, err)
    assert "could not be stopped" not in err, err
    assert (tmp_path / "got-term").exists()  # asked first ...
    assert not pid_alive(worker)  # ... then killed when the grace period ran out
    run = Store().list_runs()[0]
    assert run.state == "CANCELLED"


def test_a_second_interrupt_stops_the_workers_at_once(write_spec, tmp_path, home):
    """Ctrl-C again (a second SIGTERM here) while the workers have their grace period: they are
    killed at once, the run is CANCELLED and the command exits, instead of leaving them running."""
    spec = write_spec(
        command_spec("stubborn-forced", "[python, stubborn.py]", "  stopping: {grace_period: 600s}\n"),
        files={"stubborn.py": NOTES_SIGTERM_RUNS_ON},
    )
    process, worker = submit_until_the_worker_runs(spec, home, tmp_path / "pid")
    process.send_signal(signal.SIGTERM)
    wait_for(lambda: (tmp_path / "got-term").exists())  # the grace period has begun
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)  # well inside the 600 s grace period
    assert process.returncode == 1, err
    assert "CANCELLED" in out, (out, err)
    assert not pid_alive(worker)
    assert Store().list_runs()[0].state == "CANCELLED"
