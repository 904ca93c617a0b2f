"""mlrt: a plugin-based training runtime with managed jobs.

Inside a job, the worker SDK records params, metrics and artifacts::

    import mlrt
    mlrt.log_params({"lr": 0.01})
    mlrt.log_metric("val_loss", 0.31, step=3)
    mlrt.log_artifact("confusion.png")

A program that resumes from its own checkpoint calls
``mlrt.discard_metrics(keys, from_step)`` first, so the steps it logs again
replace those an interrupted attempt logged after the checkpoint.

Plugin authors decorate hook implementations with ``mlrt.hookimpl``; see
``mlrt.hookspecs`` for every hook.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlrt")
"""Decorator marking a function as an implementation of an mlrt hook."""

from mlrt.sdk import (  # noqa: E402
    discard_metrics,
    flush,
    log_artifact,
    log_metric,
    log_metrics,
    log_param,
    log_params,
)

__all__ = [
    "__version__",
    "hookimpl",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_artifact",
    "flush",
    "discard_metrics",
]
