"""An example mlrt plugin: one of each kind of thing a plugin registers.

- ``example.nearest_centroid``, an algorithm (:mod:`.algorithm`);
- ``example.hillclimb``, a tuner with a ``step`` setting (:mod:`.tuner`);
- ``example.calibration``, a report with a gate value, ``ece`` (:mod:`.report`);
- ``example://moons?...``, a data scheme whose settings are the URI's query (:mod:`.scheme`);
- ``example.nice``, a launch backend with a settings block (:mod:`.backend`).

Install it and use it in a job spec::

    pip install ./tests/example_plugin
    # job.yaml: spec.algorithm: example.nearest_centroid

The hooks import nothing heavy: every mlrt process imports this module.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.algorithms import Algorithm
from mlrt.data import DataScheme
from mlrt.launchers import Launcher
from mlrt.reports import Report
from mlrt.tuning import Tuner
from mlrt_example_plugin.algorithm import NearestCentroid
from mlrt_example_plugin.backend import NiceLauncher
from mlrt_example_plugin.report import Calibration
from mlrt_example_plugin.scheme import MoonsScheme
from mlrt_example_plugin.tuner import HillClimb


@hookimpl
def mlrt_algorithms() -> list[Algorithm]:
    return [NearestCentroid()]


@hookimpl
def mlrt_tuners() -> list[Tuner]:
    return [HillClimb()]


@hookimpl
def mlrt_reports() -> list[Report]:
    return [Calibration()]


@hookimpl
def mlrt_data_schemes() -> list[DataScheme]:
    return [MoonsScheme()]


@hookimpl
def mlrt_launchers() -> list[Launcher]:
    return [NiceLauncher()]
