"""Turning a validated spec into a queued run, and a run into a launch context.

:func:`submit` writes the job, its run (QUEUED), the initial params and the
reproducibility record. :func:`launch_context` builds the backend-neutral
description of one attempt: the command, the container contract's
environment, the working directory and the log folder.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from mlrt.launchers import LaunchContext
from mlrt.reproducibility import base_record
from mlrt.spec import LoadedSpec
from mlrt.states import RunState
from mlrt.store import Store, mlrt_home
from mlrt.store.models import Job, Run

# The program an ``algorithm:`` job's workers run.
WORKER_ARGV = [sys.executable, "-m", "mlrt.worker"]


def new_job_id(name: str) -> str:
    """``NAME-xxxxxx``: the job's name and six random hex digits."""
    return f"{name}-{secrets.token_hex(3)}"


def output_prefix(resolved: dict[str, Any], run_id: str) -> Path:
    """The run's own folder under ``spec.output.path`` (default ``$MLRT_HOME/runs``)."""
    base = resolved["spec"]["output"].get("path") or f"file://{mlrt_home() / 'runs'}"
    return Path(base.removeprefix("file://")) / run_id


def log_dir(run_id: str, attempt: int) -> Path:
    """Where the workers' logs of one attempt are kept."""
    return mlrt_home() / "logs" / run_id / f"attempt-{attempt}"


def submit(store: Store, loaded: LoadedSpec, *, sanity: bool = False) -> str:
    """Queue ``loaded`` as a new job with one run; return the run id (= the job id)."""
    from mlrt import plugins

    resolved = loaded.resolved()
    spec = resolved["spec"]
    seed = spec.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
        spec["seed"] = seed
    job_id = new_job_id(loaded.name)
    distributions = sorted({row["distribution"] for row in plugins.describe() if row["distribution"]})
    record = base_record(Path(spec["working_dir"]), seed, distributions)
    record["overrides"] = loaded.overrides
    record["sanity"] = sanity
    params = dict(spec.get("hyperparameters") or {})
    if spec.get("algorithm"):
        params["algorithm"] = spec["algorithm"]
    store.create_job(
        Job(
            id=job_id,
            name=loaded.name,
            kind=loaded.job.kind,
            labels=loaded.job.metadata.labels,
            spec_submitted=loaded.source_text,
            spec_resolved=resolved,
        ),
        Run(
            id=job_id,
            job_id=job_id,
            state=RunState.QUEUED.value,
            reason="submitted",
            max_attempts=spec["retries"]["max"] + 1,
            output_uri="file://" + str(output_prefix(resolved, job_id)),
            record=record,
        ),
        params,
    )
    return job_id


def channel_env(name: str) -> str:
    """The environment variable that holds a channel's local path."""
    return f"MLRT_CHANNEL_{name.upper()}"


def launch_context(
    resolved: dict[str, Any],
    run_id: str,
    attempt: int,
    tracking_uri: str,
    channel_paths: dict[str, str],
    *,
    sanity: bool = False,
) -> LaunchContext:
    """The backend-neutral description of attempt ``attempt`` of run ``run_id``."""
    spec = resolved["spec"]
    prefix = output_prefix(resolved, run_id)
    logs = log_dir(run_id, attempt)
    # The worker needs the spec minus user environment (which may hold secrets).
    worker_spec = {k: v for k, v in spec.items() if k != "env"}
    env = {
        **spec.get("env", {}),
        "MLRT_RUN_ID": run_id,
        "MLRT_ATTEMPT": str(attempt),
        "MLRT_TRACKING_URI": tracking_uri,
        "MLRT_HYPERPARAMETERS": json.dumps(spec.get("hyperparameters") or {}),
        "MLRT_OUTPUT_DIR": str(prefix / "output"),
        "MLRT_CHECKPOINT_DIR": str(prefix / "checkpoints"),
        "MLRT_SEED": str(spec["seed"]),
        "MLRT_FAILURE_FILE": str(logs / "failure.txt"),
        "MLRT_SPEC": json.dumps(worker_spec),
    }
    if sanity:
        env["MLRT_SANITY"] = "1"
    for name, path in channel_paths.items():
        env[channel_env(name)] = path
    argv = list(WORKER_ARGV) if spec.get("algorithm") else list(spec["command"])
    return LaunchContext(
        run_id=run_id,
        attempt=attempt,
        argv=argv,
        env=env,
        cwd=spec["working_dir"],
        log_dir=str(logs),
        compute=spec["compute"],
        image=spec.get("image"),
    )
