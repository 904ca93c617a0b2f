"""`mlrt metrics RUN`: the summary the database aggregates matches the points, on SQLite,
PostgreSQL and through the service; `--key K --json` prints every point in step order,
`--every N` thins each series."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from test_service import remote, service, tokens  # noqa: F401  (fixtures)

from mlrt.cli.render import number
from mlrt.spec import load_spec
from mlrt.store import Store
from mlrt.submission import submit


def logged_points() -> list[tuple[str, int, float, float]]:
    """Points in the order a program logs them: steps out of order, a step logged twice
    (the later value counts as the last), negative and repeated values, a key with markup."""
    rng = random.Random(7)
    steps = list(range(200))
    rng.shuffle(steps)
    points = [("loss", step, rng.uniform(-5, 5), float(i)) for i, step in enumerate(steps)]
    points += [("loss", 199, -0.25, 300.0), ("loss", 3, 9.5, 301.0)]  # 199 again; a late point at an early step
    points += [("acc", step, step / 10, 400.0 + step) for step in (5, 1, 7, 2)]
    points += [("[b]odd[/b] key", 0, 1.0, 500.0)]
    return points


def expected_summary(points: list[tuple[str, int, float, float]]) -> dict[str, dict]:
    summary = {}
    for key in {p[0] for p in points}:
        series = [p for p in points if p[0] == key]
        top = max(p[1] for p in series)
        last = [p[2] for p in series if p[1] == top][-1]  # the last logged at the highest step
        values = [p[2] for p in series]
        summary[key] = {"key": key, "points": len(series), "last": last, "min": min(values), "max": max(values)}
    return summary


def in_step_order(points: list[tuple[str, int, float, float]], key: str) -> list[tuple[int, float]]:
    ordered = sorted(((p[1], i, p[2]) for i, p in enumerate(points) if p[0] == key))
    return [(step, value) for step, _, value in ordered]


def filled_run(db: str, tmp_path) -> tuple[str, list[tuple[str, int, float, float]]]:
    spec = tmp_path / "job.yaml"
    spec.write_text("apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: points}\nspec:\n  command: [x]\n")
    store = Store(db)
    run_id = submit(store, load_spec(str(spec)))
    points = logged_points()
    for first in range(0, len(points), 50):  # batches, as the SDK sends them
        store.insert_metrics(run_id, points[first : first + 50])
    return run_id, points


def summary_rows(text: str) -> dict[str, list[str]]:
    """The summary table's cells by metric (the table as a pipe receives it)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 5 and cells[1].isdigit():
            rows[cells[0]] = cells[1:]
    return rows


def check_cli(run: Callable[..., Any], run_id: str, points: list[tuple[str, int, float, float]]) -> None:
    expected = expected_summary(points)
    result = run("metrics", run_id)
    assert result.exit_code == 0, result.output
    assert summary_rows(result.stdout) == {
        k: [str(s["points"]), number(s["last"]), number(s["min"]), number(s["max"])] for k, s in expected.items()
    }
    series = json.loads(run("metrics", run_id, "--key", "loss", "--json").stdout)
    assert {p["key"] for p in series} == {"loss"}
    assert [(p["step"], p["value"]) for p in series] == in_step_order(points, "loss")
    everything = json.loads(run("metrics", run_id, "--json").stdout)
    assert len(everything) == len(points)
    thinned = json.loads(run("metrics", run_id, "--every", "10", "--json").stdout)
    for key in expected:
        assert [(p["step"], p["value"]) for p in thinned if p["key"] == key] == in_step_order(points, key)[::10]
    text = run("metrics", run_id, "--key", "acc").stdout.splitlines()
    assert text[0] == "acc" and [line.split() for line in text[2:]] == [[str(s), number(s / 10)] for s in (1, 2, 5, 7)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_summary_is_the_points_aggregated_and_a_series_prints_whole_in_step_order(backend, cli, tmp_path, request):
    db = request.getfixturevalue("postgres_db") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    run_id, points = filled_run(db, tmp_path)
    summary = Store(db).metric_summary(run_id)
    assert summary == sorted(expected_summary(points).values(), key=lambda s: s["key"])
    check_cli(lambda *args: cli("--db", db, *args), run_id, points)
    assert cli("--db", db, "metrics", run_id, "--every", "0").exit_code == 2


def test_the_service_answers_the_same_summary_and_series(postgres_db, remote, tokens, tmp_path):  # noqa: F811
    run_id, points = filled_run(postgres_db, tmp_path)
    check_cli(lambda *args: remote(tokens["admin"], *args), run_id, points)
