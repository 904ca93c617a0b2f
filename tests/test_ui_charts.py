"""The UI's server-side charts (mlrt.ui.charts) and the store's series arrays they draw from."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlrt.store import Store
from mlrt.store.models import Job, Run
from mlrt.ui.charts import Axis, Series, Trial, line_chart, lttb, nice_ticks, parallel_coordinates


def test_lttb_keeps_first_last_and_gives_n_points():
    x = np.arange(10_000, dtype=float)
    y = np.cos(x / 300)
    tx, ty = lttb(x, y, 500)
    assert len(tx) == len(ty) == 500
    assert (tx[0], ty[0]) == (x[0], y[0])
    assert (tx[-1], ty[-1]) == (x[-1], y[-1])
    assert np.all(np.diff(tx) > 0)
    assert set(tx.tolist()) <= set(x.tolist())


def test_lttb_keeps_the_extreme_of_a_spike_and_a_dip():
    rng = np.random.default_rng(3)
    x = np.arange(100_000, dtype=float)
    y = rng.normal(0, 0.01, len(x))
    y[31_337], y[77_001] = 40.0, -25.0
    tx, ty = lttb(x, y, 100)
    assert 31_337 in tx and ty.max() == 40.0
    assert 77_001 in tx and ty.min() == -25.0


def test_lttb_leaves_a_short_series_and_refuses_too_few_points():
    x, y = np.arange(5.0), np.arange(5.0) ** 2
    tx, ty = lttb(x, y, 10)
    assert tx.tolist() == x.tolist() and ty.tolist() == y.tolist()
    with pytest.raises(ValueError, match="n >= 3"):
        lttb(x, y, 2)


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1_000_000) == [0, 200_000, 400_000, 600_000, 800_000, 1_000_000]
    ticks = nice_ticks(0.013, 0.087)
    assert ticks[0] >= 0.013 and ticks[-1] <= 0.087 and len(ticks) >= 3


def path_points(svg: str) -> dict[str, int]:
    return {
        label: int(n)
        for label, n in re.findall(r'<path class="mlrt-series" data-series="([^"]*)" data-points="(\d+)"', svg)
    }


def test_line_chart_draws_every_series_thinned_and_escapes_labels():
    x = np.arange(200_000, dtype=float)
    svg = str(
        line_chart(
            [Series("<script>alert(1)</script>", x, np.sin(x / 1e3)), Series("loss & acc", x[:50], x[:50])],
            axis=Axis("step", "step"),
            title="a <b>title</b>",
            points=400,
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "a &lt;b&gt;title&lt;/b&gt;" in svg
    assert path_points(svg) == {"&lt;script&gt;alert(1)&lt;/script&gt;": 400, "loss &amp; acc": 50}
    assert 'data-x0="0.0"' in svg and 'data-x1="199999.0"' in svg


def test_line_chart_zoom_redraws_the_window_in_detail_and_skips_nan():
    x = np.arange(100_000, dtype=float)
    y = np.where(x % 1000 == 0, np.nan, x)
    svg = str(line_chart([Series("m", x, y)], points=300, x_range=(1000.0, 1100.0)))
    # 101 points in the window, less the NaN at 1000: all drawn, none thinned.
    assert path_points(svg) == {"m": 100}
    assert 'data-x0="1000.0"' in svg and 'data-x1="1100.0"' in svg
    empty = str(line_chart([Series("m", x, y)], x_range=(-50.0, -10.0)))
    assert "no points in this range" in empty


def test_time_axis_ticks_read_as_durations():
    x = np.linspace(0, 3600, 100)
    svg = str(line_chart([Series("m", x, x)], axis=Axis("time", "time since start")))
    ticks = re.findall(r'class="tick">([^<]*)<', svg)
    assert "30m" in ticks and "1h" in ticks


def test_parallel_coordinates_marks_pruned_trials_and_categorical_axes():
    trials = [
        Trial("trial 0", {"C": 0.01, "kernel": "rbf"}, 0.7, href="/ui/runs/a"),
        Trial("trial 1", {"C": 10.0, "kernel": "<lin>"}, 0.9),
        Trial("trial 2", {"C": 1.0, "kernel": "rbf"}, 0.5, pruned=True),
        Trial("trial 3", {"C": 0.1, "kernel": "poly"}, None),
        Trial("trial 4", {"kernel": "rbf"}, 0.6),
    ]
    svg = str(parallel_coordinates(trials, ["C", "kernel"], objective="accuracy", goal="maximize", log_params=["C"]))
    axes = re.findall(r'<g class="axis" data-axis="([^"]*)"', svg)
    assert axes == ["C", "kernel", "accuracy"]
    assert "&lt;lin&gt;" in svg and "<lin>" not in svg
    pruned = re.findall(r'<path class="trial pruned"[^>]*>', svg)
    assert len(pruned) == 1 and 'stroke-dasharray="4 3"' in pruned[0]
    assert '<a href="/ui/runs/a">' in svg
    # The best trial (0.9) is drawn last, in the brightest color; the one without objective stops early.
    paths = re.findall(r'<path class="trial[^"]*" data-trial="([^"]*)" d="([^"]*)"', svg)
    assert paths[-1][0] == "trial 1"
    segments = {label: d.count("L") for label, d in paths}
    assert segments["trial 3"] == 1  # no objective: ends at its last parameter
    assert segments["trial 4"] == 1  # no C: skips that axis, from kernel to the objective


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'mlrt.db'}")
    return Store(request.getfixturevalue("postgres_db"))


def test_metric_arrays_reads_one_series_in_order_and_in_a_window(store):
    store.create_job(
        Job(id="j1", name="j", kind="TrainingJob", spec_submitted="", spec_resolved={}),
        Run(id="r1", job_id="j1", state="QUEUED", output_uri="file:///tmp/x"),
        {},
    )
    n = 20_000
    store.insert_metrics("r1", [("loss", i, 1.0 / (i + 1), 1000.0 + i / 10) for i in range(n)])
    store.insert_metrics("r1", [("acc", i, 0.5, 1000.0) for i in range(10)])
    steps, values = store.metric_arrays("r1", "loss")
    assert steps.dtype == np.float64 and steps.tolist() == list(map(float, range(n)))
    assert values[0] == 1.0 and values[-1] == pytest.approx(1.0 / n)
    steps, values = store.metric_arrays("r1", "loss", low=100, high=199)
    assert steps.tolist() == list(map(float, range(100, 200)))
    stamps, _ = store.metric_arrays("r1", "loss", x="timestamp", high=1001.0)
    assert stamps.tolist() == pytest.approx([1000.0 + i / 10 for i in range(11)])
    assert store.metric_arrays("r1", "nope")[0].size == 0
    with pytest.raises(ValueError, match="x must be"):
        store.metric_arrays("r1", "loss", x="value")


def test_a_series_of_one_point_shows_its_marker_and_long_legends_take_one_column():
    label = "breast-cancer-diagnosis-vmqgang3n1wv00ej (breast-cancer-diagnosis)"
    svg = str(line_chart([Series(label, np.array([0.0]), np.array([0.9])), Series("b", np.arange(3.0), np.ones(3))]))
    assert re.search(r'<circle [^>]*fill-opacity="1"><title>[^<]*: 0\.9</title>', svg)
    legend = re.findall(r'<g class="legend-item">.*?<text x="([\d.]+)"', svg)
    assert len(legend) == 2 and legend[0] == legend[1]  # one column: both entries start at the same x
