"""One best-trial rule everywhere (status, runs compare, the search's own params), also after
--resume-from; the Pareto front of a multi-objective search (NSGA-II) and its checks."""

from __future__ import annotations

import json

import pytest

from mlrt.spec import load_spec
from mlrt.states import RunState
from mlrt.store import Store
from mlrt.submission import submit
from mlrt.tuning_results import Objective, pareto_front, search_result
from mlrt.tuning_spec import load_trial

TUNING = """\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {name: chain}
spec:
  template:
    command: [python, -c, pass]
  objective: {metric: score, goal: maximize}
  parameters:
    x: {type: float, min: 0, max: 1}
  max_trials: 10
"""


def add_trials(store: Store, loaded, tuning_id: str, scores: dict[int, float | None]) -> dict[int, str]:
    """Trials of ``tuning_id`` by number: SUCCEEDED with the score, or FAILED (None)."""
    ids = {}
    for number, score in scores.items():
        params = {"x": number / 10}
        trial = load_trial(loaded.resolved(), f"chain-t{number:03d}", params)
        run_id = submit(store, trial, trial_of=(tuning_id, number, params))
        state = RunState.FAILED if score is None else RunState.SUCCEEDED
        store.update_run(run_id, state=state.value)
        if score is not None:
            store.insert_metrics(run_id, [("score", 1, score - 1, 0.0), ("score", 2, score, 0.0)])
        ids[number] = run_id
    return ids


def test_after_resume_status_compare_and_the_rule_name_the_same_best_trial(cli, home, tmp_path):
    spec = tmp_path / "tune.yaml"
    spec.write_text(TUNING)
    store = Store()
    loaded = load_spec(str(spec), ())
    first = submit(store, loaded)
    store.update_run(first, state=RunState.FAILED.value, reason="its controller stopped")
    earlier = add_trials(store, loaded, first, {1: 0.9, 2: 0.5, 3: None})
    resumed = submit(store, loaded, resume_from=first)
    store.update_run(resumed, state=RunState.SUCCEEDED.value)
    own = add_trials(store, loaded, resumed, {4: 0.7, 5: 0.9})  # ties with trial 1: the earlier wins

    result = search_result(store, store.get_run(resumed), store.get_job(resumed).spec_resolved["spec"])
    assert result.best is not None and result.best[0].id == earlier[1]

    status = json.loads(cli("status", resumed, "--json").stdout)["tuning"]
    assert status["best"] == {"value": 0.9, "trial": 1}
    assert status["trials"] == {"SUCCEEDED": 4}, "taken-over trials count; the failed one ran again"
    assert "best score=0.9 (trial 1)" in cli("status", resumed).stdout

    compared = json.loads(cli("runs", "compare", resumed, "--json").stdout)
    assert [r["id"] for r in compared] == [earlier[1], own[5], own[4], earlier[2]]
    assert [r["best"] for r in compared] == [True, False, False, False]


def test_the_pareto_front_keeps_the_trials_no_other_dominates():
    objectives = [Objective("accuracy", "maximize"), Objective("seconds", "minimize")]

    class Trial:
        def __init__(self, number: int, state: str = "SUCCEEDED"):
            self.id, self.trial, self.state = f"t{number}", number, state

    trials = [Trial(n) for n in range(1, 7)] + [Trial(7, "FAILED")]
    values = {
        "t1": (0.90, 10.0),  # front: fastest of the accurate ones
        "t2": (0.95, 30.0),  # front: most accurate
        "t3": (0.85, 20.0),  # dominated by t1
        "t4": (0.90, 10.0),  # equal to t1: neither dominates, both stay
        "t5": (0.80, 5.0),  # front: fastest
        "t7": (0.99, 1.0),  # failed: never on the front
    }
    front = pareto_front(trials, values, objectives)
    assert [t.id for t in front] == ["t1", "t2", "t4", "t5"]


MULTI = """\
import json, os
hp = json.loads(os.environ["MLRT_HYPERPARAMETERS"])
x = hp["x"]
print(f"accuracy={1 - (x - 0.8) ** 2:.6f} cost={x:.6f}", flush=True)
"""


def multi_spec(write_spec, extra: str = "", tuner: str = "nsga2"):
    return write_spec(
        "apiVersion: mlrt/v1\nkind: TuningJob\nmetadata: {name: pareto}\nspec:\n"
        "  template:\n    command: [python, trial.py]\n"
        "    metrics:\n"
        "      - {name: accuracy, regex: 'accuracy=(?P<value>[0-9.]+)'}\n"
        "      - {name: cost, regex: 'cost=(?P<value>[0-9.]+)'}\n"
        "  objectives: [{metric: accuracy, goal: maximize}, {metric: cost, goal: minimize}]\n"
        "  parameters:\n    x: {type: float, min: 0, max: 1}\n"
        f"  tuner: {tuner}\n  max_trials: 6\n  parallel_trials: 3\n  seed: 4\n{extra}",
        files={"trial.py": MULTI},
    )


def test_a_multi_objective_search_finds_and_shows_its_pareto_front(cli, write_spec):
    run = json.loads(cli("submit", str(multi_spec(write_spec)), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    store = Store()
    trials = {t.id: t for t in store.trials(run["id"])}
    assert len(trials) == 6
    params = store.params(run["id"])
    front = json.loads(params["pareto_front"])
    values = {i: (store.latest_metrics(i)["accuracy"], store.latest_metrics(i)["cost"]) for i in trials}
    # x below 0.8 trades accuracy for cost: every such trial is on the front, any above 0.8 is not
    expected = sorted((i for i, (_a, c) in values.items() if c <= 0.8), key=lambda i: trials[i].trial)
    assert front == expected and front, values
    assert f"Pareto front of {len(front)} trial" in run["reason"]

    status = json.loads(cli("status", run["id"], "--json").stdout)["tuning"]
    assert [p["trial"] for p in status["pareto"]] == [trials[i].trial for i in front]
    assert "Pareto front: trials" in cli("status", run["id"]).stdout
    compared = json.loads(cli("runs", "compare", run["id"], "--json").stdout)
    assert [r["id"] for r in compared if r["pareto"]] == sorted(front, key=lambda i: -values[i][0])
    assert all(r["pareto"] for r in compared[: len(front)]), "the front comes first"


@pytest.mark.parametrize(
    ("extra", "tuner", "says"),
    [
        ("", "tpe", "spec.tuner: tpe searches one objective; with objectives use one of: nsga2, random"),
        ("  early_stopping: {algorithm: median}\n", "nsga2", "early_stopping judges one objective"),
        ("  completion: {target: 0.9}\n", "nsga2", "completion.target and no_improvement_trials need one objective"),
        ("  objective: {metric: accuracy, goal: maximize}\n", "nsga2", "not both"),
    ],
)
def test_a_multi_objective_spec_that_cannot_work_is_refused_in_one_line(cli, write_spec, extra, tuner, says):
    result = cli("validate", str(multi_spec(write_spec, extra, tuner)))
    assert result.exit_code == 2 and says in result.stderr, result.stderr
