"""Tuning jobs end to end: trials as runs, tuners, completion, early stopping, resume."""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import import_or_missing, wait_for
from mlrt.store import Store

# A cheap trial: its score peaks at x=3, y="b"; it logs the score per "epoch" too.
OBJECTIVE = """
import json, os, sys
hp = json.loads(os.environ["MLRT_HYPERPARAMETERS"])
if hp.get("fail"):
    sys.exit("this trial was told to fail")
score = -(hp["x"] - 3) ** 2 + (1 if hp.get("y", "b") == "b" else 0)
for epoch in range(3):
    print(f"epoch={epoch} score={score - (2 - epoch):.6f}", flush=True)
"""


def tuning_spec(write_spec, body: str, name: str = "tune.yaml"):
    header = "apiVersion: mlrt/v1\nkind: TuningJob\nmetadata: {name: tune}\nspec:\n"
    template = (
        "  template:\n"
        "    command: [python, objective.py]\n"
        "    metrics: [{name: score, regex: 'epoch=(?P<step>\\d+) score=(?P<value>-?[0-9.]+)'}]\n"
        "  objective: {metric: score, goal: maximize}\n"
    )
    return write_spec(header + template + body, name=name, files={"objective.py": OBJECTIVE})


def trials_of(store: Store, run_id: str):
    return store.trials(run_id)


def test_a_tuning_job_reaches_the_roc_auc_target_with_parallel_trials(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {name: cancer}
        spec:
          template:
            algorithm: sklearn.logistic_regression
            data:
              train: builtin://sklearn/breast_cancer?split=train
              validation: builtin://sklearn/breast_cancer?split=validation
          objective: {metric: validation_roc_auc, goal: maximize}
          parameters:
            C: {type: float, min: 0.001, max: 100, scale: log}
          tuner: tpe
          max_trials: 30
          parallel_trials: 2
          completion: {target: 0.99}
          seed: 0
        """
    )
    result = cli("submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert "completion.target 0.99 reached" in run["reason"]
    assert float(run["params"]["best_value"]) >= 0.99
    store = Store()
    trials = trials_of(store, run["id"])
    assert 1 <= len(trials) <= 30
    assert all(t.parent_id == run["id"] for t in trials)
    artifacts = {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}
    assert "model.joblib" in artifacts, "the best trial's model is the tuning job's output"
    compared = json.loads(cli("runs", "compare", run["id"], "--json").stdout)
    assert compared[0]["best"] and compared[0]["id"] == run["params"]["best_trial"]
    status = json.loads(cli("status", run["id"], "--json").stdout)
    assert sum(status["tuning"]["trials"].values()) == len(trials)


def test_grid_enumerates_exactly_its_grid(cli, write_spec):
    spec = tuning_spec(
        write_spec,
        "  tuner: grid\n  max_trials: 50\n  parallel_trials: 2\n"
        "  parameters:\n    x: {type: int, min: 1, max: 3}\n    y: {type: categorical, values: [a, b]}\n",
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert "search space is exhausted" in run["reason"]
    combos = sorted(
        (t.record["trial_params"]["x"], t.record["trial_params"]["y"]) for t in trials_of(Store(), run["id"])
    )
    assert combos == [(x, y) for x in (1, 2, 3) for y in ("a", "b")]
    assert json.loads(run["params"]["best_params"]) == {"x": 3, "y": "b"}


def test_no_improvement_stops_the_search_and_says_why(cli, write_spec):
    spec = tuning_spec(
        write_spec,
        "  tuner: random\n  max_trials: 40\n  parallel_trials: 1\n  seed: 1\n"
        "  completion: {no_improvement_trials: 3}\n"
        "  parameters:\n    x: {type: float, min: 0, max: 6}\n",
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED"
    assert "did not improve for 3 trials (completion.no_improvement_trials 3)" in run["reason"]
    assert len(trials_of(Store(), run["id"])) < 40


def test_failed_trials_fail_the_job_past_max_failed_trials(cli, write_spec):
    spec = tuning_spec(
        write_spec,
        "  tuner: random\n  max_trials: 10\n  max_failed_trials: 2\n"
        "  parameters:\n    x: {type: float, min: 0, max: 6}\n    fail: {type: categorical, values: [true]}\n",
    )
    result = cli("submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert result.exit_code == 1
    assert run["state"] == "FAILED"
    assert "3 trials failed, more than max_failed_trials (2)" in run["reason"]
    trials = trials_of(Store(), run["id"])
    assert [t.state for t in trials] == ["FAILED"] * 3
    assert "this trial was told to fail" in trials[0].reason


def test_gates_are_constraints_a_gated_trial_never_wins(cli, write_spec):
    # Maximizing training accuracy alone would pick the least regularized model
    # (C=100), but the gate refuses models whose validation error exceeds their
    # training error by more than a point: the best feasible trial wins instead.
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {name: gated}
        spec:
          template:
            algorithm: sklearn.logistic_regression
            data:
              train: builtin://sklearn/breast_cancer?split=train
              validation: builtin://sklearn/breast_cancer?split=validation
            gates:
              - {metric: bias_variance.variance, max: 0.01}
          objective: {metric: train_accuracy, goal: maximize}
          parameters:
            C: {type: categorical, values: [0.01, 1.0, 100.0]}
          tuner: grid
          max_trials: 3
          max_failed_trials: 0
        """
    )
    result = cli("submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert result.exit_code == 0 and run["state"] == "SUCCEEDED", run["reason"]
    store = Store()
    trials = {t.record["trial_params"]["C"]: t for t in trials_of(store, run["id"])}
    assert {c: t.state for c, t in trials.items()} == {0.01: "SUCCEEDED", 1.0: "SUCCEEDED", 100.0: "FAILED_GATE"}
    gated = trials[100.0]
    assert "bias_variance.variance" in gated.reason and "above the gate's max 0.01" in gated.reason
    objective = store.last_values([t.id for t in trials.values()], "train_accuracy")
    assert objective[gated.id] > max(objective[t.id] for c, t in trials.items() if c != 100.0)
    assert run["params"]["best_trial"] == trials[1.0].id, "the gated trial had the best objective but cannot win"
    violation = float(store.params(gated.id)["gate_violation"])
    assert violation > 0 and float(store.params(trials[1.0].id)["gate_violation"]) == 0
    status = json.loads(cli("status", run["id"], "--json").stdout)
    assert status["tuning"]["trials"].get("FAILED_GATE") == 1


def test_asha_prunes_torch_trials_and_saves_epochs(cli, write_spec):
    import_or_missing("torch", "torch", "the torch plugin needs torch")
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {name: asha}
        spec:
          template:
            algorithm: torch.mlp
            data:
              train: builtin://sklearn/digits?split=train
              validation: builtin://sklearn/digits?split=validation
            hyperparameters: {epochs: 9, hidden_size: 32}
          objective: {metric: validation_loss, goal: minimize}
          parameters:
            learning_rate: {type: float, min: 0.00001, max: 0.01, scale: log}
          tuner: random
          max_trials: 6
          parallel_trials: 2
          early_stopping: {algorithm: asha, min_resource: 1, reduction_factor: 2}
          seed: 4
        """
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    store = Store()
    trials = trials_of(store, run["id"])
    pruned = [t for t in trials if t.state == "PRUNED"]
    assert pruned, [t.reason for t in trials]
    assert all(t.reason.startswith("pruned at step ") and "asha rung" in t.reason for t in pruned)
    epochs = sum(len(store.metrics(t.id, "validation_loss")) for t in trials)
    assert epochs < 9 * len(trials), "pruning ran fewer epochs than running every trial to the end"


def test_a_resumed_tuning_job_does_not_rerun_finished_trials(cli, write_spec):
    slow = OBJECTIVE.replace("import json, os, sys", "import json, os, sys, time\ntime.sleep(1)")
    spec = tuning_spec(
        write_spec,
        "  tuner: tpe\n  max_trials: 5\n  parallel_trials: 1\n  seed: 2\n"
        "  parameters:\n    x: {type: float, min: 0, max: 6}\n",
    )
    (spec.parent / "objective.py").write_text(slow)
    submitted = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)
    first = submitted["run_id"]
    store = Store()
    wait_for(lambda: sum(t.state == "SUCCEEDED" for t in store.trials(first)) >= 2, timeout=120)
    os.kill(submitted["controller_pid"], signal.SIGKILL)
    stopped = wait_for(lambda: (s := json.loads(cli("status", first, "--json").stdout))["state"] == "FAILED" and s)
    assert "stopped while the run was RUNNING" in stopped["reason"]
    assert f"--resume-from {first}" in stopped["reason"]
    done_before = [t for t in store.trials(first) if t.state == "SUCCEEDED"]

    resumed = json.loads(cli("submit", str(spec), "--resume-from", first, "--json").stdout)
    assert resumed["state"] == "SUCCEEDED", resumed["reason"]
    assert "all 5 trials finished" in resumed["reason"]
    new_trials = store.trials(resumed["id"])
    assert len(new_trials) == 5 - len(done_before)
    assert min(t.trial for t in new_trials) > max(t.trial for t in done_before)


def test_several_algorithms_compete_in_one_job(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {name: bakeoff}
        spec:
          template:
            algorithm: sklearn.logistic_regression
            data:
              train: builtin://sklearn/wine?split=train
              validation: builtin://sklearn/wine?split=validation
          objective: {metric: validation_accuracy, goal: maximize}
          parameters:
            algorithm: {type: categorical, values: [sklearn.logistic_regression, sklearn.random_forest]}
            C: {type: float, min: 0.01, max: 10, scale: log, algorithms: [sklearn.logistic_regression]}
            n_estimators: {type: int, min: 10, max: 50, algorithms: [sklearn.random_forest]}
          tuner: grid
          max_trials: 2
        """
    )
    plan = cli("validate", str(spec))
    assert plan.exit_code == 2 and "grid needs values or a step for float parameter 'C'" in plan.stderr
    plan = cli("validate", str(spec), "--json", "--set", "spec.tuner=random", "--set", "spec.seed=5")
    plan = json.loads(plan.stdout)
    assert [p["name"] for p in plan["search_space"]] == ["algorithm", "C", "n_estimators"]
    first = plan["example_trial"]["parameters"]
    assert set(first) == {"algorithm", "C" if first["algorithm"] == "sklearn.logistic_regression" else "n_estimators"}
    hyperparameters = json.loads(plan["example_trial"]["launch"]["workers"][0]["env"]["MLRT_HYPERPARAMETERS"])
    assert all(hyperparameters[k] == v for k, v in first.items() if k != "algorithm")
    result = cli(
        "submit",
        str(spec),
        "--json",
        "--set",
        "spec.tuner=random",
        "--set",
        "spec.max_trials=4",
        "--set",
        "spec.seed=5",
    )
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    trials = trials_of(Store(), run["id"])
    # validate showed the tuner's real first suggestion (same seed), not the low end of each range
    suggested = min(trials, key=lambda t: t.trial).record["trial_params"]
    assert {k: v for k, v in suggested.items() if k in first} == first
    best = Store().params(run["id"])
    winner = json.loads(best["best_params"])
    assert set(winner) == {"algorithm", "C" if winner["algorithm"] == "sklearn.logistic_regression" else "n_estimators"}
    params = [Store().params(t.id) for t in trials]
    for p in params:
        assert ("C" in p) == (p["algorithm"] == "sklearn.logistic_regression")
        assert ("n_estimators" in p and p["n_estimators"] != "100") == (p["algorithm"] == "sklearn.random_forest")


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ("C: {type: float, min: 10, max: 1}", "spec.parameters.C: min (10) must not be above max (1)"),
        ("C: {type: float, min: 0, max: 1, scale: log}", "spec.parameters.C: a log scale needs min > 0"),
        ("C: {type: float, min: -1, max: 1}", "spec.parameters.C: must be >="),
        (
            "bogus: {type: int, min: 1, max: 3}",
            "spec.parameters.bogus: unknown hyperparameter for sklearn.logistic_regression",
        ),
        ("C: {type: categorical, values: []}", "spec.parameters.C: a categorical parameter needs a non-empty list"),
    ],
)
def test_an_invalid_parameter_range_names_the_field(cli, write_spec, parameters, expected):
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TuningJob\nmetadata: {name: bad}\nspec:\n"
        "  template:\n    algorithm: sklearn.logistic_regression\n"
        "    data: {train: 'builtin://sklearn/iris?split=train'}\n"
        "  objective: {metric: validation_accuracy, goal: maximize}\n"
        f"  parameters:\n    {parameters}\n"
    )
    result = cli("submit", str(spec))
    assert result.exit_code == 2
    assert expected in result.stderr, result.stderr
    assert Store().list_runs() == []


def test_warm_start_from_an_earlier_tuning_job(cli, write_spec):
    body = "  tuner: tpe\n  max_trials: 3\n  seed: 3\n  parameters:\n    x: {type: float, min: 0, max: 6}\n"
    first = json.loads(cli("submit", str(tuning_spec(write_spec, body)), "--json").stdout)
    assert first["state"] == "SUCCEEDED"
    warm = tuning_spec(write_spec, body + f"  warm_start: [{first['id']}]\n", name="warm.yaml")
    second = json.loads(cli("submit", str(warm), "--json").stdout)
    assert second["state"] == "SUCCEEDED", second["reason"]
    assert len(Store().trials(second["id"])) == 3, "warm-start trials seed the tuner but do not use the budget"
    assert json.loads(Store().params(second["id"])["warm_start"]) == {first["id"]: 3}
    events = [e.reason for e in Store().events(second["id"])]
    assert f"warm start: the tuner learned from 3 trials of {first['id']} (3 trials)" in events
    unknown = cli("submit", str(warm), "--set", "spec.warm_start=[nope]")
    assert unknown.exit_code == 2 and "spec.warm_start.0: 'nope' is not a tuning job" in unknown.stderr
