"""Warm workers (``compute.warm``): forked from a pre-started Python, yet indistinguishable
from a fresh ``python SCRIPT`` to the program, and stopped, timed out and reaped like one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import command_spec, pid_alive, run_json

PROBE = """
    import atexit, json, os, random, sys, threading, time
    import helper  # next to the script: sys.path[0] must be the script's directory

    def late():
        time.sleep(0.3)
        open("thread.txt", "w").write("joined")

    threading.Thread(target=late).start()
    atexit.register(lambda: open("atexit.txt", "w").write("ran"))
    unclosed = open("unclosed.txt", "w")
    unclosed.write("flushed at exit")
    print(json.dumps({
        "argv": sys.argv, "name": __name__, "cwd": os.getcwd(), "ppid": os.getppid(),
        "token": os.environ.get("PROBE_TOKEN"), "random": random.random(), "helper": helper.VALUE,
    }))
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


def probe_spec(name: str, *, warm: bool, extra: str = "") -> str:
    return command_spec(
        name,
        "[python, probe.py, --flag, value]",
        f"  compute: {{warm: {str(warm).lower()}}}\n  env: {{PROBE_TOKEN: t-{name}}}\n{extra}",
    )


def probe_output(home: Path, run_id: str) -> dict:
    log = (home / "logs" / run_id / "attempt-1" / "worker-0.log").read_text()
    return json.loads(next(line for line in log.splitlines() if line.startswith("{")))


def submit(cli, spec_path) -> dict:
    result = cli("submit", str(spec_path), "--json")
    return json.loads(result.stdout)


def test_a_warm_worker_behaves_like_a_fresh_interpreter(cli, write_spec, tmp_path, home):
    files = {"probe.py": PROBE, "helper.py": "VALUE = 42\n"}
    outputs = {}
    for warm in (True, False):
        name = "warm" if warm else "cold"
        spec = write_spec(probe_spec(name, warm=warm), name=f"{name}.yaml", files=files)
        run = submit(cli, spec)
        assert run["state"] == "SUCCEEDED", run["reason"]
        outputs[name] = probe_output(home, run["id"])
        assert (tmp_path / "thread.txt").read_text() == "joined"
        assert (tmp_path / "atexit.txt").read_text() == "ran"
        assert (tmp_path / "unclosed.txt").read_text() == "flushed at exit"
        for leftover in ("thread.txt", "atexit.txt", "unclosed.txt"):
            (tmp_path / leftover).unlink()
    warm, cold = outputs["warm"], outputs["cold"]
    for key in ("argv", "name", "cwd", "helper"):
        assert warm[key] == cold[key], key
    assert warm["argv"] == ["probe.py", "--flag", "value"] and warm["name"] == "__main__"
    assert (warm["token"], cold["token"]) == ("t-warm", "t-cold")
    # The cold worker is the controller's (this test process's) child; the warm one the zygote's.
    assert cold["ppid"] == os.getpid() and warm["ppid"] != os.getpid()


def test_warm_workers_get_their_own_random_state_and_exit_codes(cli, write_spec, home):
    files = {"probe.py": PROBE, "helper.py": "VALUE = 1\n"}
    spec = write_spec(probe_spec("rand", warm=True), files=files)
    first, second = submit(cli, spec), submit(cli, spec)
    assert probe_output(home, first["id"])["random"] != probe_output(home, second["id"])["random"]
    assert probe_output(home, first["id"])["ppid"] == probe_output(home, second["id"])["ppid"]  # one zygote

    failing = write_spec(
        command_spec("exit3", "[python, probe.py]", "  compute: {warm: true}\n  env: {PROBE_EXIT: '3'}\n"),
        name="exit3.yaml",
    )
    run = submit(cli, failing)
    assert run["state"] == "FAILED"
    assert "exited with code 3" in run["reason"]


def test_an_uncaught_exception_shows_only_the_programs_traceback(cli, write_spec, home):
    program = """
        def train():
            raise ValueError("learning rate must be positive")

        train()
    """
    spec = write_spec(
        command_spec("boom", "[python, boom.py]", "  compute: {warm: true}\n"), files={"boom.py": program}
    )
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    assert "ValueError: learning rate must be positive" in run["reason"]
    log = (home / "logs" / run["id"] / "attempt-1" / "worker-0.log").read_text()
    assert 'boom.py", line 5, in <module>' in log and "in train" in log
    assert "zygote" not in log and "runpy" not in log


def test_a_warm_module_worker_and_a_non_python_command(cli, write_spec, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "main.py").write_text("import sys\nprint('module', __name__, sys.argv[1:])\n")
    spec = write_spec(command_spec("mod", "[python, -m, pkg.main, x]", "  compute: {warm: true}\n"))
    plan = json.loads(cli("validate", str(spec), "--json").stdout)
    assert plan["launch"]["details"]["warm"] is True
    run = submit(cli, spec)
    assert run["state"] == "SUCCEEDED"
    assert "module __main__ ['x']" in cli("logs", run["id"]).stdout

    shell = write_spec(command_spec("sh", "[sh, -c, 'echo from-sh']", "  compute: {warm: true}\n"), name="sh.yaml")
    assert json.loads(cli("validate", str(shell), "--json").stdout)["launch"]["details"]["warm"] is False
    assert submit(cli, shell)["state"] == "SUCCEEDED"


def test_a_warm_worker_is_timed_out_and_leaves_no_process(cli, write_spec, tmp_path):
    program = """
        import os, time
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
    """
    spec = write_spec(
        command_spec(
            "slow", "[python, slow.py]", "  compute: {warm: true}\n  stopping: {max_runtime: 1s, grace_period: 2s}\n"
        ),
        files={"slow.py": program},
    )
    run = submit(cli, spec)
    assert run["state"] == "TIMED_OUT"
    assert not pid_alive(int((tmp_path / "pid").read_text()))
    assert run_json(cli, run["id"])["events"][-1]["to_state"] == "TIMED_OUT"


def test_tuning_trials_run_warm_unless_the_template_says_no(cli, write_spec, home):
    tune = """
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {{name: quad}}
        spec:
          template:
            command: [python, objective.py]
            metrics: [{{name: score, regex: 'score=(-?[0-9.eE+-]+)'}}]
            {compute}
          objective: {{metric: score, goal: minimize}}
          parameters:
            x: {{type: float, min: -2, max: 2}}
          tuner: random
          max_trials: 3
          seed: 3
    """
    objective = """
        import json, os
        x = json.loads(os.environ["MLRT_HYPERPARAMETERS"])["x"]
        print(f"score={(x - 1) ** 2}")
        print(f"ppid={os.getppid()}")
    """
    parents = {}
    for name, compute in (("warm", ""), ("cold", "compute: {warm: false}")):
        spec = write_spec(tune.format(compute=compute), name=f"{name}.yaml", files={"objective.py": objective})
        run = submit(cli, spec)
        assert run["state"] == "SUCCEEDED", run["reason"]
        logs = sorted((home / "logs").glob(f"{run['id']}-t*/attempt-1/worker-0.log"))
        assert len(logs) == 3
        parents[name] = {int(p.read_text().split("ppid=")[1]) for p in logs}
    assert parents["cold"] == {os.getpid()}
    assert len(parents["warm"]) == 1 and parents["warm"] != {os.getpid()}
