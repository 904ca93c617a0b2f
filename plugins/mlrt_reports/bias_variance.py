"""The ``bias_variance`` report: train, validation and test error against a baseline."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    float_or_none,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.console import Console

NAME = "bias_variance"
SPLITS = ("train", "validation", "test")
SCORE_WORDS = ("accuracy", "auc", "f1", "precision", "recall", "r2")
ERROR_WORDS = ("error", "loss", "rmse", "mae")
REGRESSION_ERRORS = ("rmse", "mae", "1-r2")
NO_BASELINE = "no baseline given: assuming 0 error (Bayes error unknown)"
NO_RETRAIN = "learning curve not drawn: it is only available for algorithm jobs (command: jobs cannot be retrained)"

BIAS_LEVERS = [
    "bigger model (more capacity: deeper trees, more layers or units)",
    "more or better features",
    "less regularization",
    "train longer (or a better optimizer)",
]
VARIANCE_LEVERS = [
    "more training data",
    "more regularization (L2, dropout, early stopping, pruning)",
    "data augmentation",
    "smaller model or feature selection",
]
DEV_TEST_LEVERS = ["a bigger validation set (the model or its tuning may be fitted to the validation set)"]


class BiasVarianceReport(Report):
    """Where the error comes from: avoidable bias (underfitting) or variance (overfitting).

    The report computes each split's error from the run's predictions
    (``frame``), so train, validation and test errors are measured the same
    way, and compares them with a baseline error, the best error one can
    hope for (human-level performance, the literature, an old system):

    * ``avoidable_bias = train_error - baseline_error``
    * ``variance = validation_error - train_error``
    * ``dev_test_gap = test_error - validation_error`` (when both exist)

    A gap larger than ``tolerance`` (absolute, in error units) counts as high;
    the ``regime`` is ``"high bias"``, ``"high variance"``, ``"high bias and
    high variance"`` or ``"near baseline"``, and ``levers`` lists what tends
    to help (high bias: a bigger model, more features, less regularization,
    training longer; high variance: more data, regularization, data
    augmentation, a smaller model or feature selection).

    Errors. Classification uses the error rate (share of wrong predictions).
    Regression uses ``rmse``, ``mae`` or ``1-r2`` (unexplained share of the
    variance): option ``regression_error``; ``auto`` picks the one the
    baseline metric names (``validation_mae`` -> ``mae``, ``validation_r2``
    -> ``1-r2``), else ``rmse``. ``error_metric`` in the result says which.

    Baseline. ``spec.baseline`` (``{metric, value, source}``) becomes an
    error: a metric whose name contains ``accuracy``, ``auc``, ``f1``,
    ``precision``, ``recall`` or ``r2`` is a score (error = 1 - value); one
    containing ``error``, ``loss``, ``rmse`` or ``mae`` is an error (error =
    value). Without a baseline the report assumes the option
    ``baseline_error`` (default 0, "Bayes error unknown") and says so in
    ``notes``; a baseline metric that is neither, or is measured differently
    from the errors it is compared with (``roc_auc`` against an error rate),
    is noted too. With a 0 baseline any train error above ``tolerance``
    reads as avoidable bias; for regression set ``tolerance`` in label units.

    Learning curve. With option ``learning_curve`` (and an algorithm job,
    whose ``retrain`` is available) the algorithm is trained again on
    ``curve_points`` fractions of the training set, from 0.1 to 1.0 spaced
    geometrically (0.1, 0.178, 0.316, 0.562, 1.0 for 5), with ``seed``; each
    run's ``accuracy`` (classification, error = 1 - accuracy) or regression
    error metric gives a train and a validation error per fraction. The
    validation error's slope per doubling of the data over the last three
    points says whether it is still falling (by more than ``tolerance / 4``
    per doubling): then more data is likely to help. Curves that have met
    (gap within ``tolerance``) high above the baseline mean more data will
    not help: reduce the bias.

    Options (``spec.report_options.bias_variance``): ``tolerance`` (float,
    0.02), ``baseline_error`` (float, used when ``spec.baseline`` is unset;
    default 0), ``regression_error`` (``auto``/``rmse``/``mae``/``1-r2``),
    ``learning_curve`` (bool, false), ``curve_points`` (int, 5), ``seed``
    (int, 0), ``split`` (the split compared with train: ``validation`` by
    default, else ``test``).

    Result (JSON)::

        {"report": "bias_variance",
         "split": "validation",            # the split compared with train (the dev set)
         "rows": 2000,                     # labelled rows of that split
         "split_rows": {"train": 6000, "validation": 2000, "test": 2000},
         "task": "classification",
         "error_metric": "error_rate",     # or "rmse" / "mae" / "1-r2"
         "baseline": {"metric": "validation_accuracy" | None, "value": 0.98 | None,
                      "source": "human-level" | None, "error": 0.02,
                      "assumed": False,            # True: no usable spec.baseline, error assumed
                      "kind": "score" | "error" | None},   # how the metric was read
         "errors": {"train": 0.0, "validation": 0.21, "test": 0.2},   # splits present only
         "avoidable_bias": -0.02,          # None when the train error is undefined (1-r2, constant labels)
         "variance": 0.21,                 # None without a dev split
         "dev_test_gap": -0.01,            # None without validation and test
         "tolerance": 0.02,
         "high_bias": False, "high_variance": True, "high_dev_test_gap": False,
         "regime": "high variance",
         "levers": ["more training data", ...],   # bias levers, variance levers, then a dev/test one
         "notes": ["..."],
         "learning_curve": None            # not asked for
             | {"note": "..."}             # asked for but unavailable or failed
             | {"fractions": [0.1, ...], "seed": 0, "train_error": [...],
                "validation_error": [...],  # the dev split's error
                "slope_per_doubling": -0.03, "final_gap": 0.2,
                "more_data_helps": True, "converged": False, "interpretation": "..."}}

    A frame without train rows gives ``{"report": "bias_variance", "skipped": reason}``.

    Gate values: ``avoidable_bias``, ``variance``, ``dev_test_gap``,
    ``baseline_error``, and ``train_error`` / ``validation_error`` /
    ``test_error`` for the splits present (those that are not None).
    """

    name = NAME
    description = "Train, validation and test error against a baseline: high bias, high variance, or near baseline."
    options = {
        "tolerance": Hyperparameter(
            float, 0.02, min=0.0, help="A gap above this (absolute, in error units) counts as high."
        ),
        "baseline_error": Hyperparameter(
            float,
            None,
            min=0.0,
            nullable=True,
            help="The baseline error to assume when spec.baseline is not set (default 0: Bayes error unknown).",
        ),
        "regression_error": Hyperparameter(
            str,
            "auto",
            choices=("auto", *REGRESSION_ERRORS),
            help="Regression error metric; auto: the one the baseline metric names, else rmse.",
        ),
        "learning_curve": Hyperparameter(
            bool, False, help="Retrain on fractions of the training set and report the errors (algorithm jobs only)."
        ),
        "curve_points": Hyperparameter(int, 5, min=2, max=20, help="How many training-set fractions (0.1 to 1.0)."),
        "seed": Hyperparameter(int, 0, help="Seed for the learning curve's random subsets."),
        "split": Hyperparameter(
            str,
            None,
            choices=("validation", "test"),
            nullable=True,
            help="The split compared with train (default: validation, else test).",
        ),
    }

    # ------------------------------------------------------------------ build

    def build(self, data: ReportInput) -> dict[str, Any]:
        """Errors per split, the gaps to the baseline, the regime and (optionally) a learning curve."""
        options = data.options
        tolerance = float(options.get("tolerance", 0.02))
        whole = data.frame
        frame = whole.loc[whole["split"].isin(SPLITS) & whole["label"].notna(), ["split", "label", "prediction"]]
        present = set(frame["split"].unique())
        if "train" not in present:
            return skipped(NAME, "no labelled train rows: the train error (and so the bias) is unknown")
        dev = options.get("split") or next((s for s in ("validation", "test") if s in present), None)
        if dev not in present:
            dev = None

        notes: list[str] = []
        baseline = _baseline(data.spec.get("baseline"), options.get("baseline_error"), notes)
        measure = _measure(data.task, options.get("regression_error") or "auto", baseline, notes)
        errors = _errors(data, frame, measure)
        if measure == "1-r2" and any(value is None for value in errors.values()):
            notes.append("a split's labels are constant, so its 1 - r2 is undefined")
        train_error = errors.get("train")
        dev_error = errors.get(dev) if dev else None

        bias = _minus(train_error, baseline["error"])
        variance = _minus(dev_error, train_error)
        dev_test_gap = _minus(errors.get("test"), errors.get("validation")) if dev == "validation" else None
        high_bias = bias is not None and bias > tolerance
        high_variance = variance is not None and variance > tolerance
        high_dev_test = dev_test_gap is not None and dev_test_gap > tolerance
        if high_bias and high_variance:
            regime = "high bias and high variance"
        elif high_bias:
            regime = "high bias"
        elif high_variance:
            regime = "high variance"
        else:
            regime = "near baseline"
        levers = (BIAS_LEVERS if high_bias else []) + (VARIANCE_LEVERS if high_variance else [])
        levers += DEV_TEST_LEVERS if high_dev_test else []

        if dev is None:
            notes.append("no validation or test split: the variance is not measured")
        if bias is not None and bias < -tolerance:
            notes.append(
                "the train error is below the baseline error: the model beats the baseline on the data it was"
                " trained on, so the bias gap says little; look at the variance (and at whether the baseline is"
                " too weak)"
            )
        if baseline["assumed"] and high_bias:
            notes.append(
                "the avoidable bias is measured against an assumed baseline: set spec.baseline (human-level error,"
                " an old system) or report_options.bias_variance.baseline_error to judge it fairly"
            )

        curve = None
        if options.get("learning_curve"):
            curve = _learning_curve(data, measure, baseline["error"], tolerance, options, dev or "validation")

        split_rows = frame["split"].value_counts()
        return {
            "report": NAME,
            "split": dev or "train",
            "rows": int(split_rows.get(dev or "train", 0)),
            "split_rows": {split: int(split_rows[split]) for split in SPLITS if split in split_rows.index},
            "task": data.task,
            "error_metric": measure,
            "baseline": baseline,
            "errors": errors,
            "avoidable_bias": bias,
            "variance": variance,
            "dev_test_gap": dev_test_gap,
            "tolerance": tolerance,
            "high_bias": high_bias,
            "high_variance": high_variance,
            "high_dev_test_gap": high_dev_test,
            "regime": regime,
            "levers": levers,
            "notes": notes,
            "learning_curve": curve,
        }

    # ------------------------------------------------------------- consumers

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        """One finding naming the regime (``problem`` when bias or variance is high, else ``info``), its
        gaps and top levers, ranked by the larger gap; a second (``warning``) for a high dev/test gap."""
        if result.get("skipped"):
            return []
        errors = result["errors"]
        dev = result["split"]
        parts = [f"avoidable bias {_num(result['avoidable_bias'])} (train error {_num(errors.get('train'))}"]
        parts[0] += f" vs baseline {_num(result['baseline']['error'])})"
        if result["variance"] is not None:
            parts.append(f"variance {_num(result['variance'])} ({dev} error {_num(errors.get(dev))})")
        text = f"{result['regime']}: " + ", ".join(parts)
        top = (BIAS_LEVERS[:2] if result["high_bias"] else []) + (
            VARIANCE_LEVERS[:2] if result["high_variance"] else []
        )
        if top:
            text += "; try " + ", ".join(top)
        curve = result.get("learning_curve") or {}
        if curve.get("interpretation"):
            text += f"; learning curve: {curve['interpretation']}"
        problem = result["high_bias"] or result["high_variance"]
        gain = max(result["avoidable_bias"] or 0.0, result["variance"] or 0.0, 0.0)
        found = [Finding(NAME, text, gain=gain, severity="problem" if problem else "info")]
        if result.get("high_dev_test_gap"):
            found.append(
                Finding(
                    NAME,
                    f"test error {_num(errors.get('test'))} is {_num(result['dev_test_gap'])} above the validation"
                    f" error {_num(errors.get('validation'))}: the model may be fitted to the validation set;"
                    " try a bigger validation set",
                    gain=float(result["dev_test_gap"]),
                    severity="warning",
                )
            )
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        """``avoidable_bias``, ``variance``, ``dev_test_gap``, ``baseline_error`` and ``<split>_error``."""
        if result.get("skipped"):
            return {}
        values = {
            "avoidable_bias": result["avoidable_bias"],
            "variance": result["variance"],
            "dev_test_gap": result["dev_test_gap"],
            "baseline_error": result["baseline"]["error"],
        }
        values.update({f"{split}_error": value for split, value in result["errors"].items()})
        return {key: float(value) for key, value in values.items() if value is not None}

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        """Each split's error (lower is better), keyed ``error <split>``."""
        if result.get("skipped"):
            return []
        return [
            Comparable(f"error {split}", result["error_metric"], float(value), higher_is_better=False)
            for split, value in result["errors"].items()
            if value is not None
        ]

    def render(self, result: dict[str, Any], console: Console) -> None:
        """Errors and gaps as a table, then the regime, levers, notes and the learning curve."""
        from rich.table import Table

        if result.get("skipped"):
            console.print(f"{NAME}: skipped ({result['skipped']})")
            return
        table = Table(title=f"bias / variance ({result['error_metric']})")
        table.add_column("")
        table.add_column("error", justify="right")
        table.add_column("gap", justify="right")
        for label, error, gap in _rows(result):
            table.add_row(label, _num(error), gap)
        console.print(table)
        style = "bold red" if result["high_bias"] or result["high_variance"] else "bold green"
        console.print(f"regime: [{style}]{result['regime']}[/] (tolerance {_num(result['tolerance'])})")
        for lever in result["levers"]:
            console.print(f"  - {lever}", markup=False)
        for note in result["notes"]:
            console.print(f"note: {note}", markup=False)
        curve = result.get("learning_curve")
        if curve and curve.get("note"):
            console.print(f"note: {curve['note']}", markup=False)
        elif curve:
            lc = Table(title="learning curve")
            for column in ("fraction", "train error", f"{result['split']} error"):
                lc.add_column(column, justify="right")
            for fraction, train, dev in zip(
                curve["fractions"], curve["train_error"], curve["validation_error"], strict=True
            ):
                lc.add_row(f"{fraction:g}", _num(train), _num(dev))
            console.print(lc)
            console.print(f"learning curve: {curve['interpretation']}", markup=False)

    def html(self, result: dict[str, Any]) -> str:
        """Title, the errors table, regime and levers, a bar chart of the errors, and the learning curve."""
        from mlrt import report_plots

        if result.get("skipped"):
            return f"<h2>Bias and variance</h2><p>Skipped: {html.escape(result['skipped'])}</p>"
        esc = html.escape
        measure = esc(result["error_metric"])
        out = [f"<h2>Bias and variance</h2><table><tr><th></th><th>{measure}</th><th>gap</th></tr>"]
        for label, error, gap in _rows(result):
            out.append(f"<tr><td>{esc(label)}</td><td>{_num(error)}</td><td>{esc(gap)}</td></tr>")
        out.append("</table>")
        out.append(f"<p>Regime: <strong>{esc(result['regime'])}</strong> (tolerance {_num(result['tolerance'])})</p>")
        if result["levers"]:
            out.append("<ul>" + "".join(f"<li>{esc(lever)}</li>" for lever in result["levers"]) + "</ul>")
        for note in result["notes"]:
            out.append(f"<p><em>{esc(note)}</em></p>")
        labels = ["baseline"] + list(result["errors"])
        values = [result["baseline"]["error"]] + list(result["errors"].values())
        shown = [(label, value) for label, value in zip(labels, values, strict=True) if value is not None]
        flags = {"train": result["high_bias"], result["split"]: result["high_variance"]}
        out.append(
            report_plots.bars(
                "bias_variance_errors",
                [label for label, _ in shown],
                [value for _, value in shown],
                title="Error by split",
                xlabel=result["error_metric"],
                reference=result["baseline"]["error"],
                highlight=[bool(flags.get(label)) for label, _ in shown],
            )
        )
        curve = result.get("learning_curve")
        if curve and curve.get("note"):
            out.append(f"<p><em>{esc(curve['note'])}</em></p>")
        elif curve:
            out.append(
                report_plots.lines(
                    "bias_variance_learning_curve",
                    curve["fractions"],
                    {"train": curve["train_error"], result["split"]: curve["validation_error"]},
                    title="Learning curve",
                    xlabel="fraction of the training set",
                    ylabel=result["error_metric"],
                    hline=("baseline", result["baseline"]["error"]),
                )
            )
            out.append(f"<p>Learning curve: {esc(curve['interpretation'])}</p>")
        return "\n".join(out)


# ---------------------------------------------------------------------- helpers


def _baseline(spec_baseline: dict[str, Any] | None, fallback: float | None, notes: list[str]) -> dict[str, Any]:
    """The baseline as an error: ``{metric, value, source, error, assumed, kind}``."""
    assumed_error = float(fallback) if fallback is not None else 0.0
    assumed = {"metric": None, "value": None, "source": None, "error": assumed_error, "assumed": True, "kind": None}
    if not spec_baseline:
        if fallback is None:
            notes.append(NO_BASELINE)
        else:
            notes.append(f"no baseline given: assuming {assumed_error:g} error (report option baseline_error)")
        return assumed
    metric, value = str(spec_baseline.get("metric") or ""), float(spec_baseline["value"])
    kind = _metric_kind(metric)
    if kind is None:
        notes.append(
            f"baseline metric {metric!r} is neither a score ({', '.join(SCORE_WORDS)}) nor an error"
            f" ({', '.join(ERROR_WORDS)}): ignored; assuming {assumed_error:g} error"
        )
        return assumed
    return {
        "metric": metric,
        "value": value,
        "source": spec_baseline.get("source"),
        "error": 1.0 - value if kind == "score" else value,
        "assumed": False,
        "kind": kind,
    }


def _metric_kind(metric: str) -> str | None:
    lower = metric.lower()
    if any(word in lower for word in SCORE_WORDS):
        return "score"
    if any(word in lower for word in ERROR_WORDS):
        return "error"
    return None


def _measure(task: str, wanted: str, baseline: dict[str, Any], notes: list[str]) -> str:
    """The error metric for ``task``; notes when the baseline is measured differently."""
    metric = (baseline["metric"] or "").lower()
    if task == "classification":
        if metric and not ("accuracy" in metric or (baseline["kind"] == "error" and "error" in metric)):
            notes.append(
                f"baseline metric {baseline['metric']!r} is not an accuracy or error rate: its error"
                f" ({baseline['error']:.4g}) is compared with the error rate as an approximation"
            )
        return "error_rate"
    named = "rmse" if "rmse" in metric else "mae" if "mae" in metric else "1-r2" if "r2" in metric else None
    measure = wanted if wanted != "auto" else (named or "rmse")
    if metric and named != measure:
        notes.append(
            f"baseline metric {baseline['metric']!r} is compared with {measure} errors, which measure"
            " something else: set regression_error to match it"
        )
    return measure


def _errors(data: ReportInput, frame: pd.DataFrame, measure: str) -> dict[str, float | None]:
    """Each present split's error, in ``SPLITS`` order."""
    loss = data.loss(frame)
    by_split = loss.groupby(frame["split"], sort=False)
    if measure == "error_rate" or measure == "mae":
        values = by_split.mean()
    elif measure == "rmse":
        values = (loss * loss).groupby(frame["split"], sort=False).mean() ** 0.5
    else:  # 1-r2: residual sum of squares over total sum of squares
        labels = frame["label"].astype(float)
        centred = labels - labels.groupby(frame["split"], sort=False).transform("mean")
        total = (centred * centred).groupby(frame["split"], sort=False).sum()
        residual = (loss * loss).groupby(frame["split"], sort=False).sum()
        values = (residual / total).where(total > 0)
    return {split: float_or_none(values[split]) for split in SPLITS if split in values.index}


def _fractions(points: int) -> list[float]:
    return [round(0.1 * 10 ** (i / (points - 1)), 3) for i in range(points)]


def _curve_error(metrics: dict[str, float], measure: str) -> float | None:
    if measure == "error_rate":
        key, flip = "accuracy", True
    elif measure == "1-r2":
        key, flip = "r2", True
    else:
        key, flip = measure, False
    if metrics.get(key) is None:
        return None
    return 1.0 - float(metrics[key]) if flip else float(metrics[key])


def _learning_curve(
    data: ReportInput, measure: str, baseline_error: float, tolerance: float, options: dict[str, Any], dev: str
) -> dict[str, Any]:
    if data.retrain is None:
        return {"note": NO_RETRAIN}
    seed = int(options.get("seed", 0))
    fractions = _fractions(int(options.get("curve_points", 5)))
    train_errors: list[float] = []
    dev_errors: list[float] = []
    for fraction in fractions:
        try:
            metrics = data.retrain(fraction, seed)
        except Exception as error:  # a failed retrain loses the curve, not the report
            return {"note": f"learning curve failed: retraining on {fraction:g} of the data raised {error!r}"}
        train = _curve_error(metrics.get("train") or {}, measure)
        held_out = _curve_error(metrics.get(dev) or metrics.get("validation") or {}, measure)
        if train is None or held_out is None:
            wanted = {"error_rate": "accuracy", "1-r2": "r2"}.get(measure, measure)
            return {"note": f"learning curve failed: retraining gave no train and {dev} {wanted!r} metric"}
        train_errors.append(train)
        dev_errors.append(held_out)

    slope = _slope_per_doubling(fractions[-3:], dev_errors[-3:])
    final_gap = dev_errors[-1] - train_errors[-1]
    falling = slope < -tolerance / 4
    converged = final_gap <= tolerance
    if falling:
        interpretation = (
            f"{dev} error still falling at full size ({slope:+.4f} per doubling): more data is likely to help"
        )
    elif converged and train_errors[-1] - baseline_error > tolerance:
        interpretation = (
            "train and validation curves have converged high above the baseline: more data won't help;"
            " reduce the bias (bigger model, more features)"
        )
    elif converged:
        interpretation = "train and validation curves have converged near the baseline"
    else:
        interpretation = (
            f"{dev} error has flattened with a gap of {final_gap:.4f} to train: more data of the same kind helps"
            " little; regularize or simplify the model"
        )
    return {
        "fractions": fractions,
        "seed": seed,
        "train_error": train_errors,
        "validation_error": dev_errors,
        "slope_per_doubling": slope,
        "final_gap": final_gap,
        "more_data_helps": falling,
        "converged": converged,
        "interpretation": interpretation,
    }


def _slope_per_doubling(fractions: list[float], errors: list[float]) -> float:
    """Least-squares slope of ``errors`` against log2(fraction)."""
    xs = [math.log2(f) for f in fractions]
    mean_x, mean_y = sum(xs) / len(xs), sum(errors) / len(errors)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, errors, strict=True)) / spread


def _rows(result: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """(label, error, gap text) lines for the terminal and HTML tables."""
    baseline = result["baseline"]
    if baseline["assumed"]:
        label = "baseline (assumed)"
    else:
        label = f"baseline ({baseline['metric']} = {baseline['value']:g}"
        label += f", {baseline['source']})" if baseline.get("source") else ")"
    rows = [(label, baseline["error"], "")]
    gaps = {
        "train": ("avoidable bias", result["avoidable_bias"]),
        result["split"]: ("variance", result["variance"]),
    }
    if result["split"] == "validation":
        gaps["test"] = ("dev/test gap", result["dev_test_gap"])
    for split, error in result["errors"].items():
        name, gap = gaps.get(split, ("", None))
        rows.append((split, error, f"{name} {_num(gap)}" if gap is not None else ""))
    return rows


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
