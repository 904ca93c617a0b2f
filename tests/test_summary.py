"""The end-of-run summary's ranking and cap, the report page's sections, and the options every report takes.

Reports here are throwaway plugin objects registered in-process; their results
are plain dicts, so nothing is trained. ``tests/test_example_plugin.py`` shows
the same summary at the end of a real run.
"""

from __future__ import annotations

import html as html_module
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from mlrt import hookimpl, plugins
from mlrt.report_page import page, section
from mlrt.reports import COMMON_OPTIONS, Finding, Report, ReportInput, option_schema
from mlrt.spec import SpecError, load_spec
from mlrt.summary import SUMMARY_CAP, summarize


class Regime(Report):
    """Stands in for the built-in ``bias_variance``: its first finding leads the summary."""

    name: ClassVar[str] = "bias_variance"

    def build(self, data: ReportInput) -> dict[str, Any]:  # pragma: no cover - results are given
        return {}

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        return [Finding(self.name, "high variance", gain=0.01), Finding(self.name, "train/dev gap", gain=0.2)]


class Many(Report):
    """One finding per ``(severity, gain)`` pair of its result, and a section without its own heading."""

    name: ClassVar[str] = "acme.many"

    def build(self, data: ReportInput) -> dict[str, Any]:  # pragma: no cover - results are given
        return {}

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        return [Finding(self.name, f"{severity} {gain}", gain, severity) for severity, gain in result["found"]]

    def html(self, result: dict[str, Any]) -> str:
        return "<p>many things</p>"


class Titled(Many):
    name: ClassVar[str] = "acme.titled"

    def html(self, result: dict[str, Any]) -> str:
        return "<h2>A title of its own</h2><p>titled</p>"


class Broken(Many):
    name: ClassVar[str] = "acme.broken"

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        raise KeyError("rows")

    def html(self, result: dict[str, Any]) -> str:
        raise ValueError("no plot")


class ReportsPlugin:
    @hookimpl
    def mlrt_reports(self) -> list[Report]:
        return [Regime(), Many(), Titled(), Broken()]


@pytest.fixture
def registered():
    with plugins.registered(ReportsPlugin(), name="acme-reports"):
        yield


MANY = {"found": [("warning", 0.5), ("info", 0.9), ("problem", 0.1), ("warning", 0.3), ("problem", 0.2)]}


def test_the_regime_leads_then_problems_then_the_rest_by_gain_up_to_the_cap(registered):
    summary = summarize({"acme.many": MANY, "bias_variance": {}, "acme.titled": {"skipped": "no slices"}})
    assert [f.text for f in summary.shown] == ["high variance", "problem 0.2", "problem 0.1", "info 0.9"]
    assert len(summary.shown) == 1 + SUMMARY_CAP
    assert [f.text for f in summary.more] == ["warning 0.5", "warning 0.3", "train/dev gap"]
    assert summary.failures == []


def test_a_report_whose_findings_raise_is_named_and_the_others_still_count(registered):
    summary = summarize({"acme.broken": MANY, "acme.many": {"found": [("warning", 0.5)]}})
    assert [f.text for f in summary.shown] == ["warning 0.5"] and summary.more == []
    [line] = summary.failures
    assert line.startswith("report 'acme.broken' (") and "raised KeyError: 'rows'" in line


def test_the_page_lists_every_finding_and_gives_each_section_one_heading(registered):
    results = {"acme.many": MANY, "acme.titled": {"found": []}, "acme.broken": {"found": []}}
    html = page("run-1", {"validation_accuracy": 0.9}, results, summarize(results))
    assert "<details><summary>2 more finding(s)</summary>" in html
    assert all(f"<b>acme.many</b>: {severity} {gain}" in html for severity, gain in MANY["found"])
    sections = dict(re.findall(r"<section id='([^']+)'>(.*?)</section>", html))
    assert sections["acme.many"] == "<h2>acme.many</h2><p>many things</p>"
    assert sections["acme.titled"] == "<h2>A title of its own</h2><p>titled</p>"
    broken = html_module.unescape(sections["acme.broken"])
    assert broken.startswith("<h2>acme.broken</h2><p class='problem'>no section: report 'acme.broken' (")
    assert "raised ValueError: no plot" in broken


def test_a_section_heading_is_added_only_when_the_fragment_has_none():
    assert section("x", "  <H2>Mine</H2>") == "<section id='x'>  <H2>Mine</H2></section>"
    assert section("a<b", "<table></table>") == "<section id='a&lt;b'><h2>a&lt;b</h2><table></table></section>"


def test_every_report_takes_split_without_declaring_it(registered, tmp_path: Path):
    assert option_schema(Many()) == COMMON_OPTIONS
    document = {
        "apiVersion": "mlrt/v1",
        "kind": "TrainingJob",
        "metadata": {"name": "split"},
        "spec": {
            "command": ["true"],
            "reports": ["acme.many"],
            "report_options": {"acme.many": {"split": "train"}},
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_spec(path).resolved()["spec"]["report_options"] == {"acme.many": {"split": "train"}}
    document["spec"]["report_options"]["acme.many"]["split"] = 3
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == ["spec.report_options.acme.many.split: must be a str, got 3"]
