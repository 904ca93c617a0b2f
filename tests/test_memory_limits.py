"""``compute.memory`` enforced: a worker over its limit fails "out of memory", as Kubernetes' OOMKilled.

Local workers (cold and warm) are measured by the launcher on each poll and
carry a kernel backstop (``RLIMIT_DATA``, see :mod:`mlrt_local.memory`);
containers get the engine's ``--memory`` and the kernel's OOM killer.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import pytest

from conftest import command_spec, missing, pid_alive, run_json
from hostile import ENGINE, RUN_ARGS, engine_problem
from mlrt_container import describe_exit
from mlrt_local.memory import amount, backstop_bytes

# Holds what it allocated until it is killed: 400 MB in a child process, so the limit must count
# the worker's whole tree and the kill must reach the child.
HOG = """
    import os, pathlib, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", (
        "import time; blocks = [bytearray(10 * 2**20) for _ in range(40)];"
        "print('holding 400 MB', flush=True); time.sleep(120)"
    )])
    pathlib.Path("child.pid").write_text(str(child.pid))
    child.wait()
"""

LIGHT = """
    import resource, sys
    import numpy as np
    blocks = [bytearray(10 * 2**20) for _ in range(5)]
    a = np.random.rand(500, 500)
    print("product", float((a @ a).sum()) > 0)
    print("backstop", resource.getrlimit(resource.RLIMIT_DATA)[0], open("/proc/self/oom_score_adj").read().strip())
"""


def submit(cli, spec: Path) -> dict:
    result = cli("submit", str(spec), "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def assert_out_of_memory(reason: str, limit: str) -> None:
    assert reason.startswith("worker 0 out of memory: its processes used "), reason
    assert f"over its limit of {limit}" in reason and "exit code 137" in reason, reason
    assert "raise spec.compute.memory" in reason, reason


def test_a_local_worker_over_its_limit_is_killed_with_its_children_as_out_of_memory(cli, write_spec, tmp_path):
    spec = write_spec(command_spec("hog", "[python, hog.py]", "  compute: {memory: 200Mi}\n"), files={"hog.py": HOG})
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    shown = run_json(cli, run["id"])  # what `mlrt runs show` says, from the database
    assert_out_of_memory(shown["reason"], "200Mi")
    assert float(shown["reason"].split("used ")[1].split("Mi")[0]) > 200
    assert not pid_alive(int((tmp_path / "child.pid").read_text()))
    status = json.loads(cli("status", run["id"], "--json").stdout)
    assert "out of memory" in json.dumps(status)


def test_a_local_worker_under_its_limit_succeeds_with_the_backstop_set(cli, write_spec):
    spec = write_spec(
        command_spec("light", "[python, light.py]", "  compute: {memory: 200Mi, cpu: 1}\n"), files={"light.py": LIGHT}
    )
    plan = json.loads(cli("validate", str(spec), "--json").stdout)["launch"]["details"]
    assert plan["memory_limit"] == "200Mi"
    assert plan["data_limit"] == backstop_bytes(200 * 2**20, 1) == (400 + 64) * 2**20
    run = submit(cli, spec)
    assert run["state"] == "SUCCEEDED", run["reason"]
    log = cli("logs", run["id"]).output
    assert "product True" in log  # numpy's BLAS works under the backstop
    assert f"backstop {plan['data_limit']} 1000" in log


def test_a_warm_worker_over_its_limit_fails_and_a_huge_allocation_meets_the_backstop(cli, write_spec):
    program = """
        import time
        try:
            bytearray(8 * 2**30)  # far past the backstop: refused at once, the machine is never asked
        except MemoryError:
            print("8 GiB refused", flush=True)
        blocks = [bytearray(10 * 2**20) for _ in range(30)]
        time.sleep(120)
    """
    spec = write_spec(
        command_spec("warm-hog", "[python, hog.py]", "  compute: {memory: 150Mi, cpu: 1, warm: true}\n"),
        files={"hog.py": program},
    )
    assert json.loads(cli("validate", str(spec), "--json").stdout)["launch"]["details"]["warm"] is True
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    assert_out_of_memory(run["reason"], "150Mi")
    assert "8 GiB refused" in cli("logs", run["id"]).output
    assert resource.getrlimit(resource.RLIMIT_DATA)[0] == resource.RLIM_INFINITY  # the controller's own: untouched


def test_container_reasons_for_an_oom_kill():
    reason = describe_exit(137, oom_killed=True, memory_limit="1Gi")
    assert reason == (
        "out of memory: OOM-killed by the kernel at its memory limit of 1Gi (exit code 137);"
        " raise spec.compute.memory or use less memory"
    )
    assert describe_exit(137, memory_limit="1Gi").startswith("out of memory: killed by signal SIGKILL")
    assert describe_exit(137) == "killed by signal SIGKILL (exit code 137)"


@pytest.fixture(scope="module")
def image() -> str:
    problem = engine_problem()
    if problem is not None:
        missing("podman", f"container memory limit: {problem}")
    from container_image import build_image

    return build_image(ENGINE, RUN_ARGS.split())


def test_a_container_over_its_memory_limit_fails_as_out_of_memory(cli, write_spec, image, monkeypatch):
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", RUN_ARGS)
    monkeypatch.delenv("MLRT_CONTAINER_ENGINE", raising=False)
    program = "print('allocating', flush=True)\nblocks = [bytearray(50 * 2**20) for _ in range(20)]\n"
    spec = write_spec(
        command_spec(
            "boxed-oom", "[python, hog.py]", f"  image: {image}\n  compute: {{backend: container, memory: 128Mi}}\n"
        ),
        files={"hog.py": program},
    )
    plan = json.loads(cli("validate", str(spec), "--json").stdout)["launch"]["details"]
    assert f"--memory={128 * 2**20}" in plan["commands"][0]
    run = submit(cli, spec)
    assert run["state"] == "FAILED"
    reason = run_json(cli, run["id"])["reason"]
    # "OOM-killed by the kernel" where the engine reports it; a sandboxed host only sees the SIGKILL.
    assert reason.startswith("worker 0 out of memory: ") and "exit code 137" in reason, reason
    assert "memory limit of 128Mi" in reason and "raise spec.compute.memory" in reason, reason
    left = subprocess.run(
        [ENGINE, "ps", "-a", "-q", "--filter", f"label=mlrt.run-id={run['id']}"], capture_output=True, text=True
    )
    assert left.stdout.split() == []


def test_an_amount_over_a_limit_never_reads_as_the_limit():
    """The reason rounds what the processes used up: 200.3 MiB over a 200Mi limit reads 201Mi."""
    assert amount(200 * 2**20) == "200Mi"
    assert amount(200 * 2**20 + 300_000) == "201Mi"
    assert amount(3 * 2**29) == "1.50Gi"
    assert amount(3 * 2**29 + 1) == "1.51Gi"
