"""mlrt: a plugin-based training runtime with managed jobs.

Inside a job, the worker SDK records params, metrics and artifacts::

    import mlrt
    mlrt.log_params({"lr": 0.01})
    mlrt.log_metric("val_loss", 0.31, step=3)
    mlrt.log_artifact("confusion.png")

Plugin authors decorate hook implementations with ``mlrt.hookimpl``; see
``mlrt.hookspecs`` for every hook.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlrt")
"""Decorator marking a function as an implementation of an mlrt hook."""

from mlrt.sdk import flush, log_artifact, log_metric, log_metrics, log_param, log_params  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_artifact",
    "flush",
]
