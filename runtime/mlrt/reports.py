"""Error-analysis reports: what a report plugin implements and the data it is given.

A report plugin returns :class:`Report` objects from the ``mlrt_reports``
hook. mlrt builds the reports a job lists in ``spec.reports`` after each
successful run, and any report on demand with ``mlrt report RUN``. For each
report it calls :meth:`Report.build` with a :class:`ReportInput` and stores
the JSON-able result it returns in the run's output as
``reports/<name>.json`` (an artifact like any other). The CLI shows a result
with :meth:`Report.render` (rich), ``--html`` puts every report's
:meth:`Report.html` section into one self-contained page, the end-of-run
summary collects :meth:`Report.findings`, ``spec.gates`` check the numbers
from :meth:`Report.gate_values`, and ``mlrt report diff`` compares two runs
through :meth:`Report.comparable`.

Every result is a dict with at least ``report`` (the name), ``split`` (the
examples it describes) and ``rows`` (how many); a report that cannot run
on this input (no protected attribute listed, a regression task for a
classification-only report) returns ``{"report": name, "skipped": reason}``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlrt.algorithms import Hyperparameter

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.console import Console

RESERVED_COLUMNS = ("id", "split", "label", "prediction")
"""Columns of :attr:`ReportInput.frame` that are not features (besides ``score_<class>``)."""

COMMON_OPTIONS: dict[str, Hyperparameter] = {
    "split": Hyperparameter(str, None, help="The split to analyse (default: validation, else test, else train)."),
}
"""Options every report takes under ``spec.report_options.<name>`` without declaring them:
``split`` chooses :attr:`ReportInput.analysis_split`. A report that declares an option of
the same name in :attr:`Report.options` replaces it (to give it another default or help)."""


def option_schema(report: Report) -> dict[str, Hyperparameter]:
    """Every option ``report`` takes: :data:`COMMON_OPTIONS`, then its own :attr:`Report.options`."""
    return {**COMMON_OPTIONS, **(getattr(report, "options", None) or {})}


@dataclasses.dataclass
class ReportInput:
    """Everything a report may look at, for one run.

    ``frame`` has one row per example of every labelled channel: ``id``,
    ``split`` (the channel name: ``train``, ``validation``, ``test``),
    ``label``, ``prediction``, one ``score_<class>`` column per class for
    classifiers that give probabilities, then the channel's feature columns
    (named in ``features``). ``classes`` lists the class labels in score-column
    order (empty for regression); ``positive`` is the positive class of a
    binary task (the larger label). ``spec`` is the run's resolved TrainingJob
    spec (``slices``, ``protected``, ``tags``, ``baseline``,
    ``business_metrics``, ``gates`` ...); ``metrics`` the run's last value of
    each metric; ``options`` this report's resolved options (its
    :func:`option_schema`, ``split`` included, applied to ``spec.report_options.<name>``).
    ``output_dir`` is where a report may write files for the user (a CSV of
    examples to review). ``retrain``, when not None, trains the run's
    algorithm again on a random fraction of the training channel and returns
    that model's metrics per channel (``{"train": {...}, "validation":
    {...}}``), for learning curves; it is None for ``command:`` jobs.
    ``analysis`` names the frame's report-only columns: protected attributes,
    slice and tag columns and a channel's ``analysis`` columns that the model
    did not see (:mod:`mlrt.columns`); they follow the features in ``frame``.
    """

    run_id: str
    frame: pd.DataFrame
    features: list[str]
    task: str
    classes: list[Any]
    positive: Any
    spec: dict[str, Any]
    metrics: dict[str, float]
    options: dict[str, Any]
    output_dir: Path
    retrain: Callable[[float, int], dict[str, dict[str, float]]] | None = None
    analysis: list[str] = dataclasses.field(default_factory=list)

    @property
    def analysis_split(self) -> str:
        """The split error analysis looks at: ``options["split"]`` when set, else
        ``validation`` (the dev set), else ``test``, else ``train``."""
        present = set(self.frame["split"].unique())
        wanted = self.options.get("split")
        if wanted:
            return wanted
        return next((s for s in ("validation", "test", "train") if s in present), "train")

    def rows(self, split: str | None = None) -> pd.DataFrame:
        """The labelled rows of ``split`` (default: :attr:`analysis_split`)."""
        frame = self.frame[self.frame["split"] == (split or self.analysis_split)]
        return frame[frame["label"].notna()]

    def loss(self, rows: pd.DataFrame) -> pd.Series:
        """Per-example error: 1.0/0.0 for a wrong/right class, the absolute error for regression."""
        if self.task == "classification":
            import pandas as pd

            label = pd.to_numeric(rows["label"], errors="coerce")
            prediction = pd.to_numeric(rows["prediction"], errors="coerce")
            if label.notna().all() and prediction.notna().all():  # 1 and 1.0 are one class
                return (label != prediction).astype(float)
            return (rows["label"].astype(str) != rows["prediction"].astype(str)).astype(float)
        return (rows["label"].astype(float) - rows["prediction"].astype(float)).abs()


@dataclasses.dataclass
class Finding:
    """One line of the end-of-run summary: what is wrong and how much fixing it could gain.

    ``gain`` is the drop in the overall error if the problem were fixed (for
    a slice: its share of all errors times how far its error rate is above
    the rest), so the summary can rank findings from different reports."""

    report: str
    text: str
    gain: float = 0.0
    severity: str = "warning"  # "info", "warning" or "problem"
    pinned: bool = False
    """Shown in the terminal summary whatever its rank: for what gain ranks low but matters,
    such as a small slice the model gets badly wrong. Use it for one finding per report at most."""


@dataclasses.dataclass
class Comparable:
    """One number ``mlrt report diff`` lines up between two runs.

    ``key`` identifies it within the report (``"slice age=60+"``,
    ``"class 3"``, ``"group sex=F"``), ``metric`` names it (``accuracy``,
    ``recall``, ``selection_rate``); ``higher_is_better`` decides which
    direction is a regression (None: neither, e.g. a selection rate)."""

    key: str
    metric: str
    value: float
    higher_is_better: bool | None = True


class Report(abc.ABC):
    """Base class for error-analysis reports (``spec.reports``)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Hyperparameter]] = {}
    """Settings a job may give under ``spec.report_options.<name>``, checked like hyperparameters,
    besides the :data:`COMMON_OPTIONS` every report takes (``split``)."""
    gate_value_names: ClassVar[frozenset[str] | None] = None
    """Every name :meth:`gate_values` may give, so that ``mlrt validate`` refuses a gate on a
    value the report never gives; None (the default) when the names depend on the job (then a
    gate on a missing value fails when the run ends)."""

    @abc.abstractmethod
    def build(self, data: ReportInput) -> dict[str, Any]:
        """Compute the report; return a JSON-serializable dict (see the module docstring)."""

    def render(self, result: dict[str, Any], console: Console) -> None:
        """Print the result for a terminal. Default: its findings, one per line."""
        for finding in self.findings(result):
            console.print(f"{self.name}: {finding.text}")

    def html(self, result: dict[str, Any]) -> str:
        """An HTML fragment (tables, inline SVG plots; no external resources) for the
        report page. Default: the result as preformatted JSON."""
        import html
        import json

        return f"<pre>{html.escape(json.dumps(result, indent=2, default=str))}</pre>"

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        """What the end-of-run summary should say about this result. Default: nothing."""
        return []

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        """Named numbers ``spec.gates`` may bound: ``{report: NAME, value: KEY}``, or in short
        ``{metric: NAME.KEY}``; keep the keys free of dots. Default: none."""
        return {}

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        """The numbers ``mlrt report diff`` compares between runs. Default: none."""
        return []
