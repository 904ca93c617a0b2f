"""The worker of an ``algorithm:`` job: ``python -m mlrt.worker``.

It reads the container contract's environment, loads every data channel,
calls the algorithm plugin's ``train``, then evaluates the model on every
labelled channel (``train_accuracy``, ``validation_accuracy``, ...), saves the
model and writes ``predictions.parquet`` (id, split, label, prediction and
class scores per row) into ``MLRT_OUTPUT_DIR`` for reports. With
``MLRT_SANITY=1`` it first trains on a small deterministic subsample and
stops early with a clear reason if that fails. On an error it writes a
one-line reason to ``MLRT_FAILURE_FILE`` (shown by ``mlrt status``) and
exits 1.

Stopping (a cancel, ``stopping.max_runtime``): the worker handles SIGTERM from
its first instruction, before loading plugins and data, so no request is lost
however early it comes. An algorithm whose class sets ``stops_gracefully =
True`` finishes its current step, saves a checkpoint and exits on SIGTERM: it
takes the signal over with :func:`take_over_stop`, which tells it whether a
stop was requested before it was ready (it then stops after its first step).
For any other algorithm SIGTERM ends the worker at once, as it would end any
process (exit 143); one that came while the data was loading ends it before
training starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import mlrt
from mlrt import business, plugins
from mlrt.algorithms import Algorithm, Dataset, TrainContext
from mlrt.data import load_dataset
from mlrt.launchers import channel_env
from mlrt.sanity import SANITY_ROWS

STOPPED_EXIT_CODE = 143
"""How a worker stopped by SIGTERM exits (128 + SIGTERM, as a process the signal ends)."""


class StopRequest:
    """The worker's SIGTERM handler until the algorithm takes the signal over: it records
    the request (``requested``) so that it is not lost before the algorithm is ready."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True


def take_over_stop(handler: Any) -> bool:
    """Install ``handler`` for SIGTERM (see :func:`signal.signal`) and return True when a
    stop was requested before, while the worker was still starting. For algorithms that
    stop gracefully (``stops_gracefully = True``); restore the previous handler after."""
    previous = signal.signal(signal.SIGTERM, handler)
    return isinstance(previous, StopRequest) and previous.requested


def say(message: str) -> None:
    """One progress line in the worker log."""
    print(f"[mlrt worker] {message}", flush=True)


def _path_from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def load_channels(spec: dict[str, Any]) -> dict[str, Dataset]:
    """Every channel of the spec, from the local paths the controller materialized."""
    from mlrt.columns import roles

    channels = {}
    for name, channel in (spec.get("data") or {}).items():
        path = Path(os.environ[channel_env(name)])
        dataset = load_dataset(
            name, path, channel.get("format"), channel.get("label"), channel.get("id"), roles(spec, name)
        )
        labelled = "labelled" if dataset.labels is not None else "unlabelled"
        extra = f", weights {dataset.weights.name!r}" if dataset.weights is not None else ""
        if dataset.analysis is not None and dataset.analysis.shape[1]:
            extra += f", for reports only: {', '.join(dataset.analysis.columns)}"
        say(f"channel {name}: {len(dataset)} rows x {dataset.features.shape[1]} features ({labelled}{extra})")
        channels[name] = dataset
    return channels


def column_params(channels: dict[str, Dataset]) -> dict[str, str]:
    """The run's params for the training channel's column roles: its ``sample_weight``
    column (with ``weight_sum``), its ``features`` and its ``analysis_columns``."""
    train = channels["train"]
    params = {"features": ",".join(map(str, train.features.columns))}
    if train.weights is not None:
        params.update(sample_weight=str(train.weights.name), weight_sum=f"{float(train.weights.sum()):.6g}")
    if train.analysis is not None and train.analysis.shape[1]:
        params["analysis_columns"] = ",".join(map(str, train.analysis.columns))
    return params


def subsample(dataset: Dataset, rows: int, seed: int) -> Dataset:
    """A deterministic random subsample of at most ``rows`` rows."""
    if len(dataset) <= rows:
        return dataset
    index = dataset.features.sample(n=rows, random_state=seed).index
    return Dataset(
        name=dataset.name,
        features=dataset.features.loc[index].reset_index(drop=True),
        labels=None if dataset.labels is None else dataset.labels.loc[index].reset_index(drop=True),
        ids=dataset.ids.loc[index].reset_index(drop=True),
        weights=None if dataset.weights is None else dataset.weights.loc[index].reset_index(drop=True),
        analysis=None if dataset.analysis is None else dataset.analysis.loc[index].reset_index(drop=True),
    )


def sanity_check(algorithm: Algorithm, ctx: TrainContext) -> None:
    """Train on a small subsample first, so a broken setup fails in seconds."""
    from mlrt.evaluation import metrics_for

    small = {name: subsample(ds, SANITY_ROWS, ctx.seed) for name, ds in ctx.channels.items()}
    started = time.monotonic()
    model = algorithm.train(TrainContext(**{**vars(ctx), "channels": small, "log_metric": lambda *a, **k: None}))
    fit = metrics_for(algorithm.task, model, small["train"])
    shown = ", ".join(f"{k}={v:.4g}" for k, v in fit.items())
    say(f"sanity check passed in {time.monotonic() - started:.2f}s on {len(small['train'])} rows: {shown}")


def run(stop: StopRequest | None = None) -> None:
    """Train, evaluate, save and predict, as the module docstring says; ``stop`` is the
    SIGTERM handler :func:`main` installed first."""
    import pandas as pd

    from mlrt.evaluation import evaluate

    spec = json.loads(os.environ["MLRT_SPEC"])
    algorithm = plugins.algorithms()[spec["algorithm"]]
    hyperparameters = json.loads(os.environ.get("MLRT_HYPERPARAMETERS", "{}"))
    output_dir = Path(os.environ["MLRT_OUTPUT_DIR"])
    checkpoint_dir = Path(os.environ["MLRT_CHECKPOINT_DIR"])
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    channels = load_channels(spec)
    logged_by_algorithm: set[str] = set()

    def record_metric(key: str, value: float, step: int | None = None) -> None:
        logged_by_algorithm.add(key)
        mlrt.log_metric(key, value, step)

    if "train" not in channels:
        raise ValueError("algorithm jobs need a data channel named 'train'")
    if os.environ.get("RANK", "0") == "0":
        mlrt.log_params(column_params(channels))
    ctx = TrainContext(
        hyperparameters=hyperparameters,
        channels=channels,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        seed=int(os.environ["MLRT_SEED"]),
        stopping=spec.get("stopping") or {},
        log_metric=record_metric,
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        checkpoint_every=(spec.get("checkpoint") or {}).get("every"),
        resume_from=_path_from_env("MLRT_RESUME_FROM"),
        init_from=_path_from_env("MLRT_INIT_FROM"),
        freeze=list((spec.get("init_from") or {}).get("freeze") or []),
        rendezvous_timeout=float(os.environ.get("MLRT_RENDEZVOUS_TIMEOUT", "300")),
        gpus=int((spec.get("compute") or {}).get("gpus") or 0),
    )
    if os.environ.get("MLRT_SANITY") == "1":
        try:
            sanity_check(algorithm, ctx)
        except Exception as exc:
            raise RuntimeError(f"sanity check failed: {type(exc).__name__}: {exc}") from exc

    if not getattr(algorithm, "stops_gracefully", False):
        if stop is not None and stop.requested:
            say("stopped (SIGTERM) before training")
            sys.exit(STOPPED_EXIT_CODE)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ends the worker at once, even inside native code
    say(f"training {algorithm.name} with {json.dumps(hyperparameters, sort_keys=True)}")
    started = time.monotonic()
    model = algorithm.train(ctx)
    say(f"trained in {time.monotonic() - started:.2f}s")
    if ctx.rank != 0:
        return

    threshold = (spec.get("evaluation") or {}).get("threshold")
    if threshold:
        model = apply_threshold(model, channels, spec, threshold, output_dir)
    frames = []
    for name, dataset in channels.items():
        metrics, predictions = evaluate(algorithm.task, model, dataset)
        if dataset.labels is not None and spec.get("business_metrics"):
            metrics.update(
                business.evaluate(spec["business_metrics"], dataset.labels, predictions["prediction"], metrics)
            )
        # A series the algorithm logged itself (per epoch) already ends at this model.
        final = {f"{name}_{key}": value for key, value in metrics.items()}
        mlrt.log_metrics({key: value for key, value in final.items() if key not in logged_by_algorithm})
        if metrics:
            say(f"{name}: " + " ".join(f"{key}={value:.4f}" for key, value in metrics.items()))
        frames.append(predictions)
    # The default save pickles the thresholded model whole; a plugin's own save gets the model it trained.
    own_save = type(algorithm).save is not Algorithm.save
    saved = algorithm.save(model.model if own_save and threshold else model, output_dir)
    pd.concat(frames, ignore_index=True).to_parquet(output_dir / "predictions.parquet", index=False)
    say(f"saved {', '.join(p.name for p in saved)} and predictions.parquet to {output_dir}")
    mlrt.flush()


def apply_threshold(
    model: Any, channels: dict[str, Dataset], spec: dict[str, Any], setting: dict[str, Any], output_dir: Path
) -> Any:
    """``model`` wrapped to predict at the threshold ``setting`` (``spec.evaluation.threshold``)
    chooses on its channel (see :mod:`mlrt.thresholds`); the choice is logged, recorded
    and written to ``threshold.json``."""
    from mlrt import thresholds

    channel = setting.get("channel", "validation")
    dataset = channels.get(channel)
    if dataset is None or dataset.labels is None:
        raise ValueError(f"spec.evaluation.threshold: channel {channel!r} has no labels to choose a threshold on")
    known = getattr(model, "classes_", None) if hasattr(model, "predict_proba") else None
    classes = [] if known is None else list(known)
    if len(classes) != 2:
        raise ValueError(
            "spec.evaluation.threshold: needs a binary classifier with predict_proba;"
            f" this model has {len(classes) or 'no'} classes"
        )
    costs = None
    if setting["optimize"] == "min_cost":
        wanted = setting.get("metric")
        costs = next(
            m["cost_matrix"]
            for m in spec.get("business_metrics") or []
            if m.get("cost_matrix") is not None and (wanted is None or m["name"] == wanted)
        )
    scores = model.predict_proba(dataset.features)[:, 1]
    point = thresholds.choose(dataset.labels.to_numpy(), scores, classes, setting, costs)
    say(
        f"decision threshold {point.threshold:.6g} ({point.optimize} on {channel}: precision {point.precision:.4f},"
        f" recall {point.recall:.4f}){'; ' + point.note if point.note else ''}"
    )
    mlrt.log_params({"decision_threshold": f"{point.threshold:.6g}", "threshold_optimize": point.optimize})
    mlrt.log_metric("decision_threshold", point.threshold)
    (output_dir / thresholds.THRESHOLD_FILE).write_text(json.dumps(dataclasses.asdict(point), indent=2) + "\n")
    return thresholds.ThresholdedClassifier(model, point.threshold)


def main() -> int:
    """Run the worker; the exit code: 0, 1 on an error (reason in ``MLRT_FAILURE_FILE``),
    143 when stopped."""
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop)
    try:
        run(stop)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        failure_file = os.environ.get("MLRT_FAILURE_FILE")
        if failure_file:
            Path(failure_file).parent.mkdir(parents=True, exist_ok=True)
            Path(failure_file).write_text(reason + "\n")
        return 1
    return 0
