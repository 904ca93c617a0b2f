"""Charts of the web UI, drawn on the server as SVG: no JavaScript library, no network.

* :func:`lttb` thins a series to N points with Largest-Triangle-Three-Buckets
  (Steinarsson, 2013), which keeps the first and last points and the shape a
  reader sees: spikes and dips survive, flat stretches lose points.
* :func:`line_chart` overlays several :class:`Series` (lines, points or steps)
  with axes, ticks, a legend and a ``<title>`` tooltip on every drawn point;
  each series is downsampled to ``points`` first, so a million logged points
  draw as a thousand. Zoom is an x-range asked of the server again (``x0``,
  ``x1``), which downsamples only that window; ``static/charts.js`` turns a
  drag over a chart into that request.
* :func:`parallel_coordinates` draws tuning trials: one vertical axis per
  parameter (numeric, log or categorical) and one for the objective, each trial
  a line colored by its objective; pruned trials dashed and grey.

Every function is pure and returns :class:`markupsafe.Markup`; every label and
value from users (run names, metric keys, params) is escaped here, so a
template inserts the result as it is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from markupsafe import Markup, escape

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""Series colors in order (ten: the compare page's most runs)."""
DEFAULT_POINTS = 1000
"""How many points each series is thinned to unless a caller asks otherwise."""
MAX_MARKERS = 200
"""Most hover markers (each with a ``<title>`` tooltip) drawn per series; beyond this they are
taken evenly from the drawn points, which keeps a ten-series chart a few hundred kB."""
_MARGIN = {"left": 64, "right": 16, "top": 12, "bottom": 40}


def lttb(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` thinned to at most ``n`` points (``n >= 3``) by Largest-Triangle-Three-Buckets.

    ``x`` must be sorted. The first and last points are always kept; the points
    between are cut into ``n - 2`` buckets of equal count, and each bucket keeps
    the point that makes the largest triangle with the point kept before it and
    the mean of the next bucket. A series of ``n`` points or fewer comes back as it is."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if n < 3:
        raise ValueError(f"lttb needs n >= 3, not {n}")
    size = len(x)
    if size <= n:
        return x, y
    # Bucket edges over the inner points 1 .. size-2; bucket i is [edges[i], edges[i + 1]).
    edges = np.floor(np.linspace(1, size - 1, n - 1)).astype(np.int64)
    keep = np.empty(n, dtype=np.int64)
    keep[0], keep[-1] = 0, size - 1
    # Means of every bucket at once (prefix sums), the last "next bucket" being the last point.
    cx, cy = np.concatenate(([0.0], np.cumsum(x))), np.concatenate(([0.0], np.cumsum(y)))
    counts = edges[1:] - edges[:-1]
    mean_x = np.append((cx[edges[1:]] - cx[edges[:-1]]) / counts, x[-1])
    mean_y = np.append((cy[edges[1:]] - cy[edges[:-1]]) / counts, y[-1])
    previous = 0
    for bucket in range(n - 2):
        lo, hi = edges[bucket], edges[bucket + 1]
        ax, ay = x[previous], y[previous]
        nx, ny = mean_x[bucket + 1], mean_y[bucket + 1]
        # Twice the triangle's area; the constant factor does not change the argmax.
        area = np.abs((ax - nx) * (y[lo:hi] - ay) - (ax - x[lo:hi]) * (ny - ay))
        previous = lo + int(np.argmax(area))
        keep[bucket + 1] = previous
    return x[keep], y[keep]


@dataclass
class Series:
    """One line of a chart: its legend ``label``, x and y values (sorted by x), and how it is drawn.

    ``style`` is ``"line"``, ``"points"`` (markers only) or ``"step"`` (a staircase, for a
    running best). ``total`` is how many points the series had before any thinning by the
    caller (shown in the legend's tooltip); None means ``len(x)``."""

    label: str
    x: np.ndarray
    y: np.ndarray
    style: str = "line"
    total: int | None = None
    color: str | None = None
    dashed: bool = False


@dataclass
class Axis:
    """How a chart's x-axis reads: ``"step"``, ``"time"`` (seconds since some start, ticked as
    durations), or ``"trial"``; ``label`` is shown under the axis, ``extra`` are more attributes
    of the ``<svg>`` (``data-*`` a page's script reads)."""

    kind: str = "step"
    label: str = "step"
    extra: dict[str, str] = field(default_factory=dict)


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def time_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Tick values in seconds at round durations (1 s, 5 s, 1 min, 15 min, 1 h, ... or whole days)."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    step = next((s for s in _TIME_STEPS if s >= raw), None)
    if step is None:
        step = 86400 * math.ceil(raw / 86400)
    if raw < 1:
        return nice_ticks(low, high, count)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def format_number(value: float) -> str:
    """A tick or tooltip number, short: ``0.25``, ``1.5e-05``, ``12,000``."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3g}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def format_duration(seconds: float) -> str:
    """Seconds as ``45s``, ``2m30s``, ``1h05m``, ``3d4h``."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{format_number(round(seconds, 3))}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{sign}{minutes}m{secs:02d}s" if secs else f"{sign}{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours}h{minutes:02d}m" if minutes else f"{sign}{hours}h"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d{hours}h" if hours else f"{sign}{days}d"


def _x_text(axis: Axis, value: float) -> str:
    return format_duration(value) if axis.kind == "time" else format_number(value)


def _finite(series: Series) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(series.x, dtype=np.float64), np.asarray(series.y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        x, y = x[ok], y[ok]
    if len(x) > 1 and (np.diff(x) < 0).any():
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    return x, y


def line_chart(
    series: Sequence[Series],
    *,
    axis: Axis | None = None,
    title: str = "",
    y_label: str = "",
    width: int = 720,
    height: int = 300,
    points: int = DEFAULT_POINTS,
    x_range: tuple[float | None, float | None] = (None, None),
    src: str | None = None,
) -> Markup:
    """An ``<svg class="mlrt-chart">`` of ``series`` overlaid, each thinned to ``points`` by :func:`lttb`.

    ``x_range`` clips the x-axis to ``(x0, x1)`` (either may be None); points outside it are
    dropped before thinning, so a zoomed window shows its own detail. ``src`` is the URL that
    draws this chart (without ``x0``/``x1``): ``static/charts.js`` re-asks it with the range
    a user drags over. Non-finite values (a NaN loss) are left out. Each drawn series is a
    ``<path class="mlrt-series">`` with ``data-series`` (its label) and ``data-points``
    (how many points it draws)."""
    axis = axis or Axis()
    x0, x1 = x_range
    drawn: list[tuple[Series, np.ndarray, np.ndarray, str]] = []
    for index, item in enumerate(series):
        x, y = _finite(item)
        if x0 is not None or x1 is not None:
            lo = 0 if x0 is None else int(np.searchsorted(x, x0, side="left"))
            hi = len(x) if x1 is None else int(np.searchsorted(x, x1, side="right"))
            x, y = x[lo:hi], y[lo:hi]
        x, y = lttb(x, y, max(points, 3))
        drawn.append((item, x, y, item.color or PALETTE[index % len(PALETTE)]))
    xs = [d[1] for d in drawn if len(d[1])]
    ys = [d[2] for d in drawn if len(d[2])]
    left = x0 if x0 is not None else (min(float(a[0]) for a in xs) if xs else 0.0)
    right = x1 if x1 is not None else (max(float(a[-1]) for a in xs) if xs else 1.0)
    bottom = min(float(a.min()) for a in ys) if ys else 0.0
    top = max(float(a.max()) for a in ys) if ys else 1.0
    if right <= left:
        left, right = left - 0.5, right + 0.5
    elif x0 is None and x1 is None and any(item.style == "points" for item in series):
        # Points drawn on the plot's edges would be cut in half.
        margin = (right - left) * 0.03
        left, right = left - margin, right + margin
    if top <= bottom:
        bottom, top = bottom - (abs(bottom) * 0.05 or 0.5), top + (abs(top) * 0.05 or 0.5)
    pad = (top - bottom) * 0.04
    bottom, top = bottom - pad, top + pad
    plot_w = width - _MARGIN["left"] - _MARGIN["right"]
    columns = _legend_columns([d[0].label for d in drawn], width - _MARGIN["left"] - _MARGIN["right"])
    legend_rows = math.ceil(len(drawn) / columns)
    plot_h = height - _MARGIN["top"] - _MARGIN["bottom"] - 16 * legend_rows
    px0, py0 = _MARGIN["left"], _MARGIN["top"]

    def sx(v: np.ndarray | float) -> np.ndarray | float:
        return px0 + (np.asarray(v) - left) / (right - left) * plot_w

    def sy(v: np.ndarray | float) -> np.ndarray | float:
        return py0 + plot_h - (np.asarray(v) - bottom) / (top - bottom) * plot_h

    attrs = {
        "class": "mlrt-chart",
        "xmlns": "http://www.w3.org/2000/svg",
        "width": width,
        "height": height,
        "viewBox": f"0 0 {width} {height}",
        "role": "img",
        "aria-label": title or "chart",
        "font-family": "sans-serif",
        "font-size": 11,
        "data-axis": axis.kind,
        "data-x0": repr(float(left)),
        "data-x1": repr(float(right)),
        "data-plot-left": px0,
        "data-plot-width": plot_w,
        **({"data-src": src} if src else {}),
        **axis.extra,
    }
    out = [f"<svg {_attributes(attrs)}>"]
    if title:
        out.append(f"<title>{escape(title)}</title>")
    out.append(
        f'<rect class="plot-area" x="{px0}" y="{py0}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccc"/>'
    )
    out += _x_ticks(axis, left, right, sx, py0 + plot_h, plot_h)
    out += _y_ticks(bottom, top, sy, px0, plot_w)
    out.append(
        f'<text x="{px0 + plot_w / 2:.1f}" y="{py0 + plot_h + 32}" text-anchor="middle" class="axis-label">'
        f"{escape(axis.label)}</text>"
    )
    if y_label:
        cy = py0 + plot_h / 2
        out.append(
            f'<text transform="translate(14 {cy:.1f}) rotate(-90)" text-anchor="middle" class="axis-label">'
            f"{escape(y_label)}</text>"
        )
    out.append(
        f'<clipPath id="{_clip_id(attrs)}"><rect x="{px0}" y="{py0}" width="{plot_w}" height="{plot_h}"/></clipPath>'
    )
    out.append(f'<g clip-path="url(#{_clip_id(attrs)})">')
    for item, x, y, color in drawn:
        out += _series_marks(item, x, y, color, axis, sx, sy)
    out.append("</g>")
    out += _legend(drawn, px0, py0 + plot_h + 44, plot_w, columns)
    if not any(len(d[1]) for d in drawn):
        out.append(
            f'<text x="{px0 + plot_w / 2:.1f}" y="{py0 + plot_h / 2:.1f}" text-anchor="middle" class="empty">'
            "no points in this range</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def _attributes(attrs: Mapping[str, object]) -> str:
    return " ".join(f'{name}="{escape(str(value))}"' for name, value in attrs.items())


def _clip_id(attrs: Mapping[str, object]) -> str:
    """A clip-path id unique to this chart's content, so several charts on a page do not share one."""
    return "clip" + hashlib.sha1(repr(sorted(map(str, attrs.values()))).encode()).hexdigest()[:12]


def _x_ticks(axis: Axis, left: float, right: float, sx, baseline: float, plot_h: float) -> list[str]:
    ticks = time_ticks(left, right) if axis.kind == "time" else nice_ticks(left, right)
    if axis.kind == "trial":
        ticks = [t for t in ticks if float(t).is_integer()]
    out = []
    for tick in ticks:
        x = float(sx(tick))
        out.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{baseline - plot_h:.1f}" y2="{baseline:.1f}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{baseline + 14:.1f}" text-anchor="middle" class="tick">{escape(_x_text(axis, tick))}</text>'
        )
    return out


def _y_ticks(bottom: float, top: float, sy, px0: float, plot_w: float) -> list[str]:
    out = []
    ticks = nice_ticks(bottom, top, 5)
    # Enough decimals to tell neighbouring ticks apart (0.99525 and 0.9953, not 0.9953 twice).
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.0
    digits = max(0, -math.floor(math.log10(step)) + 1) if 0 < step < 1 else None
    for tick in ticks:
        y = float(sy(tick))
        text = f"{tick:.{digits}f}".rstrip("0").rstrip(".") if digits is not None and abs(tick) >= 1e-3 else None
        out.append(
            f'<line class="grid" x1="{px0}" x2="{px0 + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{px0 - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{escape(text or format_number(tick))}</text>'
        )
    return out


def _series_marks(item: Series, x: np.ndarray, y: np.ndarray, color: str, axis: Axis, sx, sy) -> list[str]:
    if not len(x):
        return []
    px, py = np.asarray(sx(x)), np.asarray(sy(y))
    label = escape(item.label)
    total = item.total if item.total is not None else len(item.x)
    out = []
    if item.style in ("line", "step"):
        if item.style == "step" and len(px) > 1:
            # Hold each value until the next x: (x0,y0) (x1,y0) (x1,y1) ...
            px, py = np.repeat(px, 2)[1:], np.repeat(py, 2)[:-1]
        coords = " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
        dash = ' stroke-dasharray="5 3"' if item.dashed else ""
        out.append(
            f'<path class="mlrt-series" data-series="{label}" data-points="{len(x)}" d="M{coords}" fill="none" '
            f'stroke="{color}" stroke-width="1.5"{dash}><title>{label} ({total:,} points)</title></path>'
        )
    step = max(1, math.ceil(len(x) / MAX_MARKERS)) if item.style != "points" else 1
    # A line of one point draws nothing: its marker is shown instead.
    visible = item.style == "points" or len(x) == 1
    radius, opacity = (3.5, 1) if visible else (3, 0)
    marks = []
    for i in range(0, len(x), step):
        cx, cy = float(sx(x[i])), float(sy(y[i]))
        tip = (
            f"{label} — {escape(axis.label)} {escape(_x_text(axis, float(x[i])))}: {escape(format_number(float(y[i])))}"
        )
        marks.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{color}" fill-opacity="{opacity}">'
            f"<title>{tip}</title></circle>"
        )
    kind = "mlrt-series" if item.style == "points" else "markers"
    extra = f' data-series="{label}" data-points="{len(x)}"' if item.style == "points" else ""
    out.append(f'<g class="{kind}"{extra}>{"".join(marks)}</g>')
    return out


_CHAR_W = 6.2
"""About how wide one legend character is at the charts' 11 px sans-serif."""


def _legend_columns(labels: Sequence[str], plot_w: float) -> int:
    """How many legend entries fit side by side (1 to 3), given the longest label."""
    longest = max((len(label) for label in labels), default=0)
    return max(1, min(3, int(plot_w // (longest * _CHAR_W + 40))))


def _legend(drawn, left: float, top: float, plot_w: float, columns: int) -> list[str]:
    out = []
    column_w = plot_w / columns
    fits = max(8, int((column_w - 30) // _CHAR_W))
    for index, (item, x, _y, color) in enumerate(drawn):
        lx = left + (index % columns) * column_w
        ly = top + (index // columns) * 16
        total = item.total if item.total is not None else len(item.x)
        dash = ' stroke-dasharray="5 3"' if item.dashed else ""
        name = item.label if len(item.label) <= fits else item.label[: fits - 1] + "…"
        out.append(
            f'<g class="legend-item"><title>{escape(item.label)}: {total:,} points, {len(x):,} drawn</title>'
            + (
                f'<circle cx="{lx + 9:.1f}" cy="{ly - 4:.1f}" r="3.5" fill="{color}"/>'
                if item.style == "points"
                else f'<line x1="{lx:.1f}" x2="{lx + 18:.1f}" y1="{ly - 4:.1f}" y2="{ly - 4:.1f}" stroke="{color}" '
                f'stroke-width="2"{dash}/>'
            )
            + f'<text x="{lx + 22:.1f}" y="{ly:.1f}" class="legend">{escape(name)}</text></g>'
        )
    return out


# -- parallel coordinates ------------------------------------------------------------------


@dataclass
class Trial:
    """One tuning trial as :func:`parallel_coordinates` draws it."""

    label: str
    params: Mapping[str, object]
    objective: float | None
    pruned: bool = False
    href: str | None = None


def _blend(t: float) -> str:
    """A color from dark blue (t=0, worst) through teal to yellow (t=1, best)."""
    stops = ((0x44, 0x01, 0x54), (0x21, 0x91, 0x8C), (0xFD, 0xE7, 0x25))
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parallel_coordinates(
    trials: Sequence[Trial],
    params: Sequence[str],
    *,
    objective: str,
    goal: str = "minimize",
    log_params: Sequence[str] = (),
    width: int = 760,
    height: int = 320,
) -> Markup:
    """An ``<svg class="mlrt-parallel">``: one axis per name in ``params`` then one for ``objective``.

    A param whose values all read as numbers gets a numeric axis (logarithmic when it is
    in ``log_params`` and positive), any other a categorical one (its values in sorted
    order, evenly spaced). Each trial is a ``<path class="trial">`` colored by its rank from
    dark (worst) to yellow (best, by ``goal``); pruned trials are dashed and grey. A line skips
    an axis the trial has no value on (a parameter limited to other algorithms), so trials
    without an objective end at their last parameter. A trial's ``href`` makes its line a link."""
    names = [*params, objective]
    left, right, top, bottom = 40, 40, 28, 36
    span_x = (width - left - right) / max(len(names) - 1, 1)
    span_y = height - top - bottom
    columns: dict[str, list[object]] = {p: [t.params.get(p) for t in trials] for p in params}
    columns[objective] = [t.objective for t in trials]
    scales = {name: _scale(values, name in log_params) for name, values in columns.items()}
    # Colored by rank, not value: one far-off trial would otherwise paint all the others alike.
    scored = np.sort([t.objective for t in trials if t.objective is not None and not t.pruned])

    def quality(value: float) -> float:
        if len(scored) < 2:
            return 0.5
        rank = float(np.searchsorted(scored, value, side="left") + np.searchsorted(scored, value, side="right")) / 2
        share = min(max((rank - 0.5) / (len(scored) - 1), 0.0), 1.0)
        return share if goal == "maximize" else 1.0 - share

    out = [
        f'<svg class="mlrt-parallel" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="parallel coordinates of trials" '
        'font-family="sans-serif" font-size="11">'
    ]
    # Worst first, best last: the best lines are drawn on top.
    order = sorted(trials, key=lambda t: (not t.pruned, t.objective is not None, quality(t.objective or 0.0)))
    for trial in order:
        coords = []
        for index, name in enumerate(names):
            value = trial.objective if name == objective else trial.params.get(name)
            position = scales[name](value)
            if position is None:  # a parameter that did not apply to this trial: its line skips the axis
                continue
            coords.append(f"{left + index * span_x:.1f},{top + (1 - position) * span_y:.1f}")
        if len(coords) < 2:
            continue
        if trial.pruned or trial.objective is None:
            style = 'stroke="#999" stroke-dasharray="4 3" stroke-opacity="0.8"'
        else:
            style = f'stroke="{_blend(quality(trial.objective))}" stroke-opacity="0.9"'
        value = "none" if trial.objective is None else format_number(trial.objective)
        shown = ", ".join(f"{p}={trial.params.get(p)}" for p in params)
        tip = f"{trial.label}{' (pruned)' if trial.pruned else ''}: {objective}={value}; {shown}"
        path = (
            f'<path class="trial{" pruned" if trial.pruned else ""}" data-trial="{escape(trial.label)}" '
            f'd="M{" L".join(coords)}" fill="none" stroke-width="1.8" {style}><title>{escape(tip)}</title></path>'
        )
        out.append(f'<a href="{escape(trial.href)}">{path}</a>' if trial.href else path)
    for index, name in enumerate(names):
        x = left + index * span_x
        out.append(f'<g class="axis" data-axis="{escape(name)}">')
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + span_y}" stroke="#333"/>')
        anchor = "start" if index == 0 else "end" if index == len(names) - 1 else "middle"
        out.append(f'<text x="{x:.1f}" y="{top - 10}" text-anchor="{anchor}" class="axis-label">{escape(name)}</text>')
        # Tick labels right of each axis, except the last axis' (left of it, inside the picture).
        side, tick_anchor = (-4, "end") if index == len(names) - 1 else (4, "start")
        for position, text in scales[name].ticks:
            y = top + (1 - position) * span_y
            out.append(
                f'<text x="{x + side:.1f}" y="{y + 4:.1f}" text-anchor="{tick_anchor}" class="tick" '
                f'paint-order="stroke" stroke="#fff" stroke-width="3">{escape(text)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


class _Scale:
    """Maps a value to 0..1 along an axis (None when it has no place there); ``ticks`` to label."""

    def __init__(self, place, ticks: list[tuple[float, str]]):
        self.place = place
        self.ticks = ticks

    def __call__(self, value: object) -> float | None:
        return None if value is None else self.place(value)


def _scale(values: Sequence[object], log: bool) -> _Scale:
    present = [v for v in values if v is not None]
    numbers = [_as_number(v) for v in present]
    if present and all(n is not None for n in numbers):
        low, high = min(numbers), max(numbers)  # type: ignore[type-var]
        if log and low > 0:
            lo, hi = math.log10(low), math.log10(high)
            width = (hi - lo) or 1.0
            ticks = [(0.5, format_number(low))] if hi == lo else [(0.0, format_number(low)), (1.0, format_number(high))]
            middle = [10.0**k for k in range(math.ceil(lo), math.floor(hi) + 1)]
            ticks += [((math.log10(m) - lo) / width, format_number(m)) for m in middle if low < m < high]
            return _Scale(lambda v: 0.5 if hi == lo else (math.log10(float(v)) - lo) / width, ticks)
        if high == low:
            return _Scale(lambda v: 0.5, [(0.5, format_number(low))])
        ticks = [((t - low) / (high - low), format_number(t)) for t in nice_ticks(low, high, 5) if low <= t <= high]
        return _Scale(lambda v: (float(v) - low) / (high - low), ticks)
    categories = sorted({str(v) for v in present})
    slots = {c: (i + 0.5) / len(categories) for i, c in enumerate(categories)}
    return _Scale(lambda v: slots.get(str(v)), [(slots[c], c) for c in categories])


def epoch_label(seconds: float) -> str:
    """An epoch time as ``2026-12-06 21:07:55 UTC`` (for a time axis' origin)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
