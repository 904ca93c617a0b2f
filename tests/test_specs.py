"""Bad input fails before anything launches: one line per problem, its field path, exit 2."""

from __future__ import annotations

import json

import pytest

from conftest import command_spec
from mlrt.store import Store

GOOD = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: digits}
spec:
  algorithm: sklearn.logistic_regression
  data:
    train: builtin://sklearn/digits?split=train
  hyperparameters: {C: 1.0}
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "spec.colour=blue",
            "spec.colour: unknown field (allowed: algorithm, baseline, business_metrics, checkpoint, command",
        ),
        ("spec.compute.workers=two", "spec.compute.workers: expected an integer, got 'two'"),
        ("spec.compute.workers=-1", "spec.compute.workers: must be >= 1, got -1"),
        ("spec.algorithm=sklearn.nope", "spec.algorithm: unknown algorithm 'sklearn.nope' (registered: "),
        (
            "spec.hyperparameters.gamma=1",
            "spec.hyperparameters.gamma: unknown hyperparameter for sklearn.logistic_regression (allowed: C,",
        ),
        ("spec.hyperparameters.C=high", "spec.hyperparameters.C: must be a float"),
        ("spec.data.train=file://./missing.csv", "spec.data.train: file not found: "),
        ("spec.stopping.max_runtime=soon", "spec.stopping.max_runtime: expected a duration such as 90s"),
        (
            "spec.compute.backend=mars",
            "spec.compute.backend: unknown backend 'mars' (registered: container, kubernetes, local)",
        ),
        ("spec.reports=[nonexistent]", "spec.reports.0: unknown report 'nonexistent'"),
        ("metadata.name=Digits_1", "metadata.name: must be 1-63 lowercase letters"),
        ("apiVersion=mlrt/v9", "apiVersion: must be 'mlrt/v1', got 'mlrt/v9'"),
    ],
)
def test_each_bad_spec_names_its_field_and_exits_2(cli, write_spec, change, expected):
    spec = write_spec(GOOD)
    for command in ("submit", "validate"):
        result = cli(command, str(spec), "--set", change)
        assert result.exit_code == 2, result.output
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.output
    assert Store().list_runs() == [], "a rejected spec must not leave a run behind"


def test_every_problem_is_reported_at_once(cli, write_spec):
    spec = write_spec(
        command_spec("x", "[python]", "  compute: {workers: 0, gpus: -1}\n  retries: {max: -2}\n  shoe: 9\n")
    )
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert {line.split(":")[1].strip() for line in lines} == {
        "spec.compute.workers",
        "spec.compute.gpus",
        "spec.retries.max",
        "spec.shoe",
    }
    assert all(line.startswith("error: ") for line in lines)


def test_algorithm_and_command_are_exclusive(cli, write_spec):
    spec = write_spec(GOOD)
    result = cli("validate", str(spec), "--set", "spec.command=[python, x.py]")
    assert result.exit_code == 2
    assert "spec: set either algorithm or command, not both" in result.stderr


def test_unreadable_and_malformed_files(cli, tmp_path):
    missing = cli("submit", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "cannot read the spec file" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [\n")
    result = cli("validate", str(broken))
    assert result.exit_code == 2 and "line 2" in result.stderr and "not valid YAML" in result.stderr


def test_bad_set_syntax(cli, write_spec):
    result = cli("validate", str(write_spec(GOOD)), "--set", "spec.hyperparameters.C")
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr


def test_validate_prints_the_launch_request_and_launches_nothing(cli, write_spec, home):
    spec = write_spec(GOOD)
    result = cli(
        "validate", str(spec), "--json", "--set", "spec.hyperparameters.C=0.25", "--set", "spec.compute.workers=2"
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["spec"]["spec"]["hyperparameters"]["C"] == 0.25
    assert plan["spec"]["spec"]["hyperparameters"]["max_iter"] == 1000  # the schema default, filled in
    workers = plan["launch"]["workers"]
    assert [w["env"]["RANK"] for w in workers] == ["0", "1"]
    assert workers[0]["argv"][1:] == ["-m", "mlrt.worker"]
    assert workers[0]["cwd"] == str(spec.parent)
    assert json.loads(workers[0]["env"]["MLRT_HYPERPARAMETERS"])["C"] == 0.25
    assert workers[0]["env"]["MLRT_CHANNEL_TRAIN"].endswith("digits/0/train.csv")
    assert Store().list_runs() == []
    assert not (home / "logs").exists()
    text = cli("validate", str(spec))
    assert "nothing was launched" in text.output and "MASTER_PORT" in text.output


def test_set_overrides_reach_the_run(cli, write_spec):
    spec = write_spec(GOOD)
    result = cli("submit", str(spec), "--json", "--set", "spec.hyperparameters.C=0.5", "--set", "spec.seed=11")
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED"
    assert run["params"]["C"] == "0.5"
    details = json.loads(cli("runs", "show", run["id"], "--json").stdout)
    assert details["reproducibility"]["overrides"] == ["spec.hyperparameters.C=0.5", "spec.seed=11"]
    assert details["reproducibility"]["seed"] == 11


def test_an_algorithm_job_without_hyperparameters_gets_the_schema_defaults(cli, write_spec):
    spec = write_spec(GOOD.replace("  hyperparameters: {C: 1.0}\n", ""))
    plan = json.loads(cli("validate", str(spec), "--json").stdout)
    assert plan["spec"]["spec"]["hyperparameters"]["C"] == 1.0
    assert plan["spec"]["spec"]["hyperparameters"]["max_iter"] == 1000


def test_every_example_spec_validates(cli):
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "job_specs").glob("*.yaml"))
    assert len(examples) >= 3
    for example in examples:
        result = cli("validate", str(example))
        assert result.exit_code == 0, f"{example.name}: {result.stderr}"
