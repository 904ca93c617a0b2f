"""Class-level error analysis: the confusion matrix and per-class precision/recall/F1.

Both reports apply to classification only. They compare labels and
predictions as strings (an integer label ``1`` read back as the float ``1.0``
is the class ``"1"``), with the classes in the order of
:attr:`mlrt.reports.ReportInput.classes` (the score-column order), followed
by any other label or prediction seen in the data.

The helpers they share with the other reports live in :mod:`mlrt_reports.common`.
"""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    classification_rows,
    confusion_counts,
    encode,
    fmt,
    html_skipped,
    html_table,
    is_skipped,
    pct,
    render_skipped,
    rich_table,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

# ---------------------------------------------------------------------------------------------- confusion


class ConfusionReport(Report):
    """The confusion matrix of the analysis split and the most frequent confusions.

    Classification only (a regression run is skipped). Rows of the matrix
    are the actual class, columns the predicted class. The *top confusions*
    are the off-diagonal cells with the most examples: which class is taken
    for which, and what share of all errors each pair accounts for. A pair
    that holds a large share of the errors points at one fix (more data or
    a better feature for telling those two classes apart) that removes much
    of the error.

    Options (``spec.report_options.confusion``):

    ``top`` (int, default 10)
        How many confusions to list.
    ``max_classes`` (int, default 30)
        With more classes than this, ``matrix``/``rates`` (and the heatmap)
        keep only the ``max_classes`` classes involved in the most errors
        (``truncated`` is true); ``top_confusions`` and ``accuracy`` always
        cover every class.
    ``min_share`` (float, default 0.2)
        A confusion becomes a finding when it holds at least this share of
        the errors (at most 3 findings).
    ``split`` (str)
        The split to analyse (default: validation, else test, else train).

    Result (JSON)::

        {"report": "confusion", "split": "validation", "rows": 2000,
         "n_classes": 3,                    # classes seen or declared
         "classes": ["0", "1", "2"],        # the classes of matrix/rates, as strings
         "truncated": false,
         "matrix": [[610, 20, 3], ...],     # counts, rows actual, columns predicted
         "rates": [[0.916, 0.030, 0.005], ...],  # each row divided by its total (0 for an empty row)
         "support": [666, ...],             # examples per actual class (of "classes")
         "accuracy": 0.91, "errors": 180,
         "top_confusions": [{"actual": "2", "predicted": "1", "count": 95,
                             "share_of_errors": 0.53,   # of all errors
                             "rate": 0.14}]}            # of the actual class's examples

    ``gate_values``: ``accuracy``, ``error_rate``, ``top_confusion_share``
    (the share of all errors in the most frequent confusion; 0 without
    errors). ``comparable``: the overall accuracy (key ``overall``).
    """

    name = "confusion"
    description = "Confusion matrix (counts and row rates) and the most frequent confusions."
    gate_value_names = frozenset({"accuracy", "error_rate", "top_confusion_share"})
    options = {
        "top": Hyperparameter(int, 10, min=1, help="How many confusions to list."),
        "max_classes": Hyperparameter(
            int, 30, min=2, help="Show at most this many classes (those in the most errors) in the matrix."
        ),
        "min_share": Hyperparameter(
            float, 0.2, min=0.0, max=1.0, help="A confusion is a finding when it holds this share of the errors."
        ),
    }

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np

        split, rows, reason = classification_rows(data)
        if reason:
            return skipped(self.name, reason)
        [(actual, predicted)], names = encode([rows], data.classes)
        k = len(names)
        matrix = confusion_counts(actual, predicted, k)
        n = int(matrix.sum())
        correct = int(np.trace(matrix))
        errors = n - correct
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        support_all = matrix.sum(axis=1)
        top_n = min(int(data.options.get("top", 10)), int((off > 0).sum()))
        order = np.argsort(-off, axis=None, kind="stable")[:top_n]
        top = []
        for flat in order:
            i, j = divmod(int(flat), k)
            count = int(off[i, j])
            top.append(
                {
                    "actual": names[i],
                    "predicted": names[j],
                    "count": count,
                    "share_of_errors": count / errors if errors else 0.0,
                    "rate": count / int(support_all[i]) if support_all[i] else 0.0,
                }
            )
        shown = np.arange(k)
        max_classes = int(data.options.get("max_classes", 30))
        truncated = k > max_classes
        if truncated:
            involvement = off.sum(axis=0) + off.sum(axis=1)
            shown = np.sort(np.argsort(-involvement, kind="stable")[:max_classes])
        sub = matrix[np.ix_(shown, shown)]
        support = sub.sum(axis=1)
        rates = np.divide(sub, support[:, None], out=np.zeros(sub.shape, dtype=float), where=support[:, None] > 0)
        return {
            "report": self.name,
            "split": split,
            "rows": n,
            "n_classes": k,
            "classes": [names[i] for i in shown],
            "truncated": bool(truncated),
            "matrix": sub.astype(int).tolist(),
            "rates": [[round(float(v), 6) for v in row] for row in rates],
            "support": [int(support_all[i]) for i in shown],
            "accuracy": correct / n,
            "errors": errors,
            "top_confusions": top,
            "min_share": float(data.options.get("min_share", 0.2)),
        }

    def render(self, result: dict[str, Any], console: Console) -> None:
        if render_skipped(self.name, result, console):
            return
        console.print(
            f"[bold]confusion[/bold] on {result['split']} ({result['rows']} rows, {result['n_classes']} classes): "
            f"accuracy {result['accuracy']:.3f}, {result['errors']} errors"
        )
        classes = result["classes"]
        if len(classes) <= 15:
            title = "Confusion matrix (rows actual, columns predicted)"
            if result["truncated"]:
                title += f"; the {len(classes)} classes in the most errors"
            table = rich_table(title, ["actual \\ predicted", *classes, "recall"])
            for i, (name, row) in enumerate(zip(classes, result["matrix"], strict=True)):
                table.add_row(name, *[str(v) for v in row], pct(result["rates"][i][i]) if sum(row) else "-")
            console.print(table)
        if result["top_confusions"]:
            table = rich_table("Most frequent confusions", ["actual -> predicted", "count", "share of errors", "rate"])
            for c in result["top_confusions"]:
                table.add_row(
                    f"{c['actual']} -> {c['predicted']}", str(c["count"]), pct(c["share_of_errors"]), pct(c["rate"])
                )
            console.print(table)

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "Confusion matrix"
        if is_skipped(result):
            return html_skipped(title, result)
        parts = [
            f"<h2>{title}</h2>",
            f"<p>Split {_html.escape(result['split'])}: {result['rows']} rows, {result['n_classes']} classes, "
            f"accuracy {result['accuracy']:.3f} ({result['errors']} errors)."
            + (f" Showing the {len(result['classes'])} classes in the most errors." if result["truncated"] else "")
            + "</p>",
            report_plots.heatmap(
                "confusion-matrix",
                result["matrix"],
                result["classes"],
                result["classes"],
                title="Confusion matrix (counts)",
                xlabel="predicted",
                ylabel="actual",
            ),
        ]
        if result["top_confusions"]:
            parts.append("<h3>Most frequent confusions</h3>")
            parts.append(
                html_table(
                    ["actual", "predicted", "count", "share of errors", "rate of actual class"],
                    [
                        [c["actual"], c["predicted"], c["count"], pct(c["share_of_errors"]), pct(c["rate"])]
                        for c in result["top_confusions"]
                    ],
                )
            )
        return "\n".join(parts)

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if is_skipped(result) or not result.get("errors"):
            return []
        min_share = result.get("min_share", 0.2)
        found = []
        for c in result["top_confusions"][:3]:
            if c["share_of_errors"] < min_share or c["count"] < 2:
                continue
            found.append(
                Finding(
                    self.name,
                    f"{c['actual']} predicted as {c['predicted']}: {c['count']} examples, "
                    f"{pct(c['share_of_errors'])} of the errors ({pct(c['rate'])} of class {c['actual']})",
                    gain=c["count"] / result["rows"],
                    severity="info",
                )
            )
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if is_skipped(result):
            return {}
        top = result["top_confusions"]
        return {
            "accuracy": float(result["accuracy"]),
            "error_rate": 1.0 - float(result["accuracy"]),
            "top_confusion_share": float(top[0]["share_of_errors"]) if top else 0.0,
        }

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if is_skipped(result):
            return []
        return [Comparable("overall", "accuracy", float(result["accuracy"]), True)]


# ---------------------------------------------------------------------------------------------- per class


class PerClassReport(Report):
    """Precision, recall, F1 and support of every class, and the classes far below average recall.

    Classification only (a regression run is skipped). Computed with
    :func:`sklearn.metrics.precision_recall_fscore_support` (zero_division=0)
    on the analysis split. A class with no examples in the split (only
    predicted) has ``recall``/``f1`` None and takes no part in the averages;
    a class neither present nor predicted is left out.

    A class is *flagged* when its recall is below the macro-average recall
    minus ``recall_gap`` (and it has at least ``min_support`` examples):
    the model misses that class much more than the others, which the
    overall accuracy hides when the class is small. Each flagged class is a
    finding, with ``gain`` = its share of the rows x (average recall - its
    recall): the drop in overall error if it were brought up to the average.

    Options (``spec.report_options.per_class``):

    ``recall_gap`` (float, default 0.15)
        How far below the macro-average recall a class must be to be flagged.
    ``min_support`` (int, default 1)
        Classes with fewer examples are never flagged (their recall is noise).
    ``max_classes`` (int, default 40)
        The recall plot shows at most this many classes (the lowest recall).
    ``split`` (str)
        The split to analyse (default: validation, else test, else train).

    Result (JSON)::

        {"report": "per_class", "split": "validation", "rows": 5000,
         "classes": [{"class": "3", "precision": 0.52, "recall": 0.31, "f1": 0.39,
                      "support": 1000, "flagged": true,
                      "confused_with": "1", "confused_share": 0.4}, ...],
                      # the class its examples are most often predicted as, and the share of its examples
         "macro_precision": 0.8, "macro_recall": 0.83, "macro_f1": 0.81,  # over classes with support
         "weighted_f1": 0.82, "recall_gap": 0.15, "min_support": 1,
         "flagged": ["3"]}

    ``gate_values``: ``min_recall``, ``min_f1`` (over classes with
    support), ``macro_f1``, ``macro_recall``, ``flagged`` (the number of
    flagged classes). ``comparable``: ``recall``, ``precision`` and ``f1``
    of each class (key ``class <c>``).
    """

    name = "per_class"
    description = "Per-class precision, recall, F1 and support; flags classes far below average recall."
    gate_value_names = frozenset({"min_recall", "min_f1", "macro_f1", "macro_recall", "flagged"})
    options = {
        "recall_gap": Hyperparameter(
            float, 0.15, min=0.0, max=1.0, help="Flag classes whose recall is this far below the macro average."
        ),
        "min_support": Hyperparameter(int, 1, min=1, help="Never flag classes with fewer examples."),
        "max_classes": Hyperparameter(int, 40, min=1, help="Plot at most this many classes (the lowest recall)."),
    }

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np
        from sklearn.metrics import precision_recall_fscore_support

        split, rows, reason = classification_rows(data)
        if reason:
            return skipped(self.name, reason)
        [(actual, predicted)], names = encode([rows], data.classes)
        k = len(names)
        precision, recall, f1, support = precision_recall_fscore_support(
            actual, predicted, labels=np.arange(k), zero_division=0
        )
        matrix = confusion_counts(actual, predicted, k)
        predicted_counts = matrix.sum(axis=0)
        present = support > 0
        macro_recall = float(recall[present].mean())
        macro_precision = float(precision[present].mean())
        macro_f1 = float(f1[present].mean())
        weighted_f1 = float(np.average(f1[present], weights=support[present]))
        gap = float(data.options.get("recall_gap", 0.15))
        min_support = int(data.options.get("min_support", 1))
        flagged = present & (support >= min_support) & (recall < macro_recall - gap)
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        confused = off.argmax(axis=1)
        classes = []
        for i in range(k):
            if not present[i] and not predicted_counts[i]:
                continue
            other = int(confused[i])
            classes.append(
                {
                    "class": names[i],
                    "precision": float(precision[i]),
                    "recall": float(recall[i]) if present[i] else None,
                    "f1": float(f1[i]) if present[i] else None,
                    "support": int(support[i]),
                    "flagged": bool(flagged[i]),
                    "confused_with": names[other] if present[i] and off[i, other] else None,
                    "confused_share": float(off[i, other] / support[i]) if present[i] else None,
                }
            )
        return {
            "report": self.name,
            "split": split,
            "rows": len(rows),
            "classes": classes,
            "n_classes": int(present.sum()),
            "macro_precision": macro_precision,
            "macro_recall": macro_recall,
            "macro_f1": macro_f1,
            "weighted_f1": weighted_f1,
            "recall_gap": gap,
            "min_support": min_support,
            "max_classes": int(data.options.get("max_classes", 40)),
            "flagged": [names[i] for i in np.flatnonzero(flagged)],
        }

    def render(self, result: dict[str, Any], console: Console) -> None:
        if render_skipped(self.name, result, console):
            return
        console.print(
            f"[bold]per_class[/bold] on {result['split']} ({result['rows']} rows, {result['n_classes']} classes): "
            f"macro recall {result['macro_recall']:.3f}, macro F1 {result['macro_f1']:.3f}; "
            f"flagged (recall < average - {result['recall_gap']:g}): {', '.join(result['flagged']) or 'none'}"
        )
        table = rich_table("Per-class metrics", ["class", "precision", "recall", "f1", "support", "most confused with"])
        for c in result["classes"]:
            style = "bold red" if c["flagged"] else None
            confused = "-" if c["confused_with"] is None else f"{c['confused_with']} ({pct(c['confused_share'])})"
            table.add_row(
                c["class"],
                fmt(c["precision"]),
                fmt(c["recall"]),
                fmt(c["f1"]),
                str(c["support"]),
                confused,
                style=style,
            )
        console.print(table)

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "Per-class metrics"
        if is_skipped(result):
            return html_skipped(title, result)
        with_recall = [c for c in result["classes"] if c["recall"] is not None]
        limit = result.get("max_classes", 40)
        shown = with_recall
        note = ""
        if len(with_recall) > limit:
            shown = sorted(with_recall, key=lambda c: c["recall"])[:limit]
            note = f" (the {limit} classes with the lowest recall)"
        plot = report_plots.bars(
            "per-class-recall",
            [c["class"] for c in shown],
            [c["recall"] for c in shown],
            title=f"Recall per class{note}; dashed: macro average",
            xlabel="recall",
            reference=result["macro_recall"],
            highlight=[c["flagged"] for c in shown],
        )
        flagged = ", ".join(result["flagged"]) or "none"
        return "\n".join(
            [
                f"<h2>{title}</h2>",
                f"<p>Split {_html.escape(result['split'])}: {result['rows']} rows, {result['n_classes']} classes; "
                f"macro recall {result['macro_recall']:.3f}, macro F1 {result['macro_f1']:.3f}. Flagged (recall "
                f"below average - {result['recall_gap']:g}): {_html.escape(flagged)}.</p>",
                plot,
                html_table(
                    ["class", "precision", "recall", "f1", "support", "most confused with", "share"],
                    [
                        [
                            c["class"],
                            c["precision"],
                            c["recall"],
                            c["f1"],
                            c["support"],
                            c["confused_with"],
                            pct(c["confused_share"]) if c["confused_with"] else None,
                        ]
                        for c in result["classes"]
                    ],
                    [c["flagged"] for c in result["classes"]],
                ),
            ]
        )

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if is_skipped(result):
            return []
        found = []
        average = result["macro_recall"]
        for c in result["classes"]:
            if not c["flagged"]:
                continue
            text = (
                f"class {c['class']}: recall {c['recall']:.2f} vs {average:.2f} average over "
                f"{result['n_classes']} classes (support {c['support']})"
            )
            if c["confused_with"] is not None:
                text += f"; mostly predicted as {c['confused_with']} ({pct(c['confused_share'])})"
            found.append(Finding(self.name, text, gain=c["support"] / result["rows"] * (average - c["recall"])))
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if is_skipped(result):
            return {}
        with_support = [c for c in result["classes"] if c["recall"] is not None]
        return {
            "min_recall": min(c["recall"] for c in with_support),
            "min_f1": min(c["f1"] for c in with_support),
            "macro_f1": float(result["macro_f1"]),
            "macro_recall": float(result["macro_recall"]),
            "flagged": float(len(result["flagged"])),
        }

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if is_skipped(result):
            return []
        out = []
        for c in result["classes"]:
            for metric in ("recall", "precision", "f1"):
                if c[metric] is not None:
                    out.append(Comparable(f"class {c['class']}", metric, float(c[metric]), True))
        return out
