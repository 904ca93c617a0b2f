"""What tuner and early-stopping plugins implement.

A TuningJob searches a space of :class:`Parameter` s. The controller asks the
job's :class:`Tuner` for trial parameters (``suggest``), runs each trial as an
ordinary run, and reports its objective back (``observe``). While trials run,
the job's :class:`EarlyStopper` looks at their intermediate objective values
(the step-indexed metric each trial logs) and may stop one: it ends PRUNED.

A tuner sees the whole history on ``start``: finished trials of this job when
it resumes, and of earlier jobs named in ``warm_start``. It must give the same
answers for the same history and seed, so a resumed job continues its search.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from mlrt.algorithms import Hyperparameter

Goal = Literal["minimize", "maximize"]


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One dimension of the search space.

    ``type`` is ``float``, ``int`` or ``categorical``. Numbers have ``min``
    and ``max`` (inclusive) and a ``scale`` (``linear`` or ``log``); an
    optional ``step`` makes a number range discrete. Categorical parameters
    list their ``values``. ``path`` is where the value goes in the trial's
    spec (``hyperparameters.C``, ``algorithm``).
    """

    name: str
    type: Literal["float", "int", "categorical"]
    path: str
    min: float | None = None
    max: float | None = None
    scale: Literal["linear", "log"] = "linear"
    step: float | None = None
    values: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """A finished trial as a tuner sees it: its parameters, state and objective.

    ``state`` is ``SUCCEEDED``, ``FAILED``, ``PRUNED`` (``value`` is then the
    last intermediate value, or None), ``FAILED_GATE`` or another terminal
    state; ``value`` is None when the trial produced no objective.

    ``FAILED_GATE`` is a trial that produced its objective but missed one of
    the template's ``gates``: an infeasible point of a constrained search.
    ``violation`` is then how far it missed (the sum over its failed gates of
    the distance past each limit, > 0), and 0.0 for every other trial, so a
    tuner can learn where the feasible region is instead of ignoring the trial.

    In a multi-objective search (``spec.objectives``) ``values`` holds every
    objective, in the spec's order (None when the trial lacks one), and
    ``value`` the first.
    """

    number: int
    params: dict[str, Any]
    state: str
    value: float | None
    violation: float = 0.0
    values: tuple[float, ...] | None = None


class Tuner(abc.ABC):
    """Base class for tuner plugins (``spec.tuner``).

    A job names a tuner as ``tuner: NAME``, or with settings as ``tuner:
    {algorithm: NAME, step: 0.1}``. ``settings`` declares the settings the
    tuner accepts (name -> :class:`mlrt.algorithms.Hyperparameter`, checked
    when the plugin loads); mlrt validates a job's settings against it when the
    job is validated or submitted, then calls :meth:`configure` on the search's
    fresh copy of the tuner, before :meth:`start`, with the settings checked,
    coerced to their types and completed with defaults.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    parallel_aware: ClassVar[bool] = False
    """True when suggestions stay diverse while earlier ones are still running."""
    multi_objective: ClassVar[bool] = False
    """True when the tuner can search several objectives at once (``spec.objectives``):
    :meth:`start` then gets one goal per objective and results carry ``values``."""
    settings: ClassVar[Mapping[str, Hyperparameter]] = {}
    """The settings a job may give beside ``spec.tuner.algorithm``."""
    options: Mapping[str, Any] = MappingProxyType({})
    """This search's settings as :meth:`configure` kept them (empty before it is called)."""

    def configure(self, settings: dict[str, Any]) -> None:
        """Receive this search's validated settings (default: kept as ``self.options``)."""
        self.options = dict(settings)

    def check(self, space: list[Parameter]) -> str | None:
        """A one-line problem if this tuner cannot search ``space`` (validation time), else None."""
        return None

    @abc.abstractmethod
    def start(
        self,
        space: list[Parameter],
        goal: Goal | tuple[Goal, ...],
        seed: int,
        parallel: int,
        history: list[TrialResult],
    ) -> None:
        """Prepare a search over ``space``.

        ``goal`` is the objective's direction, or a tuple of directions, one per
        objective, in a multi-objective search (only for a ``multi_objective`` tuner);
        ``parallel`` is how many trials may run at once (``spec.parallel_trials``);
        ``history`` holds trials already finished (resume and warm start)."""

    @abc.abstractmethod
    def suggest(self, number: int) -> dict[str, Any] | None:
        """Parameters (name -> value) for trial ``number``, or None when the space is exhausted."""

    @abc.abstractmethod
    def observe(self, result: TrialResult) -> None:
        """Learn the outcome of a trial this tuner suggested."""


@dataclasses.dataclass(frozen=True)
class TrialProgress:
    """The intermediate objective values of one trial so far, by step."""

    number: int
    values: dict[int, float]
    finished: bool


class EarlyStopper(abc.ABC):
    """Base class for early-stopping plugins (``spec.early_stopping.algorithm``).

    ``settings`` declares the stopper's options (the other keys of
    ``spec.early_stopping``), checked like an algorithm's hyperparameters;
    ``should_stop`` receives them validated, with defaults filled in.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Hyperparameter]] = {}

    @abc.abstractmethod
    def should_stop(
        self, trial: TrialProgress, others: list[TrialProgress], goal: Goal, settings: dict[str, Any]
    ) -> str | None:
        """A one-line reason to stop ``trial`` now, or None to let it run on.

        ``others`` are every other trial of the job, running or finished."""
