"""Built-in tuners: ``grid``, ``random``, ``tpe`` and ``nsga2``.

``grid`` enumerates the space itself; ``random``, ``tpe`` and ``nsga2`` drive an
in-memory Optuna study through ask/tell (see :mod:`mlrt_tuners.sampled`).
Registered through the ``mlrt`` entry-point group like any third-party
plugin, and ``trylast`` so an installed plugin may replace one by name.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.tuning import Tuner
from mlrt_tuners.grid import GridTuner
from mlrt_tuners.sampled import NSGA2Tuner, RandomTuner, TPETuner

TUNERS: tuple[type[Tuner], ...] = (GridTuner, RandomTuner, TPETuner, NSGA2Tuner)


@hookimpl(trylast=True)
def mlrt_tuners() -> list[Tuner]:
    """One instance of each tuner in ``TUNERS``."""
    return [tuner() for tuner in TUNERS]
