"""Building a run's reports: from its predictions file and data channels to stored results.

``build(store, run_id)`` joins the run's ``predictions.parquet`` (``id``,
``split``, ``label``, ``prediction``, ``score_<class>``) with the feature
and report-only columns of its data channels (by split and id), gives every requested
report a :class:`mlrt.reports.ReportInput`, and writes each result to
``<run output>/output/reports/<name>.json`` plus the whole page to
``report.html`` beside them, registering them as the run's artifacts. A report
whose ``build`` raises is skipped, its result saying so in one line that names
it and its distribution, and its traceback is kept beside the results as
``<name>.traceback.txt``.
``compute`` is the same work without the database, from a predictions
folder and the channels' local paths: a finalizing pod runs it
(:mod:`mlrt.report_pod`) and the controller stores what it returns with
``keep``. ``check_gates`` evaluates ``spec.gates`` on those results, and ``diff``
lines two runs' comparable numbers up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrt import plugins
from mlrt.reports import Comparable, ReportInput, option_schema
from mlrt.spec import gate_target

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlrt.store import Store
    from mlrt.store.models import Run

PREDICTIONS = "predictions.parquet"


class ReportError(RuntimeError):
    """Reports cannot be built for this run; the message says why and what to do."""


def output_dir(run: Run) -> Path:
    """The run's output folder (``MLRT_OUTPUT_DIR`` of its workers)."""
    from mlrt.submission import local_prefix

    return local_prefix(run.output_uri, run.id) / "output"


def reports_dir(run: Run) -> Path:
    return output_dir(run) / "reports"


def load_frame(
    run_id: str, spec: dict[str, Any], output: Path, channels: dict[str, Path]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The run's predictions (``output/predictions.parquet``) joined with the feature and
    report-only columns of its channels (``channels``: local paths by name; one that is missing
    is left out), the feature names and the report-only names (see :mod:`mlrt.columns`)."""
    import pandas as pd

    from mlrt.columns import roles
    from mlrt.data import load_dataset

    path = output / PREDICTIONS
    if not path.is_file():
        raise ReportError(
            f"run {run_id} has no {PREDICTIONS}: algorithm jobs write one; a command job writes it to "
            "$MLRT_OUTPUT_DIR with columns id, split, label, prediction and optional score_<class>"
        )
    predictions = pd.read_parquet(path)
    missing = {"id", "split", "label", "prediction"} - set(predictions.columns)
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    parts, features, analysis = [], [], []
    for name, channel in (spec.get("data") or {}).items():
        local = channels.get(name)
        if local is None or not local.exists():
            continue
        dataset = load_dataset(
            name, local, channel.get("format"), channel.get("label"), channel.get("id"), roles(spec, name)
        )
        frame = pd.concat([dataset.features, dataset.analysis], axis=1)
        if name == "train" and dataset.weights is not None and dataset.weights.name not in frame.columns:
            frame[dataset.weights.name] = dataset.weights  # for the learning curve's retraining
        frame.insert(0, "split", name)
        frame.insert(0, "id", dataset.ids.to_numpy())
        parts.append(frame)
        features += [c for c in dataset.features.columns if c not in features]
        analysis += [c for c in dataset.analysis.columns if c not in analysis]
    if not parts:
        return predictions, [], []
    table = pd.concat(parts, ignore_index=True)
    features = [c for c in features if c not in predictions.columns]
    analysis = [c for c in analysis if c not in predictions.columns and c not in features]
    weight = roles(spec, "train").weight
    weights = [weight] if weight in table.columns and weight not in (*features, *analysis) else []
    predictions = predictions.astype({"id": str})
    table = table.astype({"id": str})[["id", "split", *features, *analysis, *weights]]
    return predictions.merge(table, on=["split", "id"], how="left"), features, analysis


def task_of(spec: dict[str, Any], frame: pd.DataFrame) -> str:
    """``classification`` or ``regression``: the algorithm's task, else guessed from the predictions."""
    algorithm = plugins.algorithms().get(spec.get("algorithm") or "")
    if algorithm is not None:
        return algorithm.task
    if any(c.startswith("score_") for c in frame.columns):
        return "classification"
    labels = frame["label"].dropna()
    numeric = labels.dtype.kind == "f" and labels.nunique() > 20
    return "regression" if numeric else "classification"


def _classes(frame: pd.DataFrame, task: str) -> list[Any]:
    if task != "classification":
        return []
    scored = [c.removeprefix("score_") for c in frame.columns if c.startswith("score_")]
    if scored:
        return scored
    values = frame["label"].dropna().unique().tolist() + frame["prediction"].dropna().unique().tolist()
    return sorted({str(v) for v in values}, key=_natural)


def _natural(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, math.nan, value)


def _retrainer(spec: dict[str, Any], frame: pd.DataFrame, features: list[str], task: str, threshold: float | None):
    """A ``retrain(fraction, seed)`` for learning curves (algorithm jobs only); with the run's
    ``decision_threshold`` each model predicts at it, as the run's own model did."""
    from mlrt.algorithms import Dataset
    from mlrt.columns import roles

    algorithm = plugins.algorithms().get(spec.get("algorithm") or "")
    if algorithm is None or not features:
        return None
    weight = roles(spec, "train").weight
    full = {  # built once; each call subsamples the training channel
        split: Dataset(
            name=split,
            features=rows[features].reset_index(drop=True),
            labels=_labels(rows["label"], task).reset_index(drop=True),
            ids=rows["id"].reset_index(drop=True),
            weights=rows[weight].reset_index(drop=True) if split == "train" and weight in rows.columns else None,
        )
        for split, rows in frame[frame["label"].notna()].groupby("split")
    }

    def retrain(fraction: float, seed: int) -> dict[str, dict[str, float]]:
        import tempfile

        from mlrt.algorithms import TrainContext
        from mlrt.evaluation import metrics_for

        channels = dict(full)
        train = channels["train"]
        keep = train.features.sample(frac=fraction, random_state=seed).index
        weights = None if train.weights is None else train.weights.loc[keep]
        channels["train"] = Dataset(
            "train", train.features.loc[keep], train.labels.loc[keep], train.ids.loc[keep], weights
        )
        with tempfile.TemporaryDirectory() as scratch:
            ctx = TrainContext(
                hyperparameters=dict(spec.get("hyperparameters") or {}),
                channels=channels,
                output_dir=Path(scratch),
                checkpoint_dir=Path(scratch),
                seed=seed,
                stopping=spec.get("stopping") or {},
                log_metric=lambda *args, **kwargs: None,
            )
            model = algorithm.train(ctx)
        if threshold is not None and len(getattr(model, "classes_", ())) == 2:
            from mlrt.thresholds import ThresholdedClassifier

            model = ThresholdedClassifier(model, threshold)
        return {name: metrics_for(task, model, dataset) for name, dataset in channels.items()}

    return retrain


def _labels(labels: pd.Series, task: str) -> pd.Series:
    if task == "regression":
        return labels.astype(float)
    as_int = labels.dropna()
    if as_int.dtype.kind == "f" and (as_int == as_int.round()).all():
        return labels.astype(int)
    return labels


def build(store: Store, run_id: str, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Build ``names`` (default: ``spec.reports``, plus those ``spec.gates`` need) for
    ``run_id`` in this process; store and return every result by report name."""
    run = store.get_run(run_id)
    spec = store.get_job(run.job_id).spec_resolved["spec"]
    channels = {
        name: Path(record["path"]) for name, record in (run.record.get("data") or {}).items() if record.get("path")
    }
    results = compute(run_id, spec, store.latest_metrics(run_id), output_dir(run), channels, names)
    _register(store, run)
    return results


def compute(
    run_id: str,
    spec: dict[str, Any],
    metrics: dict[str, float],
    output: Path,
    channels: dict[str, Path],
    names: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Build ``names`` (default: :func:`needed_reports`) from the predictions in the folder
    ``output`` and the channels' local ``channels``, given the run's latest ``metrics``; write
    each result, its traceback when it failed, and the page under ``output/reports``, and
    return the results by report name. Needs no database: :func:`build` calls it for the
    controller's machine, a finalizing pod through :mod:`mlrt.report_pod`."""
    from mlrt.algorithms import resolve_values

    registry = plugins.reports()
    wanted = list(names) if names else needed_reports(spec)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise ReportError(f"unknown report(s) {', '.join(unknown)} (registered: {', '.join(sorted(registry))})")
    frame, features, analysis = load_frame(run_id, spec, output, channels)
    task = task_of(spec, frame)
    classes = _classes(frame, task)
    retrain = _retrainer(spec, frame, features, task, metrics.get("decision_threshold"))
    target = output / "reports"
    target.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in wanted:
        report = registry[name]
        given = (spec.get("report_options") or {}).get(name) or {}
        options, _ = resolve_values(option_schema(report), given, name)
        data = ReportInput(
            run_id=run_id,
            frame=frame,
            features=features,
            task=task,
            classes=classes,
            positive=classes[-1] if len(classes) == 2 else None,
            spec=spec,
            metrics=metrics,
            options=options,
            output_dir=target,
            retrain=retrain,
            analysis=analysis,
        )
        try:  # one broken report must not hide the others
            with plugins.blame("reports", name):
                result = report.build(data)
        except plugins.PluginFailure as failure:
            traceback_file = target / f"{name}.traceback.txt"
            traceback_file.write_text(failure.details)
            result = {"report": name, "skipped": f"failed: {failure.line} (traceback: {traceback_file.name})"}
        _write_result(target, name, result)
        results[name] = result
    _write_page(target, run_id, metrics, results)
    return results


def keep(store: Store, run_id: str, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Store results that :func:`compute` returned somewhere else (a finalizing pod) as
    :func:`build` stores its own: each as ``<name>.json`` and the page in the run's reports
    folder, registered as artifacts. Returns ``results``."""
    run = store.get_run(run_id)
    target = reports_dir(run)
    target.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        _write_result(target, name, result)
    _write_page(target, run_id, store.latest_metrics(run_id), results)
    _register(store, run)
    return results


def _write_result(target: Path, name: str, result: dict[str, Any]) -> None:
    (target / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def _write_page(target: Path, run_id: str, metrics: dict[str, float], results: dict[str, dict[str, Any]]) -> None:
    from mlrt.report_page import page
    from mlrt.summary import summarize

    (target / "report.html").write_text(page(run_id, metrics, results, summarize(results)))


def _register(store: Store, run: Run) -> None:
    from mlrt.artifacts import collect

    artifacts, _ = collect(run.id, output_dir(run))
    store.put_artifacts(artifacts)


def needed_reports(spec: dict[str, Any]) -> list[str]:
    """``spec.reports`` plus every report a gate reads, in order, without repeats."""
    wanted = list(spec.get("reports") or [])
    for gate in spec.get("gates") or []:
        target = gate_target(gate)
        if target is not None and target[0] not in wanted:
            wanted.append(target[0])
    return wanted


def load_results(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """The stored results of a run's reports (empty when none were built)."""
    folder = reports_dir(store.get_run(run_id))
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@dataclasses.dataclass(frozen=True)
class GateFailure:
    """One way a run misses its ``spec.gates``.

    ``line`` says which gate and by how much, for people; ``excess`` is how far
    past the gate's limit the value is (``min - value``, ``value - max``, or a
    regression beyond ``max_regression``), always > 0, and 1.0 when the value
    could not be computed at all. Tuning uses the sum of a trial's excesses as
    its constraint violation, so a trial that misses a gate by a little ranks
    above one that misses it by a lot."""

    line: str
    excess: float


UNAVAILABLE = 1.0
"""The excess of a gate whose value could not be computed."""


def check_gates(store: Store, run_id: str, results: dict[str, dict[str, Any]]) -> list[GateFailure]:
    """Every way the run misses a ``spec.gates`` entry (empty: every gate passed)."""
    run = store.get_run(run_id)
    spec = store.get_job(run.job_id).spec_resolved["spec"]
    registry = plugins.reports()
    failures = []
    for index, gate in enumerate(spec.get("gates") or []):
        where = f"gates.{index}"
        target = gate_target(gate)
        if target is not None:
            report_name, value_name = target
            shown = f"{report_name}.{value_name}"
            result = results.get(report_name) or {}
            if result.get("skipped"):
                failures.append(GateFailure(f"{where}: {shown} unavailable: {result['skipped']}", UNAVAILABLE))
                continue
            values = registry[report_name].gate_values(result)
            if value_name not in values:
                known = ", ".join(sorted(values)) or "none"
                line = f"{where}: report {report_name} has no value {value_name!r} (it has: {known})"
                failures.append(GateFailure(line, UNAVAILABLE))
                continue
            value = values[value_name]
            if gate.get("min") is not None and value < gate["min"]:
                line = f"{shown} = {value:.4g} is below the gate's min {gate['min']:g}"
                failures.append(GateFailure(line, gate["min"] - value))
            if gate.get("max") is not None and value > gate["max"]:
                line = f"{shown} = {value:.4g} is above the gate's max {gate['max']:g}"
                failures.append(GateFailure(line, value - gate["max"]))
        else:
            other = gate["compare_to"]
            try:
                before = load_results(store, other)
            except Exception:  # noqa: BLE001 - the run may be gone
                before = {}
            if not before:
                line = f"{where}: run {other!r} has no reports to compare with (mlrt report {other})"
                failures.append(GateFailure(line, UNAVAILABLE))
                continue
            worse = [row for row in diff(before, results) if row["regression"] > gate["max_regression"]]
            worse.sort(key=lambda row: -row["regression"])
            for row in worse[:5]:
                line = (
                    f"{row['report']} {row['key']} {row['metric']} regressed by {row['regression']:.3f} vs {other} "
                    f"({row['before']:.4g} -> {row['after']:.4g}; gate allows {gate['max_regression']:g})"
                )
                failures.append(GateFailure(line, row["regression"] - gate["max_regression"]))
            if len(worse) > 5:
                rest = sum(row["regression"] - gate["max_regression"] for row in worse[5:])
                failures.append(GateFailure(f"... and {len(worse) - 5} more regressions vs {other}", rest))
    return failures


def diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every comparable number both runs' reports have, side by side; ``regression`` is how
    much worse ``after`` is (0 when better, or when neither direction is better)."""
    registry = plugins.reports()
    rows = []
    for name in [n for n in after if n in before and n in registry]:
        if before[name].get("skipped") or after[name].get("skipped"):
            continue
        old = {(c.key, c.metric): c for c in registry[name].comparable(before[name])}
        for new in registry[name].comparable(after[name]):
            match: Comparable | None = old.get((new.key, new.metric))
            if match is None:
                continue
            change = new.value - match.value
            if new.higher_is_better is None:
                regression = 0.0
            else:
                regression = max(0.0, -change if new.higher_is_better else change)
            rows.append(
                {
                    "report": name,
                    "key": new.key,
                    "metric": new.metric,
                    "before": match.value,
                    "after": new.value,
                    "change": change,
                    "higher_is_better": new.higher_is_better,
                    "regression": regression,
                }
            )
    return rows


LOWER_IS_BETTER = ("loss", "error", "rmse", "mae", "mse", "cost")
"""A run metric whose name holds one of these words is better when lower (``validation_log_loss``)."""


def got_worse(metric: str, change: float) -> bool:
    """Whether a run metric that moved by ``change`` got worse (see :data:`LOWER_IS_BETTER`)."""
    return change > 0 if any(word in metric for word in LOWER_IS_BETTER) else change < 0


def metric_diff(before: dict[str, float], after: dict[str, float]) -> list[dict[str, Any]]:
    """The run metrics both runs have (their latest values), by name: ``metric``, ``before``,
    ``after``, ``change`` and ``worse`` (:func:`got_worse`); the first table of ``mlrt report diff``."""
    return [
        {
            "metric": k,
            "before": before[k],
            "after": after[k],
            "change": after[k] - before[k],
            "worse": got_worse(k, after[k] - before[k]),
        }
        for k in sorted(set(before) & set(after))
    ]
