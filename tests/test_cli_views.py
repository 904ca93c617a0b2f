"""Every run state through every view: `mlrt status`, `runs list`, `runs show`, `runs compare`
(a tuning job's trials and runs side by side), as tables and as --json.

The runs are queued through the public API (mlrt.submission) and put in each state the way
the controller records it; nothing launches, so the test takes about a second."""

from __future__ import annotations

import json

import pytest

from mlrt.spec import load_spec
from mlrt.states import RunState
from mlrt.store import Store
from mlrt.submission import submit
from mlrt.tuning_spec import load_trial

# Reasons and metric names are printed as they are, never read as rich markup.
AWKWARD = "closing tag [/] and [bold]brackets[/bold] stay text"
WAITING = "project vision is at its limit of 8 running runs"

TUNING = """\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {name: views}
spec:
  template:
    command: [python, -c, pass]
  objective: {metric: score, goal: maximize}
  parameters:
    x: {type: float, min: 0, max: 1}
  max_trials: 20
"""


@pytest.fixture
def trials(tmp_path) -> tuple[str, list[str]]:
    """A tuning job with one trial in every state (each with a score, a reason quoting
    markup, and ``waiting`` on the queued one); returns the job's and the trials' ids."""
    spec = tmp_path / "tune.yaml"
    spec.write_text(TUNING)
    store = Store()
    loaded = load_spec(str(spec), ())
    tuning_id = submit(store, loaded)
    store.update_run(tuning_id, state=RunState.RUNNING.value, reason="searching")
    resolved = loaded.resolved()
    ids = []
    for number, state in enumerate(RunState, start=1):
        params = {"x": number / 20}
        trial = load_trial(resolved, f"views-t{number:03d}", params)
        run_id = submit(store, trial, trial_of=(tuning_id, number, params))
        store.update_run(run_id, state=state.value, reason=f"{state.value.lower()}: {AWKWARD}")
        store.insert_metrics(run_id, [("score", 1, number / 10, 0.0), ("[red]odd[/] name", 1, 1.0, 0.0)])
        ids.append(run_id)
    store.update_run(ids[list(RunState).index(RunState.QUEUED)], waiting=WAITING)
    return tuning_id, ids


def ok(cli, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, f"mlrt {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.stdout


def test_every_state_renders_in_every_view(cli, trials):
    tuning_id, ids = trials
    listed = ok(cli, "status", "--limit", "50")
    runs_list = ok(cli, "runs", "list")
    for state in RunState:
        assert state.value in listed and state.value in runs_list, state
    assert AWKWARD in listed and f"waiting: {WAITING}" in listed
    for run_id in ids:
        # Whole ids on every line: a pipe gets the table at the width it needs.
        assert run_id in listed.split() and run_id in runs_list.split()
        assert AWKWARD in ok(cli, "status", run_id)
        assert AWKWARD in ok(cli, "runs", "show", run_id)
    queued = ids[list(RunState).index(RunState.QUEUED)]
    assert f"waiting: {WAITING}" in ok(cli, "status", queued)
    assert f"waiting: {WAITING}" in ok(cli, "runs", "show", queued)
    assert "trials: " in ok(cli, "status", tuning_id)

    compared = ok(cli, "runs", "compare", tuning_id)
    side_by_side = ok(cli, "runs", "compare", *ids)
    for state in RunState:
        assert state.value in compared and state.value in side_by_side, state
    assert "[red]odd[/] name" in compared
    succeeded = ids[list(RunState).index(RunState.SUCCEEDED)]
    assert f"{succeeded} (best)" in compared, "the only succeeded trial is the best"


def test_every_state_in_every_json_view(cli, trials):
    tuning_id, ids = trials
    by_id = {r["id"]: r for r in json.loads(ok(cli, "status", "--json", "--limit", "50"))}
    assert {r["id"]: r["state"] for r in json.loads(ok(cli, "runs", "list", "--json"))} == {
        run_id: r["state"] for run_id, r in by_id.items()
    }
    for run_id, state in zip(ids, RunState, strict=True):
        assert by_id[run_id]["state"] == state.value
        assert by_id[run_id]["waiting"] == (WAITING if state is RunState.QUEUED else "")
        shown = json.loads(ok(cli, "runs", "show", run_id, "--json"))
        assert shown["state"] == state.value and shown["priority"] == 0
        assert json.loads(ok(cli, "status", run_id, "--json"))["reason"].endswith(AWKWARD)
    status = json.loads(ok(cli, "status", tuning_id, "--json"))
    assert status["tuning"]["trials"] == {state.value: 1 for state in RunState}
    compared = json.loads(ok(cli, "runs", "compare", tuning_id, "--json"))
    assert [r["state"] for r in compared][0] == "SUCCEEDED" and compared[0]["best"]
    assert sorted(r["state"] for r in compared) == sorted(s.value for s in RunState)


def test_submit_prints_progress_lines_when_stdout_is_not_a_terminal(cli, write_spec):
    program = "import mlrt, json, os\nmlrt.log_metric('score', json.loads(os.environ['MLRT_HYPERPARAMETERS'])['x'])\n"
    spec = write_spec(
        TUNING.replace("command: [python, -c, pass]", "command: [python, score.py]")
        .replace("x: {type: float, min: 0, max: 1}", "x: {type: categorical, values: [0.25, 0.5]}")
        .replace("max_trials: 20", "max_trials: 2\n  tuner: grid"),
        files={"score.py": program},
    )
    result = cli("submit", str(spec))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    run_id = lines[0].split()[1]
    said = [line.split(" ", 1)[1] for line in lines[1:] if line[:2].isdigit()]  # "HH:MM:SS what"
    assert any(line.startswith(f"{run_id} RUNNING: ") for line in said), said
    trials = sorted(line for line in said if line.startswith("trial "))
    assert trials == [f"trial 1 {run_id}-t001 SUCCEEDED: score=0.25", f"trial 2 {run_id}-t002 SUCCEEDED: score=0.5"]
    assert said[-1].startswith(f"{run_id} SUCCEEDED: "), said
    assert "trials: 2 succeeded; best score=0.5 (trial 2)" in said


def test_plugins_show_describes_settings_with_types_ranges_and_defaults(cli):
    [algorithm] = json.loads(ok(cli, "plugins", "show", "sklearn.logistic_regression", "--json"))
    assert algorithm["kind"] == "algorithm" and algorithm["settings_field"] == "spec.hyperparameters"
    assert algorithm["settings"]["C"] == {
        "type": "float",
        "default": 1.0,
        "min": 1e-06,
        "max": 1e6,
        "choices": None,
        "log": True,
        "nullable": False,
        "help": "Inverse regularization strength; smaller is stronger.",
    }
    text = ok(cli, "plugins", "show", "sklearn.logistic_regression")
    assert "settings (spec.hyperparameters)" in text and "one of l2, l1, elasticnet, none" in text
    assert "[1e-06, 1000000.0] (log scale)" in text
    [stopper] = json.loads(ok(cli, "plugins", "show", "asha", "--json"))
    assert stopper["settings_field"] == "spec.early_stopping" and stopper["settings"]["reduction_factor"]["min"] == 2
    assert "spec.report_options.slices" in ok(cli, "plugins", "show", "slices")
    assert "survives_controller: True" in ok(cli, "plugins", "show", "container")
    unknown = cli("plugins", "show", "sklearn.logistic")
    assert unknown.exit_code == 2 and "sklearn.logistic_regression" in unknown.stderr
    assert {row["name"] for row in json.loads(ok(cli, "plugins", "--json"))} >= {"sklearn", "local"}
