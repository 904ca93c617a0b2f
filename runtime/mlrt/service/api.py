"""The controller service's HTTP API (FastAPI; the schema is at ``/openapi.json``, docs at ``/docs``).

Every ``/api/v1`` route needs ``Authorization: Bearer <token>`` (see
:mod:`mlrt.service.auth`). A missing or unknown token is 401; a user token
acting on another project's job, or a worker token used outside its run or
on a user route, is 403. Refused requests change nothing.

User routes (``user`` and ``admin`` tokens): submit and validate a spec,
list and read runs (state, attempts, events, params, metrics, artifacts,
logs, reports) and cancel. Tracking routes (``worker`` tokens, the SDK's
``MLRT_TRACKING_URI=http(s)://...``): write metrics and params of the
token's own run. Health: ``/healthz`` (the process answers), ``/readyz``
(the database answers, its schema is current and reconcile passes succeed;
else 503 ``degraded`` with the error), ``/metrics`` (Prometheus).

The token is checked before the request body is read, and a body over
``MLRT_MAX_REQUEST_BYTES`` (default 8 MiB) is 413 (:mod:`mlrt.service.guard`).
A spec over its size limit is 413, other spec problems 422, one line each.
Every response has an ``X-Request-Id`` header; an unexpected error is a 500
``{"detail": "internal error", "request_id": ...}`` whose traceback the log
holds under that id.
"""

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from mlrt import __version__
from mlrt.metric_json import points_json
from mlrt.service import views
from mlrt.service.auth import Principal
from mlrt.service.guard import Guard, max_request_bytes, principal_of
from mlrt.service.loop import ServiceLoop
from mlrt.service.telemetry import Telemetry
from mlrt.states import RunState
from mlrt.store import NotFound, Store, mlrt_home
from mlrt.store.engine import current_revision
from mlrt.store.migrations import HEAD_REVISION
from mlrt.store.models import Run

LOG_CHUNK = 1 << 20
MAX_POINTS = 50_000


class SubmitBody(BaseModel):
    spec: str = Field(description="The spec file's text (YAML).")
    filename: str = Field("job.yaml", description="The spec file's name, used in error messages.")
    overrides: list[str] = Field(default_factory=list, description="`--set PATH=VALUE` overrides.")
    sanity: bool = False
    resume_from: str | None = None


class ValidateBody(BaseModel):
    spec: str
    filename: str = "job.yaml"
    overrides: list[str] = Field(default_factory=list)


class MetricsBody(BaseModel):
    points: list[tuple[str, int, float, float]] = Field(description="[key, step, value, unix time] per point.")
    batch: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The batch's id (the SDK sends a uuid4): a batch already stored for the run is not stored again.",
    )


class DiscardBody(BaseModel):
    keys: list[str]
    from_step: int


class ReportsBody(BaseModel):
    only: list[str] = Field(default_factory=list)


class SpecProblems(Exception):
    """A submitted spec cannot run (answered ``status``, 422 unless said otherwise, with one line per problem)."""

    def __init__(self, problems: list[str], status: int = 422):
        self.problems = problems
        self.status = status

    @classmethod
    def of(cls, exc: Exception) -> "SpecProblems":
        """The answer to a :class:`mlrt.spec.SpecError`: 413 for a spec over its size limit."""
        from mlrt.spec import SpecTooLarge

        return cls(exc.problems, 413 if isinstance(exc, SpecTooLarge) else 422)


def create_app(store: Store, loop: ServiceLoop | None, telemetry: Telemetry, *, max_body: int | None = None) -> FastAPI:
    """The API over ``store``; ``loop`` is woken on submissions and cancels (None: API only);
    ``max_body``: the largest request body in bytes (default: :func:`max_request_bytes`)."""
    app = FastAPI(
        title="mlrt controller",
        version=__version__,
        description=__doc__.split("\n\n", 1)[1],
    )

    def counted(method: str, status: int) -> None:
        telemetry.requests.labels(method, str(status)).inc()

    app.add_middleware(Guard, store=store, limit=max_request_bytes() if max_body is None else max_body, counted=counted)

    @app.exception_handler(SpecProblems)
    async def spec_problems(_request: Request, exc: SpecProblems):
        return JSONResponse(status_code=exc.status, content={"detail": exc.problems[0], "problems": exc.problems})

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound):
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    # Declared for the OpenAPI schema (the /docs "Authorize" button); Guard did the checking.
    bearer = HTTPBearer(auto_error=False, description="A token of `mlrt tokens create`, or a run's worker token.")

    def principal(
        request: Request, _shown: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        """Who the request acts as: :class:`Guard` authenticated it before its body was read."""
        found = principal_of(request.scope)
        if found is None:  # only /api/ routes are authenticated, and only they ask
            raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def user(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.kind == "worker":
            raise HTTPException(403, "a worker token can only record metrics and params of its own run")
        return who

    User = Annotated[Principal, Depends(user)]
    Anyone = Annotated[Principal, Depends(principal)]

    def visible_run(who: Principal, run_id: str) -> Run:
        run = store.get_run(run_id)
        if not who.can_see(store.projects_of([run_id]).get(run_id)):
            raise HTTPException(403, f"run {run_id!r} belongs to another project")
        return run

    def spec_of(run: Run) -> dict[str, Any]:
        return store.get_job(run.job_id).spec_resolved["spec"]

    # -- health ----------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """200 ``ready``; 503 ``degraded`` with ``last_error`` while the database cannot be
        used or reconcile passes fail (it turns ready by itself when they succeed again)."""
        leader = bool(loop and loop.leader.held)
        try:
            revision = current_revision(store.engine)
        except Exception as exc:
            line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            error = f"database unreachable: {line}"
            return JSONResponse(status_code=503, content={"status": "degraded", "leader": leader, "last_error": error})
        if revision != HEAD_REVISION:
            return JSONResponse(status_code=503, content={"status": f"schema at {revision}, not {HEAD_REVISION}"})
        if loop is not None and loop.error:
            return JSONResponse(
                status_code=503, content={"status": "degraded", "leader": leader, "last_error": loop.error}
            )
        return JSONResponse({"status": "ready", "leader": leader})

    @app.get("/metrics", tags=["health"])
    def prometheus() -> Response:
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    # -- identity and plugins --------------------------------------------------

    @app.get("/api/v1/whoami", tags=["auth"])
    def whoami(who: Anyone) -> dict[str, Any]:
        return {"user": who.user, "project": who.project, "kind": who.kind}

    @app.get("/api/v1/plugins", tags=["jobs"])
    def plugin_list(_who: User) -> list[dict[str, Any]]:
        from mlrt import plugins

        return plugins.describe()

    # -- submit and validate ---------------------------------------------------

    def load(text: str, filename: str, overrides: list[str], folder: Path):
        from mlrt.service import policy
        from mlrt.spec import SpecError, parse_text

        name = Path(filename).name or "job.yaml"
        try:
            loaded = parse_text(text, name, folder / name, overrides)
        except SpecError as exc:
            exc.problems = policy.conceal(exc.problems, folder)  # never whether a file outside them exists
            raise SpecProblems.of(exc) from None
        resolved = loaded.resolved()
        try:
            policy.check(resolved, folder)  # backends, paths of this machine and namespaces the operator allows
        except policy.PolicyError as exc:
            raise SpecProblems(exc.problems) from None
        return loaded

    def check_referenced(who: Principal, loaded, resume_from: str | None) -> None:
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

    @app.post("/api/v1/jobs", status_code=201, tags=["jobs"])
    def submit(body: SubmitBody, who: User) -> dict[str, Any]:
        """Queue a spec as a new job of the token's project; the leader launches it."""
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
            loaded = load(body.spec, body.filename, body.overrides, folder)  # checks the text before it is written
            # Masked: spec.env values are kept only encrypted, in the job row (mlrt.secrets).
            (folder / (Path(body.filename).name or "job.yaml")).write_text(mask_submitted(body.spec))
            check_referenced(who, loaded, body.resume_from)
            run_id = submit_job(
                store,
                loaded,
                sanity=body.sanity,
                resume_from=body.resume_from,
                project=who.project,
                submitted_by=who.user,
            )
        except SpecError as exc:
            shutil.rmtree(folder)
            raise SpecProblems.of(exc) from None
        except BaseException:
            shutil.rmtree(folder)  # nothing half-written for a refused submission
            raise
        if loop is not None:
            loop.wake()
        return {"run_id": run_id, "state": RunState.QUEUED.value}

    @app.post("/api/v1/validate", tags=["jobs"])
    def validate(body: ValidateBody, _who: User) -> dict[str, Any]:
        """What `mlrt validate --json` prints: the resolved spec and launch request; launches nothing."""
        import tempfile

        from mlrt.cli.jobs import validation_plan

        with tempfile.TemporaryDirectory() as folder:
            return validation_plan(load(body.spec, body.filename, body.overrides, Path(folder)))  # values masked

    # -- runs ------------------------------------------------------------------

    @app.get("/api/v1/runs", tags=["runs"])
    def list_runs(
        who: User,
        limit: int = 50,
        state: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI reads the default)
        job: str | None = None,
    ) -> list[dict[str, Any]]:
        project = None if who.kind == "admin" else who.project
        runs = store.list_runs(limit=limit, states=state, job_id=job, project=project)
        return [r.model_dump(mode="json") for r in runs]

    @app.get("/api/v1/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, who: User) -> dict[str, Any]:
        return visible_run(who, run_id).model_dump(mode="json")

    @app.get("/api/v1/runs/{run_id}/job", tags=["runs"])
    def get_job(run_id: str, who: User) -> dict[str, Any]:
        return views.job_view(store.get_job(visible_run(who, run_id).job_id))

    @app.get("/api/v1/runs/{run_id}/trials", tags=["runs"])
    def trials(run_id: str, who: User) -> list[dict[str, Any]]:
        visible_run(who, run_id)
        return [t.model_dump(mode="json") for t in store.trials(run_id)]

    @app.get("/api/v1/runs/{run_id}/attempts", tags=["runs"])
    def attempts(run_id: str, who: User) -> list[dict[str, Any]]:
        spec = spec_of(visible_run(who, run_id))
        return [views.attempt_view(a, spec) for a in store.attempts(run_id)]

    @app.get("/api/v1/runs/{run_id}/events", tags=["runs"])
    def events(run_id: str, who: User) -> list[dict[str, Any]]:
        visible_run(who, run_id)
        return [e.model_dump(mode="json") for e in store.events(run_id)]

    @app.get("/api/v1/runs/{run_id}/params", tags=["runs"])
    def params(run_id: str, who: User) -> dict[str, str]:
        visible_run(who, run_id)
        return store.params(run_id)

    @app.get("/api/v1/runs/{run_id}/metrics", tags=["runs"], response_model=list[dict[str, Any]])
    def metrics(
        run_id: str, who: User, key: str | None = None, every: Annotated[int, Query(ge=1, le=2**31 - 1)] = 1
    ) -> Response:
        """The points of a run (of one ``key``), by key and step; ``every=N`` keeps every Nth point
        of each key. Streamed as they are read from the database."""
        visible_run(who, run_id)
        points = store.iter_metric_points(run_id, key, every=every)
        return StreamingResponse(points_json(points), media_type="application/json")

    @app.get("/api/v1/runs/{run_id}/metrics/summary", tags=["runs"])
    def metric_summary(run_id: str, who: User) -> list[dict[str, Any]]:
        """Per metric key: points, last, min and max, aggregated by the database."""
        visible_run(who, run_id)
        return store.metric_summary(run_id)

    @app.get("/api/v1/runs/{run_id}/metrics/latest", tags=["runs"])
    def latest_metrics(run_id: str, who: User) -> dict[str, float]:
        visible_run(who, run_id)
        return store.latest_metrics(run_id)

    @app.get("/api/v1/last-values", tags=["runs"])
    def last_values(who: User, key: str, run: Annotated[list[str], Query()]) -> dict[str, float]:
        """The last value of metric ``key`` for each of several runs (trials of a tuning job)."""
        projects = store.projects_of(run)
        if any(not who.can_see(projects.get(r)) for r in run):
            raise HTTPException(403, "some of these runs belong to another project")
        return store.last_values(run, key)

    @app.post("/api/v1/runs/{run_id}/cancel", tags=["runs"])
    def cancel(run_id: str, who: User) -> dict[str, Any]:
        """Ask the leader to stop the run (SIGTERM, then SIGKILL after its grace period)."""
        run = visible_run(who, run_id)
        if not RunState(run.state).is_terminal():
            store.update_run(run_id, cancel_requested=True)
            store.add_event(run_id, f"cancel requested by {who.user}")
            if loop is not None:
                loop.wake()
        return store.get_run(run_id).model_dump(mode="json")

    @app.get("/api/v1/runs/{run_id}/logs/{attempt}/{rank}", tags=["runs"], response_class=PlainTextResponse)
    def logs(run_id: str, attempt: int, rank: int, who: User, offset: int = 0) -> Response:
        """Bytes of worker ``rank``'s output from position ``offset`` (at most 1 MiB); the
        ``X-Next-Offset`` header says where to continue. Positions count the worker's output,
        so they stay valid when a log past its size limit is cut (:mod:`mlrt.logfile`):
        ``X-Output-Start`` says where the part's bytes begin (after ``offset`` when output there
        was cut) and ``X-Cut-After: 1`` that the output right after the part was cut. Served from
        the database (:mod:`mlrt.logship`), so every replica answers the same."""
        from mlrt.logship import read_log

        visible_run(who, run_id)
        row = next((a for a in store.attempts(run_id) if a.number == attempt), None)
        workers = {w["rank"] for w in (row.request.get("workers", []) if row else [])}
        if rank not in workers:
            raise HTTPException(404, f"run {run_id!r} has no worker {rank} in attempt {attempt}")
        part = read_log(store, run_id, attempt, rank, max(offset, 0), LOG_CHUNK)
        headers = {
            "X-Next-Offset": str(part.start + len(part.data)),
            "X-Output-Start": str(part.start),
            "X-Cut-After": "1" if part.cut_after else "0",
        }
        return Response(part.data, media_type="text/plain", headers=headers)

    @app.get("/api/v1/runs/{run_id}/artifacts", tags=["artifacts"])
    def artifacts(run_id: str, who: User) -> list[dict[str, Any]]:
        visible_run(who, run_id)
        return [a.model_dump(mode="json") for a in store.artifacts(run_id)]

    @app.get("/api/v1/runs/{run_id}/artifacts/{path:path}", tags=["artifacts"])
    def artifact(run_id: str, path: str, who: User) -> Response:
        """The content of one registered artifact (only registered paths are served)."""
        from mlrt.artifacts import relative_path_problem

        visible_run(who, run_id)
        problem = relative_path_problem(path)
        if problem:
            raise HTTPException(400, f"artifact path {path!r} {problem}: it must stay inside the run")
        row = next((a for a in store.artifacts(run_id) if a.path == path), None)
        if row is None:
            raise HTTPException(404, f"run {run_id!r} has no artifact {path!r}")
        headers = {"X-Sha256": row.sha256, "Content-Length": str(row.size)}
        if row.uri.startswith("s3://"):
            from mlrt import s3

            return StreamingResponse(s3.open_object(row.uri), media_type="application/octet-stream", headers=headers)
        from fastapi.responses import FileResponse

        from mlrt.artifacts import walk_root
        from mlrt.submission import local_prefix

        run = store.get_run(run_id)
        root = walk_root(local_prefix(run.output_uri, run_id) / "output")
        file = Path(row.uri.removeprefix("file://")).resolve()
        if root is None or not file.is_relative_to(root) or not file.is_file():
            raise HTTPException(404, f"artifact {path!r} is no longer on the controller")
        headers.pop("Content-Length")  # FileResponse streams the file and sets it
        return FileResponse(file, media_type="application/octet-stream", headers=headers)

    @app.post("/api/v1/runs/{run_id}/artifacts/push", tags=["artifacts"])
    def push_artifacts(run_id: str, who: User) -> list[dict[str, Any]]:
        """Upload a finished run's staged output (kept when it ended "output not uploaded") to its
        ``s3://`` output and register the artifacts; the run keeps its state. 409 when there is
        nothing to push on this controller, 502 when S3 still fails after the retries."""
        from mlrt import s3
        from mlrt.artifacts import PushRefused, push

        visible_run(who, run_id)
        try:
            found = push(store, run_id)
        except PushRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except (s3.UploadFailed, ValueError) as exc:
            raise HTTPException(502, f"output not uploaded: {exc}") from None
        return [a.model_dump(mode="json") for a in found]

    # -- reports ---------------------------------------------------------------

    @app.get("/api/v1/runs/{run_id}/reports", tags=["reports"])
    def stored_reports(run_id: str, who: User) -> dict[str, Any]:
        from mlrt import report_runner

        visible_run(who, run_id)
        return report_runner.load_results(store, run_id)

    @app.post("/api/v1/runs/{run_id}/reports", tags=["reports"])
    def build_reports(run_id: str, body: ReportsBody, who: User) -> dict[str, Any]:
        """Build the run's reports now (``only``: these; default: the spec's, else all)."""
        from mlrt import plugins, report_runner

        run = visible_run(who, run_id)
        job = store.get_job(run.job_id)
        if job.kind == "TuningJob":
            raise SpecProblems([f"{run_id} is a tuning job; report on one of its trials (mlrt runs compare {run_id})"])
        names = body.only or report_runner.needed_reports(job.spec_resolved["spec"]) or sorted(plugins.reports())
        try:
            return report_runner.build(store, run_id, names)
        except report_runner.ReportError as exc:
            raise SpecProblems([str(exc)]) from None

    @app.get("/api/v1/runs/{run_id}/reports/html", tags=["reports"], response_class=HTMLResponse)
    def report_page(run_id: str, who: User) -> HTMLResponse:
        from mlrt import report_runner

        page = report_runner.reports_dir(visible_run(who, run_id)) / "report.html"
        if not page.is_file():
            raise HTTPException(404, f"run {run_id!r} has no report page yet")
        return HTMLResponse(page.read_text())

    # -- tracking (worker tokens) --------------------------------------------

    def tracked(who: Principal, run_id: str) -> None:
        if not who.can_track(run_id):
            raise HTTPException(403, f"this token cannot record data of run {run_id!r}")

    @app.post("/api/v1/runs/{run_id}/tracking/metrics", tags=["tracking"], status_code=204)
    def track_metrics(run_id: str, body: MetricsBody, who: Anyone) -> Response:
        tracked(who, run_id)
        if len(body.points) > MAX_POINTS:
            raise HTTPException(413, f"at most {MAX_POINTS} points per request")
        count = store.insert_metrics(run_id, body.points, batch_id=body.batch)
        telemetry.metric_points.inc(count)
        return Response(status_code=204)

    @app.get("/api/v1/runs/{run_id}/tracking/max-steps", tags=["tracking"])
    def track_max_steps(run_id: str, who: Anyone) -> dict[str, int]:
        tracked(who, run_id)
        return store.max_steps(run_id)

    @app.post("/api/v1/runs/{run_id}/tracking/params", tags=["tracking"], status_code=204)
    def track_params(run_id: str, body: dict[str, Any], who: Anyone) -> Response:
        tracked(who, run_id)
        store.log_params(run_id, body)
        return Response(status_code=204)

    @app.post("/api/v1/runs/{run_id}/tracking/discard", tags=["tracking"], status_code=204)
    def track_discard(run_id: str, body: DiscardBody, who: Anyone) -> Response:
        tracked(who, run_id)
        store.delete_metrics(run_id, body.keys, body.from_step)
        return Response(status_code=204)

    return app
