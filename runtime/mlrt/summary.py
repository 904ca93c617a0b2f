"""The end-of-run summary: which report findings a run's diagnosis shows, in what order, and how many more.

Every built report's :meth:`mlrt.reports.Report.findings` are collected and
ranked: the first finding of the ``bias_variance`` report (the run's regime:
high bias, high variance, or fine) leads, then every other finding, problems
before warnings and notes, each group by :attr:`mlrt.reports.Finding.gain`,
largest first. The terminal summary (``mlrt submit``, ``mlrt report``) shows
the regime, the first :data:`SUMMARY_CAP` of the rest, then the pinned
findings (:attr:`mlrt.reports.Finding.pinned`, which the cap does not count),
and says how many more there are; the report page (``report.html``) lists them all, in the same
order. A report whose ``findings`` raises adds none: the summary names it
(``failures``) instead of failing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlrt.reports import Finding

SUMMARY_CAP = 3
"""How many findings the terminal summary shows after the regime line."""

REGIME_REPORT = "bias_variance"
"""The report whose first finding leads the summary."""

_SEVERITY_ORDER = {"problem": 0}
"""Problems rank before every other severity; warnings and notes rank by gain alone."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """The ranked findings of a run's reports: ``shown`` in the terminal summary, then ``more``;
    ``failures`` has one line per report whose ``findings`` raised (naming it and the exception)."""

    shown: list[Finding]
    more: list[Finding]
    failures: list[str] = dataclasses.field(default_factory=list)


def summarize(results: dict[str, dict[str, Any]], cap: int = SUMMARY_CAP) -> Summary:
    """Rank the findings of every built report in ``results`` (report name -> result) as the
    module docstring says; skipped results and reports no plugin registers are left out."""
    from mlrt import plugins

    registry = plugins.reports()
    regime: list[Finding] = []
    others: list[Finding] = []
    failures: list[str] = []
    for name, result in results.items():
        if name not in registry or result.get("skipped"):
            continue
        try:
            with plugins.blame("reports", name):
                found = list(registry[name].findings(result))
        except plugins.PluginFailure as failure:
            failures.append(failure.line)
            continue
        if name == REGIME_REPORT and found and not regime:
            regime, found = found[:1], found[1:]
        others += found
    others.sort(key=lambda f: (_SEVERITY_ORDER.get(f.severity, 1), -f.gain))
    ranked = [f for f in others if not f.pinned]
    return Summary(shown=regime + ranked[:cap] + [f for f in others if f.pinned], more=ranked[cap:], failures=failures)
