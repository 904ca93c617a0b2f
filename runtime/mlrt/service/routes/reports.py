"""A run's error-analysis reports: the stored results, building them now, and the HTML page."""

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from mlrt.service.routes.common import SpecProblems, StoreDep, User, visible_run

router = APIRouter(prefix="/api/v1/runs", tags=["reports"])


class ReportsBody(BaseModel):
    only: list[str] = Field(default_factory=list)


@router.get("/{run_id}/reports")
def stored_reports(run_id: str, who: User, store: StoreDep) -> dict[str, Any]:
    from mlrt import report_runner

    visible_run(store, who, run_id)
    return report_runner.load_results(store, run_id)


@router.post("/{run_id}/reports")
def build_reports(run_id: str, body: ReportsBody, who: User, store: StoreDep) -> dict[str, Any]:
    """Build the run's reports now (``only``: these; default: the spec's, else all)."""
    from mlrt import plugins, report_runner

    run = visible_run(store, who, run_id)
    job = store.get_job(run.job_id)
    if job.kind == "TuningJob":
        raise SpecProblems([f"{run_id} is a tuning job; report on one of its trials (mlrt runs compare {run_id})"])
    names = body.only or report_runner.needed_reports(job.spec_resolved["spec"]) or sorted(plugins.reports())
    try:
        return report_runner.build(store, run_id, names)
    except report_runner.ReportError as exc:
        raise SpecProblems([str(exc)]) from None


@router.get("/{run_id}/reports/html", response_class=HTMLResponse)
def report_page(run_id: str, who: User, store: StoreDep) -> HTMLResponse:
    from mlrt import report_runner

    page = report_runner.reports_dir(visible_run(store, who, run_id)) / "report.html"
    if not page.is_file():
        raise HTTPException(404, f"run {run_id!r} has no report page yet")
    return HTMLResponse(page.read_text())
