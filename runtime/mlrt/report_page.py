"""One self-contained HTML page for a run's reports (inline CSS and SVG; opens offline).

The page has the run's summary at the top (every finding, ranked as
:mod:`mlrt.summary` says: those the terminal summary shows, then the others
under "N more findings"), the run's metrics, then one section per report.

A report's section is ``<section id="NAME">`` holding its
:meth:`mlrt.reports.Report.html` fragment. The section's heading is the
``<h2>`` the fragment starts with (the built-in reports give a title such as
"Bias and variance"); a fragment that starts with anything else gets
``<h2>NAME</h2>`` put before it, so every section has exactly one heading
in the page's outline. A skipped report's section is its heading and the
reason; so is one whose ``html`` raised (the line names the report and the exception). A small inline
script marks the page once it has laid out: ``<body data-plots="N"
data-plots-drawn="M">`` counts the ``svg.mlrt-plot`` elements and those
that rendered with a non-empty box, which is what the browser test reads.
"""

from __future__ import annotations

import html
from typing import Any

from mlrt import plugins
from mlrt.reports import Finding
from mlrt.summary import Summary

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


def _finding_items(findings: list[Finding]) -> str:
    return "".join(
        f"<li class='{html.escape(f.severity)}'><b>{html.escape(f.report)}</b>: {html.escape(f.text)}</li>"
        for f in findings
    )


def section(name: str, fragment: str) -> str:
    """A report's section: its ``<h2>`` first (the fragment's own, else ``<h2>NAME</h2>``)."""
    heading = "" if fragment.lstrip().lower().startswith("<h2") else f"<h2>{html.escape(name)}</h2>"
    return f"<section id='{html.escape(name)}'>{heading}{fragment}</section>"


def sections(results: dict[str, dict[str, Any]]) -> list[str]:
    """One section per stored report result, in order (the page's and the web UI's run page's)."""
    registry = plugins.reports()
    found = []
    for name, result in results.items():
        if result.get("skipped"):
            found.append(section(name, f"<p>skipped: {html.escape(str(result['skipped']))}</p>"))
        elif name in registry:
            try:
                with plugins.blame("reports", name):
                    fragment = registry[name].html(result)
            except plugins.PluginFailure as failure:
                fragment = f"<p class='problem'>no section: {html.escape(failure.line)}</p>"
            found.append(section(name, fragment))
    return found


def page(run_id: str, metrics: dict[str, float], results: dict[str, dict[str, Any]], summary: Summary) -> str:
    """The whole HTML document."""
    metric_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='num'>{v:.4g}</td></tr>" for k, v in sorted(metrics.items())
    )
    failures = "".join(f"<li class='problem'>findings left out: {html.escape(line)}</li>" for line in summary.failures)
    overview = f"<ul>{(_finding_items(summary.shown) + failures) or '<li>nothing to report</li>'}</ul>"
    if summary.more:
        overview += (
            f"<details><summary>{len(summary.more)} more finding(s)</summary>"
            f"<ul>{_finding_items(summary.more)}</ul></details>"
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>mlrt report: {html.escape(run_id)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Run {html.escape(run_id)}</h1>"
        f"<h2>Summary</h2>{overview}"
        f"<details><summary>Metrics</summary><table><tr><th>metric</th><th>value</th></tr>{metric_rows}</table></details>"
        + "".join(sections(results))
        + f"<script>{_MARK_DRAWN}</script></body></html>\n"
    )
