"""Chart fragments: one SVG chart of metric series, drawn again for the x-range a user zooms to.

``GET /ui/runs/{run_id}/chart.svg?key=K&key=K2&axis=step|time&x0=&x1=&points=`` overlays the
series ``K``, ``K2``... of one run (every key when none is named). ``axis=time`` puts seconds
since each series' first point on the x-axis. ``x0``/``x1`` (either may be empty) zoom to that
x-range: the server reads only the window (on the step axis, in SQL) and thins it again to
``points`` (default :data:`mlrt.ui.charts.DEFAULT_POINTS`), so a zoomed view of a
1,000,000-point series shows its own detail. ``static/charts.js`` asks these URLs when a user
drags over a chart; a page may also link to them.

:func:`metric_series` and :func:`chart_request` are shared with the compare page's charts.
"""

from __future__ import annotations

import dataclasses
import math
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from mlrt.store import Store
from mlrt.ui.auth import PREFIX, Context, Viewer, visible_run
from mlrt.ui.charts import DEFAULT_POINTS, Axis, Series, line_chart

router = APIRouter()

MAX_POINTS = 5000
"""The most points per series a chart request may ask for."""


@dataclasses.dataclass(frozen=True)
class ChartRequest:
    """The query of a chart: axis, zoom window, points per series."""

    axis: str = "step"
    x0: float | None = None
    x1: float | None = None
    points: int = DEFAULT_POINTS

    def x_axis(self, **extra: str) -> Axis:
        if self.axis == "time":
            return Axis("time", "time since the first point", extra)
        return Axis("step", "step", extra)


def _number(name: str, text: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise HTTPException(400, f"{name}: {text!r} is not a number (give an x-axis value, or leave it empty)")
    return value


def chart_request(request: Request) -> ChartRequest:
    """The chart query of ``request``, checked: 400 with one line naming the field otherwise."""
    query = request.query_params
    axis = query.get("axis", "step") or "step"
    if axis not in ("step", "time"):
        raise HTTPException(400, f"axis: {axis!r} is not an axis (use step or time)")
    x0, x1 = _number("x0", query.get("x0", "")), _number("x1", query.get("x1", ""))
    if x0 is not None and x1 is not None and x1 <= x0:
        raise HTTPException(400, f"x1: must be greater than x0 ({x1:g} <= {x0:g})")
    points_text = query.get("points", "") or str(DEFAULT_POINTS)
    if not points_text.isdigit() or not 3 <= int(points_text) <= MAX_POINTS:
        raise HTTPException(400, f"points: {points_text!r} must be a whole number from 3 to {MAX_POINTS}")
    return ChartRequest(axis, x0, x1, int(points_text))


def metric_series(store: Store, run_id: str, key: str, label: str, chart: ChartRequest) -> Series:
    """Run ``run_id``'s metric ``key`` as a :class:`Series` named ``label`` for ``chart``: on the
    step axis only the zoom window is read; on the time axis x is seconds since the series' first point."""
    if chart.axis == "time":
        x, y = store.metric_arrays(run_id, key, x="timestamp")
        if len(x):
            x = x - float(x.min())
    else:
        x, y = store.metric_arrays(run_id, key, low=chart.x0, high=chart.x1)
    return Series(label, x, y, total=len(x))


def svg_response(svg: str) -> Response:
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/runs/{run_id}/chart.svg")
def run_chart(run_id: str, request: Request, ctx: Context, who: Viewer) -> Response:
    """One run's metric series overlaid (see the module's docstring)."""
    run = visible_run(ctx, who, run_id)
    chart = chart_request(request)
    keys = request.query_params.getlist("key") or sorted(ctx.store.latest_metrics(run.id))
    series = [metric_series(ctx.store, run.id, key, key, chart) for key in keys]
    src = f"{PREFIX}/runs/{_quote(run.id)}/chart.svg?" + "&".join(
        [f"key={_quote(k)}" for k in keys] + [f"axis={chart.axis}", f"points={chart.points}"]
    )
    return svg_response(
        line_chart(
            series,
            axis=chart.x_axis(),
            title=", ".join(keys) if keys else "no metrics yet",
            x_range=(chart.x0, chart.x1),
            points=chart.points,
            src=src,
        )
    )


def _quote(text: str) -> str:
    return quote(text, safe="")
