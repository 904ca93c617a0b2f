"""spec.gates: a report's value named by report and value (dots in names allowed), checked by validate."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import run_json
from mlrt import hookimpl, plugins
from mlrt.reports import Report, ReportInput
from mlrt.spec import SpecError, load_spec

JOB = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: sklearn.logistic_regression
  data:
    train: builtin://sklearn/digits?split=train
    validation: builtin://sklearn/digits?split=validation
  seed: 3
  gates:
{gates}
"""


class Calibration(Report):
    """A third-party report whose name has a dot; its one gate value is the analysis split's error rate."""

    name = "acme.calibration"
    description = "error rate, as a stand-in for a calibration error"
    gate_value_names = frozenset({"ece"})

    def build(self, data: ReportInput) -> dict[str, Any]:
        rows = data.rows()
        return {"report": self.name, "split": data.analysis_split, "rows": len(rows), "ece": data.loss(rows).mean()}

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        return {"ece": float(result["ece"])}


class AcmePlugin:
    @hookimpl
    def mlrt_reports(self) -> list[Report]:
        return [Calibration()]


def test_a_gate_on_a_dotted_report_name_is_evaluated_end_to_end(cli, write_spec):
    gates = (
        "    - {report: acme.calibration, value: ece, max: 0.5}\n"  # passes: the model is far better
        "    - {metric: acme.calibration.ece, min: 0.9}\n"  # the short form: the report is up to the last dot
    )
    spec = write_spec(JOB.format(name="dotted", gates=gates))
    with plugins.registered(AcmePlugin(), name="acme"):
        result = cli("submit", str(spec))
        assert result.exit_code == 1, result.output
        run = run_json(cli, re.search(r"^run (\S+) ", result.output, re.M).group(1))
    assert run["state"] == "FAILED_GATE"
    assert "failed 1 gate(s): acme.calibration.ece = " in run["reason"]
    assert "is below the gate's min 0.9" in run["reason"]


def test_validate_names_the_gate_whose_report_or_value_is_unknown(cli, write_spec):
    gates = (
        "    - {metric: nope.ece, max: 0.1}\n"
        "    - {report: slices, value: best_accuracy, min: 0.9}\n"
        "    - {metric: skew.balanced_accuracy, min: 0.5}\n"
        "    - {report: acme.calibration, value: ece, max: 0.1}\n"
    )
    spec = write_spec(JOB.format(name="unknown", gates=gates))
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    lines = [line.removeprefix("error: ") for line in result.output.splitlines()]
    assert [line.split(": ", 1)[0] for line in lines] == [
        "spec.gates.0.metric",
        "spec.gates.1.value",
        "spec.gates.3.report",
    ]
    assert lines[0].startswith("spec.gates.0.metric: unknown report 'nope' (registered: ")
    assert lines[1].startswith("spec.gates.1.value: report 'slices' gives no value 'best_accuracy' (it gives: ")
    assert "worst_accuracy" in lines[1]
    with plugins.registered(AcmePlugin(), name="acme"):
        with pytest.raises(SpecError) as caught:
            load_spec(spec)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == ["spec.gates.0.metric", "spec.gates.1.value"]


@pytest.mark.parametrize(
    ("gate", "problem"),
    [
        ("{metric: worst, min: 0.9}", "metric must be REPORT.VALUE"),
        ("{report: slices, min: 0.9}", "set both report and value"),
        ("{metric: slices.worst_accuracy, report: slices, min: 0.9}", "set metric (REPORT.VALUE) or report and value"),
        ("{report: slices, value: worst_accuracy}", "set min and/or max"),
        ("{report: slices, value: worst_accuracy, min: 0.9, max: 0.5}", "min (0.9) is above max (0.5)"),
        ("{report: slices, value: worst_accuracy, min: 0.9, compare_to: r1}", "not compare_to"),
    ],
)
def test_a_malformed_gate_is_one_line_naming_it(write_spec, gate, problem):
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(JOB.format(name="bad", gates=f"    - {gate}\n")))
    (line,) = caught.value.problems
    assert line.startswith("spec.gates.0: ") and problem in line


def test_set_reaches_the_options_of_a_report_whose_name_has_dots(write_spec):
    spec = write_spec(
        JOB.format(name="options", gates="    - {report: acme.calibration, value: ece, max: 0.5}")
        + "  report_options: {acme.calibration: {split: train}}\n"
    )
    with plugins.registered(AcmePlugin(), name="acme"):
        loaded = load_spec(spec, ["spec.report_options.acme.calibration.split=validation", "spec.gates.0.max=0.4"])
    resolved = loaded.resolved()["spec"]
    assert resolved["report_options"] == {"acme.calibration": {"split": "validation"}}
    assert resolved["gates"][0]["max"] == 0.4
