"""The fairness report on generated data with a planted unfair decision threshold."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.fairness import FairnessReport
from rich.console import Console

from mlrt.algorithms import resolve_values
from mlrt.reports import ReportInput, option_schema

N = 20_000


def shifted(seed: int = 0) -> pd.DataFrame:
    """Group B needs score > 1.0 to be predicted positive, A and C score > 0; region and age are
    independent of everything."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=N), rng.normal(size=N)
    score = x1 + x2
    group = np.array(["A", "B", "C"])[rng.integers(0, 3, N)]
    label = (score + rng.normal(0, 0.5, N) > 0).astype(int)
    prediction = np.where(group == "B", score > 1.0, score > 0).astype(int)
    probability = 1 / (1 + np.exp(-(score - np.where(group == "B", 1.0, 0.0))))
    return pd.DataFrame(
        {
            "id": np.arange(N),
            "split": "validation",
            "label": label,
            "prediction": prediction,
            "score_0": 1 - probability,
            "score_1": probability,
            "x1": x1,
            "x2": x2,
            "group": group,
            "region": np.array(["north", "south", "east", "west"])[rng.integers(0, 4, N)],
            "age": rng.uniform(18, 80, N).round(1),
        }
    )


def make_input(
    frame: pd.DataFrame,
    protected: list[str],
    options: dict[str, Any] | None = None,
    classes: list[Any] | None = None,
    task: str = "classification",
) -> ReportInput:
    report = FairnessReport()
    resolved, problems = resolve_values(option_schema(report), options or {}, report.name)
    assert not problems
    classes = [0, 1] if classes is None else classes
    reserved = {"id", "split", "label", "prediction"}
    return ReportInput(
        run_id="run-1",
        frame=frame,
        features=[c for c in frame.columns if c not in reserved and not c.startswith("score_")],
        task=task,
        classes=classes,
        positive=classes[-1] if len(classes) == 2 else None,
        spec={"protected": protected},
        metrics={},
        options=resolved,
        output_dir=Path("/nonexistent"),
    )


def check_outputs(result: dict[str, Any]) -> str:
    report = FairnessReport()
    json.dumps(result)
    buffer = io.StringIO()
    report.render(result, Console(file=buffer, width=120))
    page = report.html(result)
    assert "<h2>" in page and "<svg" in page and 'class="mlrt-plot"' in page
    return buffer.getvalue()


def attribute(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in result["attributes"] if a["attribute"] == name)


def test_shifted_threshold_flags_the_group_and_not_the_independent_attributes() -> None:
    frame = shifted()
    report = FairnessReport()
    result = report.build(make_input(frame, ["group", "region", "age"]))
    text = check_outputs(result)

    assert result["mode"] == "binary" and result["positive"] == "1"
    assert result["flagged"] == ["group"]
    group = attribute(result, "group")
    rows = {g["group"]: g for g in group["groups"]}
    assert set(rows) == {"A", "B", "C"}
    # the numbers are the definitions, computed by hand
    for name, g in rows.items():
        part = frame[frame["group"] == name]
        positives = part["label"] == 1
        assert g["rows"] == len(part)
        assert g["selection_rate"] == pytest.approx(part["prediction"].mean())
        assert g["tpr"] == pytest.approx(part.loc[positives, "prediction"].mean())
        assert g["fpr"] == pytest.approx(part.loc[~positives, "prediction"].mean())
        assert g["accuracy"] == pytest.approx((part["label"] == part["prediction"]).mean())
        assert g["precision"] == pytest.approx(part.loc[part["prediction"] == 1, "label"].mean())
    selection = [g["selection_rate"] for g in rows.values()]
    tpr = [g["tpr"] for g in rows.values()]
    fpr = [g["fpr"] for g in rows.values()]
    assert group["demographic_parity_difference"] == pytest.approx(max(selection) - min(selection))
    assert group["equalized_odds_difference"] == pytest.approx(max(max(tpr) - min(tpr), max(fpr) - min(fpr)))
    assert group["demographic_parity_difference"] > 0.15 and group["equalized_odds_difference"] > 0.3

    flags = {f["metric"]: f for f in group["flags"]}
    assert set(flags) == {"demographic_parity_difference", "equalized_odds_difference"}
    assert flags["demographic_parity_difference"]["worst"] == "B"
    assert flags["demographic_parity_difference"]["rate"] == "selection_rate"
    assert flags["equalized_odds_difference"]["worst"] == "B"
    assert flags["equalized_odds_difference"]["rate"] == "tpr"
    assert flags["equalized_odds_difference"]["best"] in ("A", "C")

    for name in ("region", "age"):
        other = attribute(result, name)
        assert not other["flagged"] and other["flags"] == []
        assert other["demographic_parity_difference"] < 0.05 and other["equalized_odds_difference"] < 0.05
    age = attribute(result, "age")
    assert age["binned"] and len(age["groups"]) == 4 and len(age["edges"]) == 5
    assert age["groups"][0]["group"].startswith("[18") and sum(g["rows"] for g in age["groups"]) == N

    assert report.gate_values(result) == {
        "max_demographic_parity_difference": pytest.approx(group["demographic_parity_difference"]),
        "max_equalized_odds_difference": pytest.approx(group["equalized_odds_difference"]),
    }
    [finding] = report.findings(result)
    assert finding.severity == "problem" and "'group'" in finding.text and "worst group 'B'" in finding.text
    assert "region" not in finding.text
    assert "worst group 'B'" in text

    comparable = {(c.key, c.metric): c for c in report.comparable(result)}
    assert comparable[("group group=B", "selection_rate")].higher_is_better is None
    assert comparable[("group group=B", "tpr")].higher_is_better is True
    assert comparable[("group group=B", "fpr")].higher_is_better is False
    assert comparable[("group group=B", "accuracy")].value == pytest.approx(rows["B"]["accuracy"])
    assert ("group region=north", "tpr") in comparable


def test_threshold_option_and_fair_model() -> None:
    frame = shifted()
    lenient = FairnessReport().build(make_input(frame, ["group"], {"threshold": 0.5}))
    assert lenient["flagged"] == [] and FairnessReport().findings(lenient) == []
    fair = frame.assign(prediction=(frame["x1"] + frame["x2"] > 0).astype(int))
    result = FairnessReport().build(make_input(fair, ["group", "region"]))
    assert result["flagged"] == []
    assert result["max_demographic_parity_difference"] < 0.05


def test_small_groups_are_left_out_of_the_differences() -> None:
    frame = shifted().iloc[:2000].copy()
    frame.loc[frame.index[:5], "group"] = "D"
    frame.loc[frame.index[:5], "prediction"] = 1 - frame.loc[frame.index[:5], "label"]  # all wrong
    result = FairnessReport().build(make_input(frame, ["group"], {"min_group_rows": 20}))
    rows = {g["group"]: g for g in attribute(result, "group")["groups"]}
    assert rows["D"]["rows"] == 5 and not rows["D"]["included"] and rows["D"]["accuracy"] == 0.0
    assert all(f["worst"] != "D" and f["best"] != "D" for f in attribute(result, "group")["flags"])
    check_outputs(result)


def test_multiclass_is_one_vs_rest() -> None:
    rng = np.random.default_rng(1)
    n = 9000
    label = rng.integers(0, 3, n)
    group = np.array(["A", "B"])[rng.integers(0, 2, n)]
    prediction = label.copy()
    confused = (group == "B") & (label == 2) & (rng.random(n) < 0.5)
    prediction[confused] = 0
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "split": "validation",
            "label": label,
            "prediction": prediction,
            "group": group,
            "other": np.array(["u", "v"])[rng.integers(0, 2, n)],
        }
    )
    report = FairnessReport()
    result = report.build(make_input(frame, ["group", "other"], classes=[0, 1, 2]))
    check_outputs(result)
    assert result["mode"] == "one-vs-rest" and result["positive"] is None
    assert result["flagged"] == ["group"]
    found = attribute(result, "group")
    assert found["equalized_odds_class"] == "2"
    flag = next(f for f in found["flags"] if f["metric"] == "equalized_odds_difference")
    assert flag["worst"] == "B" and flag["rate"] == "tpr" and flag["class"] == "2"
    assert flag["worst_value"] == pytest.approx(1 - confused.sum() / ((group == "B") & (label == 2)).sum())
    rows = {g["group"]: g for g in found["groups"]}
    assert rows["A"]["by_class"]["2"]["tpr"] == 1.0
    per_class = {c["class"]: c for c in found["by_class"]}
    assert per_class["1"]["equalized_odds_difference"] == 0.0
    assert ("group group=B", "tpr[2]") in {(c.key, c.metric) for c in report.comparable(result)}


def test_skips_and_missing_columns() -> None:
    frame = shifted().iloc[:1000]
    report = FairnessReport()
    none = report.build(make_input(frame, []))
    assert none == {"report": "fairness", "skipped": "no protected attributes (spec.protected is empty)"}
    regression = report.build(make_input(frame, ["group"], classes=[], task="regression"))
    assert "regression" in regression["skipped"]
    absent = report.build(make_input(frame, ["sex"]))
    assert absent["skipped"] == "protected column(s) sex not in the data"
    for result in (none, regression, absent):
        assert report.findings(result) == [] and report.gate_values(result) == {} and report.comparable(result) == []
        assert "Skipped" in report.html(result)
        buffer = io.StringIO()
        report.render(result, Console(file=buffer, width=120))
        assert "skipped" in buffer.getvalue()

    partly = report.build(make_input(frame, ["group", "sex"]))
    assert partly["missing"] == ["sex"] and [a["attribute"] for a in partly["attributes"]] == ["group"]
    assert any("sex" in f.text for f in report.findings(partly))


def test_string_labels_and_missing_values() -> None:
    frame = shifted().iloc[:3000].copy()
    frame["label"] = np.where(frame["label"] == 1, "yes", "no")
    frame["prediction"] = np.where(frame["prediction"] == 1, "yes", "no")
    frame["group"] = frame["group"].where(frame.index % 10 != 0, None)
    result = FairnessReport().build(make_input(frame, ["group"], classes=["no", "yes"]))
    assert result["positive"] == "yes"
    names = [g["group"] for g in attribute(result, "group")["groups"]]
    assert names == ["A", "B", "C", "(missing)"]
    assert attribute(result, "group")["flags"][0]["worst"] == "B"
    check_outputs(result)
