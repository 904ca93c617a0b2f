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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from mlrt import sagemaker_contract
from mlrt.admission import run_resources
from mlrt.launchers import LaunchContext, channel_env
from mlrt.reproducibility import base_record
from mlrt.secrets import SecretError, mask_overrides, mask_submitted, reveal_env, seal_resolved
from mlrt.spec import LoadedSpec
from mlrt.states import RunState
from mlrt.store import NotFound, Store, mlrt_home
from mlrt.store.models import Job, Row, Run, row_of

# The program an ``algorithm:`` job's workers run.
WORKER_ARGV = [sys.executable, "-m", "mlrt.worker"]


ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
"""Crockford's base32 in lower case: digits and the letters but i, l, o and u (no 1/l or 0/o mix-ups)."""
ID_RANDOM = 16
"""Random characters in a run id: 16 of 32 symbols are 80 bits."""
MAX_ID = 56
"""The longest id :func:`new_job_id` makes: a tuning trial's id adds ``-tNNNNN`` (up to 10,000
trials), and the whole must fit a Kubernetes label value and a DNS label (63 characters)."""
ID_ATTEMPTS = 5
"""How many fresh ids a submission draws before it gives up (one more than one is already a marvel)."""

RowsFor = Callable[[str], tuple[Row, Row, dict[str, Any]]]
"""Builds a job's rows (job, run, initial params) for a given id."""


def new_job_id(name: str) -> str:
    """A new job's id (and its run's): ``NAME-`` and 16 random characters, such as
    ``digits-logreg-7k2m9xq0f3t7hv1c``.

    The characters are :data:`ID_ALPHABET` drawn with :mod:`secrets`: 80
    random bits, valid in DNS names, Kubernetes label values and container
    names. Among n runs of one name, the chance that any two draw the same id
    is about n^2 / 2^81: 4e-9 for n = 10^8, 4e-13 for a million. A name longer
    than 39 characters is cut there (trailing dashes dropped), so that an id has
    at most :data:`MAX_ID` = 56 characters and a trial's
    ``<tuning run id>-t10000`` at most 63. A drawn id that is taken all the same
    is drawn again when the job is written (:func:`create`)."""
    suffix = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_RANDOM))
    return f"{name[: MAX_ID - ID_RANDOM - 1].rstrip('-')}-{suffix}"


def create(store: Store, name: str, rows: RowsFor, job_id: str | None = None) -> str:
    """Write the rows that ``rows(id)`` builds, under ``job_id`` or else a :func:`new_job_id` of
    ``name``; return the id.

    The job, its run, params and first event are one transaction: when the
    insert fails because the id is taken, nothing of the job is left, and a
    drawn id is drawn again (up to :data:`ID_ATTEMPTS` times), so a collision
    never reaches the user. A given ``job_id`` (a tuning trial's, made of its
    tuning run's id and its number) is never replaced: that it is taken is an error."""
    for _ in range(1 if job_id else ID_ATTEMPTS):
        candidate = job_id or new_job_id(name)
        try:
            store.create_job(*rows(candidate))
        except IntegrityError:
            if job_id or not _taken(store, candidate):
                raise
            continue
        return candidate
    raise RuntimeError(f"{ID_ATTEMPTS} fresh ids for {name!r} were all taken: the random source is broken")


def _taken(store: Store, job_id: str) -> bool:
    try:
        store.get_job(job_id)
    except NotFound:
        return False
    return True


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
    source: dict[str, Any] | None = None,
) -> str:
    """Queue ``loaded`` as a new job with one run; return the run id (= the job id).

    ``resume_from`` names a run whose latest checkpoint the new run starts from.
    ``trial_of`` is ``(tuning run id, trial number, parameters)`` for a tuning
    trial, whose id is then ``<tuning run>-t<number>``; it shares its tuning
    run's git state (read at the tuning job's submission). ``owner`` is the
    controller that will drive it. ``project`` and ``submitted_by`` mark a job
    submitted through the controller's API (a trial inherits its tuning job's).

    A ``command:`` job's code is packed into a source bundle (:mod:`mlrt.sources`)
    and named in the run's record; ``source`` is that entry when the bundle came
    with the submission (the API's upload), and a trial shares its tuning job's.

    The job row keeps ``spec.env`` values encrypted and the submitted text
    with them masked (see :mod:`mlrt.secrets`).
    """
    if not isinstance(loaded, LoadedSpec):
        return _submit_tuning(
            store, loaded, resume_from=resume_from, project=project, submitted_by=submitted_by, source=source
        )
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
    image = worker_image(spec)
    if trial_of:
        parent_job = store.get_job(store.get_run(trial_of[0]).job_id)
        project, submitted_by = parent_job.project, parent_job.submitted_by
        parent = store.get_run(trial_of[0]).record
        record = base_record(Path(spec["working_dir"]), seed, git=parent.get("git"), image=image)
        record["trial_params"] = trial_of[2]
        source = parent.get("source")
    elif project is not None:  # sent to the service: the controller's folders say nothing of the sender's code
        record = base_record(Path(spec["working_dir"]), seed, git=None, image=image)
    else:
        record = base_record(Path(spec["working_dir"]), seed, image=image)
        source = _kept_source(store, loaded)
    record["source"] = source
    record["overrides"] = mask_overrides(loaded.overrides)
    record["sanity"] = sanity
    record.update(starts)
    params = dict(spec.get("hyperparameters") or {})
    if spec.get("algorithm"):
        params["algorithm"] = spec["algorithm"]
    stored = _stored_spec(resolved)

    def rows(job_id: str) -> tuple[Row, Row, dict[str, Any]]:
        return (
            _job_row(job_id, loaded, stored, project, submitted_by),
            row_of(
                Run,
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
                priority=spec.get("priority", 0),
                backend=spec["compute"]["backend"],
                **dict(zip(("cpus", "memory", "gpus"), run_resources(spec), strict=True)),
            ),
            params,
        )

    return create(store, loaded.name, rows, f"{trial_of[0]}-t{trial_of[1]:03d}" if trial_of else None)


def worker_image(spec: dict[str, Any]) -> str | None:
    """The image a run's workers run in: ``spec.image``, mlrt's training image for a job of
    another backend than ``local``, or None when they run on this machine's Python."""
    from mlrt.launchers import training_image

    if spec.get("image"):
        return spec["image"]
    return training_image() if spec["compute"]["backend"] != "local" else None


def _kept_source(store: Store, loaded) -> dict[str, Any] | None:
    """Pack a local submission's code, keep the bundle (once per digest) and return its record entry;
    None for a job without a ``command:``. A source that cannot be packed is refused like a spec problem."""
    from mlrt import sources
    from mlrt.bundles import BundleError
    from mlrt.spec import SpecError

    try:
        packed = sources.pack_spec(loaded)
        if packed is None:
            return None
        sources.keep(store, packed[0])
    except BundleError as exc:
        raise SpecError([str(exc)]) from None
    return sources.described(*packed)


def _job_row(job_id: str, loaded: LoadedSpec, stored: dict[str, Any], project: str | None, by: str | None) -> Row:
    """The jobs row of ``loaded`` (its submitted text masked, its resolved spec as ``stored``)."""
    return row_of(
        Job,
        id=job_id,
        name=loaded.name,
        kind=loaded.job.kind,
        labels=loaded.job.metadata.labels,
        spec_submitted=mask_submitted(loaded.source_text),
        spec_resolved=stored,
        project=project,
        submitted_by=by,
    )


def _stored_spec(resolved: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` as the job row keeps it: env values encrypted; a key problem is refused
    like a spec problem (one line, nothing written)."""
    from mlrt.spec import SpecError

    try:
        return seal_resolved(resolved)
    except SecretError as exc:
        raise SpecError([str(exc)]) from None


def _submit_tuning(
    store: Store,
    loaded,
    *,
    resume_from: str | None,
    project: str | None,
    submitted_by: str | None,
    source: dict[str, Any] | None,
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
    record = base_record(loaded.base_dir, spec["seed"], **({"git": None} if project is not None else {}))
    record.update(overrides=mask_overrides(loaded.overrides), resume_from=resume_from)
    record["source"] = source if source is not None or project is not None else _kept_source(store, loaded)
    stored = _stored_spec(resolved)

    def rows(job_id: str) -> tuple[Row, Row, dict[str, Any]]:
        return (
            _job_row(job_id, loaded, stored, project, submitted_by),
            row_of(
                Run,
                id=job_id,
                job_id=job_id,
                state=RunState.QUEUED.value,
                reason="submitted",
                output_uri="file://" + str(mlrt_home() / "runs" / job_id),
                record=record,
            ),
            {"tuner": spec["tuner"], "objective": f"{spec['objective']['goal']} {spec['objective']['metric']}"},
        )

    return create(store, loaded.name, rows)


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
    worker_spec = {k: v for k, v in spec.items() if k not in ("env", "source")}
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
    contract = spec.get("contract") or "mlrt"
    if contract == "sagemaker" and spec.get("command"):  # script mode: the hyperparameters as arguments
        argv += sagemaker_contract.user_args(spec.get("hyperparameters") or {})
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
        source=(record.get("source") or {}).get("digest"),
        output_uri=output_uri(resolved, run_id),
        contract=contract,
    )
