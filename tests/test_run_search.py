"""Finding runs: `mlrt runs list --label --state --name --where --sort --limit --offset`, on SQLite
and PostgreSQL, and the same search through the service's API and the CLI's remote mode.

The runs are queued through the public API (mlrt.submission) and put in their states and
metrics the way the controller records them; nothing launches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrt.service import auth
from mlrt.spec import load_spec
from mlrt.states import RunState
from mlrt.store import Store
from mlrt.submission import submit
from service_process import ServiceProcess

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata:
  name: {name}
  labels: {labels}
spec:
  command: [python, -c, pass]
"""

# name, labels, state, validation_accuracy (None: never logged), project
RUNS = [
    ("cats-small", {"team": "vision"}, RunState.SUCCEEDED, 0.95, "vision"),
    ("cats-large", {"team": "vision"}, RunState.SUCCEEDED, 0.97, "vision"),
    ("cats-tiny", {"team": "vision"}, RunState.SUCCEEDED, 0.80, "vision"),
    ("cats-broken", {"team": "vision"}, RunState.FAILED, 0.99, "vision"),
    ("dogs-xl", {"team": "vision", "size": "xl"}, RunState.SUCCEEDED, None, "vision"),
    ("speech-base", {"team": "speech"}, RunState.SUCCEEDED, 0.99, "speech"),
]


def queue_runs(store: Store, tmp_path: Path) -> dict[str, str]:
    """The runs of :data:`RUNS` in ``store``; returns run id by job name."""
    ids = {}
    for name, labels, state, accuracy, project in RUNS:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, labels=json.dumps(labels)))
        run_id = submit(store, load_spec(str(spec), ()), project=project)
        store.update_run(run_id, state=state.value)
        points = [("validation_loss", 1, 0.5, 0.0)]
        if accuracy is not None:  # an earlier, lower value first: the last one counts
            points += [("validation_accuracy", 1, accuracy - 0.5, 0.0), ("validation_accuracy", 2, accuracy, 0.0)]
        store.insert_metrics(run_id, points)
        ids[name] = run_id
    return ids


def listed(cli, *args: str) -> list[str]:
    result = cli("runs", "list", *args, "--json")
    assert result.exit_code == 0, result.output
    return [run["id"] for run in json.loads(result.stdout)]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, home, monkeypatch) -> str | None:
    """Each store in turn, as ``MLRT_DB`` (None: the default SQLite file under MLRT_HOME)."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_db")
    monkeypatch.setenv("MLRT_DB", url)
    return url


def test_runs_are_found_by_label_state_and_metric_and_sorted_by_a_metric(cli, db_url, tmp_path):
    ids = queue_runs(Store(db_url), tmp_path)
    found = listed(
        cli,
        *("--label", "team=vision", "--state", "SUCCEEDED"),
        *("--where", "validation_accuracy > 0.9", "--sort", "-validation_accuracy", "--limit", "20"),
    )
    assert found == [ids["cats-large"], ids["cats-small"]]
    assert listed(cli, "--where", "validation_accuracy<=0.8") == [ids["cats-tiny"]]

    # Ascending; a run that never logged the metric comes last in either direction.
    ascending = listed(cli, "--label", "team=vision", "--sort", "validation_accuracy")
    assert ascending == [ids[n] for n in ("cats-tiny", "cats-small", "cats-large", "cats-broken", "dogs-xl")]
    descending = listed(cli, "--label", "team=vision", "--sort", "-validation_accuracy")
    assert descending[-1] == ids["dogs-xl"]

    # Two labels must both match; the name is a case-insensitive substring, % and _ literal.
    assert listed(cli, "--label", "team=vision", "--label", "size=xl") == [ids["dogs-xl"]]
    assert listed(cli, "--name", "DOGS-X") == [ids["dogs-xl"]]
    assert listed(cli, "--name", "%") == listed(cli, "--name", "_") == []
    assert set(listed(cli, "--name", "cats")) == {ids[n] for n in RUNS_NAMED("cats")}

    # Pages: the table's title says which and of how many.
    first = listed(cli, "--sort", "name", "--limit", "2")
    second = listed(cli, "--sort", "name", "--limit", "2", "--offset", "2")
    assert first == [ids["cats-broken"], ids["cats-large"]] and second == [ids["cats-small"], ids["cats-tiny"]]
    result = cli("runs", "list", "--sort", "name", "--limit", "2", "--offset", "2")
    assert "runs 3-4 of 6" in result.stdout, result.stdout
    assert "validation_accuracy" in result.stdout


def RUNS_NAMED(text: str) -> list[str]:  # noqa: N802 (reads as the constant it filters)
    return [name for name, *_ in RUNS if text in name]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--where", "validation_accuracy >> 0.9"), "where: 'validation_accuracy >> 0.9' is not 'METRIC OP NUMBER'"),
        (("--where", "validation_accuracy > high"), "where: 'high' in 'validation_accuracy > high' is not a number"),
        (("--label", "team"), "label: 'team' is not KEY=VALUE"),
        (("--sort", "-bad key!"), "sort: '-bad key!' is not a column or metric key"),
        (("--limit", "0"), "limit: 0 is out of range: use 1 to 1000"),
        (("--state", "done"), "state: 'DONE' is not one of QUEUED, STARTING, RUNNING"),
        (("--label", 'te"am=x'), "label: 'te\"am': keys and values of at most 256 characters, no quotes"),
        (("--name", "x" * 300), "name: 300 characters: use at most 256"),
        (("--offset", str(10**12)), "offset: 1000000000000 is out of range: use 0 to 1000000000"),
    ],
)
def test_a_malformed_filter_is_one_line_and_exit_2(cli, home, args, says):
    result = cli("runs", "list", *args)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output


def test_the_api_and_remote_mode_search_a_projects_runs_only(postgres_db, home, tmp_path):
    from mlrt.cli import _register
    from mlrt.cli import cli as root

    store = Store(postgres_db)
    ids = queue_runs(store, tmp_path)
    alice = auth.issue(store, "user", "alice", "vision")
    service = ServiceProcess(postgres_db, tmp_path / "controller.log").start(leader=False)
    try:
        import httpx
        from click.testing import CliRunner

        with httpx.Client(base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as api:
            response = api.get("/runs", params={"where": "validation_accuracy > 0.9", "sort": "-validation_accuracy"})
            assert response.status_code == 200, response.text
            # speech-base (0.99) is another project's: never in alice's answers
            assert [r["id"] for r in response.json()] == [ids["cats-broken"], ids["cats-large"], ids["cats-small"]]
            assert response.headers["X-Total-Count"] == "3"
            page = api.get("/runs/search", params={"label": "team=vision", "limit": 1, "sort": "name"}).json()
            assert page["total"] == 5 and [r["id"] for r in page["runs"]] == [ids["cats-broken"]]
            assert page["metrics"][ids["cats-broken"]]["validation_accuracy"] == pytest.approx(0.99)
            assert page["jobs"][ids["cats-broken"]]["name"] == "cats-broken"
            bad = api.get("/runs", params={"where": "validation_accuracy >> 1"})
            assert bad.status_code == 422 and "not 'METRIC OP NUMBER'" in bad.json()["detail"]

        _register()
        args = ["--server", service.url, "runs", "list", "--state", "succeeded", "--sort", "-validation_accuracy"]
        result = CliRunner().invoke(root, [*args, "--json"], env={"MLRT_TOKEN": alice}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        wanted = [ids[n] for n in ("cats-large", "cats-small", "cats-tiny", "dogs-xl")]
        assert [r["id"] for r in json.loads(result.stdout)] == wanted
    finally:
        service.stop()
