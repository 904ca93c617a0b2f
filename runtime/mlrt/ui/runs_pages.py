"""The runs page: a table of runs and tuning jobs, filtered, sorted and paged by its URL.

``/ui/?state=RUNNING&label=team=vision&name=digits&where=validation_accuracy>0.9
&sort=-validation_accuracy&col=validation_accuracy&limit=50&offset=0&trials=1`` — every
parameter may repeat where it makes sense (``state``, ``label``, ``where``, ``col``), so a
view is shared by sharing its URL. The search is :func:`mlrt.run_search.find_runs`, the one
query language of ``mlrt runs list`` and the API. ``col`` chooses the metric columns (default:
up to three validation metrics of the runs shown); ``trials=1`` lists tuning trials too.
``/ui/runs/table`` answers the table alone, which the page fetches every few seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mlrt.run_search import RunPage, RunQuery, find_runs, query_from_text
from mlrt.states import RunState
from mlrt.store.models import Job, Run
from mlrt.ui.app import render
from mlrt.ui.auth import PREFIX, Context, Viewer, project_filter

router = APIRouter()

DEFAULT_COLUMNS = 3
STATES = [state.value for state in RunState]
_LIST_PARAMS = ("state", "label", "where", "col")


@dataclasses.dataclass
class RunsView:
    """What the URL asks for: the search, the metric columns, and the raw parameters (for links)."""

    query: RunQuery | None
    chosen: list[str]
    raw: dict[str, list[str]]
    problems: list[str]

    def link(self, **changes: str | None) -> str:
        """This view's URL with some parameters replaced (None drops one)."""
        values = {k: list(v) for k, v in self.raw.items()}
        for key, value in changes.items():
            values.pop(key, None)
            if value is not None:
                values[key] = [value]
        pairs = [(key, item) for key, items in values.items() for item in items]
        return f"{PREFIX}/?{urlencode(pairs)}" if pairs else f"{PREFIX}/"

    def query_string(self) -> str:
        return urlencode([(key, item) for key, items in self.raw.items() for item in items])

    def sort_link(self, column: str) -> str:
        """Sort by ``column``; descending first, ascending when it is already descending."""
        current = self.query.sort if self.query else ""
        return self.link(sort=column if current == "-" + column else "-" + column, offset=None)


def read_view(request: Request, project: str | None) -> RunsView:
    """The view the request's query string asks for (problems: one line per bad parameter)."""
    raw: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if value.strip():
            raw.setdefault(key, []).append(value.strip())
    problems: list[str] = []

    def one(key: str, default: str) -> str:
        return raw.get(key, [default])[-1]

    def number(key: str, default: int) -> int:
        text = one(key, str(default))
        if not text.isdigit():
            problems.append(f"{key}: {text!r} is not a whole number")
            return default
        return int(text)

    limit, offset = number("limit", 50), number("offset", 0)
    query, more = query_from_text(
        states=raw.get("state", []),
        labels=raw.get("label", []),
        name=one("name", ""),
        where=raw.get("where", []),
        sort=one("sort", "-created_at"),
        limit=limit,
        offset=offset,
        project=project,
        top_level=one("trials", "0") != "1",
    )
    problems += more
    if problems:
        query = None
    return RunsView(query, _unique(raw.get("col", [])), raw, problems)


def columns(view: RunsView, page: RunPage) -> list[str]:
    """The metric columns: those chosen, else up to three validation metrics of the page's runs."""
    if view.chosen:
        return view.chosen
    keys = sorted({key for values in page.metrics.values() for key in values})
    preferred = [k for k in keys if k.startswith(("validation_", "val_"))] or keys
    return preferred[:DEFAULT_COLUMNS]


def duration(run: Run) -> float | None:
    """Seconds from start to end (to now while it runs)."""
    if run.started_at is None:
        return None
    end = run.ended_at or datetime.now(timezone.utc)
    start = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    return (end - start).total_seconds()


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _table_context(ctx: Context, view: RunsView) -> dict[str, Any]:
    if view.query is None:
        return {"view": view, "page": None, "columns": view.chosen, "offered": view.chosen}
    page = find_runs(ctx.store, view.query)
    shown = columns(view, page)
    offered = _unique([*shown, *sorted({key for values in page.metrics.values() for key in values})])
    return {"view": view, "page": page, "columns": shown, "offered": offered, "duration": duration, "kind": _kind}


def _kind(job: Job | None, run: Run) -> str:
    if run.parent_id is not None:
        return "trial"
    return "tuning" if job is not None and job.kind == "TuningJob" else "training"


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, ctx: Context, who: Viewer) -> HTMLResponse:
    view = read_view(request, project_filter(who))
    values = {"viewer": who, "states": STATES, **_table_context(ctx, view)}
    return render(request, "runs.html", values, 400 if view.problems else 200)


@router.get("/runs", response_class=HTMLResponse)
def runs_page_alias(request: Request, ctx: Context, who: Viewer) -> HTMLResponse:
    """The same page at ``/ui/runs``."""
    return runs_page(request, ctx, who)


@router.get("/runs/table", response_class=HTMLResponse)
def runs_table(request: Request, ctx: Context, who: Viewer) -> HTMLResponse:
    """The table alone (the page refreshes it)."""
    view = read_view(request, project_filter(who))
    return render(request, "_runs_table.html", _table_context(ctx, view), 400 if view.problems else 200)
