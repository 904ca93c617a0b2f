"""``example.calibration``: how far a classifier's probabilities are from its accuracy.

The rows of the analysis split are put in equal-width bins of the predicted
class's probability (its confidence); the expected calibration error (ECE)
is the average distance between a bin's accuracy and its mean confidence,
weighted by its rows. A job bounds it with a gate that names the report and
the value apart, since the report's name has a dot::

    gates: [{report: example.calibration, value: ece, max: 0.1}]

The report declares only ``bins``; ``split`` is an option every report takes
(``spec.report_options: {example.calibration: {split: train}}``).
"""

from __future__ import annotations

import html
from typing import Any, ClassVar

from mlrt.algorithms import Hyperparameter
from mlrt.reports import Comparable, Finding, Report, ReportInput


class Calibration(Report):
    """Expected calibration error, and accuracy against confidence per bin."""

    name: ClassVar[str] = "example.calibration"
    description: ClassVar[str] = "Expected calibration error of the predicted probabilities, per confidence bin."
    options = {"bins": Hyperparameter(int, 10, min=2, max=100, help="Equal-width confidence bins.")}
    gate_value_names = frozenset({"ece"})  # so that mlrt validate refuses a gate on any other value

    def build(self, data: ReportInput) -> dict[str, Any]:
        scores = [f"score_{c}" for c in data.classes]
        if data.task != "classification" or not scores or not set(scores) <= set(data.frame.columns):
            return {"report": self.name, "skipped": "needs a classifier that gives probabilities"}
        rows = data.rows()
        count = data.options["bins"]
        confidence = rows[scores].max(axis=1)
        correct = 1.0 - data.loss(rows)
        bins = []
        for number, group in confidence.groupby((confidence * count).astype(int).clip(upper=count - 1)):
            share = len(group) / len(rows)
            bins.append(
                {
                    "bin": f"{number / count:.2f}-{(number + 1) / count:.2f}",
                    "rows": len(group),
                    "share": share,
                    "confidence": float(group.mean()),
                    "accuracy": float(correct[group.index].mean()),
                }
            )
        ece = sum(b["share"] * abs(b["accuracy"] - b["confidence"]) for b in bins)
        return {"report": self.name, "split": data.analysis_split, "rows": len(rows), "ece": ece, "bins": bins}

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        """The ECE overall, then one note per bin, ranked by how much of the ECE the bin makes."""
        if result.get("skipped"):
            return []
        severity = "warning" if result["ece"] > 0.05 else "info"
        found = [
            Finding(self.name, f"expected calibration error {result['ece']:.3f} on {result['split']}", 0.0, severity)
        ]
        for b in result["bins"]:
            text = f"confidence {b['bin']}: accuracy {b['accuracy']:.2f} vs confidence {b['confidence']:.2f}"
            found.append(Finding(self.name, text, b["share"] * abs(b["accuracy"] - b["confidence"]), "info"))
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        return {} if result.get("skipped") else {"ece": result["ece"]}

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        return [] if result.get("skipped") else [Comparable("overall", "ece", result["ece"], higher_is_better=False)]

    def html(self, result: dict[str, Any]) -> str:
        """A table per bin, under the heading the page gives every section (``example.calibration``)."""
        if result.get("skipped"):
            return f"<p>Skipped: {html.escape(result['skipped'])}</p>"
        rows = "".join(
            f"<tr><td>{html.escape(b['bin'])}</td><td class='num'>{b['rows']}</td>"
            f"<td class='num'>{b['confidence']:.3f}</td><td class='num'>{b['accuracy']:.3f}</td></tr>"
            for b in result["bins"]
        )
        return (
            f"<p>Expected calibration error on {html.escape(result['split'])}: {result['ece']:.3f}</p>"
            f"<table><tr><th>confidence</th><th>rows</th><th>mean confidence</th><th>accuracy</th></tr>{rows}</table>"
        )
