"""The container backend end to end, with a real engine (podman or docker).

Workers run in a stand-in for mlrt's training image built from this machine's
Python and virtual environment (``container_image.py``, built once per machine
and reused). ``MLRT_CONTAINER_RUN_ARGS`` keeps a value the machine sets; else
it gets this machine's rules (``--runtime runc`` where runc is installed, and
ulimits). The plan test needs no engine and runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import command_spec, missing, pid_alive, run_json, wait_for
from hostile import ENGINE, RUN_ARGS, engine_problem
from mlrt.launchers import LaunchContext, LaunchError, LaunchRequest, WorkerRequest
from mlrt.store import Store
from mlrt_container import HIDDEN, ContainerLauncher, container_name

PROBLEM = engine_problem()


@pytest.fixture
def needs_engine_fixture() -> None:
    if PROBLEM is not None:
        missing("podman", f"container backend tests: {PROBLEM}")


needs_engine = pytest.mark.usefixtures("needs_engine_fixture")


@pytest.fixture(scope="module")
def image() -> str:
    from container_image import build_image

    started = time.monotonic()
    name = build_image(ENGINE, RUN_ARGS.split())
    print(f"test image {name} ready in {time.monotonic() - started:.1f}s")
    return name


@pytest.fixture
def engine_env(image, monkeypatch) -> str:
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", RUN_ARGS)
    monkeypatch.setenv("MLRT_TRAINING_IMAGE", image)
    monkeypatch.delenv("MLRT_CONTAINER_ENGINE", raising=False)
    return image


def leftovers(run_id: str) -> list[str]:
    """Containers and networks of ``run_id`` that still exist."""
    label = f"label=mlrt.run-id={run_id}"
    containers = subprocess.run(
        [ENGINE, "ps", "-a", "--filter", label, "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    networks = subprocess.run(
        [ENGINE, "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return containers + [n for n in networks if n.startswith(f"mlrt-{run_id}")]


def submit(cli, spec, *args) -> dict:
    result = cli("submit", str(spec), "--json", *args)
    return json.loads(result.stdout)


def container_spec(name: str, command: str, image: str, extra: str = "") -> str:
    return command_spec(
        name, command, f"  image: {image}\n  compute: {{backend: container, cpu: 1, memory: 1Gi}}\n{extra}"
    )


TRAIN = """
    import json, os, pathlib, mlrt
    mlrt.log_params({"lr": 0.5})
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        mlrt.log_metric("val_loss", loss, step=step)
    out = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
    (out / "model.txt").write_text("weights")
    seen = {k: os.environ.get(k) for k in ("API_TOKEN", "PATH", "MASTER_ADDR", "RANK", "OMP_NUM_THREADS")}
    (out / "env.json").write_text(json.dumps(seen))
    print("trained in", os.getcwd())
"""


@needs_engine
def test_command_job_runs_in_its_image_and_records_metrics_and_artifacts(cli, write_spec, engine_env, tmp_path):
    spec = write_spec(
        container_spec("boxed", "[python, train.py]", engine_env, "  env: {API_TOKEN: tok-123}\n"),
        files={"train.py": TRAIN},
    )
    run = submit(cli, spec)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert [
        (p["step"], p["value"]) for p in json.loads(cli("metrics", run["id"], "--key", "val_loss", "--json").stdout)
    ] == [
        (0, 0.9),
        (1, 0.5),
        (2, 0.25),
    ]
    assert run["params"]["lr"] in (0.5, "0.5")
    artifacts = {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}
    assert {"model.txt", "env.json"} <= artifacts
    seen = json.loads(
        (Path(run_json(cli, run["id"])["output_uri"].removeprefix("file://")) / "output/env.json").read_text()
    )
    assert seen["API_TOKEN"] == "tok-123"
    assert seen["PATH"].startswith(str(Path(sys.prefix) / "bin")) and seen["PATH"] != os.environ["PATH"]
    assert (seen["MASTER_ADDR"], seen["RANK"], seen["OMP_NUM_THREADS"]) == ("127.0.0.1", "0", "1")
    assert f"trained in {tmp_path}" in cli("logs", run["id"]).output
    assert leftovers(run["id"]) == []


@needs_engine
def test_two_worker_ddp_job_rendezvous_across_containers(cli, write_spec, engine_env):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: boxed-ddp}
        spec:
          algorithm: torch.mlp
          data:
            train: builtin://sklearn/digits?split=train
            validation: builtin://sklearn/digits?split=validation
          hyperparameters: {epochs: 2, hidden_size: 32}
          compute: {backend: container, workers: 2, cpu: 1}
          seed: 3
        """
    )
    run = submit(cli, spec)
    assert run["state"] == "SUCCEEDED", run["reason"]
    steps = [p["step"] for p in json.loads(cli("metrics", run["id"], "--key", "validation_accuracy", "--json").stdout)]
    assert steps == [0, 1], "rank 0 alone logs: one series"
    assert 0 < run["metrics"]["validation_accuracy"] <= 1
    assert "completed 2 epochs" in run["reason"]
    attempt = Store().latest_attempt(run["id"])
    assert [w["name"] for w in attempt.handle["workers"]] == [container_name(run["id"], 1, r) for r in (0, 1)]
    assert attempt.handle["network"] == f"mlrt-{run['id']}-1"
    for rank in (0, 1):
        assert "training torch.mlp" in (Path(attempt.log_dir) / f"worker-{rank}.log").read_text()
    assert leftovers(run["id"]) == []


@needs_engine
def test_failing_container_fails_the_run_with_its_exit_code_and_last_line(cli, write_spec, engine_env):
    program = "import sys\nprint('loading data')\nprint('disk is full', file=sys.stderr)\nsys.exit(3)\n"
    spec = write_spec(container_spec("boxed-fail", "[python, fail.py]", engine_env), files={"fail.py": program})
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    assert "worker 0 exited with code 3: disk is full" in run["reason"]
    assert cli("logs", run["id"]).output.splitlines() == ["loading data", "disk is full"]
    assert leftovers(run["id"]) == []


def test_exit_reasons():
    from mlrt_container import describe_exit

    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(143) == "killed by signal SIGTERM (exit code 143)"
    assert describe_exit(137, oom_killed=True, memory_limit="1Gi").startswith("out of memory: ")  # test_memory_limits


SLEEPER = """
    import os, pathlib, signal, sys, time
    def stop(signum, frame):
        print("got SIGTERM, saving", flush=True)
        sys.exit(143)
    if os.environ.get("HANDLE_TERM"):
        signal.signal(signal.SIGTERM, stop)
    pathlib.Path("started").write_text(os.environ["MLRT_RUN_ID"])
    time.sleep(120)
"""


@needs_engine
def test_cancel_stops_the_containers(cli, write_spec, engine_env, tmp_path):
    spec = write_spec(
        container_spec("boxed-cancel", "[python, sleeper.py]", engine_env, "  stopping: {grace_period: 30s}\n"),
        files={"sleeper.py": SLEEPER},
    )
    run_id = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)["run_id"]
    wait_for(lambda: (tmp_path / "started").exists(), timeout=60)
    started = time.monotonic()
    result = cli("cancel", run_id)
    assert result.exit_code == 0 and "CANCELLED" in result.output
    # SIGTERM reached the program (no handler: it died at once) instead of SIGKILL after the grace period.
    assert time.monotonic() - started < 15
    assert Store().get_run(run_id).state == "CANCELLED"
    wait_for(lambda: leftovers(run_id) == [], timeout=15)


@needs_engine
def test_max_runtime_times_out_and_sends_sigterm_first(cli, write_spec, engine_env):
    spec = write_spec(
        container_spec(
            "boxed-slow",
            "[python, sleeper.py]",
            engine_env,
            "  stopping: {max_runtime: 2s, grace_period: 10s}\n  env: {HANDLE_TERM: '1'}\n",
        ),
        files={"sleeper.py": SLEEPER},
    )
    run = submit(cli, spec)
    assert run["state"] == "TIMED_OUT"
    assert "max_runtime of 2s" in run["reason"]
    assert "got SIGTERM, saving" in cli("logs", run["id"]).output  # it exits right after: no wait for the grace
    assert leftovers(run["id"]) == []


@needs_engine
def test_missing_image_fails_the_attempt_with_the_engines_reason(cli, write_spec, engine_env, monkeypatch):
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", f"{RUN_ARGS} --pull=never")
    # A registry's image (--pull=never keeps it offline); a missing localhost/ one: test_container_failures.py
    spec = write_spec(container_spec("boxed-noimage", "[python, x.py]", "registry.invalid/mlrt-no-such-image:0"))
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    assert "cannot start worker 0's container (registry.invalid/mlrt-no-such-image:0):" in run["reason"]
    assert "\n" not in run["reason"]
    assert leftovers(run["id"]) == []


def test_plan_shows_every_engine_command_without_secret_values(cli, write_spec, monkeypatch, tmp_path):
    monkeypatch.setenv("MLRT_CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", "--runtime runc --ulimit 'nofile=1024:1024'")
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: gpu-plan}
        spec:
          image: registry.example/acme/train:1.2
          command: [python, train.py, --epochs, "3"]
          data: {train: "file://./train.csv"}
          compute: {backend: container, workers: 2, cpu: 2, memory: 512Mi, gpus: 1}
          env: {API_TOKEN: s3cr3t-value, MODE: fast}
        """,
        files={"train.csv": "x,label\n1,0\n"},
    )
    result = cli("validate", str(spec), "--json")
    assert result.exit_code == 0, result.output
    launch = json.loads(result.stdout)["launch"]
    assert "s3cr3t-value" not in json.dumps(launch)
    details = launch["details"]
    network = "mlrt-gpu-plan-<id>-1"
    labels = ["--label=mlrt.run-id=gpu-plan-<id>", "--label=mlrt.attempt=1"]
    assert details["network_command"] == [
        "podman",
        "network",
        "create",
        *labels,
        "--label=mlrt.managed-by=mlrt",
        network,
    ]
    home = Path(os.environ["MLRT_HOME"])
    out = home / "runs" / "gpu-plan-<id>"
    logs = home / "logs" / "gpu-plan-<id>" / "attempt-1"

    def mount(path: Path, ro: str = "") -> list[str]:
        return [f"--mount=type=bind,source={path},destination={path}{ro}"]

    for rank, command in enumerate(details["commands"]):
        name = f"mlrt-gpu-plan-<id>-1-{rank}"
        assert command == [
            "podman", "run", "-d", f"--name={name}", f"--hostname={name}",
            *labels, f"--label=mlrt.rank={rank}", "--label=mlrt.managed-by=mlrt",
            "--init", f"--network={network}", "--env-file=/dev/stdin",
            *mount(tmp_path / "train.csv", ",ro"),
            *mount(out / "output"), *mount(out / "checkpoints"), *mount(logs), *mount(tmp_path), *mount(home),
            f"--workdir={tmp_path}",
            "--cpus=2", f"--memory={512 * 2**20}", f"--device=nvidia.com/gpu={rank}",
            "--runtime", "runc", "--ulimit", "nofile=1024:1024",
            "registry.example/acme/train:1.2", "python", "train.py", "--epochs", "3",
        ]  # fmt: skip
    workers = launch["workers"]
    assert [w["env"]["RANK"] for w in workers] == ["0", "1"]
    assert {w["env"]["MASTER_ADDR"] for w in workers} == {"mlrt-gpu-plan-<id>-1-0"}
    assert workers[1]["env"]["LOCAL_RANK"] == "0" and workers[1]["env"]["MASTER_PORT"] == "29500"
    assert workers[0]["env"]["API_TOKEN"] == HIDDEN and workers[0]["env"]["MODE"] == HIDDEN
    assert "PATH" not in workers[0]["env"]
    assert details["env_hidden"] == ["API_TOKEN", "MODE"]
    # A request read back from its stored form cannot launch with placeholders for values.
    stored = LaunchRequest(**{**launch, "workers": [WorkerRequest(**w) for w in launch["workers"]]})
    with pytest.raises(LaunchError, match="holds no spec.env values"):
        ContainerLauncher().launch(stored)

    monkeypatch.setenv("MLRT_CONTAINER_ENGINE", "/usr/local/bin/docker")
    docker = json.loads(cli("validate", str(spec), "--json").stdout)["launch"]["details"]["commands"]
    assert docker[1][0] == "/usr/local/bin/docker"
    assert '--gpus="device=1"' in docker[1] and not any(a.startswith("--device") for a in docker[1])


COUNTER = """
    import os, time
    def wait_for(name):
        while not os.path.exists(name):
            time.sleep(0.05)
    for i in range(3):
        print("line", i, flush=True)
    wait_for("go1")  # nobody follows the log now: the launching process is gone
    for i in range(3, 5):
        print("line", i, flush=True)
    wait_for("go2")
    print("line 5", flush=True)
"""

LAUNCH_AND_DIE = """
import json, sys, time
from pathlib import Path
from mlrt.launchers import LaunchContext, LaunchError, LaunchRequest, WorkerRequest
from mlrt_container import ContainerLauncher
ctx = LaunchContext(**json.loads(sys.argv[1]))
launcher = ContainerLauncher()
handle = launcher.launch(launcher.plan(ctx))
log = Path(ctx.log_dir) / "worker-0.log"
deadline = time.monotonic() + 60
while (not log.exists() or log.read_text().count("line") < 3) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(handle))
"""


@needs_engine
def test_a_new_launcher_adopts_running_containers_and_continues_their_logs(engine_env, tmp_path):
    (tmp_path / "count.py").write_text(textwrap.dedent(COUNTER))
    run_id = f"adopt-{os.getpid()}"
    ctx = dict(
        run_id=run_id,
        attempt=1,
        argv=["python", "count.py"],
        env={
            "MLRT_RUN_ID": run_id,
            "MLRT_OUTPUT_DIR": str(tmp_path / "out"),
            "MLRT_CHECKPOINT_DIR": str(tmp_path / "ck"),
        },
        cwd=str(tmp_path),
        log_dir=str(tmp_path / "logs"),
        compute={"workers": 1},
        image=engine_env,
    )
    for folder in ("out", "ck", "logs"):
        (tmp_path / folder).mkdir()
    # The launching "controller" is another process: its log follower and waiter die with it.
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCH_AND_DIE, json.dumps(ctx)], capture_output=True, text=True, timeout=120
    )
    assert launched.returncode == 0, launched.stderr
    handle = json.loads(launched.stdout)
    log = tmp_path / "logs" / "worker-0.log"
    try:
        assert log.read_text().splitlines() == ["line 0", "line 1", "line 2"]
        (tmp_path / "go1").touch()
        name = handle["workers"][0]["name"]
        wait_for(lambda: "line 4" in subprocess.run([ENGINE, "logs", name], capture_output=True, text=True).stdout)
        launcher = ContainerLauncher()
        request = launcher.plan(LaunchContext(**ctx))
        assert launcher.adopt(request, handle | {"workers": []}) is not None, "found by labels, not by the handle"
        adopted = launcher.adopt(request, None)
        assert [w["name"] for w in adopted["workers"]] == [name]
        assert [s.state.value for s in launcher.poll(adopted)] == ["RUNNING"]
        assert launcher.wakeup_fds(), "the new waiter's pidfd wakes the controller"
        (tmp_path / "go2").touch()
        statuses = wait_for(lambda: (s := launcher.poll(adopted))[0].state.value != "RUNNING" and s, timeout=30)
        assert (statuses[0].state.value, statuses[0].exit_code) == ("SUCCEEDED", 0)
        assert log.read_text().splitlines() == [f"line {i}" for i in range(6)], "continued, no line twice"
        assert ContainerLauncher().adopt(launcher.plan(LaunchContext(**{**ctx, "attempt": 2})), None) is None
    finally:
        ContainerLauncher().stop(handle, 0)
        ContainerLauncher().cleanup(handle)
    assert leftovers(run_id) == []


TICKER = """
    import time, mlrt
    for i in range(8):
        print("tick", i, flush=True)
        mlrt.log_metric("loss", 1.0 / (i + 1), step=i)
        time.sleep(0.4)
"""


@needs_engine
def test_containers_outlive_a_killed_controller_and_are_adopted(cli, write_spec, engine_env):
    spec = write_spec(container_spec("boxed-adopt", "[python, ticker.py]", engine_env), files={"ticker.py": TICKER})
    submitted = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)
    run_id = submitted["run_id"]
    store = Store()
    log = wait_for(lambda: (a := store.latest_attempt(run_id)) and a.handle and Path(a.log_dir) / "worker-0.log")
    wait_for(lambda: log.exists() and "tick 2" in log.read_text(), timeout=60)
    os.kill(submitted["controller_pid"], 9)
    wait_for(lambda: not pid_alive(submitted["controller_pid"]))
    cli("status", run_id)  # notices the dead controller and hands the run to a new one
    run = wait_for(
        lambda: (r := store.get_run(run_id)).state not in ("RUNNING", "STARTING", "FINALIZING") and r, timeout=60
    )
    assert run.state == "SUCCEEDED", run.reason
    assert any("adopted the running workers" in e["reason"] for e in run_json(cli, run_id)["events"])
    assert log.read_text().splitlines() == [f"tick {i}" for i in range(8)]
    assert [p.step for p in store.metrics(run_id, "loss")] == list(range(8))
    assert leftovers(run_id) == []


def test_the_attempts_containers_are_found_in_podman_and_docker_listings(monkeypatch):
    from mlrt_container import _find, engine

    podman = [
        {"Names": ["mlrt-r-1-1"], "Labels": {"mlrt.run-id": "r", "mlrt.attempt": "1", "mlrt.rank": "1"}},
        {"Names": ["mlrt-r-1-0"], "Labels": {"mlrt.run-id": "r", "mlrt.attempt": "1", "mlrt.rank": "0"}},
        {"Names": ["other"], "Labels": {"mlrt.run-id": "r", "mlrt.attempt": "2", "mlrt.rank": "0"}},
    ]
    docker = "\n".join(
        json.dumps({"Names": e["Names"][0], "Labels": ",".join(f"{k}={v}" for k, v in e["Labels"].items())})
        for e in podman
    )
    for output in (json.dumps(podman), docker, "[]", ""):
        monkeypatch.setattr(engine, "run", lambda argv, out=output, **_: subprocess.CompletedProcess(argv, 0, out, ""))
        expected = {0: "mlrt-r-1-0", 1: "mlrt-r-1-1"} if output not in ("[]", "") else {}
        assert _find("podman", "r", 1) == expected
