"""The compare and tuning pages and the metric charts, in headless Chromium against ``mlrt ui``."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from mlrt.store import Store
from mlrt.store.models import Job, Run
from ui_browser import browser, page, seed_run, ui_server  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def store(ui_server):  # noqa: F811
    return Store(ui_server.db)


def test_compare_highlights_differing_params_and_overlays_each_metric(page, ui_server, store):  # noqa: F811
    steps = 5000
    seed_run(
        store,
        "cmp-a",
        name="<i>alpha</i>",
        params={"C": "1.0", "depth": "3"},
        metrics={"loss": list(np.linspace(2, 0.1, steps)), "acc": [0.5, 0.8], "f1": [0.7]},
    )
    seed_run(
        store,
        "cmp-b",
        name="beta",
        params={"C": "0.1", "depth": "3"},
        metrics={"loss": list(np.linspace(2.5, 0.3, steps))},
    )
    page.goto(f"{ui_server.url}/compare?runs=cmp-a,cmp-b")
    differing = page.locator("#compare-params tr.differs")
    assert differing.count() == 1 and differing.get_attribute("data-param") == "C"
    assert "differs" not in page.locator('#compare-params tr[data-param="depth"]').get_attribute("class")
    # The highlight is visible, not only a class: the differing row is painted, the other is not.
    paint = "el => getComputedStyle(el).backgroundColor"
    assert page.locator('#compare-params tr[data-param="C"] td').first.evaluate(paint) != page.locator(
        '#compare-params tr[data-param="depth"] td'
    ).first.evaluate(paint)
    assert page.locator("#compare-runs").inner_text().count("<i>alpha</i>") == 1  # a name is text, not markup
    chart = page.locator('figure[data-metric="loss"] svg.mlrt-chart')
    paths = chart.locator("path.mlrt-series")
    assert paths.count() == 2
    for i in range(2):
        assert len(paths.nth(i).get_attribute("d")) > 1000
        assert paths.nth(i).get_attribute("data-points") == "1000"  # 5,000 points thinned on the server
    assert page.locator('figure[data-metric="acc"] svg.mlrt-chart path.mlrt-series').count() == 1
    # A metric with one value per run is a row of the metrics table, not a chart of one dot.
    assert page.locator('figure[data-metric="f1"]').count() == 0
    assert "0.7" in page.locator("#compare-metrics").inner_text()
    # The report diff's metric table: the metric both runs have, change and direction.
    diff = page.locator('section.report-diff[data-after="cmp-b"]')
    assert "loss" in diff.inner_text() and diff.locator("tr.regressed").count() == 1


def test_dragging_over_a_chart_zooms_into_the_window_the_server_redraws(page, ui_server, store):  # noqa: F811
    seed_run(store, "zoom-a", metrics={"m": [float(np.sin(i / 50)) for i in range(10_000)]})
    seed_run(store, "zoom-b", metrics={"m": [float(np.cos(i / 50)) for i in range(10_000)]})
    page.goto(f"{ui_server.url}/compare?run=zoom-a&run=zoom-b")
    chart = page.locator('figure[data-metric="m"] svg.mlrt-chart')
    assert float(chart.get_attribute("data-x1")) == 9_999
    box = chart.locator("rect.plot-area").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "() => Number(document.querySelector('figure[data-metric=\"m\"] svg.mlrt-chart').dataset.x1) < 9999"
    )
    x0, x1 = (float(chart.get_attribute(a)) for a in ("data-x0", "data-x1"))
    assert 3500 < x0 < 4250 and 4250 < x1 < 4750
    # About 500 points in the window: all of them drawn, none thinned away.
    assert int(chart.locator("path.mlrt-series").first.get_attribute("data-points")) == pytest.approx(x1 - x0, abs=2)
    page.mouse.dblclick(box["x"] + box["width"] / 2, y)
    page.wait_for_function(
        "() => Number(document.querySelector('figure[data-metric=\"m\"] svg.mlrt-chart').dataset.x1) === 9999"
    )


def test_a_run_chart_opened_alone_draws_its_series_and_bad_queries_are_one_line(page, ui_server, store):  # noqa: F811
    seed_run(store, "alone", metrics={"loss": [1.0, 0.5, 0.25], "lr": [0.1, 0.1, 0.01]})
    page.goto(f"{ui_server.url}/runs/alone/chart.svg?key=loss&key=lr&axis=time")
    series = page.locator("path.mlrt-series")
    assert series.count() == 2 and all(series.nth(i).get_attribute("d").startswith("M") for i in range(2))
    answer = httpx.get(f"{ui_server.url}/runs/alone/chart.svg?x0=abc", headers={"X-Mlrt-Fragment": "1"})
    assert (
        answer.status_code == 400
        and answer.text == "x0: 'abc' is not a number (give an x-axis value, or leave it empty)"
    )
    answer = httpx.get(f"{ui_server.url}/compare?run=alone")
    assert answer.status_code == 400 and "compare takes 2 to 10 runs, 1 given" in answer.text


def seed_tuning(store: Store) -> None:
    """A finished TuningJob of six trials written as rows: four succeeded, one pruned, one failed."""
    spec = {
        "apiVersion": "mlrt/v1",
        "kind": "TuningJob",
        "metadata": {"name": "tune-svc"},
        "spec": {
            "template": {"algorithm": "sklearn.svc"},
            "objective": {"metric": "validation_accuracy", "goal": "maximize"},
            "tuner": "random",
            "max_trials": 6,
            "parameters": {
                "C": {"type": "float", "min": 0.001, "max": 10.0, "scale": "log"},
                "kernel": {"type": "categorical", "values": ["rbf", "linear"]},
            },
        },
    }
    job = Job(id="tune-1", name="tune-svc", kind="TuningJob", spec_submitted="", spec_resolved=spec)
    store.create_job(job, Run(id="tune-1", job_id="tune-1", state="SUCCEEDED", output_uri="file:///x"), {})
    trials = [
        ("SUCCEEDED", 0.01, "rbf", 0.71),
        ("SUCCEEDED", 1.0, "linear", 0.93),
        ("PRUNED", 0.002, "rbf", 0.40),
        ("SUCCEEDED", 5.0, "<b>rbf</b>", 0.88),
        ("FAILED", 0.3, "linear", None),
        ("SUCCEEDED", 0.1, "linear", 0.90),
    ]
    for number, (state, c, kernel, accuracy) in enumerate(trials):
        metrics = {"validation_accuracy": [accuracy]} if accuracy is not None else {}
        seed_run(store, f"tune-1-t{number}", parent_id="tune-1", trial=number, state=state, metrics=metrics)
        store.update_run(f"tune-1-t{number}", record={"trial_params": {"C": c, "kernel": kernel}})


def test_tuning_page_lists_trials_best_first_marks_pruned_and_links_the_best(page, ui_server, store):  # noqa: F811
    seed_tuning(store)
    page.goto(f"{ui_server.url}/tuning/tune-1")
    rows = page.locator("table.trials tbody tr")
    assert [rows.nth(i).get_attribute("data-trial") for i in range(rows.count())] == ["1", "5", "3", "0", "2", "4"]
    assert "best" in rows.first.get_attribute("class") and "0.93" in rows.first.inner_text()
    assert "pruned" in page.locator('tr[data-trial="2"]').get_attribute("class")
    assert "<b>rbf</b>" in page.locator('tr[data-trial="3"]').inner_text()
    page.locator("#best-trial a").click()
    page.wait_for_url(re.compile(r".*/runs/tune-1-t1$"))
    page.go_back()
    # Objective by trial: finished and pruned trials as points, and the best so far.
    objective = page.locator("svg.mlrt-chart")
    assert objective.locator('g.mlrt-series[data-series="finished"] circle').count() == 4
    assert objective.locator('g.mlrt-series[data-series="pruned"] circle').count() == 1
    assert objective.locator('path.mlrt-series[data-series="best so far"]').count() == 1
    # Parallel coordinates: an axis per param and the objective; every trial a line, the pruned one dashed.
    parallel = page.locator("svg.mlrt-parallel")
    axes = parallel.locator("g.axis")
    assert [axes.nth(i).get_attribute("data-axis") for i in range(axes.count())] == [
        "C",
        "kernel",
        "validation_accuracy",
    ]
    assert parallel.locator("path.trial").count() == 6
    assert parallel.locator("path.trial.pruned").get_attribute("stroke-dasharray") == "4 3"
