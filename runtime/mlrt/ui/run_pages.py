"""A run's page, ``/ui/runs/{run_id}``, and the parts it refreshes while the run is active.

The page shows the state and its timeline, the failure reason with the log's last lines,
params, a chart of every metric (``?axis=time`` puts time since the first point on the
x-axis; a chart zooms through :mod:`mlrt.ui.chart_pages`), each worker's output,
artifacts (size, sha256, download), the error-analysis report sections, the
reproducibility record, and a cancel button. ``/ui/runs/{run_id}/part/{part}`` answers
one part alone; while the run is not finished the page fetches its parts every few
seconds, and a part answered after the run ended carries ``X-Mlrt-Live: done``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlrt.states import RunState
from mlrt.store.models import Run
from mlrt.ui import run_view
from mlrt.ui.app import render
from mlrt.ui.auth import PREFIX, Context, UiContext, Viewer, check_form, visible_run

router = APIRouter()

PARTS = ("state", "params", "metrics", "logs", "artifacts", "reports")
"""The parts of the page, in order; each refreshes by itself while the run is active."""
AXES = ("step", "time")
FAILED = ("FAILED", "TIMED_OUT", "FAILED_GATE")
"""States whose page shows the end of each worker's log next to the reason."""


def _axis(axis: str) -> str:
    if axis not in AXES:
        raise HTTPException(400, f"axis: {axis!r} is not one of {', '.join(AXES)}")
    return axis


def _part_values(ctx: UiContext, run: Run, part: str, axis: str) -> dict[str, Any]:
    """What the template of ``part`` needs."""
    store = ctx.store
    if part == "state":
        tails = run_view.worker_tails(store, run.id) if run.state in FAILED else []
        return {
            "timeline": run_view.timeline(store, run),
            "failed": run.state in FAILED,
            "failure_tails": tails,
            "failure_lines": run_view.FAILURE_TAIL_LINES,
        }
    if part == "params":
        return {"params": sorted(store.params(run.id).items())}
    if part == "metrics":
        summary = store.metric_summary(run.id)
        return {"summary": summary, "charts": run_view.metric_charts(store, run.id, summary, axis), "axis": axis}
    if part == "logs":
        return {"tails": run_view.worker_tails(store, run.id)}
    if part == "artifacts":
        return {"artifacts": store.artifacts(run.id)}
    return {"sections": run_view.report_sections(store, run)}


def _common(run: Run, ctx: UiContext) -> dict[str, Any]:
    job = ctx.store.get_job(run.job_id)
    return {"run": run, "job": job, "terminal": RunState(run.state).is_terminal()}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, ctx: Context, who: Viewer, axis: str = "step") -> HTMLResponse:
    run = visible_run(ctx, who, run_id)
    axis = _axis(axis)
    values: dict[str, Any] = {"viewer": who, "parts": PARTS, "axis": axis, **_common(run, ctx)}
    for part in PARTS:
        values.update(_part_values(ctx, run, part, axis))
    values["repro"] = run_view.reproducibility(ctx.store, run)
    return render(request, "run.html", values)


@router.get("/runs/{run_id}/part/{part}", response_class=HTMLResponse)
def run_part(request: Request, run_id: str, part: str, ctx: Context, who: Viewer, axis: str = "step") -> HTMLResponse:
    """One part of the run's page (``state``, ``params``, ``metrics``, ``logs``, ``artifacts``, ``reports``)."""
    if part not in PARTS:
        raise HTTPException(404, f"a run's page has no part {part!r}: one of {', '.join(PARTS)}")
    run = visible_run(ctx, who, run_id)
    values = {"viewer": who, **_common(run, ctx), **_part_values(ctx, run, part, _axis(axis))}
    response = render(request, f"_run_{part}.html", values)
    if values["terminal"]:
        response.headers["X-Mlrt-Live"] = "done"
    return response


@router.get("/runs/{run_id}/artifacts/{path:path}")
def download(run_id: str, path: str, ctx: Context, who: Viewer) -> Response:
    """An artifact's content, as a download named after its file."""
    from mlrt.service.routes.artifacts import artifact_content

    visible_run(ctx, who, run_id)
    response = artifact_content(ctx.store, run_id, path)
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"
    return response


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str, ctx: Context, who: Viewer) -> Response:
    """Stop the run, as ``mlrt cancel`` does, and go back to its page."""
    from starlette.concurrency import run_in_threadpool

    await check_form(request, ctx)
    run = visible_run(ctx, who, run_id)
    if not RunState(run.state).is_terminal():
        await run_in_threadpool(_cancel, ctx, run, who.user)
    return RedirectResponse(f"{PREFIX}/runs/{quote(run_id, safe='')}", status_code=303)


def _cancel(ctx: UiContext, run: Run, user: str) -> None:
    """Under the service, the leader stops the run; under ``mlrt ui``, the controller that drives
    it, or this process when none does (as ``mlrt cancel``)."""
    from mlrt.controller import request_cancel

    if ctx.wake is None:
        request_cancel(ctx.store, run, f"{user} (web UI)")
        return
    ctx.store.update_run(run.id, cancel_requested=True)
    ctx.store.add_event(run.id, f"cancel requested by {user} (web UI)")
    ctx.wake()
