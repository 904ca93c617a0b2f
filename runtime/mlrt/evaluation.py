"""Scoring a trained model on a channel, and the predictions file reports read.

mlrt calls these in the worker for every channel after ``Algorithm.train``
returns, so an algorithm plugin gets its metrics and predictions file for
free as long as its model follows the contract in
:meth:`mlrt.algorithms.Algorithm.train`: ``predict(features)``, and for
classifiers ``predict_proba(features)`` with columns in the order of
``classes_``.

Metrics by task:

``classification``
    ``accuracy``; ``precision``, ``recall`` and ``f1`` (for two classes, of
    the positive class ``classes_[1]``, the larger label; otherwise the
    unweighted mean over classes); and, when the model has ``predict_proba``
    and ``classes_``, ``roc_auc`` (one class against the rest, averaged over
    the classes present in the labels; left out when fewer than two are)
    and ``log_loss``.
``regression``
    ``rmse``, ``mae`` and ``r2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlrt.algorithms import TASKS, Dataset

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (allowed: {', '.join(TASKS)})")


def _has_scores(model: Any) -> bool:
    """Whether ``model`` offers class probabilities with known column order."""
    return hasattr(model, "predict_proba") and hasattr(model, "classes_")


def _classes(model: Any, labels: pd.Series, predictions: np.ndarray) -> np.ndarray:
    """The model's ``classes_``, else every label seen in ``labels`` or ``predictions``."""
    import numpy as np

    classes = getattr(model, "classes_", None)
    return np.asarray(classes) if classes is not None else np.unique(np.concatenate([labels, predictions]))


def _outputs(task: str, model: Any, dataset: Dataset) -> tuple[Any, Any]:
    """The model's predictions and, for classifiers that have them, class scores: one pass each."""
    predictions = model.predict(dataset.features)
    scores = model.predict_proba(dataset.features) if task == "classification" and _has_scores(model) else None
    return predictions, scores


def _classification_metrics(model: Any, labels: Any, predictions: Any, scores: Any) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics

    classes = _classes(model, labels, predictions)
    if len(classes) == 2:
        averaging: dict[str, Any] = {"average": "binary", "pos_label": classes[1]}
    else:
        averaging = {"average": "macro"}
    result = {
        "accuracy": metrics.accuracy_score(labels, predictions),
        "precision": metrics.precision_score(labels, predictions, zero_division=0, **averaging),
        "recall": metrics.recall_score(labels, predictions, zero_division=0, **averaging),
        "f1": metrics.f1_score(labels, predictions, zero_division=0, **averaging),
    }
    if scores is not None:
        present = [i for i, c in enumerate(classes) if np.any(labels == c)]
        # For two classes one curve says it all; the other is its mirror image.
        curves = [1] if len(classes) == 2 else present
        if len(present) >= 2:
            result["roc_auc"] = np.mean([metrics.roc_auc_score(labels == classes[i], scores[:, i]) for i in curves])
        if np.isin(labels, classes).all():
            result["log_loss"] = metrics.log_loss(labels, scores, labels=classes)
    return {key: float(value) for key, value in result.items()}


def _regression_metrics(labels: Any, predictions: Any) -> dict[str, float]:
    from sklearn import metrics

    return {
        "rmse": float(metrics.root_mean_squared_error(labels, predictions)),
        "mae": float(metrics.mean_absolute_error(labels, predictions)),
        "r2": float(metrics.r2_score(labels, predictions)),
    }


def _metrics(task: str, model: Any, dataset: Dataset, predictions: Any, scores: Any) -> dict[str, float]:
    labels = dataset.labels.to_numpy()
    if task == "classification":
        return _classification_metrics(model, labels, predictions, scores)
    return _regression_metrics(labels, predictions)


def _frame(model: Any, dataset: Dataset, predictions: Any, scores: Any) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": dataset.ids.to_numpy(),
            "split": dataset.name,
            "label": np.nan if dataset.labels is None else dataset.labels.to_numpy(),
            "prediction": predictions,
        }
    )
    if scores is not None:
        for i, cls in enumerate(model.classes_):
            frame[f"score_{cls}"] = scores[:, i]
    return frame


def metrics_for(task: str, model: Any, dataset: Dataset) -> dict[str, float]:
    """Score ``model`` on ``dataset``: metric name -> value (see the module docstring).

    ``task`` is ``"classification"`` or ``"regression"``. Returns ``{}`` for
    a channel without labels; values are plain Python floats.
    """
    _check_task(task)
    if dataset.labels is None:
        return {}
    return _metrics(task, model, dataset, *_outputs(task, model, dataset))


def predictions_frame(task: str, model: Any, dataset: Dataset) -> pd.DataFrame:
    """One row per example of ``dataset``, for error-analysis reports.

    Columns: ``id`` (the channel's row ids), ``split`` (the channel name),
    ``label`` (NaN where the channel has no labels), ``prediction``, and for
    classifiers with ``predict_proba`` and ``classes_`` one ``score_<class>`` column per class
    in ``classes_`` order, holding that class's predicted probability.
    """
    _check_task(task)
    return _frame(model, dataset, *_outputs(task, model, dataset))


def evaluate(task: str, model: Any, dataset: Dataset) -> tuple[dict[str, float], pd.DataFrame]:
    """:func:`metrics_for` and :func:`predictions_frame` together, running the model once."""
    _check_task(task)
    predictions, scores = _outputs(task, model, dataset)
    metrics = {} if dataset.labels is None else _metrics(task, model, dataset, predictions, scores)
    return metrics, _frame(model, dataset, predictions, scores)
