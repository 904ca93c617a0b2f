"""Every hook a plugin can implement: the plugin author's reference.

A plugin is a module or object with functions decorated by ``mlrt.hookimpl``
and named after the hooks below; it is found through the ``mlrt`` entry-point
group (``[project.entry-points.mlrt] myplugin = "my_module"``). Registration
hooks return a list of objects; mlrt collects the lists of all plugins,
rejects duplicate names, and checks every settings schema of what it gets
(an item with a malformed one is left out; ``mlrt plugins --check`` says why).
A plugin implements only the hooks it needs. mlrt calls every hook through
pluggy's hook caller, one plugin at a time where it must know who answered,
so hook wrappers and ``MLRT_TRACE_HOOKS=1`` tracing apply.

Notifications (``mlrt_run_started``, ``mlrt_run_finished``) are called in the
controller process; they must not block for long and their return value is
ignored. An exception in a notification is an event on the run naming the
plugin (with its traceback), not raised; the other plugins are still called.
An exception in a tuner, early stopper, report or data scheme ends the run
(or skips the report) with one line naming the item and its distribution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import click

    from mlrt.algorithms import Algorithm
    from mlrt.data import DataScheme
    from mlrt.launchers import Launcher
    from mlrt.records import RunRecord
    from mlrt.reports import Report
    from mlrt.tuning import EarlyStopper, Tuner

hookspec = pluggy.HookspecMarker("mlrt")


@hookspec
def mlrt_algorithms() -> list[Algorithm]:
    """Return the training algorithms this plugin provides.

    Each item is an instance of a subclass of ``mlrt.algorithms.Algorithm``
    with a unique dotted ``name`` (``"sklearn.random_forest"``), a ``task``
    (``"classification"`` or ``"regression"``), a ``hyperparameters`` schema
    (name -> ``mlrt.algorithms.Hyperparameter``) and a ``train(ctx)`` method
    that returns a fitted model. A job selects one with
    ``spec.algorithm: NAME``; mlrt validates the job's hyperparameters against
    the schema before anything launches, then calls ``train`` in the worker
    and evaluates, saves and predicts with the model it returns.
    """


@hookspec
def mlrt_tuners() -> list[Tuner]:
    """Return hyperparameter search strategies (tuners) this plugin provides.

    Each item is an instance of a subclass of ``mlrt.tuning.Tuner`` with a
    unique ``name`` that a TuningJob selects with ``spec.tuner``. mlrt creates
    one search per tuning job on a fresh copy (``copy.deepcopy``) of the
    registered object: ``configure(settings)`` with the job's settings for it
    (``spec.tuner: {algorithm: NAME, ...}``, checked against the tuner's
    ``settings`` schema, defaults filled in), ``start(space, goal, seed,
    parallel, history)``, then ``suggest(number)`` for each new trial and
    ``observe(result)`` when a trial ends.
    """


@hookspec
def mlrt_early_stoppers() -> list[EarlyStopper]:
    """Return early-stopping rules for tuning jobs this plugin provides.

    Each item is an instance of a subclass of ``mlrt.tuning.EarlyStopper``
    with a unique ``name`` that ``spec.early_stopping.algorithm`` selects and
    a ``settings`` schema for the rule's options. While trials run, mlrt calls
    ``should_stop(trial, others, goal, settings)`` with every trial's
    intermediate objective values; a reason ends the trial as PRUNED.
    """


@hookspec
def mlrt_reports() -> list[Report]:
    """Return error-analysis reports this plugin provides (:class:`mlrt.reports.Report`).

    Each has a unique ``name``; a job lists the reports to build after each
    successful run in ``spec.reports`` (mlrt rejects names no plugin
    provides, and options its ``options`` schema does not allow), and
    ``mlrt report RUN`` builds any of them on demand.
    """


@hookspec
def mlrt_launchers() -> list[Launcher]:
    """Return launch backends this plugin provides.

    Each item is an instance of a subclass of ``mlrt.launchers.Launcher`` with
    a unique ``name`` that ``spec.compute.backend`` selects. A launcher
    separates ``plan(ctx) -> LaunchRequest`` (pure: no side effects, printed by
    ``mlrt validate``) from ``launch(request) -> handle`` (starts the workers),
    and implements ``poll``, ``stop`` and ``cleanup`` on the handle it returned.
    """


@hookspec
def mlrt_data_schemes() -> list[DataScheme]:
    """Return URI schemes for data channels this plugin provides.

    Each item is an instance of a subclass of ``mlrt.data.DataScheme`` whose
    ``scheme`` (``"file"``, ``"builtin"``, ``"s3"``) matches the part of a
    channel URI before ``://``. The scheme checks a URI at validation time and
    materializes it as a local path before the workers start; workers see that
    path in ``MLRT_CHANNEL_<NAME>``. A ``settings`` schema declares the URI's
    query parameters (``?split=train``), which mlrt checks before the scheme's
    own ``check``.
    """


@hookspec
def mlrt_commands(cli: click.Group) -> None:
    """Add commands to the ``mlrt`` command line.

    Called once after the built-in commands exist; use ``cli.add_command`` or
    the ``@cli.command()`` decorator. Return value is ignored.
    """


@hookspec
def mlrt_run_started(run: RunRecord) -> None:
    """Called in the controller when an attempt of ``run`` starts RUNNING.

    ``run`` is a read-only ``mlrt.records.RunRecord`` (id, job id, state,
    attempt number, params). Return value is ignored.
    """


@hookspec
def mlrt_run_finished(run: RunRecord) -> None:
    """Called in the controller once ``run`` reaches a terminal state.

    ``run.state`` is one of SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, PRUNED
    (a tuning trial stopped early) or FAILED_GATE (a ``spec.gates`` check
    failed; the reports are built by then) and ``run.reason`` says why.
    Return value is ignored.
    """
