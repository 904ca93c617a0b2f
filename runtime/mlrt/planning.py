"""Planning a loaded spec without acting on it: what ``mlrt validate`` shows and what ``mlrt submit`` checks.

Pure (in TorchX's sense of a dry run): the functions here read the spec, the
installed plugins and the local data channels, and launch, write or register
nothing. The CLI (:mod:`mlrt.cli.jobs`) and the HTTP API
(:mod:`mlrt.service.routes.jobs`) both call them, so ``mlrt validate`` answers
the same locally and from a controller service.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def validation_plan(loaded) -> dict[str, Any]:
    """What ``mlrt validate --json`` prints for a loaded spec: the resolved spec and
    the launch request (for a TuningJob: the search space and the tuner's first trial's), with
    ``spec.env`` values shown as ``<not shown>`` (see :mod:`mlrt.secrets`)."""
    from mlrt.secrets import mask_resolved
    from mlrt.spec import LoadedSpec
    from mlrt.tuning_spec import first_trial_parameters, load_trial, search_space

    check_columns(loaded)
    if isinstance(loaded, LoadedSpec):
        return training_plan(loaded, f"{loaded.name}-<id>")
    resolved = loaded.resolved()
    example = first_trial_parameters(resolved["spec"])  # what the tuner will really try first
    trial = load_trial(resolved, f"{loaded.name[:56]}-t001", example)
    return {
        "spec": mask_resolved(resolved),
        "search_space": [dataclasses.asdict(p) for p in search_space(resolved["spec"])],
        "example_trial": {"parameters": example, **training_plan(trial, f"{loaded.name}-<id>-t001")},
    }


def training_spec(loaded) -> dict[str, Any]:
    """The resolved ``spec`` of a TrainingJob; for a TuningJob, of a first trial."""
    from mlrt.spec import LoadedSpec
    from mlrt.tuning_spec import _corners, applicable, load_trial

    if not isinstance(loaded, LoadedSpec):
        resolved = loaded.resolved()
        loaded = load_trial(resolved, "checked", applicable(resolved["spec"], _corners(resolved["spec"])[0]))
    return loaded.resolved()["spec"]


def check_columns(loaded) -> None:
    """Refuse a spec whose labels, column roles, slices, protected attributes or tag rules
    name a column its local data channels do not have (see :mod:`mlrt.columns`); for a
    TuningJob, its template's."""
    from mlrt.columns import column_problems
    from mlrt.spec import SpecError

    problems = column_problems(training_spec(loaded))
    if problems:
        raise SpecError(problems)


def check_launchable(loaded) -> None:
    """Refuse a job its backend cannot launch from here at all (:meth:`mlrt.launchers.Launcher.preflight`)."""
    from mlrt import plugins
    from mlrt.spec import SpecError

    compute = training_spec(loaded)["compute"]
    problem = plugins.launchers()[compute["backend"]].preflight(compute)
    if problem:
        raise SpecError([problem])


def training_plan(loaded, run_id: str) -> dict[str, Any]:
    """The resolved spec and the exact launch request of a TrainingJob, without side effects."""
    from mlrt import plugins
    from mlrt.data import uri_scheme
    from mlrt.secrets import mask_request, mask_resolved
    from mlrt.store import database_url, mlrt_home
    from mlrt.submission import launch_context

    resolved = loaded.resolved()
    spec = resolved["spec"]
    spec["seed"] = spec["seed"] if spec.get("seed") is not None else "<chosen at submit>"
    schemes = plugins.data_schemes()
    cache = mlrt_home() / "cache"
    paths = {}
    for name, channel in spec["data"].items():
        planned = schemes[uri_scheme(channel["uri"])].local_path(channel["uri"], cache)
        paths[name] = str(planned) if planned else f"<{channel['uri']}, materialized at launch>"
    ctx = launch_context(resolved, run_id, 1, database_url(None), paths, {})
    request = plugins.launchers()[spec["compute"]["backend"]].plan(ctx)
    return {"spec": mask_resolved(resolved), "launch": mask_request(request.to_dict(), spec)}
