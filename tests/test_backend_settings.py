"""A backend's settings block (spec.compute.<backend>) is validated by the backend's own model."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from pydantic import BaseModel

from mlrt import hookimpl, plugins
from mlrt.launchers import Launcher
from mlrt.spec import SpecError, load_spec
from mlrt_local import LocalLauncher

JOB = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: settings}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  compute:
{compute}
"""


def validate(cli, write_spec, compute: str):
    return cli("validate", str(write_spec(JOB.format(compute=compute))), "--json")


def test_the_container_block_sizes_dev_shm(cli, write_spec):
    result = validate(cli, write_spec, "    backend: container\n    container: {shm_size: 1Gi}\n")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["spec"]["spec"]["compute"]["container"] == {"shm_size": "1Gi"}
    (command,) = shown["launch"]["details"]["commands"]
    assert "--shm-size=1073741824b" in command and command.index("--shm-size=1073741824b") < command.index(
        "registry.example.com/acme/train:1.0"
    )
    bad = validate(cli, write_spec, "    backend: container\n    container: {shm_size: lots, shm: 1Gi}\n")
    assert bad.exit_code == 2
    assert bad.output.splitlines() == [
        "error: spec.compute.container.shm_size: expected a memory size such as 512Mi or 2Gi, got 'lots'",
        "error: spec.compute.container.shm: unknown field (allowed: shm_size)",
    ]


def test_the_jobs_own_backend_block_is_resolved_with_its_plugins_defaults(cli, write_spec):
    result = validate(cli, write_spec, "    backend: kubernetes\n")
    assert result.exit_code == 0, result.output
    compute = json.loads(result.stdout)["spec"]["spec"]["compute"]
    assert compute["kubernetes"]["namespace"] == "default"
    assert compute["kubernetes"]["ttl_after_finished"] == 3600.0 and compute["kubernetes"]["tolerations"] == []
    assert "container" not in compute, "only the job's own backend gets a block it did not give"


def test_a_bad_block_is_one_line_per_problem_naming_the_field(cli, write_spec):
    compute = (
        "    backend: kubernetes\n"
        "    kubernetes: {tolerations: [{key: gpu, effect: Never}], namespace: Research}\n"
        "    kubernets: {namespace: ml}\n"
        "    local: {}\n"
    )
    result = validate(cli, write_spec, compute)
    assert result.exit_code == 2
    lines = sorted(result.output.splitlines())
    allowed = (
        "unknown field (allowed: backend, cpu, gpus, memory, rendezvous_timeout, warm, workers,"
        " and the settings block of a backend that takes one: container, kubernetes)"
    )
    assert lines == [
        "error: spec.compute.kubernetes.namespace: must be a DNS label: lowercase letters, digits and '-', at most 63",
        "error: spec.compute.kubernetes.tolerations.0.effect: must be 'NoSchedule', 'PreferNoSchedule' or"
        " 'NoExecute', got 'Never'",
        f"error: spec.compute.kubernets: {allowed}",
        f"error: spec.compute.local: {allowed}",
    ]


class Broken(LocalLauncher):
    """A backend whose settings model cannot even be had."""

    name: ClassVar[str] = "acme.broken"

    def settings_model(self) -> type[BaseModel]:
        raise KeyError("model")


class BrokenPlugin:
    @hookimpl
    def mlrt_launchers(self) -> list[Launcher]:
        return [Broken()]


def test_a_settings_model_that_raises_is_its_plugins_failure_in_one_line(write_spec):
    spec = write_spec(
        JOB.format(compute="    backend: acme.broken").replace("  image: registry", "  # image: registry")
    )
    with plugins.registered(BrokenPlugin(), name="acme"), pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert caught.value.problems == [
        "spec.compute.acme.broken: backend 'acme.broken' (plugin acme) raised KeyError: 'model'"
    ]
