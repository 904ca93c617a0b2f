"""Submitting and validating specs: ``POST /api/v1/jobs`` and ``POST /api/v1/validate``.

A spec is checked here as ``mlrt submit`` checks it, then against what the
operator allows on this machine (:mod:`mlrt.service.policy`); problems are 422
(413 for a spec over its size limit), one line each, and never say whether a
file outside the allowed paths exists.
"""

import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from mlrt.service.auth import Principal
from mlrt.service.routes.common import Parts, SpecProblems, User
from mlrt.states import RunState
from mlrt.store import Store, mlrt_home

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class SubmitBody(BaseModel):
    spec: str = Field(description="The spec file's text (YAML).")
    filename: str = Field("job.yaml", description="The spec file's name, used in error messages.")
    overrides: list[str] = Field(default_factory=list, description="`--set PATH=VALUE` overrides.")
    sanity: bool = False
    resume_from: str | None = None
    source: str | None = Field(None, description="The digest of the job's source bundle (`POST /api/v1/sources`).")
    source_dir: str = Field("", description="The spec file's folder inside the bundle ('' for its top).")


class ValidateBody(BaseModel):
    spec: str
    filename: str = "job.yaml"
    overrides: list[str] = Field(default_factory=list)
    source: str | None = None
    source_dir: str = ""


def load(text: str, filename: str, overrides: list[str], folder: Path, spec_dir: Path | None = None):
    """The spec ``text`` loaded as if it were the file ``filename`` in ``spec_dir`` (default: ``folder``,
    the submission's folder), and allowed by the policy."""
    from mlrt.service import policy
    from mlrt.spec import SpecError, parse_text

    name = Path(filename).name or "job.yaml"
    try:
        loaded = parse_text(text, name, (spec_dir or folder) / name, overrides)
    except SpecError as exc:
        exc.problems = policy.conceal(exc.problems, folder)  # never whether a file outside them exists
        raise SpecProblems.of(exc) from None
    resolved = loaded.resolved()
    try:
        policy.check(resolved, folder)  # backends, paths of this machine and namespaces the operator allows
    except policy.PolicyError as exc:
        raise SpecProblems(exc.problems) from None
    return loaded


def unpacked_source(store: Store, body: SubmitBody | ValidateBody, folder: Path) -> tuple[Path, dict[str, Any] | None]:
    """Unpack the submission's source bundle (if any) into its folder: the folder the spec lies in
    inside it, and the bundle's entry for the run's record. An unknown digest or a bad
    ``source_dir`` is a spec problem (422)."""
    from mlrt import limits, sources
    from mlrt.bundles import Bundle, BundleError, is_digest, unpack
    from mlrt.spec import SpecError

    if body.source is None:
        return folder, None
    if not is_digest(body.source):
        raise SpecError(["source: not a source bundle digest (64 hex characters); upload it with POST /api/v1/sources"])
    parts = [part for part in body.source_dir.split("/") if part]
    if len(body.source_dir) > limits.MAX_SOURCE_PATH_CHARS or any(p in (".", "..") or "\\" in p for p in parts):
        raise SpecError(["source_dir: must be a plain relative folder inside the bundle"])
    try:
        data = sources.load(store, body.source)
        bundle = Bundle.of(data)
        unpack(data, folder)
    except BundleError as exc:
        raise SpecError([f"source: {exc}"]) from None
    spec_dir = folder.joinpath(*parts)
    if any(parent.is_file() for parent in (spec_dir, *spec_dir.parents)):
        raise SpecError(["source_dir: names a file of the bundle, not a folder"])
    spec_dir.mkdir(parents=True, exist_ok=True)
    return spec_dir, sources.described(bundle)


def check_referenced(store: Store, who: Principal, loaded, resume_from: str | None) -> None:
    """Runs a spec starts from must be visible to the submitter too."""
    referenced = {"--resume-from": resume_from} if resume_from else {}
    spec = loaded.resolved()["spec"]
    if (spec.get("init_from") or {}).get("run"):
        referenced["spec.init_from.run"] = spec["init_from"]["run"]
    for index, other in enumerate(spec.get("warm_start") or []):
        referenced[f"spec.warm_start.{index}"] = other
    projects = store.projects_of(list(referenced.values()))
    for field, run_id in referenced.items():
        if run_id in projects and not who.can_see(projects[run_id]):
            raise HTTPException(403, f"{field}: run {run_id!r} belongs to another project")


@router.post("/jobs", status_code=201)
def submit(body: SubmitBody, who: User, parts: Parts) -> dict[str, Any]:
    """Queue a spec as a new job of the token's project; the leader launches it."""
    from mlrt.admission import priority_problem
    from mlrt.planning import check_columns, check_launchable, training_spec
    from mlrt.secrets import mask_submitted
    from mlrt.spec import SpecError
    from mlrt.submission import submit as submit_job

    if who.project is None:
        raise HTTPException(403, "an admin token has no project to submit into; use a user token")
    # The spec's own folder on this side: relative paths in it resolve here,
    # and it is the default working directory of its workers.
    folder = mlrt_home() / "submissions" / secrets.token_hex(8)
    folder.mkdir(parents=True)
    try:
        spec_dir, source = unpacked_source(parts.store, body, folder)  # the job's code: its working directory
        loaded = load(body.spec, body.filename, body.overrides, folder, spec_dir)  # checks the text before writing
        check_columns(loaded)  # as `mlrt submit` does: a column the data does not have, one line now
        check_launchable(loaded)  # the backend's own preflight on this side (e.g. cluster credentials)
        capped = priority_problem(who.project, who.max_priority, training_spec(loaded).get("priority", 0))
        if capped:
            raise SpecError([capped])
        # Masked: spec.env values are kept only encrypted, in the job row (mlrt.secrets).
        (spec_dir / (Path(body.filename).name or "job.yaml")).write_text(mask_submitted(body.spec))
        check_referenced(parts.store, who, loaded, body.resume_from)
        run_id = submit_job(
            parts.store,
            loaded,
            sanity=body.sanity,
            resume_from=body.resume_from,
            project=who.project,
            submitted_by=who.user,
            source=source,
        )
    except SpecError as exc:
        shutil.rmtree(folder)
        raise SpecProblems.of(exc) from None
    except BaseException:
        shutil.rmtree(folder)  # nothing half-written for a refused submission
        raise
    parts.wake()
    return {"run_id": run_id, "state": RunState.QUEUED.value}


@router.post("/validate")
def validate(body: ValidateBody, _who: User, parts: Parts) -> dict[str, Any]:
    """What `mlrt validate --json` prints: the resolved spec and launch request; launches nothing.
    With a source bundle, the spec is checked where it will run: inside the unpacked bundle."""
    import tempfile

    from mlrt.planning import validation_plan
    from mlrt.spec import SpecError

    with tempfile.TemporaryDirectory() as folder:
        try:
            spec_dir, _ = unpacked_source(parts.store, body, Path(folder))
        except SpecError as exc:
            raise SpecProblems.of(exc) from None
        return validation_plan(load(body.spec, body.filename, body.overrides, Path(folder), spec_dir))  # masked
