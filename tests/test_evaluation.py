"""mlrt.evaluation: metrics agree with sklearn.metrics, and the predictions frame has the documented shape."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from mlrt.algorithms import Dataset
from mlrt.evaluation import evaluate, metrics_for, predictions_frame


def split(loader, labels=lambda y: y) -> tuple[Dataset, Dataset]:
    """A sklearn dataset as (train, test) channels; ``labels`` maps the target."""
    features, target = loader(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(features, labels(target), test_size=0.3, random_state=0)
    return tuple(
        Dataset(name, x.reset_index(drop=True), y.reset_index(drop=True), pd.Series(range(len(x))) + offset)
        for name, x, y, offset in (("train", x_train, y_train, 0), ("test", x_test, y_test, 1000))
    )


@pytest.fixture(scope="module")
def multiclass():
    train, test = split(load_iris)
    return LogisticRegression(max_iter=1000).fit(train.features, train.labels), test


@pytest.fixture(scope="module")
def binary():
    # String labels: the positive class is the larger one, "malignant".
    train, test = split(load_breast_cancer, lambda y: y.map({0: "malignant", 1: "benign"}))
    model = make_pipeline(StandardScaler(), LogisticRegression())
    return model.fit(train.features, train.labels), test


def test_multiclass_metrics_match_sklearn(multiclass):
    model, test = multiclass
    y, predicted, scores = test.labels, model.predict(test.features), model.predict_proba(test.features)
    assert metrics_for("classification", model, test) == pytest.approx(
        {
            "accuracy": metrics.accuracy_score(y, predicted),
            "precision": metrics.precision_score(y, predicted, average="macro"),
            "recall": metrics.recall_score(y, predicted, average="macro"),
            "f1": metrics.f1_score(y, predicted, average="macro"),
            "roc_auc": metrics.roc_auc_score(y, scores, multi_class="ovr", average="macro"),
            "log_loss": metrics.log_loss(y, scores, labels=model.classes_),
        }
    )


def test_binary_metrics_use_the_larger_label_as_positive(binary):
    model, test = binary
    assert list(model.classes_) == ["benign", "malignant"]
    y, predicted, scores = test.labels, model.predict(test.features), model.predict_proba(test.features)
    result = metrics_for("classification", model, test)
    assert result == pytest.approx(
        {
            "accuracy": metrics.accuracy_score(y, predicted),
            "precision": metrics.precision_score(y, predicted, pos_label="malignant"),
            "recall": metrics.recall_score(y, predicted, pos_label="malignant"),
            "f1": metrics.f1_score(y, predicted, pos_label="malignant"),
            "roc_auc": metrics.roc_auc_score(y == "malignant", scores[:, 1]),
            "log_loss": metrics.log_loss(y, scores),
        }
    )
    assert all(type(value) is float for value in result.values())
    assert result["precision"] != pytest.approx(metrics.precision_score(y, predicted, pos_label="benign"))


def test_regression_metrics_match_sklearn():
    train, test = split(load_diabetes)
    model = Ridge().fit(train.features, train.labels)
    predicted = model.predict(test.features)
    result = metrics_for("regression", model, test)
    assert result == pytest.approx(
        {
            "rmse": math.sqrt(metrics.mean_squared_error(test.labels, predicted)),
            "mae": metrics.mean_absolute_error(test.labels, predicted),
            "r2": metrics.r2_score(test.labels, predicted),
        }
    )
    assert all(type(value) is float for value in result.values())


def test_roc_auc_covers_present_classes_and_needs_two(multiclass):
    model, test = multiclass
    two = test.labels != 2
    subset = Dataset("test", test.features[two], test.labels[two], test.ids[two])
    scores = model.predict_proba(subset.features)
    expected = np.mean([metrics.roc_auc_score(subset.labels == c, scores[:, c]) for c in (0, 1)])
    assert metrics_for("classification", model, subset)["roc_auc"] == pytest.approx(expected)

    one = test.labels == 1
    single = Dataset("test", test.features[one], test.labels[one], test.ids[one])
    result = metrics_for("classification", model, single)
    assert "roc_auc" not in result
    assert result["log_loss"] == pytest.approx(
        metrics.log_loss(single.labels, model.predict_proba(single.features), labels=[0, 1, 2])
    )


def test_models_without_probabilities_get_no_probability_metrics():
    train, test = split(load_breast_cancer)
    top = train.features.max()  # LinearSVC converges only on scaled features
    model = LinearSVC().fit(train.features / top, train.labels)
    test = Dataset("test", test.features / top, test.labels, test.ids)
    assert set(metrics_for("classification", model, test)) == {"accuracy", "precision", "recall", "f1"}
    assert list(predictions_frame("classification", model, test).columns) == ["id", "split", "label", "prediction"]


def test_unlabeled_channels_have_no_metrics_and_nan_labels(multiclass):
    model, test = multiclass
    unlabeled = Dataset("predict", test.features, None, test.ids)
    assert metrics_for("classification", model, unlabeled) == {}
    frame = predictions_frame("classification", model, unlabeled)
    assert frame["label"].isna().all() and (frame["split"] == "predict").all()


def test_classification_predictions_frame(multiclass):
    model, test = multiclass
    frame = predictions_frame("classification", model, test)
    assert list(frame.columns) == ["id", "split", "label", "prediction", "score_0", "score_1", "score_2"]
    assert len(frame) == len(test)
    assert frame["id"].tolist() == test.ids.tolist()
    assert (frame["split"] == "test").all()
    assert frame["label"].tolist() == test.labels.tolist()
    scores = frame[["score_0", "score_1", "score_2"]].to_numpy()
    np.testing.assert_allclose(scores, model.predict_proba(test.features))
    assert (frame["prediction"] == model.classes_[scores.argmax(axis=1)]).all()


def test_regression_predictions_frame():
    train, test = split(load_diabetes)
    model = Ridge().fit(train.features, train.labels)
    frame = predictions_frame("regression", model, test)
    assert list(frame.columns) == ["id", "split", "label", "prediction"]
    np.testing.assert_allclose(frame["prediction"], model.predict(test.features))


def test_unknown_task_is_rejected(multiclass):
    model, test = multiclass
    with pytest.raises(ValueError, match=r"unknown task 'ranking' \(allowed: classification, regression\)"):
        metrics_for("ranking", model, test)


def test_evaluate_gives_both_from_one_pass_of_the_model(binary):
    model, test = binary

    class Counting:
        """Counts calls so the test sees the model run once per output kind."""

        def __init__(self):
            self.calls = {"predict": 0, "predict_proba": 0}
            self.classes_ = model.classes_

        def predict(self, features):
            self.calls["predict"] += 1
            return model.predict(features)

        def predict_proba(self, features):
            self.calls["predict_proba"] += 1
            return model.predict_proba(features)

    counting = Counting()
    scored, frame = evaluate("classification", counting, test)
    assert counting.calls == {"predict": 1, "predict_proba": 1}
    assert scored == metrics_for("classification", model, test)
    pd.testing.assert_frame_equal(frame, predictions_frame("classification", model, test))
