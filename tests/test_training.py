"""Algorithm jobs and command jobs end to end: data in, metrics, model and predictions out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import MLRT_SCRIPT, command_spec, run_json

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_through_the_console_script(home):
    env = {**os.environ, "MLRT_HOME": str(home)}
    result = subprocess.run(
        [str(MLRT_SCRIPT), "submit", "job_specs/quickstart.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "SUCCEEDED" in result.stdout
    assert "validation" in result.stdout and "accuracy" in result.stdout
    run_id = result.stdout.split()[1]
    shown = subprocess.run(
        [str(MLRT_SCRIPT), "runs", "show", run_id, "--json"], env=env, capture_output=True, text=True, check=True
    )
    details = json.loads(shown.stdout)
    assert details["params"]["algorithm"] == "sklearn.logistic_regression"
    assert details["params"]["C"] == "1.0"
    assert details["metrics"]["validation_accuracy"] > 0.93
    assert details["metrics"]["train_accuracy"] >= details["metrics"]["validation_accuracy"]
    artifacts = {a["path"]: a for a in details["artifacts"]}
    assert {"model.joblib", "predictions.parquet"} <= set(artifacts)
    assert all(len(a["sha256"]) == 64 and a["size"] > 0 for a in artifacts.values())
    repro = details["reproducibility"]
    assert repro["seed"] == 7
    assert repro["python"] and repro["packages"]["scikit-learn"]
    assert set(repro["data"]) == {"train", "validation"}
    assert repro["data"]["train"]["sha256"].startswith("sha256:")
    assert "git" in repro  # None outside a git checkout, commit and dirty flag inside one
    if repro["git"]:
        assert len(repro["git"]["commit"]) == 40 and isinstance(repro["git"]["dirty"], bool)
    assert "apiVersion: mlrt/v1" in repro["spec_submitted"]
    assert repro["spec_resolved"]["spec"]["hyperparameters"]["max_iter"] == 500
    predictions = pd.read_parquet(artifacts["predictions.parquet"]["uri"].removeprefix("file://"))
    assert set(predictions["split"]) == {"train", "validation"}
    assert {"id", "label", "prediction", "score_0", "score_9"} <= set(predictions.columns)


def test_csv_and_parquet_channels_with_a_named_label(cli, write_spec, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 4)), columns=["a", "b", "c", "d"])
    frame["colour"] = rng.choice(["red", "blue"], size=400)
    frame["churned"] = ((frame["a"] + frame["b"] > 0) ^ (frame["colour"] == "red")).astype(int)
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_parquet(tmp_path / "valid.parquet", index=False)
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: churn}
        spec:
          algorithm: sklearn.hist_gradient_boosting
          data:
            train: {uri: file://./train.csv, label: churned}
            validation: {uri: valid.parquet, label: churned}
        """
    )
    result = cli("submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["metrics"]["validation_accuracy"] > 0.85
    data = run_json(cli, run["id"])["reproducibility"]["data"]
    assert data["train"]["uri"] == f"file://{tmp_path}/train.csv"


def test_sanity_flag_trains_a_subsample_first(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: sane}
        spec:
          algorithm: sklearn.random_forest
          data:
            train: builtin://sklearn/wine?split=train
            validation: builtin://sklearn/wine?split=validation
          hyperparameters: {n_estimators: 20}
        """
    )
    run = json.loads(cli("submit", str(spec), "--sanity", "--json").stdout)
    assert run["state"] == "SUCCEEDED"
    assert "sanity check passed" in cli("logs", run["id"]).output


def test_sanity_failure_stops_early_with_the_reason(cli, write_spec, tmp_path):
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [1, 1, 1, 1]}).to_csv(tmp_path / "one.csv", index=False)
    spec = write_spec(
        command_spec("x", "[x]").replace(
            "command: [x]", "algorithm: sklearn.logistic_regression\n  data: {train: one.csv}"
        )
    )
    run = json.loads(cli("submit", str(spec), "--sanity", "--json").stdout)
    assert run["state"] == "FAILED"
    assert "sanity check failed" in run["reason"]


def test_metrics_from_the_sdk_and_from_log_patterns(cli, write_spec):
    program = """
        import mlrt
        mlrt.log_params({"lr": 0.01, "layers": [64, 32]})
        for epoch in range(5):
            mlrt.log_metric("train_loss", 1.0 / (epoch + 1))
            print(f"epoch={epoch} val_loss={0.5 / (epoch + 1):.4f}", flush=True)
        mlrt.log_metric("best", 0.9, step=10)
    """
    spec = write_spec(
        command_spec(
            "both",
            "[python, both.py]",
            "  metrics:\n"
            "    - {name: val_loss, regex: 'val_loss=([0-9.]+)'}\n"
            "    - {name: val_loss_by_epoch, regex: 'epoch=(?P<step>\\d+) val_loss=(?P<value>[0-9.]+)'}\n",
        ),
        files={"both.py": program},
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["params"]["lr"] == "0.01" and json.loads(run["params"]["layers"]) == [64, 32]
    points = json.loads(cli("metrics", run["id"], "--json").stdout)
    series = {}
    for p in points:
        series.setdefault(p["key"], []).append((p["step"], round(p["value"], 4)))
    assert series["train_loss"] == [(i, round(1.0 / (i + 1), 4)) for i in range(5)]
    assert series["val_loss"] == [(i, round(0.5 / (i + 1), 4)) for i in range(5)]
    assert series["val_loss_by_epoch"] == series["val_loss"]
    assert series["best"] == [(10, 0.9)]
    one = json.loads(cli("metrics", run["id"], "--key", "best", "--json").stdout)
    assert [p["value"] for p in one] == [0.9]


def test_listing_commands_have_json(cli, write_spec):
    ids = []
    for c in (0.1, 1.0):
        spec = write_spec(
            """\
            apiVersion: mlrt/v1
            kind: TrainingJob
            metadata: {name: iris}
            spec:
              algorithm: sklearn.logistic_regression
              data:
                train: builtin://sklearn/iris?split=train
                validation: builtin://sklearn/iris?split=validation
            """
        )
        ids.append(json.loads(cli("submit", str(spec), "--json", "--set", f"spec.hyperparameters.C={c}").stdout)["id"])
    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == ids[::-1]
    assert json.loads(cli("status", "--json").stdout)[0]["id"] == ids[1]
    compared = json.loads(cli("runs", "compare", *ids, "--json").stdout)
    assert [c["params"]["C"] for c in compared] == ["0.1", "1.0"]
    table = cli("runs", "compare", *ids)
    assert "param C *" in table.output
    assert cli("runs").exit_code == 0
    for args in (("status",), ("runs", "list"), ("metrics", ids[0]), ("artifacts", ids[0]), ("plugins",)):
        assert cli(*args).exit_code == 0
    unknown = cli("runs", "show", "no-such-run")
    assert unknown.exit_code == 2 and "no run 'no-such-run'" in unknown.stderr


def test_business_metrics_are_recorded_and_can_be_tuned(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: costly}
        spec:
          algorithm: sklearn.logistic_regression
          data:
            train: builtin://sklearn/breast_cancer?split=train
            validation: builtin://sklearn/breast_cancer?split=validation
          business_metrics:
            - {name: cost, cost_matrix: {"1": {"0": 10}, "0": {"1": 1}}}
            - {name: blend, weights: {recall: 0.75, precision: 0.25}}
        """
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    uri = next(
        a["uri"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout) if a["path"] == "predictions.parquet"
    )
    predictions = pd.read_parquet(uri.removeprefix("file://"))
    validation = predictions[predictions["split"] == "validation"]
    misses = ((validation["label"] == 1) & (validation["prediction"] == 0)).sum()
    alarms = ((validation["label"] == 0) & (validation["prediction"] == 1)).sum()
    assert run["metrics"]["validation_cost"] == pytest.approx((10 * misses + alarms) / len(validation))
    m = run["metrics"]
    assert m["validation_blend"] == pytest.approx(0.75 * m["validation_recall"] + 0.25 * m["validation_precision"])

    bad = cli("validate", str(spec), "--set", "spec.business_metrics.0.weights={recall: 1}")
    assert bad.exit_code == 2 and "spec.business_metrics.0: set exactly one of cost_matrix" in bad.stderr


def test_a_tuning_job_can_minimize_a_business_cost(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {name: cheapest}
        spec:
          template:
            algorithm: sklearn.logistic_regression
            data:
              train: builtin://sklearn/breast_cancer?split=train
              validation: builtin://sklearn/breast_cancer?split=validation
            business_metrics: [{name: cost, cost_matrix: {"1": {"0": 10}, "0": {"1": 1}}}]
          objective: {metric: validation_cost, goal: minimize}
          parameters:
            class_weight: {type: categorical, values: [balanced, null]}
          tuner: grid
        """
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    from mlrt.store import Store

    costs = [Store().latest_metrics(t.id)["validation_cost"] for t in Store().trials(run["id"])]
    assert len(costs) == 2
    assert float(run["params"]["best_value"]) == min(costs)
