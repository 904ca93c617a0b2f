"""One self-contained HTML page for a run's reports (inline CSS and SVG; opens offline).

The page has the run's metrics and the summary findings at the top, then
one section per report (:meth:`mlrt.reports.Report.html`). A small inline
script marks the page once it has laid out: ``<body data-plots="N"
data-plots-drawn="M">`` counts the ``svg.mlrt-plot`` elements and those
that rendered with a non-empty box, which is what the browser test reads.
"""

from __future__ import annotations

import html
from typing import Any

from mlrt import plugins
from mlrt.reports import Finding

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.problem { color: #b03a2e; } .warning { color: #9a6700; } .info { color: #1f618d; }
svg.mlrt-plot { max-width: 100%; height: auto; display: block; margin: .5em 0; }
"""

_MARK_DRAWN = """
window.addEventListener("load", function () {
  var plots = document.querySelectorAll("svg.mlrt-plot"), drawn = 0;
  plots.forEach(function (svg) { var box = svg.getBBox(); if (box.width > 0 && box.height > 0) drawn++; });
  document.body.dataset.plots = plots.length;
  document.body.dataset.plotsDrawn = drawn;
});
"""


def page(run_id: str, metrics: dict[str, float], results: dict[str, dict[str, Any]], findings: list[Finding]) -> str:
    """The whole HTML document."""
    registry = plugins.reports()
    metric_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='num'>{v:.4g}</td></tr>" for k, v in sorted(metrics.items())
    )
    summary = (
        "".join(
            f"<li class='{html.escape(f.severity)}'><b>{html.escape(f.report)}</b>: {html.escape(f.text)}</li>"
            for f in findings
        )
        or "<li>nothing to report</li>"
    )
    sections = []
    for name, result in results.items():
        if result.get("skipped"):
            sections.append(
                f"<section id='{html.escape(name)}'><h2>{html.escape(name)}</h2>"
                f"<p>skipped: {html.escape(str(result['skipped']))}</p></section>"
            )
        elif name in registry:
            sections.append(f"<section id='{html.escape(name)}'>{registry[name].html(result)}</section>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>mlrt report: {html.escape(run_id)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Run {html.escape(run_id)}</h1>"
        f"<h2>Summary</h2><ul>{summary}</ul>"
        f"<details><summary>Metrics</summary><table><tr><th>metric</th><th>value</th></tr>{metric_rows}</table></details>"
        + "".join(sections)
        + f"<script>{_MARK_DRAWN}</script></body></html>\n"
    )
