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
"""

from __future__ import annotations

import json
import os
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

SANITY_ROWS = 200


def say(message: str) -> None:
    """One progress line in the worker log."""
    print(f"[mlrt worker] {message}", flush=True)


def _path_from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def load_channels(spec: dict[str, Any]) -> dict[str, Dataset]:
    """Every channel of the spec, from the local paths the controller materialized."""
    channels = {}
    for name, channel in (spec.get("data") or {}).items():
        path = Path(os.environ[channel_env(name)])
        dataset = load_dataset(name, path, channel.get("format"), channel.get("label"), channel.get("id"))
        labelled = "labelled" if dataset.labels is not None else "unlabelled"
        say(f"channel {name}: {len(dataset)} rows x {dataset.features.shape[1]} features ({labelled})")
        channels[name] = dataset
    return channels


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


def run() -> None:
    """Train, evaluate, save and predict, as the module docstring says."""
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

    say(f"training {algorithm.name} with {json.dumps(hyperparameters, sort_keys=True)}")
    started = time.monotonic()
    model = algorithm.train(ctx)
    say(f"trained in {time.monotonic() - started:.2f}s")
    if ctx.rank != 0:
        return

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
    saved = algorithm.save(model, output_dir)
    pd.concat(frames, ignore_index=True).to_parquet(output_dir / "predictions.parquet", index=False)
    say(f"saved {', '.join(p.name for p in saved)} and predictions.parquet to {output_dir}")
    mlrt.flush()


def main() -> int:
    try:
        run()
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        failure_file = os.environ.get("MLRT_FAILURE_FILE")
        if failure_file:
            Path(failure_file).parent.mkdir(parents=True, exist_ok=True)
            Path(failure_file).write_text(reason + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
