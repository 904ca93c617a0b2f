"""Built-in early-stopping rules for tuning jobs: ``median`` and ``asha``.

Registered through the ``mlrt`` entry-point group like any third-party
plugin, and ``trylast`` so an installed plugin of the same name wins. Both
rules are stateless: every decision is derived from the trials' step-indexed
values in the :class:`~mlrt.tuning.TrialProgress` they are given.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.tuning import EarlyStopper
from mlrt_early_stopping.asha import Asha
from mlrt_early_stopping.median import MedianStopping

EARLY_STOPPERS: tuple[type[EarlyStopper], ...] = (MedianStopping, Asha)


@hookimpl(trylast=True)
def mlrt_early_stoppers() -> list[EarlyStopper]:
    """One instance of each rule in ``EARLY_STOPPERS``."""
    return [stopper() for stopper in EARLY_STOPPERS]
