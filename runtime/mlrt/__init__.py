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

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pluggy

    from mlrt.sdk import discard_metrics, flush, log_artifact, log_metric, log_metrics, log_param, log_params

    hookimpl: pluggy.HookimplMarker

_SDK = frozenset({"discard_metrics", "flush", "log_artifact", "log_metric", "log_metrics", "log_param", "log_params"})


def __getattr__(name: str) -> Any:
    """``hookimpl`` and the SDK's functions, imported on first use (PEP 562): ``mlrt``'s command
    line client (:mod:`mlrt.resident`) imports this package and must stay light."""
    if name == "hookimpl":
        import pluggy

        value: Any = pluggy.HookimplMarker("mlrt")  # marks a function as an mlrt hook implementation
    elif name in _SDK:
        from mlrt import sdk

        value = getattr(sdk, name)
    else:
        raise AttributeError(f"module 'mlrt' has no attribute {name!r}")
    globals()[name] = value
    return value


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
