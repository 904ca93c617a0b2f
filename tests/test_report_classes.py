"""The confusion, per_class, skew and business reports on generated data with planted faults."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.business import BusinessReport
from mlrt_reports.classes import ConfusionReport, PerClassReport
from mlrt_reports.skew import SkewReport
from rich.console import Console
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from mlrt import business
from mlrt.algorithms import resolve_values
from mlrt.reports import Report, ReportInput, option_schema


def make_input(
    report: Report,
    frame: pd.DataFrame,
    *,
    task: str = "classification",
    classes: list[Any] | None = None,
    spec: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    options: dict[str, Any] | None = None,
    tmp_path: Path = Path("."),
) -> ReportInput:
    resolved, problems = resolve_values(option_schema(report), options or {}, report.name, noun="option")
    assert not problems
    if classes is None:
        classes = sorted(frame["label"].dropna().unique().tolist()) if task == "classification" else []
    return ReportInput(
        run_id="run-1",
        frame=frame,
        features=[c for c in frame.columns if c.startswith("x")],
        task=task,
        classes=classes,
        positive=classes[-1] if len(classes) == 2 else None,
        spec={"business_metrics": [], "report_options": {}, **(spec or {})},
        metrics=metrics or {},
        options=resolved,
        output_dir=tmp_path,
    )


def frame_of(labels: Any, predictions: Any, split: str = "validation", **extra: Any) -> pd.DataFrame:
    labels = np.asarray(labels)
    frame = pd.DataFrame(
        {"id": np.arange(len(labels)), "split": split, "label": labels, "prediction": np.asarray(predictions)}
    )
    for name, values in extra.items():
        frame[name] = values
    frame["x0"] = np.random.default_rng(0).normal(size=len(labels))
    return frame


def check_outputs(report: Report, result: dict[str, Any]) -> str:
    """The result round-trips through JSON, renders, and its HTML has a plot; returns the rendered text."""
    assert json.loads(json.dumps(result)) == result
    buffer = io.StringIO()
    report.render(result, Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert text.strip()
    page = report.html(result)
    assert page.startswith("<h2>")
    if "skipped" not in result:
        assert '<svg class="mlrt-plot"' in page
    return text


def noisy_predictions(labels: np.ndarray, classes: list[Any], right: float, rng: np.random.Generator) -> np.ndarray:
    """Each prediction is the label with probability ``right``, else a random other class."""
    predictions = labels.copy()
    wrong = rng.random(len(labels)) >= right
    for i in np.flatnonzero(wrong):
        others = [c for c in classes if c != labels[i]]
        predictions[i] = others[rng.integers(len(others))]
    return predictions


# ---------------------------------------------------------------------------------------------- confusion


def test_confusion_counts_match_sklearn_and_the_planted_confusion_leads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    classes = ["cat", "dog", "fox", "owl"]
    labels = rng.choice(classes, size=4000)
    predictions = noisy_predictions(labels, classes, 0.95, rng)
    # Planted: 40% of the foxes are called dogs.
    foxes = np.flatnonzero(labels == "fox")
    predictions[foxes[: int(0.4 * len(foxes))]] = "dog"
    report = ConfusionReport()
    result = report.build(make_input(report, frame_of(labels, predictions), classes=classes, tmp_path=tmp_path))

    assert result["classes"] == classes
    assert result["matrix"] == confusion_matrix(labels, predictions, labels=classes).tolist()
    assert result["rows"] == 4000 and result["n_classes"] == 4
    assert result["accuracy"] == pytest.approx(np.mean(labels == predictions))
    expected_rates = confusion_matrix(labels, predictions, labels=classes, normalize="true")
    np.testing.assert_allclose(result["rates"], expected_rates, atol=1e-6)
    top = result["top_confusions"][0]
    assert (top["actual"], top["predicted"]) == ("fox", "dog")
    errors = int(np.sum(labels != predictions))
    dog_for_fox = int(np.sum((labels == "fox") & (predictions == "dog")))
    assert top["count"] == dog_for_fox
    assert top["share_of_errors"] == pytest.approx(dog_for_fox / errors)
    assert top["rate"] == pytest.approx(dog_for_fox / len(foxes))
    counts = [c["count"] for c in result["top_confusions"]]
    assert counts == sorted(counts, reverse=True)

    findings = report.findings(result)
    assert [f.text.split(":")[0] for f in findings] == ["fox predicted as dog"]
    assert findings[0].gain == pytest.approx(dog_for_fox / 4000)
    gates = report.gate_values(result)
    assert gates["accuracy"] == pytest.approx(result["accuracy"])
    assert gates["top_confusion_share"] == pytest.approx(top["share_of_errors"])
    [comparable] = report.comparable(result)
    assert (comparable.key, comparable.metric, comparable.higher_is_better) == ("overall", "accuracy", True)
    text = check_outputs(report, result)
    assert "fox -> dog" in text
    assert 'data-plot="confusion-matrix"' in report.html(result)


def test_confusion_reads_float_labels_as_their_integer_classes(tmp_path: Path) -> None:
    # An unlabelled channel in the frame turns integer labels into floats: 1.0 is still class "1".
    labels = np.array([0, 0, 1, 1, 2, 2, np.nan, np.nan])
    predictions = np.array([0, 1, 1, 1, 2, 0, 2, 2])
    frame = frame_of(labels, predictions)
    frame.loc[6:, "split"] = "test"
    report = ConfusionReport()
    result = report.build(make_input(report, frame, classes=[0, 1, 2], tmp_path=tmp_path))
    assert result["classes"] == ["0", "1", "2"]
    assert result["rows"] == 6
    assert result["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)


def test_confusion_keeps_the_classes_in_most_errors_when_there_are_many(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    classes = list(range(12))
    labels = rng.choice(classes, size=3000)
    predictions = labels.copy()
    predictions[(labels == 7) & (rng.random(3000) < 0.5)] = 9  # the only errors
    report = ConfusionReport()
    result = report.build(
        make_input(report, frame_of(labels, predictions), options={"max_classes": 4}, tmp_path=tmp_path)
    )
    assert result["truncated"] and result["n_classes"] == 12
    assert len(result["classes"]) == 4 and {"7", "9"} <= set(result["classes"])
    assert [(c["actual"], c["predicted"]) for c in result["top_confusions"]] == [("7", "9")]
    check_outputs(report, result)


def test_classification_reports_skip_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(size=200)
    frame = frame_of(labels, labels + rng.normal(scale=0.1, size=200))
    for report in (ConfusionReport(), PerClassReport(), SkewReport()):
        result = report.build(make_input(report, frame, task="regression", tmp_path=tmp_path))
        assert result["report"] == report.name and "regression" in result["skipped"]
        assert report.findings(result) == [] and report.gate_values(result) == {} and report.comparable(result) == []
        assert "skipped" in check_outputs(report, result)
        assert "Skipped" in report.html(result)


# ---------------------------------------------------------------------------------------------- per class


def five_classes(weak: int | None, rng: np.random.Generator, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    classes = [0, 1, 2, 3, 4]
    labels = rng.choice(classes, size=n)
    predictions = noisy_predictions(labels, classes, 0.92, rng)
    if weak is not None:
        # Planted: 70% of class `weak` is predicted as class 1.
        rows = np.flatnonzero(labels == weak)
        predictions[rows[: int(0.7 * len(rows))]] = 1
    return labels, predictions


def test_per_class_flags_exactly_the_planted_weak_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    labels, predictions = five_classes(3, rng)
    report = PerClassReport()
    result = report.build(make_input(report, frame_of(labels, predictions), tmp_path=tmp_path))

    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=[0, 1, 2, 3, 4])
    assert [c["class"] for c in result["classes"]] == ["0", "1", "2", "3", "4"]
    np.testing.assert_allclose([c["precision"] for c in result["classes"]], precision)
    np.testing.assert_allclose([c["recall"] for c in result["classes"]], recall)
    np.testing.assert_allclose([c["f1"] for c in result["classes"]], f1)
    assert [c["support"] for c in result["classes"]] == support.tolist()
    assert result["macro_recall"] == pytest.approx(recall.mean())
    assert result["macro_f1"] == pytest.approx(f1.mean())

    assert result["flagged"] == ["3"]
    assert [c["class"] for c in result["classes"] if c["flagged"]] == ["3"]
    weak = result["classes"][3]
    assert weak["confused_with"] == "1"
    [finding] = report.findings(result)
    assert finding.text.startswith(
        f"class 3: recall {recall[3]:.2f} vs {recall.mean():.2f} average over 5 classes (support {support[3]})"
    )
    assert finding.gain == pytest.approx(support[3] / 5000 * (recall.mean() - recall[3]))
    gates = report.gate_values(result)
    assert gates["min_recall"] == pytest.approx(recall.min()) and gates["min_f1"] == pytest.approx(f1.min())
    assert gates["macro_f1"] == pytest.approx(f1.mean()) and gates["flagged"] == 1.0
    comparables = report.comparable(result)
    assert len(comparables) == 15
    assert {(c.key, c.metric) for c in comparables} >= {("class 3", "recall"), ("class 0", "f1")}
    text = check_outputs(report, result)
    assert "flagged (recall < average - 0.15): 3" in text
    page = report.html(result)
    assert 'data-plot="per-class-recall"' in page and '<tr class="flagged"><td>3</td>' in page


def test_per_class_flags_nothing_when_the_classes_are_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels, predictions = five_classes(None, rng)
    report = PerClassReport()
    result = report.build(make_input(report, frame_of(labels, predictions), tmp_path=tmp_path))
    assert result["flagged"] == [] and report.findings(result) == []
    # The gap is an option: a gap of 0 flags whatever is below average.
    result = report.build(make_input(report, frame_of(labels, predictions), options={"recall_gap": 0.0}))
    assert result["flagged"] and len(result["flagged"]) < 5


def test_per_class_min_support_keeps_tiny_classes_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    labels, predictions = five_classes(None, rng, n=2000)
    labels = np.concatenate([labels, [9, 9, 9]]).astype(int)
    predictions = np.concatenate([predictions, [0, 1, 9]]).astype(int)
    report = PerClassReport()
    frame = frame_of(labels, predictions)
    assert report.build(make_input(report, frame, tmp_path=tmp_path))["flagged"] == ["9"]
    assert report.build(make_input(report, frame, options={"min_support": 5}, tmp_path=tmp_path))["flagged"] == []


# ---------------------------------------------------------------------------------------------- skew


def test_skew_warns_on_a_rare_class_that_the_model_ignores(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 10000
    labels = (rng.random(n) < 0.02).astype(int)
    # Planted: an "always says no disease" model: it finds 10% of the positives.
    predictions = np.zeros(n, dtype=int)
    positives = np.flatnonzero(labels == 1)
    predictions[positives[: len(positives) // 10]] = 1
    score = np.clip(0.1 * labels + rng.random(n) * 0.5, 0, 1)
    frame = pd.concat(
        [
            frame_of(labels, predictions, score_0=1 - score, score_1=score),
            frame_of((rng.random(n) < 0.02).astype(int), np.zeros(n, dtype=int), split="train"),
        ],
        ignore_index=True,
    )
    report = SkewReport()
    result = report.build(make_input(report, frame, classes=[0, 1], tmp_path=tmp_path))

    assert result["split"] == "validation" and result["rows"] == n
    assert result["majority_class"] == "0" and result["minority_class"] == "1"
    assert result["majority_baseline"] == pytest.approx(np.mean(labels == 0))
    assert result["minority_share"] == pytest.approx(np.mean(labels == 1))
    assert result["accuracy"] == pytest.approx(np.mean(labels == predictions))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert result["minority_pr_auc"] == pytest.approx(average_precision_score(labels == 1, score))
    assert result["classes"][1]["train_share"] == pytest.approx(np.mean(frame[frame.split == "train"].label == 1))
    assert [w["kind"] for w in result["warnings"]] == ["majority_baseline", "rare_class"]

    findings = report.findings(result)
    assert len(findings) == 2
    assert "majority-class baseline" in findings[0].text and "always predicting 0" in findings[0].text
    assert "class 1 is only" in findings[1].text and "accuracy is misleading" in findings[1].text
    assert "PR-AUC" in findings[1].text
    missed = np.sum((labels == 1) & (predictions == 0)) / n
    assert findings[1].gain == pytest.approx(missed)
    gates = report.gate_values(result)
    assert gates["accuracy_over_majority"] == pytest.approx(result["accuracy"] - result["majority_baseline"])
    assert gates["accuracy_over_majority"] < 0.02
    assert gates["balanced_accuracy"] < 0.6 and gates["minority_pr_auc"] == result["minority_pr_auc"]
    check_outputs(report, result)
    assert 'data-plot="class-shares"' in report.html(result)


def test_skew_is_quiet_on_balanced_classes_and_a_good_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    classes = ["a", "b", "c"]
    labels = rng.choice(classes, size=6000)
    predictions = noisy_predictions(labels, classes, 0.9, rng)
    report = SkewReport()
    result = report.build(make_input(report, frame_of(labels, predictions), classes=classes, tmp_path=tmp_path))
    assert result["warnings"] == [] and report.findings(result) == []
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert result["minority_pr_auc"] is None and "minority_pr_auc" not in report.gate_values(result)
    assert result["train_split"] is None
    check_outputs(report, result)


def test_skew_calls_a_constant_model_a_problem(tmp_path: Path) -> None:
    labels = np.array([0] * 90 + [1] * 10)
    report = SkewReport()
    result = report.build(make_input(report, frame_of(labels, np.zeros(100, dtype=int)), tmp_path=tmp_path))
    [baseline] = [w for w in result["warnings"] if w["kind"] == "majority_baseline"]
    assert baseline["severity"] == "problem" and "does not beat" in baseline["text"]
    # 10% is not rare by default, but is with rare_share 0.2.
    assert [w["kind"] for w in result["warnings"]] == ["majority_baseline"]
    result = report.build(
        make_input(report, frame_of(labels, np.zeros(100, dtype=int)), options={"rare_share": 0.2}, tmp_path=tmp_path)
    )
    assert [w["kind"] for w in result["warnings"]] == ["majority_baseline", "rare_class"]


# ---------------------------------------------------------------------------------------------- business

COST = {"name": "cost", "cost_matrix": {"1": {"0": 50.0}, "0": {"1": 1.0}}}


def test_business_cost_matrix_matches_a_hand_computation(tmp_path: Path) -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    predictions = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    train_labels = np.array([0, 0, 0, 1])
    frame = pd.concat(
        [frame_of(train_labels, train_labels, split="train"), frame_of(labels, predictions)], ignore_index=True
    )
    report = BusinessReport()
    spec = {"business_metrics": [COST, {"name": "score", "weights": {"accuracy": 1.0, "recall": 2.0}}]}
    result = report.build(make_input(report, frame, classes=[0, 1], spec=spec, tmp_path=tmp_path))

    assert list(result["splits"]) == ["train", "validation"]
    detail = result["costs"]["cost"]["validation"]
    # Two missed positives at 50 and one false alarm at 1.
    assert detail["total_cost"] == 101.0 and detail["cost_per_example"] == pytest.approx(10.1)
    assert result["splits"]["validation"]["business"]["cost"] == pytest.approx(10.1)
    assert business.evaluate([COST], labels, predictions, {})["cost"] == pytest.approx(10.1)
    assert [(p["actual"], p["predicted"], p["count"], p["total"]) for p in detail["by_pair"]] == [
        ("1", "0", 2, 100.0),
        ("0", "1", 1, 1.0),
    ]
    assert detail["by_pair"][0]["share_of_cost"] == pytest.approx(100 / 101)
    policies = detail["policies"]
    # The majority class of train is 0: always predicting it misses all three positives.
    assert policies["majority"] == {"predict": "0", "total_cost": 150.0, "cost_per_example": 15.0}
    assert policies["best_constant"] == {"predict": "1", "total_cost": 7.0, "cost_per_example": 0.7}
    assert policies["perfect"]["total_cost"] == 0.0
    assert detail["savings_vs_majority"] == pytest.approx(15.0 - 10.1)
    assert result["costs"]["cost"]["train"]["total_cost"] == 0.0

    # The weighted metric uses the split's ML metrics: accuracy 0.7, recall of class 1 = 1/3.
    assert result["splits"]["validation"]["ml_metrics"]["accuracy"] == pytest.approx(0.7)
    assert result["splits"]["validation"]["business"]["score"] == pytest.approx(0.7 + 2 / 3)
    assert [d["higher_is_better"] for d in result["definitions"]] == [False, True]

    gates = report.gate_values(result)
    assert gates == {
        "cost": pytest.approx(10.1),
        "score": pytest.approx(0.7 + 2 / 3),
        "cost_savings": pytest.approx(4.9),
    }
    comparables = {c.key: c for c in report.comparable(result)}
    assert comparables["cost"].higher_is_better is False and comparables["cost"].value == pytest.approx(10.1)
    assert comparables["score"].higher_is_better is True
    findings = report.findings(result)
    # Cheaper than the majority policy, but not than always predicting 1.
    assert findings[0].severity == "warning"
    assert "no less than always predicting 1 (0.7; always 0: 15)" in findings[0].text
    assert "1 predicted as 0" in findings[0].text and findings[0].gain == pytest.approx(3 / 10)
    assert findings[1].severity == "info" and findings[1].text.startswith("score = 1.367 on validation (train 3)")
    text = check_outputs(report, result)
    assert "best constant" in text
    page = report.html(result)
    assert 'data-plot="business-cost-pairs"' in page and 'data-plot="business-score"' in page


def test_business_says_when_the_model_is_no_better_than_the_majority_policy(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    labels = (rng.random(2000) < 0.1).astype(int)
    predictions = np.zeros(2000, dtype=int)
    predictions[rng.random(2000) < 0.3] = 1  # random alarms: costs more than saying "0" always
    predictions[labels == 1] = np.where(rng.random(int(labels.sum())) < 0.1, 1, 0)
    report = BusinessReport()
    spec = {"business_metrics": [{"name": "cost", "cost_matrix": {"1": {"0": 5.0}, "0": {"1": 2.0}}}]}
    result = report.build(make_input(report, frame_of(labels, predictions), spec=spec, tmp_path=tmp_path))
    expected = business.evaluate(spec["business_metrics"], labels, predictions, {})["cost"]
    assert result["splits"]["validation"]["business"]["cost"] == pytest.approx(expected)
    [finding] = report.findings(result)
    assert finding.severity == "problem" and "no less than always predicting 0" in finding.text
    assert report.gate_values(result)["cost_savings"] < 0

    # A good model: better than every constant policy; the summary line is informational.
    good = labels.copy()
    good[:20] = 1 - good[:20]
    result = report.build(make_input(report, frame_of(labels, good), spec=spec, tmp_path=tmp_path))
    [finding] = report.findings(result)
    assert finding.severity == "info" and "always predicting 0 would cost" in finding.text
    assert report.gate_values(result)["cost_savings"] > 0


def test_business_string_labels_regression_and_skips(tmp_path: Path) -> None:
    report = BusinessReport()
    frame = frame_of(["yes", "no", "no", "yes"], ["no", "no", "yes", "yes"])
    spec = {"business_metrics": [{"name": "cost", "cost_matrix": {"yes": {"no": 3}, "no": {"yes": 1, "no": 0.5}}}]}
    result = report.build(make_input(report, frame, spec=spec, tmp_path=tmp_path))
    detail = result["costs"]["cost"]["validation"]
    assert detail["total_cost"] == 3 + 0.5 + 1 and detail["policies"]["perfect"]["total_cost"] == 0.5 * 2
    check_outputs(report, result)

    result = report.build(make_input(report, frame, tmp_path=tmp_path))
    assert result == {"report": "business", "skipped": "no business_metrics in the spec"}
    assert report.findings(result) == [] and report.gate_values(result) == {}
    check_outputs(report, result)

    rng = np.random.default_rng(10)
    labels = rng.normal(size=500)
    predictions = labels + rng.normal(scale=0.5, size=500)
    spec = {
        "business_metrics": [
            {"name": "error", "weights": {"rmse": -1.0, "latency": -0.1}},
            {"name": "cost", "cost_matrix": {"1": {"0": 1.0}}},
        ]
    }
    frame = frame_of(labels, predictions)
    result = report.build(make_input(report, frame, task="regression", spec=spec, metrics={"validation_latency": 3.0}))
    rmse = float(np.sqrt(np.mean((labels - predictions) ** 2)))
    assert result["splits"]["validation"]["ml_metrics"]["rmse"] == pytest.approx(rmse)
    assert result["splits"]["validation"]["business"]["error"] == pytest.approx(-rmse - 0.3)
    assert result["splits"]["validation"]["business"]["cost"] is None
    assert result["problems"] == ["cost on validation: a cost matrix needs class labels (regression)"]
    assert result["definitions"][0]["higher_is_better"] is None  # "latency" has no known direction
    assert report.gate_values(result) == {"error": pytest.approx(-rmse - 0.3)}
    check_outputs(report, result)

    spec = {"business_metrics": [{"name": "odd", "weights": {"nonsense": 1.0}}]}
    result = report.build(make_input(report, frame, task="regression", spec=spec))
    assert result["splits"]["validation"]["business"]["odd"] is None
    assert "nonsense" in result["problems"][0]


@pytest.mark.parametrize("n_classes", [2, 4])
def test_business_ml_metrics_match_the_workers(n_classes: int, tmp_path: Path) -> None:
    from mlrt import evaluation

    rng = np.random.default_rng(11)
    classes = list(range(n_classes))
    labels = rng.choice(classes, size=3000, p=np.linspace(1, 2, n_classes) / np.linspace(1, 2, n_classes).sum())
    predictions = noisy_predictions(labels, classes, 0.7, rng)
    scores = rng.random((3000, n_classes)) + 0.5 * np.eye(n_classes)[labels]
    scores /= scores.sum(axis=1, keepdims=True)
    frame = frame_of(labels, predictions, **{f"score_{c}": scores[:, c] for c in classes})
    report = BusinessReport()
    spec = {"business_metrics": [{"name": "mix", "weights": {"roc_auc": 1.0, "f1": 0.5, "precision": -0.25}}]}
    result = report.build(make_input(report, frame, classes=classes, spec=spec, tmp_path=tmp_path))
    model = type("Model", (), {"classes_": np.array(classes)})()
    expected = evaluation._classification_metrics(model, labels, predictions, scores)
    ml = result["splits"]["validation"]["ml_metrics"]
    assert ml == pytest.approx(expected)
    assert result["splits"]["validation"]["business"]["mix"] == pytest.approx(
        expected["roc_auc"] + 0.5 * expected["f1"] - 0.25 * expected["precision"]
    )
    assert result["definitions"][0]["higher_is_better"] is None  # a negative weight on precision
    # The run's recorded ranking metrics are used as they are (not recomputed: a sort per class).
    result = report.build(
        make_input(report, frame, classes=classes, spec=spec, metrics={"validation_roc_auc": 0.5}, tmp_path=tmp_path)
    )
    assert result["splits"]["validation"]["ml_metrics"]["roc_auc"] == 0.5
    assert result["splits"]["validation"]["business"]["mix"] == pytest.approx(
        0.5 + 0.5 * expected["f1"] - 0.25 * expected["precision"]
    )
    # ... and without a weight on them, nor recorded ones, they are left out.
    spec = {"business_metrics": [{"name": "acc", "weights": {"accuracy": 1.0}}]}
    result = report.build(make_input(report, frame, classes=classes, spec=spec, tmp_path=tmp_path))
    assert set(result["splits"]["validation"]["ml_metrics"]) == {"accuracy", "precision", "recall", "f1"}
