"""Plots for report HTML sections: matplotlib figures inlined as SVG (no network, no files).

Report plugins call these helpers (or :func:`svg` on a figure of their own)
and put the returned ``<svg>`` string into :meth:`mlrt.reports.Report.html`.
Every plot carries ``class="mlrt-plot"`` and a ``data-plot`` name, so a page
(and its tests) can find it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT = 6.4, 3.2


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    import matplotlib.pyplot as plt

    return plt


def svg(figure: Any, name: str) -> str:
    """The figure as an inline ``<svg class="mlrt-plot" data-plot=NAME>`` element; closes it."""
    plt = _pyplot()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    return re.sub(r"<svg\b", f'<svg class="mlrt-plot" data-plot="{name}"', text, count=1)


def bars(
    name: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    reference: float | None = None,
    highlight: Sequence[bool] | None = None,
) -> str:
    """Horizontal bars, one per label; ``reference`` draws a vertical line (e.g. the overall rate)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(WIDTH, max(1.6, 0.3 * len(labels) + 0.8)))
    colors = ["#c0392b" if flag else "#2e86c1" for flag in (highlight or [False] * len(labels))]
    axes.barh(list(range(len(labels)))[::-1], list(values), color=colors)
    axes.set_yticks(list(range(len(labels)))[::-1], [str(label) for label in labels])
    if reference is not None:
        axes.axvline(reference, color="#555", linestyle="--", linewidth=1)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    return svg(figure, name)


def lines(
    name: str,
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: tuple[str, float] | None = None,
) -> str:
    """One line per series over ``x``; ``hline`` is a labelled horizontal reference (a baseline)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT))
    for label, values in series.items():
        axes.plot(list(x), list(values), marker="o", label=label)
    if hline is not None:
        axes.axhline(hline[1], color="#555", linestyle="--", linewidth=1, label=hline[0])
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend()
    return svg(figure, name)


def heatmap(
    name: str,
    matrix: Sequence[Sequence[float]],
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> str:
    """A matrix (e.g. a confusion matrix) with its values written in the cells."""
    plt = _pyplot()
    size = max(2.4, 0.45 * max(len(rows), len(columns)) + 1.2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(columns)), [str(c) for c in columns])
    axes.set_yticks(range(len(rows)), [str(r) for r in rows])
    top = max((max(row) for row in matrix), default=0) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, f"{value:g}", ha="center", va="center", color="white" if value > top / 2 else "black")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return svg(figure, name)


def curve(
    name: str,
    x: Sequence[float],
    y: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    markers: Sequence[tuple[str, float, float]] = (),
) -> str:
    """One curve through the points ``(x, y)`` (a precision-recall curve) on the unit square, with
    labelled ``markers`` ``(label, x, y)`` on it (the operating point)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(WIDTH, HEIGHT * 1.25))
    axes.plot(list(x), list(y), color="#2e86c1", linewidth=1.5)
    for label, mx, my in markers:
        axes.plot([mx], [my], marker="o", markersize=8, color="#c0392b", linestyle="none")
        axes.annotate(label, (mx, my), textcoords="offset points", xytext=(8, 8), color="#c0392b")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.05)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return svg(figure, name)
