"""Container launches that fail: they leave no container or network behind, and a local
image that is not there fails with how to build it (not with a registry's connection refused)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import command_spec, missing
from hostile import ENGINE, RUN_ARGS, engine_problem, training_image  # noqa: F401, F811  (fixture)


@pytest.fixture(autouse=True)
def engine(monkeypatch) -> None:
    problem = engine_problem()
    if problem is not None:
        missing("podman", f"container launch failures: {problem}")
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", RUN_ARGS)
    monkeypatch.delenv("MLRT_CONTAINER_ENGINE", raising=False)


def leftovers(run_id: str) -> list[str]:
    """Containers and networks of ``run_id`` that still exist."""
    containers = subprocess.run(
        [ENGINE, "ps", "-a", "--filter", f"label=mlrt.run-id={run_id}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    networks = subprocess.run(
        [ENGINE, "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return containers + [n for n in networks if n.startswith(f"mlrt-{run_id}")]


def submit(cli, write_spec, image: str, extra: str = "") -> dict:
    compute = "  compute: {backend: container, workers: 2}\n  retries: {max: 0}\n"
    spec = write_spec(command_spec("refused", "[python, -c, pass]", f"  image: {image}\n{compute}{extra}"))
    result = cli("submit", str(spec), "--json")
    return json.loads(result.stdout)


def test_a_launch_the_runtime_refuses_leaves_no_container_or_network(cli, write_spec, training_image, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", f"{RUN_ARGS} --runtime /bin/false")  # the last --runtime wins
    run = submit(cli, write_spec, training_image)
    assert run["state"] == "FAILED" and "cannot start worker 0's container" in run["reason"], run["reason"]
    assert leftovers(run["id"]) == []


def test_a_missing_local_image_says_how_to_build_it(cli, write_spec, monkeypatch):
    run = submit(cli, write_spec, "localhost/mlrt-no-such-image:1")
    assert run["state"] == "FAILED"
    assert "image localhost/mlrt-no-such-image:1 not found on this machine: build it here" in run["reason"]
    assert leftovers(run["id"]) == []

    monkeypatch.setenv("MLRT_TRAINING_IMAGE", "localhost/mlrt-no-such-train:1")
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: no-image}\nspec:\n"
        "  algorithm: sklearn.logistic_regression\n  data: {train: 'builtin://sklearn/iris?split=train'}\n"
        "  compute: {backend: container}\n  retries: {max: 0}\n",
        name="algorithm.yaml",
    )
    reason = json.loads(cli("submit", str(spec), "--json").stdout)["reason"]
    assert "-f containers/train.Containerfile ." in reason and "MLRT_TRAINING_IMAGE" in reason, reason
