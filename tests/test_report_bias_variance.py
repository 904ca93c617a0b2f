"""The bias_variance report on real scikit-learn models fitted to generated data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.bias_variance import NO_BASELINE, NO_RETRAIN, BiasVarianceReport
from rich.console import Console
from sklearn.datasets import make_classification, make_friedman1, make_moons
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from mlrt.algorithms import resolve_values
from mlrt.reports import ReportInput

REPORT = BiasVarianceReport()
SIZES = {"train": 4000, "validation": 2000, "test": 2000}


def _splits(X, y, sizes=SIZES):
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = (X[start : start + n], y[start : start + n])
        start += n
    return out


def _frame(model, splits) -> pd.DataFrame:
    parts = []
    for name, (X, y) in splits.items():
        part = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        part.insert(0, "prediction", model.predict(X))
        part.insert(0, "label", y)
        part.insert(0, "split", name)
        part.insert(0, "id", [f"{name}-{i}" for i in range(len(y))])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _retrain_for(factory, splits, task, calls=None):
    """A real retrain: fit a fresh model on a random ``fraction`` of the train split, score train and validation."""

    def retrain(fraction: float, seed: int) -> dict[str, dict[str, float]]:
        if calls is not None:
            calls.append((fraction, seed))
        X, y = splits["train"]
        rows = np.random.default_rng(seed).permutation(len(y))[: max(2, int(len(y) * fraction))]
        model = factory().fit(X[rows], y[rows])
        scored = {"train": (X[rows], y[rows]), "validation": splits["validation"]}
        if task == "classification":
            return {name: {"accuracy": float((model.predict(a) == b).mean())} for name, (a, b) in scored.items()}
        return {
            name: {"rmse": root_mean_squared_error(b, model.predict(a)), "r2": r2_score(b, model.predict(a))}
            for name, (a, b) in scored.items()
        }

    return retrain


def _input(frame, task="classification", baseline=None, options=None, retrain=None) -> ReportInput:
    resolved, problems = resolve_values(BiasVarianceReport.options, options or {}, "bias_variance", noun="option")
    assert not problems
    features = [c for c in frame.columns if c.startswith("x")]
    classes = sorted(frame["label"].unique().tolist()) if task == "classification" else []
    return ReportInput(
        run_id="run-1",
        frame=frame,
        features=features,
        task=task,
        classes=classes,
        positive=classes[-1] if classes else None,
        spec={"baseline": baseline, "report_options": {"bias_variance": options or {}}},
        metrics={},
        options=resolved,
        output_dir=Path("/nonexistent"),
        retrain=retrain,
    )


def _fit(factory, splits, **kwargs):
    model = factory().fit(*splits["train"])
    return _input(_frame(model, splits), **kwargs)


def _check_outputs(result):
    json.dumps(result)
    console = Console(file=io.StringIO(), width=120)
    REPORT.render(result, console)
    text = console.file.getvalue()
    assert result.get("skipped") or result["regime"] in text
    page = REPORT.html(result)
    assert page.startswith("<h2>")
    if not result.get("skipped"):
        assert '<svg class="mlrt-plot" data-plot="bias_variance_errors"' in page
    return text, page


@pytest.fixture(scope="module")
def noisy():
    """20 features, 6 informative, 10% of labels randomized: a deep tree memorizes the noise."""
    X, y = make_classification(n_samples=8000, n_features=20, n_informative=6, flip_y=0.1, random_state=0)
    return _splits(X, y)


@pytest.fixture(scope="module")
def moons():
    """Two interleaved half moons: no straight line separates them, an RBF SVM does (~1% error)."""
    X, y = make_moons(n_samples=8000, noise=0.15, random_state=0)
    return _splits(X, y)


HUMAN = {"metric": "validation_accuracy", "value": 0.93, "source": "human-level"}
MOONS_HUMAN = {"metric": "validation_accuracy", "value": 0.99, "source": "human-level"}


def test_overfit_deep_tree_is_high_variance(noisy):
    result = REPORT.build(_fit(lambda: DecisionTreeClassifier(max_depth=None, random_state=0), noisy, baseline=HUMAN))

    assert result["regime"] == "high variance"
    assert result["high_variance"] and not result["high_bias"] and not result["high_dev_test_gap"]
    assert result["error_metric"] == "error_rate"
    assert result["errors"]["train"] == 0.0
    assert result["errors"]["validation"] > 0.15
    assert result["baseline"]["error"] == pytest.approx(0.07)
    assert result["avoidable_bias"] == pytest.approx(-0.07)
    assert result["variance"] == pytest.approx(result["errors"]["validation"])
    assert result["levers"][0] == "more training data"
    assert not any("bigger model" in lever for lever in result["levers"])
    assert result["split"] == "validation" and result["rows"] == 2000
    assert result["split_rows"] == {"train": 4000, "validation": 2000, "test": 2000}
    assert result["learning_curve"] is None

    [finding] = REPORT.findings(result)
    assert finding.severity == "problem"
    assert finding.text.startswith("high variance:")
    assert "more training data" in finding.text and "bigger model" not in finding.text
    assert finding.gain == pytest.approx(result["variance"])

    gates = REPORT.gate_values(result)
    assert gates["variance"] == pytest.approx(result["variance"])
    assert gates["train_error"] == 0.0 and gates["validation_error"] == result["errors"]["validation"]
    assert set(gates) == {
        "avoidable_bias",
        "variance",
        "dev_test_gap",
        "baseline_error",
        "train_error",
        "validation_error",
        "test_error",
    }
    assert {(c.key, c.higher_is_better) for c in REPORT.comparable(result)} == {
        ("error train", False),
        ("error validation", False),
        ("error test", False),
    }
    text, page = _check_outputs(result)
    assert "human-level" in text and "more training data" in text


def test_tiny_model_on_nonlinear_data_is_high_bias(moons):
    result = REPORT.build(_fit(lambda: LogisticRegression(), moons, baseline=MOONS_HUMAN))

    assert result["regime"] == "high bias"
    assert result["high_bias"] and not result["high_variance"]
    assert result["baseline"] == {
        "metric": "validation_accuracy",
        "value": 0.99,
        "source": "human-level",
        "error": pytest.approx(0.01),
        "assumed": False,
        "kind": "score",
    }
    assert result["avoidable_bias"] > 0.08
    assert abs(result["variance"]) <= 0.02
    assert result["levers"][:2] == ["bigger model (more capacity: deeper trees, more layers or units)",
                                    "more or better features"]  # fmt: skip
    assert "more training data" not in result["levers"]
    assert result["notes"] == []

    [finding] = REPORT.findings(result)
    assert finding.severity == "problem" and finding.text.startswith("high bias:")
    assert "bigger model" in finding.text and "more training data" not in finding.text
    assert finding.gain == pytest.approx(result["avoidable_bias"])
    _check_outputs(result)


def test_a_stump_is_high_bias_too(moons):
    result = REPORT.build(_fit(lambda: DecisionTreeClassifier(max_depth=1), moons, baseline=MOONS_HUMAN))
    assert result["regime"] == "high bias"


def test_a_fitting_model_is_near_baseline(moons):
    result = REPORT.build(_fit(lambda: SVC(), moons, baseline=MOONS_HUMAN))

    assert result["regime"] == "near baseline"
    assert not result["high_bias"] and not result["high_variance"] and result["levers"] == []
    [finding] = REPORT.findings(result)
    assert finding.severity == "info" and finding.text.startswith("near baseline:")
    _check_outputs(result)


def test_errors_come_from_the_frame_with_string_labels(noisy):
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(*noisy["train"])
    frame = _frame(model, noisy)
    names = {0: "no", 1: "yes"}
    frame["label"] = frame["label"].map(names)
    frame["prediction"] = frame["prediction"].map(names)
    result = REPORT.build(_input(frame, baseline=HUMAN))

    for split, (X, y) in noisy.items():
        assert result["errors"][split] == pytest.approx(float((model.predict(X) != y).mean()))


def _planted(rates: dict[str, float], n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Labels 0/1 and predictions that are wrong on exactly ``rate`` of each split's rows."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, rate in rates.items():
        labels = rng.integers(0, 2, n)
        wrong = np.zeros(n, dtype=bool)
        wrong[rng.permutation(n)[: int(rate * n)]] = True
        parts.append(
            pd.DataFrame(
                {"id": range(n), "split": split, "label": labels, "prediction": np.where(wrong, 1 - labels, labels)}
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["x0"] = rng.normal(size=len(frame))
    return frame


def test_both_high_bias_and_high_variance():
    frame = _planted({"train": 0.10, "validation": 0.20})
    result = REPORT.build(_input(frame, baseline={"metric": "validation_error", "value": 0.02, "source": None}))

    assert result["regime"] == "high bias and high variance"
    assert result["baseline"]["kind"] == "error" and result["baseline"]["error"] == 0.02
    assert result["avoidable_bias"] == pytest.approx(0.08)
    assert result["variance"] == pytest.approx(0.10)
    assert result["levers"][0].startswith("bigger model") and "more training data" in result["levers"]
    assert result["dev_test_gap"] is None and "test_error" not in REPORT.gate_values(result)
    [finding] = REPORT.findings(result)
    assert finding.gain == pytest.approx(0.10)
    assert "bigger model" in finding.text and "more training data" in finding.text
    _check_outputs(result)


def test_tolerance_decides_what_is_high():
    frame = _planted({"train": 0.05, "validation": 0.08})
    loose = REPORT.build(_input(frame, options={"tolerance": 0.06}))
    tight = REPORT.build(_input(frame, options={"tolerance": 0.02}))
    assert loose["regime"] == "near baseline"
    assert tight["regime"] == "high bias and high variance"


def test_test_error_above_validation_is_a_separate_finding():
    frame = _planted({"train": 0.05, "validation": 0.05, "test": 0.12})
    result = REPORT.build(_input(frame, baseline={"metric": "accuracy", "value": 0.95, "source": "old system"}))

    assert result["regime"] == "near baseline"
    assert result["high_dev_test_gap"] and result["dev_test_gap"] == pytest.approx(0.07)
    main, gap = REPORT.findings(result)
    assert main.severity == "info"
    assert gap.severity == "warning" and "bigger validation set" in gap.text and gap.gain == pytest.approx(0.07)


def test_without_a_baseline_zero_error_is_assumed(moons):
    result = REPORT.build(_fit(lambda: SVC(), moons))

    assert result["baseline"]["assumed"] and result["baseline"]["error"] == 0.0
    assert result["baseline"]["metric"] is None
    assert NO_BASELINE in result["notes"]
    assert result["avoidable_bias"] == pytest.approx(result["errors"]["train"])
    assert result["regime"] == "near baseline"
    text, page = _check_outputs(result)
    assert NO_BASELINE in text and NO_BASELINE in page


def test_without_a_baseline_the_option_gives_it(noisy):
    stump = _fit(lambda: DecisionTreeClassifier(max_depth=1), noisy, options={"baseline_error": 0.25})
    result = REPORT.build(stump)
    assert result["baseline"]["error"] == 0.25 and result["baseline"]["assumed"]
    assert NO_BASELINE not in result["notes"]
    assert any("baseline_error" in note for note in result["notes"])
    assert not result["high_bias"]


def test_baseline_metric_kinds():
    frame = _planted({"train": 0.05, "validation": 0.05})
    auc = REPORT.build(_input(frame, baseline={"metric": "validation_roc_auc", "value": 0.97, "source": None}))
    assert auc["baseline"]["error"] == pytest.approx(0.03)
    assert any("not an accuracy or error rate" in note for note in auc["notes"])
    odd = REPORT.build(_input(frame, baseline={"metric": "validation_widgets", "value": 3.0, "source": None}))
    assert odd["baseline"]["assumed"] and odd["baseline"]["error"] == 0.0
    assert any("neither a score" in note for note in odd["notes"])


def test_learning_curve_of_an_overfit_tree_says_more_data_helps(noisy):
    calls = []
    factory = lambda: DecisionTreeClassifier(max_depth=None, random_state=0)  # noqa: E731
    retrain = _retrain_for(factory, noisy, "classification", calls)
    result = REPORT.build(_fit(factory, noisy, baseline=HUMAN, options={"learning_curve": True}, retrain=retrain))

    curve = result["learning_curve"]
    assert curve["fractions"] == [0.1, 0.178, 0.316, 0.562, 1.0]
    assert calls == [(fraction, 0) for fraction in curve["fractions"]]
    assert curve["train_error"] == [0.0] * 5
    assert curve["validation_error"][0] > curve["validation_error"][-1]
    # falling by ~0.012 per doubling: more than tolerance / 4, less than the tolerance itself
    assert -0.02 < curve["slope_per_doubling"] < -0.005
    assert curve["more_data_helps"] and not curve["converged"]
    assert "more data is likely to help" in curve["interpretation"]
    [finding] = REPORT.findings(result)
    assert "more data is likely to help" in finding.text
    text, page = _check_outputs(result)
    assert '<svg class="mlrt-plot" data-plot="bias_variance_learning_curve"' in page
    assert "learning curve" in text


def test_learning_curve_of_a_tiny_model_has_converged_above_the_baseline(moons):
    factory = LogisticRegression
    calls = []
    retrain = _retrain_for(factory, moons, "classification", calls)
    options = {"learning_curve": True, "curve_points": 3, "seed": 5}
    result = REPORT.build(_fit(factory, moons, baseline=MOONS_HUMAN, options=options, retrain=retrain))

    curve = result["learning_curve"]
    assert curve["fractions"] == [0.1, 0.316, 1.0]
    assert calls == [(0.1, 5), (0.316, 5), (1.0, 5)] and curve["seed"] == 5
    assert curve["converged"] and not curve["more_data_helps"]
    assert "more data won't help" in curve["interpretation"]
    assert min(curve["train_error"]) > 0.1


def test_learning_curve_needs_retrain(moons):
    asked = REPORT.build(_fit(LogisticRegression, moons, options={"learning_curve": True}))
    assert asked["learning_curve"] == {"note": NO_RETRAIN}
    text, page = _check_outputs(asked)
    assert "algorithm jobs" in text and "algorithm jobs" in page and "bias_variance_learning_curve" not in page

    not_asked = REPORT.build(_fit(LogisticRegression, moons, retrain=lambda fraction, seed: 1 / 0))
    assert not_asked["learning_curve"] is None


def test_a_failing_retrain_keeps_the_report(moons):
    def broken(fraction, seed):
        raise RuntimeError("out of memory")

    result = REPORT.build(_fit(LogisticRegression, moons, options={"learning_curve": True}, retrain=broken))
    assert "out of memory" in result["learning_curve"]["note"]
    assert result["regime"] == "high bias"


@pytest.fixture(scope="module")
def friedman():
    X, y = make_friedman1(n_samples=8000, n_features=8, noise=1.0, random_state=0)
    return _splits(X, y)


NOISE_RMSE = {"metric": "validation_rmse", "value": 1.0, "source": "noise level"}


def test_regression_deep_tree_is_high_variance_in_rmse(friedman):
    factory = lambda: DecisionTreeRegressor(random_state=0)  # noqa: E731
    model = factory().fit(*friedman["train"])
    result = REPORT.build(
        _input(_frame(model, friedman), task="regression", baseline=NOISE_RMSE, options={"tolerance": 0.2})
    )

    assert result["error_metric"] == "rmse"
    assert result["regime"] == "high variance"
    for split, (X, y) in friedman.items():
        assert result["errors"][split] == pytest.approx(root_mean_squared_error(y, model.predict(X)))
    assert result["errors"]["train"] == 0.0
    assert result["baseline"]["error"] == 1.0
    assert len(result["notes"]) == 1 and result["notes"][0].startswith("the train error is below the baseline")
    _check_outputs(result)


def test_regression_linear_model_is_high_bias_with_a_learning_curve(friedman):
    retrain = _retrain_for(LinearRegression, friedman, "regression")
    options = {"tolerance": 0.2, "learning_curve": True}
    result = REPORT.build(
        _fit(LinearRegression, friedman, task="regression", baseline=NOISE_RMSE, options=options, retrain=retrain)
    )

    assert result["regime"] == "high bias"
    assert result["avoidable_bias"] > 1.0 and abs(result["variance"]) < 0.2
    curve = result["learning_curve"]
    assert curve["converged"] and "more data won't help" in curve["interpretation"]
    assert curve["train_error"][-1] == pytest.approx(result["errors"]["train"])
    _check_outputs(result)


def test_regression_error_follows_the_baseline_metric(friedman):
    model = LinearRegression().fit(*friedman["train"])
    frame = _frame(model, friedman)
    X, y = friedman["validation"]

    mae = REPORT.build(_input(frame, task="regression", baseline={"metric": "validation_mae", "value": 0.8}))
    assert mae["error_metric"] == "mae"
    assert mae["errors"]["validation"] == pytest.approx(mean_absolute_error(y, model.predict(X)))

    r2 = REPORT.build(_input(frame, task="regression", baseline={"metric": "validation_r2", "value": 0.95}))
    assert r2["error_metric"] == "1-r2"
    assert r2["baseline"]["error"] == pytest.approx(0.05)
    assert r2["errors"]["validation"] == pytest.approx(1 - r2_score(y, model.predict(X)))
    assert r2["regime"] == "high bias" and r2["notes"] == []

    forced = REPORT.build(
        _input(
            frame,
            task="regression",
            baseline={"metric": "validation_mae", "value": 0.8},
            options={"regression_error": "rmse"},
        )
    )
    assert forced["error_metric"] == "rmse"
    assert any("set regression_error" in note for note in forced["notes"])


def test_without_train_rows_it_is_skipped_and_without_a_dev_split_variance_is_unknown():
    skipped = REPORT.build(_input(_planted({"validation": 0.1})))
    assert skipped["report"] == "bias_variance" and "train" in skipped["skipped"]
    assert REPORT.findings(skipped) == [] and REPORT.gate_values(skipped) == {} and REPORT.comparable(skipped) == []
    _check_outputs(skipped)

    train_only = REPORT.build(_input(_planted({"train": 0.1})))
    assert train_only["variance"] is None and train_only["regime"] == "high bias"
    assert "variance" not in REPORT.gate_values(train_only)
    _check_outputs(train_only)

    test_as_dev = REPORT.build(_input(_planted({"train": 0.0, "test": 0.1})))
    assert test_as_dev["split"] == "test" and test_as_dev["variance"] == pytest.approx(0.1)
    assert test_as_dev["regime"] == "high variance" and test_as_dev["dev_test_gap"] is None
