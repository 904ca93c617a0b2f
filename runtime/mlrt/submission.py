"""Turning a validated spec into a queued run, and a run into a launch context.

:func:`submit` writes the job, its run (QUEUED), the initial params and the
reproducibility record. :func:`launch_context` builds the backend-neutral
description of one attempt: the command, the container contract's
environment, the working directory and the log folder.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from mlrt.launchers import LaunchContext, channel_env
from mlrt.reproducibility import base_record
from mlrt.secrets import SecretError, mask_overrides, mask_submitted, reveal_env, seal_resolved
from mlrt.spec import LoadedSpec
from mlrt.states import RunState
from mlrt.store import Store, mlrt_home
from mlrt.store.models import Job, Run

# The program an ``algorithm:`` job's workers run.
WORKER_ARGV = [sys.executable, "-m", "mlrt.worker"]


def new_job_id(name: str) -> str:
    """``NAME-xxxxxx``: the job's name and six random hex digits."""
    return f"{name}-{secrets.token_hex(3)}"


def output_uri(resolved: dict[str, Any], run_id: str) -> str:
    """Where a run's artifacts and checkpoints live: ``<spec.output.path>/<run id>``.

    Without ``spec.output.path``: ``MLRT_DEFAULT_OUTPUT`` (a cluster
    controller sets it, typically to an ``s3://`` prefix), else
    ``$MLRT_HOME/runs``."""
    base = resolved["spec"]["output"].get("path") or os.environ.get("MLRT_DEFAULT_OUTPUT")
    base = base or f"file://{mlrt_home() / 'runs'}"
    if "://" not in base:
        base = "file://" + base
    return f"{base.rstrip('/')}/{run_id}"


def local_prefix(output: str, run_id: str) -> Path:
    """The local folder where workers write a run's output and checkpoints.

    A ``file://`` output is used in place; for an ``s3://`` output it is a
    staging folder under ``$MLRT_HOME/staging``, uploaded when each attempt ends."""
    if output.startswith("file://"):
        return Path(output.removeprefix("file://"))
    return mlrt_home() / "staging" / run_id


def output_prefix(resolved: dict[str, Any], run_id: str) -> Path:
    """The run's local output folder (see :func:`local_prefix`)."""
    return local_prefix(output_uri(resolved, run_id), run_id)


def log_dir(run_id: str, attempt: int) -> Path:
    """Where the workers' logs of one attempt are kept."""
    return mlrt_home() / "logs" / run_id / f"attempt-{attempt}"


def _run_output(store: Store, run_id: str, field: str) -> Path:
    """The output prefix of an earlier run, for ``init_from.run`` and ``--resume-from``."""
    from mlrt.spec import SpecError
    from mlrt.store import NotFound

    try:
        run = store.get_run(run_id)
    except NotFound:
        raise SpecError([f"{field}: no run {run_id!r} in this database (see mlrt runs list)"]) from None
    return local_prefix(run.output_uri, run.id)


def submit(
    store: Store,
    loaded: LoadedSpec,
    *,
    sanity: bool = False,
    resume_from: str | None = None,
    trial_of: tuple[str, int, dict[str, Any]] | None = None,
    owner: str | None = None,
    project: str | None = None,
    submitted_by: str | None = None,
) -> str:
    """Queue ``loaded`` as a new job with one run; return the run id (= the job id).

    ``resume_from`` names a run whose latest checkpoint the new run starts from.
    ``trial_of`` is ``(tuning run id, trial number, parameters)`` for a tuning
    trial, whose id is then ``<tuning run>-t<number>``; it shares its tuning
    run's git state (read at the tuning job's submission). ``owner`` is the
    controller that will drive it. ``project`` and ``submitted_by`` mark a job
    submitted through the controller's API (a trial inherits its tuning job's).

    The job row keeps ``spec.env`` values encrypted and the submitted text
    with them masked (see :mod:`mlrt.secrets`).
    """
    if not isinstance(loaded, LoadedSpec):
        return _submit_tuning(store, loaded, resume_from=resume_from, project=project, submitted_by=submitted_by)
    from mlrt import plugins
    from mlrt.spec import SpecError

    resolved = loaded.resolved()
    starts: dict[str, Any] = {}
    init_from = resolved["spec"].get("init_from")
    if init_from:
        source = init_from["path"] or str(_run_output(store, init_from["run"], "spec.init_from.run") / "output")
        if not Path(source).exists():
            raise SpecError([f"spec.init_from: {source} does not exist"])
        starts["init_from"] = {**init_from, "resolved": source}
    if resume_from:
        checkpoints = _run_output(store, resume_from, "--resume-from") / "checkpoints"
        if not checkpoints.is_dir() or not any(checkpoints.iterdir()):
            raise SpecError([f"--resume-from: run {resume_from!r} saved no checkpoint"])
        starts["resume_from"] = {"run": resume_from, "checkpoint_dir": str(checkpoints)}
    spec = resolved["spec"]
    seed = spec.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
        spec["seed"] = seed
    job_id = f"{trial_of[0]}-t{trial_of[1]:03d}" if trial_of else new_job_id(loaded.name)
    distributions = sorted({row["distribution"] for row in plugins.describe() if row["distribution"]})
    if trial_of:
        parent_job = store.get_job(store.get_run(trial_of[0]).job_id)
        project, submitted_by = parent_job.project, parent_job.submitted_by
        parent = store.get_run(trial_of[0]).record
        record = base_record(Path(spec["working_dir"]), seed, distributions, git=parent.get("git"))
        record["trial_params"] = trial_of[2]
    else:
        record = base_record(Path(spec["working_dir"]), seed, distributions)
    record["overrides"] = mask_overrides(loaded.overrides)
    record["sanity"] = sanity
    record.update(starts)
    params = dict(spec.get("hyperparameters") or {})
    if spec.get("algorithm"):
        params["algorithm"] = spec["algorithm"]
    stored = _stored_spec(resolved)
    store.create_job(
        Job(
            id=job_id,
            name=loaded.name,
            kind=loaded.job.kind,
            labels=loaded.job.metadata.labels,
            spec_submitted=mask_submitted(loaded.source_text),
            spec_resolved=stored,
            project=project,
            submitted_by=submitted_by,
        ),
        Run(
            id=job_id,
            job_id=job_id,
            state=RunState.QUEUED.value,
            reason="submitted",
            max_attempts=spec["retries"]["max"] + 1,
            output_uri=output_uri(resolved, job_id),
            record=record,
            parent_id=trial_of[0] if trial_of else None,
            trial=trial_of[1] if trial_of else None,
            owner=owner,
        ),
        params,
    )
    return job_id


def _stored_spec(resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` as the job row keeps it: env values encrypted; a key problem is refused
    like a spec problem (one line, nothing written)."""
    from mlrt.spec import SpecError

    try:
        return seal_resolved(resolved)
    except SecretError as exc:
        raise SpecError([str(exc)]) from None


def _submit_tuning(
    store: Store, loaded, *, resume_from: str | None, project: str | None, submitted_by: str | None
) -> str:
    """Queue a TuningJob: its own run drives the search (see :mod:`mlrt.tuning_controller`)."""
    from mlrt.spec import SpecError
    from mlrt.store import NotFound

    resolved = loaded.resolved()
    spec = resolved["spec"]
    if spec.get("seed") is None:
        spec["seed"] = secrets.randbelow(2**31)
    earlier = list(spec.get("warm_start") or []) + ([resume_from] if resume_from else [])
    for index, other in enumerate(earlier):
        try:
            kind = store.get_job(other).kind
        except NotFound:
            kind = None
        if kind != "TuningJob":
            field = "--resume-from" if other == resume_from else f"spec.warm_start.{index}"
            raise SpecError([f"{field}: {other!r} is not a tuning job in this database"])
    job_id = new_job_id(loaded.name)
    record = base_record(loaded.base_dir, spec["seed"], [])
    record.update(overrides=mask_overrides(loaded.overrides), resume_from=resume_from)
    stored = _stored_spec(resolved)
    store.create_job(
        Job(
            id=job_id,
            name=loaded.name,
            kind="TuningJob",
            labels=loaded.job.metadata.labels,
            spec_submitted=mask_submitted(loaded.source_text),
            spec_resolved=stored,
            project=project,
            submitted_by=submitted_by,
        ),
        Run(
            id=job_id,
            job_id=job_id,
            state=RunState.QUEUED.value,
            reason="submitted",
            output_uri="file://" + str(mlrt_home() / "runs" / job_id),
            record=record,
        ),
        {"tuner": spec["tuner"], "objective": f"{spec['objective']['goal']} {spec['objective']['metric']}"},
    )
    return job_id


def launch_context(
    resolved: dict[str, Any],
    run_id: str,
    attempt: int,
    tracking_uri: str,
    channel_paths: dict[str, str],
    record: dict[str, Any],
) -> LaunchContext:
    """The backend-neutral description of attempt ``attempt`` of run ``run_id``.

    ``record`` is the run's reproducibility record: it says whether this is a
    ``--sanity`` run and which weights or checkpoint the run starts from.
    The stored ``spec.env`` values are decrypted here, for the workers only
    (:class:`mlrt.secrets.SecretError`, one line, when the key cannot open them)."""
    spec = resolved["spec"]
    prefix = output_prefix(resolved, run_id)
    logs = log_dir(run_id, attempt)
    # The worker needs the spec minus user environment (which may hold secrets).
    worker_spec = {k: v for k, v in spec.items() if k != "env"}
    env = {
        **reveal_env(spec.get("env")),
        "MLRT_RUN_ID": run_id,
        "MLRT_ATTEMPT": str(attempt),
        "MLRT_TRACKING_URI": tracking_uri,
        "MLRT_HYPERPARAMETERS": json.dumps(spec.get("hyperparameters") or {}),
        "MLRT_OUTPUT_DIR": str(prefix / "output"),
        "MLRT_CHECKPOINT_DIR": str(prefix / "checkpoints"),
        "MLRT_SEED": str(spec["seed"]),
        "MLRT_FAILURE_FILE": str(logs / "failure.txt"),
        "MLRT_SPEC": json.dumps(worker_spec),
        "MLRT_RENDEZVOUS_TIMEOUT": str(spec["compute"]["rendezvous_timeout"]),
    }
    if record.get("sanity"):
        env["MLRT_SANITY"] = "1"
    if record.get("init_from"):
        env["MLRT_INIT_FROM"] = record["init_from"]["resolved"]
    if record.get("resume_from"):
        env["MLRT_RESUME_FROM"] = record["resume_from"]["checkpoint_dir"]
    for name, path in channel_paths.items():
        env[channel_env(name)] = path
    argv = list(WORKER_ARGV) if spec.get("algorithm") else list(spec.get("command") or [])
    return LaunchContext(
        run_id=run_id,
        attempt=attempt,
        argv=argv,
        env=env,
        cwd=spec["working_dir"],
        log_dir=str(logs),
        compute=spec["compute"],
        image=spec.get("image"),
        algorithm=spec.get("algorithm"),
        channels={name: channel["uri"] for name, channel in (spec.get("data") or {}).items()},
        stopping=spec.get("stopping") or {},
        output_uri=output_uri(resolved, run_id),
    )
