"""The ``slices`` report: listed slices, SliceLine weak-slice discovery, and the report's views."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.slices import SlicesReport
from rich.console import Console

from mlrt.reports import ReportInput

REPORT = SlicesReport()


def _data(
    n: int = 20_000,
    *,
    seed: int = 0,
    planted: bool = True,
    task: str = "classification",
    slices: list[Any] | None = None,
    options: dict[str, Any] | None = None,
    labels: tuple[Any, Any] = (0, 1),
    triple: bool = False,
) -> ReportInput:
    """8 numeric + 3 categorical features; the model is right ~95% of the time (regression: small errors),
    except on the planted slice ``region == north and age >= 65`` where it is wrong 90% of the time
    (with ``triple``: on ``region == north and smoker == yes and plan == a`` instead)."""
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({"age": rng.uniform(20, 80, n)})
    for i in range(1, 8):
        features[f"x{i}"] = rng.normal(size=n)
    features["region"] = rng.choice(["north", "south", "east"], n)
    features["smoker"] = rng.choice(["yes", "no"], n)
    features["plan"] = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])
    in_slice = ((features["region"] == "north") & (features["age"] >= 65)).to_numpy()
    if triple:
        in_slice = (
            (features["region"] == "north") & (features["smoker"] == "yes") & (features["plan"] == "a")
        ).to_numpy()
    if task == "classification":
        truth = rng.integers(0, 2, n)
        wrong = rng.random(n) < 0.05
        if planted:
            wrong = np.where(in_slice, rng.random(n) < 0.9, wrong)
        names = np.asarray(labels, dtype=object)
        label, prediction = names[truth], names[np.where(wrong, 1 - truth, truth)]
        classes = list(labels)
    else:
        label = rng.normal(10, 3, n)
        error = rng.normal(0, 1, n)
        if planted:
            error = np.where(in_slice, rng.normal(0, 6, n), error)
        prediction = label + error
        classes = []
    frame = pd.DataFrame({"id": np.arange(n), "split": "validation", "label": label, "prediction": prediction})
    frame = pd.concat([frame, features], axis=1)
    return ReportInput(
        run_id="run-1",
        frame=frame,
        features=list(features.columns),
        task=task,
        classes=classes,
        positive=classes[-1] if classes else None,
        spec={"slices": slices or []},
        metrics={},
        options=options or {},
        output_dir=Path("."),
    )


def _mask(frame: pd.DataFrame, predicates: list[dict[str, Any]]) -> pd.Series:
    """Brute-force membership of a discovered slice, from its predicates."""
    mask = pd.Series(True, index=frame.index)
    for p in predicates:
        column = frame[p["column"]]
        if p["op"] == "==":
            mask &= column == p["value"]
        elif p["op"] == "<":
            mask &= column < p["value"]
        elif p["op"] == ">=":
            mask &= column >= p["value"]
        elif p["op"] == "in":
            mask &= (column >= p["value"][0]) & (column < p["value"][1])
        else:
            mask &= column.isna()
    return mask


def _loss(data: ReportInput) -> pd.Series:
    rows = data.rows()
    return data.loss(rows)


def _is_planted(predicates: list[dict[str, Any]]) -> bool:
    if len(predicates) != 2:
        return False
    age, region = predicates
    return (
        age["column"] == "age"
        and age["op"] == ">="
        and 64 <= age["value"] <= 66
        and region == {"column": "region", "op": "==", "value": "north"}
    )


# ---------------------------------------------------------------------------------------------- discovery


@pytest.mark.parametrize("max_predicates", [2, 3])
def test_planted_slice_ranks_first(max_predicates: int) -> None:
    data = _data(options={"max_predicates": max_predicates})
    result = REPORT.build(data)
    top = result["discovered"][0]
    assert _is_planted(top["predicates"]), top
    edge = top["predicates"][0]["value"]
    assert top["description"] == f"age >= {edge:g} and region == north"
    assert top["error_rate"] > 0.8 and top["score"] > 3
    # no noisy refinement of the planted slice is kept, and its broader parents rank below it
    planted = {("age", ">="), ("region", "==")}
    for other in result["discovered"][1:]:
        keys = {(p["column"], p["op"]) for p in other["predicates"]}
        assert not (planted < keys), other["description"]
        assert other["score"] < top["score"] / 2
    # the counts are the brute-force counts of each slice's predicates
    frame, loss = data.rows(), _loss(data)
    for row in result["discovered"]:
        mask = _mask(frame, row["predicates"])
        assert row["rows"] == int(mask.sum())
        assert row["errors"] == int(loss[mask].sum())
    rest = ~_mask(frame, top["predicates"])
    expected_gain = (loss[~rest].sum() - (~rest).sum() * loss[rest].mean()) / len(frame)
    assert top["potential_gain"] == pytest.approx(expected_gain)
    assert top["share_of_errors"] == pytest.approx(loss[~rest].sum() / loss.sum())


def test_planted_three_predicate_slice() -> None:
    planted = [
        {"column": "region", "op": "==", "value": "north"},
        {"column": "smoker", "op": "==", "value": "yes"},
        {"column": "plan", "op": "==", "value": "a"},
    ]
    result = REPORT.build(_data(triple=True, options={"max_predicates": 3}))
    top = result["discovered"][0]
    assert top["predicates"] == planted and top["description"] == "region == north and smoker == yes and plan == a"
    assert result["search"]["triples"] > 0
    for other in result["discovered"][1:]:
        assert other["score"] < top["score"] / 2
    # with two predicates at most it cannot be named; its 2-predicate parents are found instead
    pairs = REPORT.build(_data(triple=True))["discovered"]
    assert all(len(r["predicates"]) <= 2 for r in pairs)
    assert {p["column"] for p in pairs[0]["predicates"]} < {"region", "smoker", "plan"}


def test_score_is_sliceline_score() -> None:
    result = REPORT.build(_data(options={"alpha": 0.8}))
    n, overall = result["rows"], result["overall"]["error_rate"]
    assert result["discovered"]
    for row in result["discovered"]:
        expected = 0.8 * (row["error_rate"] / overall - 1) - 0.2 * (n / row["rows"] - 1)
        assert row["score"] == pytest.approx(expected)
    scores = [row["score"] for row in result["discovered"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_uniform_errors_discover_nothing_large() -> None:
    result = REPORT.build(_data(planted=False, options={"max_predicates": 3}))
    overall = result["overall"]["error_rate"]
    assert 0.04 < overall < 0.06
    for row in result["discovered"]:
        assert not (row["error_rate"] > 2 * overall and row["share"] > 0.05), row
        assert row["score"] < 0.5, row
    assert result["search"]["pairs"] > 500  # the search ran over the pairs of all features


def test_planted_finding_names_the_slice() -> None:
    result = REPORT.build(_data(labels=("no", "yes")))
    findings = REPORT.findings(result)
    assert 1 <= len(findings) <= 3
    first = findings[0]
    top = result["discovered"][0]
    assert f"slice '{top['description']}' (" in first.text
    assert "% of rows): error 0.9" in first.text and "points" in first.text
    assert first.gain == pytest.approx(top["potential_gain"])
    assert first.severity == "problem"
    # the broader parents (age >= 65, region == north) are explained by the planted slice: not repeated
    assert all("and" in f.text for f in findings)


def test_regression_planted_slice() -> None:
    data = _data(task="regression", slices=[{"column": "region"}])
    result = REPORT.build(data)
    assert result["error_metric"] == "mean_absolute_error"
    assert _is_planted(result["discovered"][0]["predicates"])
    loss = _loss(data)
    frame = data.rows()
    north = result["listed"]["region"][0]
    assert north["value"] == "north" and "accuracy" not in north
    assert north["error_rate"] == pytest.approx(loss[frame["region"] == "north"].mean())
    gates = REPORT.gate_values(result)
    assert "worst_accuracy" not in gates
    assert gates["worst_error_rate"] == pytest.approx(north["error_rate"])
    assert "lower the MAE by" in REPORT.findings(result)[0].text
    metrics = {c.metric for c in REPORT.comparable(result)}
    assert metrics == {"mae"}


def test_regression_uniform_errors_discover_nothing_large() -> None:
    result = REPORT.build(_data(task="regression", planted=False))
    overall = result["overall"]["error_rate"]
    assert all(not (r["error_rate"] > 2 * overall and r["share"] > 0.05) for r in result["discovered"])
    assert all(r["score"] < 0.5 for r in result["discovered"])


def test_support_and_top_k_options() -> None:
    result = REPORT.build(_data(options={"top_k": 2, "min_support": 0.2}))
    assert len(result["discovered"]) <= 2
    assert all(r["share"] >= 0.2 for r in result["discovered"])
    assert not any(_is_planted(r["predicates"]) for r in result["discovered"])  # 8% of rows: below support
    assert REPORT.build(_data(options={"top_k": 0}))["discovered"] == []


# ---------------------------------------------------------------------------------------------- listed


def test_listed_slices_bins_values_and_potential_gain() -> None:
    data = _data(planted=True)
    frame = data.frame
    rng = np.random.default_rng(5)
    frame["city"] = rng.choice([f"c{i}" for i in range(8)], len(frame))
    frame["kids"] = rng.integers(0, 3, len(frame))
    frame.loc[frame.index[:500], "kids"] = np.nan
    data.spec["slices"] = [
        {"column": "age", "bins": None},
        {"column": "x1", "bins": [-1, 0, 1]},
        {"column": "region", "bins": None},
        "city",
        {"column": "kids"},
        {"column": "not_there"},
    ]
    data.options = {"top_n": 3}
    result = REPORT.build(data)
    listed = result["listed"]
    loss = _loss(data)
    n = len(frame)
    for column, rows in listed.items():
        assert sum(r["rows"] for r in rows) == n, column
        gains = [r["potential_gain"] for r in rows]
        assert gains == sorted(gains, reverse=True), column
    # numeric without bins: 4 quantile bins, edges rounded
    age = {r["value"]: r for r in listed["age"]}
    assert len(age) == 4 and any(v.startswith("<") for v in age) and any(v.startswith(">=") for v in age)
    top_bin = next(r for v, r in age.items() if v.startswith(">="))
    assert 64 <= top_bin["predicate"]["value"] <= 66
    # explicit edges
    assert {r["value"] for r in listed["x1"]} == {"<-1", "[-1, 0)", "[0, 1)", ">=1"}
    middle = next(r for r in listed["x1"] if r["value"] == "[0, 1)")
    in_middle = (frame["x1"] >= 0) & (frame["x1"] < 1)
    assert middle["rows"] == int(in_middle.sum())
    assert middle["error_rate"] == pytest.approx(loss[in_middle].mean())
    # categorical by value; the planted region has the largest potential gain, by the formula
    north = listed["region"][0]
    assert north["value"] == "north" and north["description"] == "region == north"
    mask = frame["region"] == "north"
    expected = (loss[mask].sum() - mask.sum() * loss[~mask].mean()) / n
    assert north["potential_gain"] == pytest.approx(expected)
    assert north["accuracy"] == pytest.approx(1 - loss[mask].mean())
    assert north["share_of_errors"] == pytest.approx(loss[mask].sum() / loss.sum())
    assert all(r["potential_gain"] == 0 for r in listed["region"][1:])  # better than the rest: clipped at 0
    # top_n 3: the other 5 cities are grouped
    cities = {r["value"]: r for r in listed["city"]}
    assert len(cities) == 4 and cities["other"]["predicate"] is None
    assert cities["other"]["rows"] == int((~frame["city"].isin([v for v in cities if v != "other"])).sum())
    # few distinct numbers: by value, and missing values as their own slice
    assert {r["value"] for r in listed["kids"]} == {"0", "1", "2", "missing"}
    assert next(r for r in listed["kids"] if r["value"] == "missing")["rows"] == 500
    assert "not_there" not in listed and any("not_there" in note for note in result["notes"])
    gates = REPORT.gate_values(result)
    every = [r for rows in listed.values() for r in rows]
    assert gates["worst_accuracy"] == pytest.approx(min(r["accuracy"] for r in every))
    assert gates["worst_accuracy"] == pytest.approx(top_bin["accuracy"])  # age >= 65: the worst listed slice
    assert gates["max_potential_gain"] == pytest.approx(max(r["potential_gain"] for r in every + result["discovered"]))
    keys = {(c.key, c.metric) for c in REPORT.comparable(result)}
    assert ("slice region=north", "accuracy") in keys and ("slice city=other", "error_rate") in keys
    assert ("slice " + result["discovered"][0]["description"], "error_rate") in keys


def test_worst_gates_need_support() -> None:
    data = _data(n=4000, slices=["plan"], options={"min_rows": 500})
    result = REPORT.build(data)
    small = [r for r in result["listed"]["plan"] if r["rows"] < 500]
    assert small  # plan d: ~10% of 4,000 rows
    supported = [r for r in result["listed"]["plan"] if r["rows"] >= 500]
    assert REPORT.gate_values(result)["worst_accuracy"] == pytest.approx(min(r["accuracy"] for r in supported))


# ---------------------------------------------------------------------------------------------- views


def test_json_render_and_html() -> None:
    data = _data(n=5000, slices=["region", {"column": "age", "bins": 3}, "label_text"])
    data.frame["label_text"] = np.where(data.frame["smoker"] == "yes", "<b>&yes", "no")
    result = REPORT.build(data)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["report"] == "slices" and result["split"] == "validation" and result["rows"] == 5000
    buffer = io.StringIO()
    REPORT.render(result, Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "slices by region" in text and "weakest slices found" in text and "north" in text
    page = REPORT.html(result)
    assert page.startswith("<h2>") and page.count('<svg class="mlrt-plot"') == 4
    assert 'data-plot="slices-discovered"' in page
    assert "&lt;b&gt;&amp;yes" in page and "<b>&yes" not in page


def test_skipped_without_rows() -> None:
    data = _data(n=200)
    data.frame["label"] = np.nan
    result = REPORT.build(data)
    assert result["report"] == "slices" and "skipped" in result
    buffer = io.StringIO()
    REPORT.render(result, Console(file=buffer, width=120))
    assert "skipped" in buffer.getvalue()
    assert "Skipped" in REPORT.html(result)
    assert REPORT.findings(result) == [] and REPORT.gate_values(result) == {} and REPORT.comparable(result) == []
