"""The built-in scikit-learn algorithms: schemas, training on builtin data, and the model contract."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pluggy
import pytest

import mlrt_sklearn
from mlrt import hookspecs
from mlrt.algorithms import TASKS, Algorithm, Dataset, TrainContext, resolve_hyperparameters
from mlrt.data import load_dataset
from mlrt.evaluation import metrics_for
from mlrt_data import BuiltinScheme

ALGORITHMS = {algorithm.name: algorithm for algorithm in mlrt_sklearn.mlrt_algorithms()}
# Small but representative settings keep the whole module fast.
QUICK = {
    "sklearn.random_forest": {"n_estimators": 10},
    "sklearn.random_forest_regressor": {"n_estimators": 10},
    "sklearn.hist_gradient_boosting": {"max_iter": 10},
    "sklearn.hist_gradient_boosting_regressor": {"max_iter": 10},
}


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory):
    """``channel(dataset, split)`` -> the loaded builtin channel."""
    cache = tmp_path_factory.mktemp("cache")

    def load(name: str, split: str) -> Dataset:
        path = BuiltinScheme().materialize(f"builtin://sklearn/{name}?split={split}", cache)
        return load_dataset(split, path, None, "label", None)

    return load


def train(
    name: str, train_set: Dataset, hyperparameters: dict[str, Any] | None = None, seed: int = 0, tmp: Path = Path(".")
) -> tuple[Any, list[tuple[str, float, int]]]:
    """Validate ``hyperparameters``, train ``name`` on ``train_set``; return the model and logged metrics."""
    algorithm = ALGORITHMS[name]
    resolved, problems = resolve_hyperparameters(algorithm, hyperparameters or {})
    assert problems == {}
    logged: list[tuple[str, float, int]] = []
    ctx = TrainContext(
        hyperparameters=resolved,
        channels={"train": train_set},
        output_dir=tmp,
        checkpoint_dir=tmp,
        seed=seed,
        stopping={},
        log_metric=lambda key, value, step: logged.append((key, value, step)),
    )
    return algorithm.train(ctx), logged


def test_plugin_registers_every_algorithm_against_the_hookspecs():
    pm = pluggy.PluginManager("mlrt")
    pm.add_hookspecs(hookspecs)
    pm.register(mlrt_sklearn)
    (algorithms,) = pm.hook.mlrt_algorithms()
    assert {a.name for a in algorithms} == {
        "sklearn.logistic_regression",
        "sklearn.random_forest",
        "sklearn.random_forest_regressor",
        "sklearn.hist_gradient_boosting",
        "sklearn.hist_gradient_boosting_regressor",
        "sklearn.svm",
        "sklearn.ridge",
        "sklearn.linear_regression",
    }


def test_builtin_plugins_are_declared_as_entry_points():
    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="mlrt")}
    assert entry_points["sklearn"] == "mlrt_sklearn"
    assert entry_points["data"] == "mlrt_data"


@pytest.mark.parametrize("algorithm", ALGORITHMS.values(), ids=list(ALGORITHMS))
def test_schema_is_documented_and_defaults_are_valid(algorithm: Algorithm):
    assert algorithm.task in TASKS and algorithm.description
    for key, hp in algorithm.hyperparameters.items():
        assert hp.help, key
        assert hp.default is None or hp.check(hp.default) == (hp.default, None), key
        assert not hp.log or (hp.type in (int, float) and hp.min is not None and hp.min > 0), key


@pytest.mark.parametrize(
    ("name", "dataset", "hyperparameters", "metric", "minimum"),
    [
        ("sklearn.logistic_regression", "digits", {}, "accuracy", 0.9),
        ("sklearn.random_forest", "wine", {"n_estimators": 30}, "accuracy", 0.9),
        ("sklearn.hist_gradient_boosting", "breast_cancer", {"max_iter": 50}, "accuracy", 0.9),
        ("sklearn.svm", "iris", {}, "accuracy", 0.9),
        ("sklearn.ridge", "diabetes", {}, "r2", 0.3),
        ("sklearn.linear_regression", "diabetes", {}, "r2", 0.3),
        ("sklearn.random_forest_regressor", "diabetes", {"n_estimators": 30}, "r2", 0.3),
        ("sklearn.hist_gradient_boosting_regressor", "diabetes", {"max_iter": 50}, "r2", 0.3),
    ],
)
def test_algorithm_learns_its_builtin_dataset(name, dataset, hyperparameters, metric, minimum, channel, tmp_path):
    model, _ = train(name, channel(dataset, "train"), hyperparameters, tmp=tmp_path)
    validation = channel(dataset, "validation")
    assert metrics_for(ALGORITHMS[name].task, model, validation)[metric] > minimum
    if ALGORITHMS[name].task == "classification":
        labels = np.unique(channel(dataset, "train").labels)
        assert list(model.classes_) == list(labels)
        scores = model.predict_proba(validation.features)
        assert scores.shape == (len(validation), len(labels))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    saved = ALGORITHMS[name].save(model, tmp_path)
    assert [p.name for p in saved] == ["model.joblib"]


@pytest.mark.parametrize("algorithm", ALGORITHMS.values(), ids=list(ALGORITHMS))
def test_every_choice_of_every_hyperparameter_trains(algorithm: Algorithm, channel, tmp_path):
    dataset = channel("iris" if algorithm.task == "classification" else "diabetes", "train")
    for key, hp in algorithm.hyperparameters.items():
        for choice in hp.choices or ():
            model, _ = train(algorithm.name, dataset, {**QUICK.get(algorithm.name, {}), key: choice}, tmp=tmp_path)
            assert len(model.predict(dataset.features)) == len(dataset), (key, choice)


def test_logistic_regression_penalty_selects_the_regularizer(channel):
    dataset = channel("breast_cancer", "train")
    coefficients = {
        penalty: train("sklearn.logistic_regression", dataset, {"penalty": penalty, "C": 0.05})[0][-1].coef_
        for penalty in ("l1", "l2")
    }
    assert (coefficients["l1"] == 0).sum() > 10  # l1 zeroes most of the 30 features
    assert (coefficients["l2"] == 0).sum() == 0
    unpenalized = train("sklearn.logistic_regression", dataset, {"penalty": "none", "max_iter": 50})[0][-1]
    assert unpenalized.C == np.inf


def test_hist_gradient_boosting_logs_loss_curves_when_stopping_early(channel):
    dataset = channel("breast_cancer", "train")
    model, logged = train("sklearn.hist_gradient_boosting", dataset, {"early_stopping": True, "max_iter": 300})
    iterations = model[-1].n_iter_
    assert iterations < 300  # it did stop early
    for key in ("train_loss", "holdout_loss"):
        curve = [(step, value) for k, value, step in logged if k == key]
        assert [step for step, _ in curve] == list(range(iterations + 1))
        assert all(value > 0 for _, value in curve)
    train_curve = [value for key, value, _ in logged if key == "train_loss"]
    assert train_curve[-1] < train_curve[0] / 2
    _, silent = train("sklearn.hist_gradient_boosting", dataset, {"early_stopping": False, "max_iter": 20})
    assert silent == []


def test_same_seed_same_model_other_seed_other_model(channel):
    dataset = channel("wine", "train")
    scores = [
        train("sklearn.random_forest", dataset, {"n_estimators": 5}, seed=seed)[0].predict_proba(dataset.features)
        for seed in (1, 1, 2)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert not np.array_equal(scores[0], scores[2])


@pytest.mark.parametrize(
    "name", ["sklearn.logistic_regression", "sklearn.random_forest", "sklearn.hist_gradient_boosting", "sklearn.svm"]
)
def test_mixed_columns_with_missing_values_and_unseen_categories(name: str):
    rng = np.random.default_rng(0)
    n = 120
    colour = rng.choice(["red", "green", "blue"], n)
    features = pd.DataFrame(
        {
            "colour": colour,
            "size": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "flag": rng.random(n) < 0.5,
        }
    )
    dataset = Dataset("train", features, pd.Series(np.where(colour == "red", "yes", "no")), pd.Series(range(n)))
    model, _ = train(name, dataset, QUICK.get(name))
    assert (model.predict(features) == dataset.labels).mean() > 0.95
    unseen = pd.DataFrame({"colour": ["purple"], "size": [np.nan], "flag": [True]})
    assert model.predict(unseen)[0] in ("yes", "no")


def test_training_needs_labels(channel):
    dataset = channel("iris", "train")
    unlabeled = Dataset("train", dataset.features, None, dataset.ids)
    with pytest.raises(ValueError, match="needs labels"):
        train("sklearn.ridge", unlabeled)


LOGREG = "sklearn.logistic_regression"


@pytest.mark.parametrize(
    ("name", "values", "key", "problem"),
    [
        (
            LOGREG,
            {"lr": 0.1},
            "lr",
            "unknown hyperparameter for sklearn.logistic_regression "
            "(allowed: C, class_weight, fit_intercept, l1_ratio, max_iter, penalty, tol)",
        ),
        (LOGREG, {"C": "big"}, "C", "must be a float in [1e-06, 1000000.0], got 'big'"),
        (LOGREG, {"C": 0}, "C", "must be >= 1e-06, got 0.0"),
        (LOGREG, {"max_iter": 2.5}, "max_iter", "must be a int in [1, 100000], got 2.5"),
        (LOGREG, {"penalty": "l3"}, "penalty", "must be one of l2, l1, elasticnet, none, got 'l3'"),
        (LOGREG, {"class_weight": "auto"}, "class_weight", "must be one of balanced, got 'auto'"),
        ("sklearn.random_forest", {"n_estimators": True}, "n_estimators", "must be a int in [1, 5000], got True"),
        (
            "sklearn.random_forest",
            {"max_features": 0.5},
            "max_features",
            "must be a str one of sqrt, log2, all, got 0.5",
        ),
        ("sklearn.hist_gradient_boosting", {"learning_rate": 2}, "learning_rate", "must be <= 1.0, got 2.0"),
        ("sklearn.svm", {"kernel": None}, "kernel", "must be a str one of rbf, linear, poly, sigmoid, not null"),
        ("sklearn.ridge", {"alpha": -1.0}, "alpha", "must be >= 1e-06, got -1.0"),
    ],
)
def test_resolve_hyperparameters_rejects_bad_values(name: str, values: dict, key: str, problem: str):
    resolved, problems = resolve_hyperparameters(ALGORITHMS[name], values)
    assert problems == {key: problem}
    assert key not in resolved


def test_resolve_hyperparameters_coerces_and_fills_defaults():
    resolved, problems = resolve_hyperparameters(
        ALGORITHMS["sklearn.logistic_regression"], {"C": 2, "class_weight": None}
    )
    assert problems == {}
    assert resolved == {
        "C": 2.0,
        "class_weight": None,
        "penalty": "l2",
        "l1_ratio": 0.5,
        "max_iter": 1000,
        "tol": 1e-4,
        "fit_intercept": True,
    }
    svm, _ = resolve_hyperparameters(ALGORITHMS["sklearn.svm"], {"gamma": 1})
    assert svm["gamma"] == 1.0 and isinstance(svm["gamma"], float)
