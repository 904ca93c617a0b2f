"""`mlrt metrics RUN`: the summary the store keeps matches the points, on SQLite,
PostgreSQL and through the service, also after a discard; `--key K --json` prints every
point in step order, `--every N` thins each series; points of a run that does not exist
are refused."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from test_service import remote, service, tokens  # noqa: F401  (fixtures)

from mlrt.cli.render import number
from mlrt.spec import load_spec
from mlrt.store import NotFound, Store
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


def aggregated(store: Store, run_id: str) -> dict[str, tuple]:
    """``(points, min, max, highest step)`` per key as the database aggregates the points (SQLite's
    NaN, the text "NaN", made a float)."""
    query = "SELECT key, COUNT(*), MIN(value), MAX(value), MAX(step) FROM metrics WHERE run_id = :run GROUP BY key"
    with store.engine.connect() as conn:
        rows = conn.execute(text(query), {"run": run_id})
        return {key: (count, float(low), float(high), step) for key, count, low, high, step in rows}


def same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))  # NaN is NaN


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_kept_summaries_follow_every_write_and_discard(backend, tmp_path, request):
    db = request.getfixturevalue("postgres_db") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    run_id, points = filled_run(db, tmp_path)
    store = Store(db)
    # NaN sorts above every number, as PostgreSQL orders its NaN (SQLite keeps it as text, which it
    # orders after every number).
    nan_points = [
        ("nan", 0, 2.0, 0.0),
        ("nan", 1, math.nan, 0.0),
        ("nan", 2, -1.0, 0.0),
        ("only-nan", 4, math.nan, 0.0),
    ]
    store.insert_metrics(run_id, nan_points)
    store.insert_metrics(run_id, [("nan", 0, -3.0, 0.0)])
    points += [*nan_points, ("nan", 0, -3.0, 0.0)]

    def check(points: list[tuple[str, int, float, float]]) -> None:
        summary = {row["key"]: row for row in store.metric_summary(run_id)}
        database = aggregated(store, run_id)
        assert summary.keys() == database.keys() == {p[0] for p in points}
        for key, row in summary.items():
            assert same((row["points"], row["min"], row["max"]), database[key][:3]), key
        expected = expected_summary([p for p in points if p[0] in ("loss", "acc", "[b]odd[/b] key")])
        assert {k: summary[k]["last"] for k in expected} == {k: s["last"] for k, s in expected.items()}
        latest = store.latest_metrics(run_id)
        assert same(tuple(latest.values()), tuple(row["last"] for row in summary.values()))
        assert list(latest) == sorted(latest)
        assert store.max_steps(run_id) == {key: step for key, (*_, step) in database.items()}
        assert store.last_values([run_id, "no-such-run"], "loss") == {run_id: summary["loss"]["last"]}

    check(points)
    store.delete_metrics(run_id, ["loss", "no-such-key"], 150)  # a resumed run rewrites steps 150 on
    points = [p for p in points if not (p[0] == "loss" and p[1] >= 150)]
    check(points)
    store.insert_metrics(run_id, [("loss", 150, 42.0, 0.0)])
    points.append(("loss", 150, 42.0, 0.0))
    check(points)
    store.delete_metrics(run_id, ["acc"], 0)  # every point of a key: its summary row goes too
    check([p for p in points if p[0] != "acc"])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_points_read_in_pages_of_any_size_are_every_point_once_in_order(backend, tmp_path, request, monkeypatch):
    """Pages end anywhere: inside a key, between two points of one step, and inside a run of
    points at one step longer than a page."""
    from mlrt.store import repository

    db = request.getfixturevalue("postgres_db") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    run_id, points = filled_run(db, tmp_path)
    crowded = [("crowded", 4, float(i), float(i)) for i in range(11)]  # one step, many points
    crowded += [("crowded", 2, -1.0, 0.0), ("crowded", 5, math.nan, 0.0)]
    store = Store(db)
    store.insert_metrics(run_id, crowded)
    points += crowded

    def in_order(key: str) -> list[tuple[str, int, float]]:
        return [(key, step, value) for step, value in in_step_order(points, key)]

    everything = [point for key in sorted({p[0] for p in points}) for point in in_order(key)]
    if backend == "postgresql":  # the database's collation orders keys, not Python's code points
        everything = [p for key in [row["key"] for row in store.metric_summary(run_id)] for p in in_order(key)]
    for page in (1, 2, 3, 7, 10_000):
        monkeypatch.setattr(repository, "METRIC_PAGE", page)
        read = [point[:3] for point in store.iter_metric_points(run_id)]
        assert [(k, s) for k, s, _ in read] == [(k, s) for k, s, _ in everything], page
        assert same(tuple(v for *_, v in read), tuple(v for *_, v in everything)), page
        assert [point[:3] for point in store.iter_metric_points(run_id, "loss")] == in_order("loss"), page
        crowded_read = [point[:3] for point in store.iter_metric_points(run_id, "crowded", every=2)]
        thinned = in_order("crowded")[::2]
        assert [p[:2] for p in crowded_read] == [p[:2] for p in thinned], page
        assert same(tuple(p[2] for p in crowded_read), tuple(p[2] for p in thinned)), page


def test_a_reader_holds_no_connection_between_pages(postgres_db, tmp_path, monkeypatch):
    """Readers that stop between pages (a slow client of the service) keep none of the pool:
    with one connection in all, three readers take turns and the store still answers between."""
    from mlrt.store import repository

    monkeypatch.setenv("MLRT_DB_POOL_SIZE", "1")
    monkeypatch.setenv("MLRT_DB_MAX_OVERFLOW", "0")
    monkeypatch.setattr(repository, "METRIC_PAGE", 5)
    run_id, points = filled_run(postgres_db, tmp_path)
    store = Store(postgres_db)
    readers = [store.iter_metric_points(run_id, "loss") for _ in range(3)]
    read: list[list] = [[], [], []]
    while any(readers):
        for index, reader in enumerate(readers):
            if reader is not None:
                point = next(reader, None)
                if point is None:
                    readers[index] = None
                else:
                    read[index].append(point[:3])
        assert store.metric_summary(run_id)  # answered, not kept waiting for a reader's connection
    assert read == [[("loss", step, value) for step, value in in_step_order(points, "loss")]] * 3
    store.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_points_of_a_run_that_does_not_exist_are_refused(backend, tmp_path, request):
    db = request.getfixturevalue("postgres_db") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    store = Store(db)
    for batch in ("b1", None):
        with pytest.raises(NotFound, match="ghost"):
            store.insert_metrics("ghost", [("loss", 0, 1.0, 0.0)], batch_id=batch)
    with store.engine.connect() as conn:
        for table in ("metrics", "metric_summaries", "metric_batches"):
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE run_id = 'ghost'")).scalar() == 0


@pytest.mark.parametrize(
    "points",
    [
        [],
        [("loss", step, step / 7, 1.7e9 + step / 3) for step in range(25_000)],  # chunks through orjson
        [("a", 0, math.nan, 1.0), ("b", 1, math.inf, 2.0), ("c", 2, -math.inf, 3.0)],  # as json writes them
        [('odd},{"key"\n', 0, 5e-324, 1.7976931348623157e308), ("x", 1, 1e308, 1e308)],
    ],
    ids=["none", "finite", "not-finite", "odd-keys-and-extremes"],
)
def test_series_json_reads_back_as_the_points_one_point_a_line(points):
    """Whole, as JSON; and line by line as a remote command reads it while it arrives."""
    from mlrt.metric_json import points_json, points_of_lines

    text = "".join(points_json(iter(points)))

    back = json.loads(text)
    assert len(back) == len(points) and text.count("\n") == len(points) + 1 + bool(points)
    for got, (key, step, value, stamp) in zip(back, points, strict=True):
        assert (got["key"], got["step"], got["timestamp"]) == (key, step, stamp)
        assert got["value"] == value or (math.isnan(got["value"]) and math.isnan(value))
    by_line = list(points_of_lines(iter(text.splitlines())))
    assert [p[:2] + p[3:] for p in by_line] == [p[:2] + p[3:] for p in points]
    assert same(tuple(p[2] for p in by_line), tuple(p[2] for p in points))


def test_a_list_of_points_cut_off_on_its_way_is_refused_not_taken_for_the_whole():
    from mlrt.metric_json import points_json, points_of_lines

    lines = "".join(points_json(iter([("loss", step, 0.5, 1.0) for step in range(5)]))).splitlines()
    with pytest.raises(ValueError, match="ends early"):
        list(points_of_lines(lines[:-1]))
    with pytest.raises(ValueError, match="not a point"):
        list(points_of_lines([*lines[:2], '{"key": "loss"}', "]"]))
    with pytest.raises(ValueError, match="after the end"):
        list(points_of_lines([*lines, '{"key": "loss", "step": 9, "value": 1, "timestamp": 1}']))


DIVERGING = """
    import mlrt
    for step, loss in enumerate([2.0, 0.5, float("nan"), float("inf")]):
        mlrt.log_metric("loss", loss, step=step)
"""


def test_a_run_whose_loss_turns_nan_keeps_every_point_in_the_embedded_store(cli, write_spec):
    """A diverging run is when its curve matters most: the batch holding a NaN is stored whole
    in the default (SQLite) store, and reads back as NaN everywhere."""
    from conftest import command_spec

    spec = write_spec(command_spec("diverging", "[python, train.py]"), files={"train.py": DIVERGING})
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert "not recorded" not in cli("logs", run["id"]).stdout
    values = [point["value"] for point in json.loads(cli("metrics", run["id"], "--key", "loss", "--json").stdout)]
    assert values[:2] == [2.0, 0.5] and math.isnan(values[2]) and values[3] == math.inf
    store = Store()
    (summary,) = store.metric_summary(run["id"])
    assert (summary["points"], summary["min"], summary["last"]) == (4, 0.5, math.inf) and math.isnan(summary["max"])
    steps, series = store.metric_arrays(run["id"], "loss")
    assert list(steps) == [0, 1, 2, 3] and math.isnan(series[2]) and series[3] == math.inf
    # NaN is above every number, as PostgreSQL orders it: a run whose loss reached NaN has a max above 1.
    found = json.loads(cli("runs", "list", "--where", "loss > 1", "--json").stdout)
    assert [r["id"] for r in found] == [run["id"]]
