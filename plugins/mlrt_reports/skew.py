"""Class skew: is accuracy telling the truth on imbalanced classes?"""

from __future__ import annotations

import html as _html
import warnings
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    classification_rows,
    encode,
    fmt,
    html_skipped,
    html_table,
    is_skipped,
    label_text,
    pct,
    render_skipped,
    rich_table,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


class SkewReport(Report):
    """Class balance, the majority-class baseline, and metrics that do not hide a rare class.

    Classification only (a regression run is skipped). On skewed classes
    accuracy flatters: with 2% positives, a model that always says "no
    disease" is 98% accurate and useless. This report puts the model's
    accuracy next to the *majority-class baseline* (the accuracy of always
    predicting the most frequent class of the analysis split), and adds
    balanced accuracy (:func:`sklearn.metrics.balanced_accuracy_score`, the
    mean recall over classes) and, where the run has ``score_<class>``
    columns, the PR-AUC (average precision) of each class, whose chance level
    is the class's share rather than 0.5. For two classes with scores it also
    draws the positive class's precision-recall curve with the run's operating
    point on it: the decision threshold ``spec.evaluation.threshold`` chose
    (the run's ``decision_threshold`` metric), else the default 0.5.

    Warnings (one finding each):

    * accuracy - majority baseline < ``margin``: the model barely beats (or
      does not beat: severity ``problem``) predicting the majority class;
    * the rarest class is less than ``rare_share`` of the split: accuracy is
      misleading; look at that class's recall and PR-AUC.

    ``gain`` of either finding is the share of rows that are misclassified
    examples of a class other than the majority (resp. of the rarest class).

    Options (``spec.report_options.skew``):

    ``margin`` (float, default 0.02)
        Warn when accuracy is less than this above the majority baseline.
    ``rare_share`` (float, default 0.05)
        Warn when the rarest class is less than this share of the split.
    ``split`` (str)
        The split to analyse (default: validation, else test, else train).

    Result (JSON)::

        {"report": "skew", "split": "validation", "rows": 10000,
         "train_split": "train",            # null when the frame has no train rows
         "classes": [{"class": "0",
                      "count": 9800, "share": 0.98,          # in the analysis split
                      "train_count": 39200, "train_share": 0.98,  # null without train rows
                      "recall": 0.999, "precision": 0.981,
                      "pr_auc": 0.99},       # null without a score_<class> column
                     ...],
         "majority_class": "0", "majority_baseline": 0.98,
         "minority_class": "1", "minority_share": 0.02,
         "minority_recall": 0.1, "minority_pr_auc": 0.35,   # pr_auc null without scores
         "accuracy": 0.981, "balanced_accuracy": 0.55,
         "accuracy_over_majority": 0.001,
         "margin": 0.02, "rare_share": 0.05,
         "warnings": [{"kind": "majority_baseline" | "rare_class", "text": "...",
                       "severity": "warning", "gain": 0.018}],
         "pr_curve": {"class": "1", "recall": [...], "precision": [...],   # null unless binary with scores
                      "operating_point": {"threshold": 0.27, "source": "chosen" | "default",
                                          "precision": 0.81, "recall": 0.9}}}

    ``gate_values``: ``balanced_accuracy``, ``accuracy_over_majority``,
    ``majority_baseline``, ``minority_recall``, and ``minority_pr_auc`` when
    there are scores. ``comparable``: ``accuracy`` and ``balanced_accuracy``
    (key ``overall``), and each class's ``pr_auc`` and ``recall`` (key
    ``class <c>``).
    """

    name = "skew"
    description = "Class balance, majority-class baseline, balanced accuracy and PR-AUC of rare classes."
    gate_value_names = frozenset(
        {"balanced_accuracy", "accuracy_over_majority", "majority_baseline", "minority_recall", "minority_pr_auc"}
    )
    options = {
        "margin": Hyperparameter(
            float, 0.02, min=0.0, max=1.0, help="Warn when accuracy is less than this above the majority baseline."
        ),
        "rare_share": Hyperparameter(
            float, 0.05, min=0.0, max=1.0, help="Warn when the rarest class is less than this share of the split."
        ),
    }

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np
        from sklearn.metrics import average_precision_score, balanced_accuracy_score

        split, rows, reason = classification_rows(data)
        if reason:
            return skipped(self.name, reason)
        train = data.rows("train") if split != "train" else rows
        has_train = not train.empty
        frames = [rows, train] if has_train and split != "train" else [rows]
        encoded, names = encode(frames, data.classes)
        actual, predicted = encoded[0]
        train_actual = encoded[-1][0] if has_train else None
        k = len(names)
        n = len(actual)
        counts = np.bincount(actual, minlength=k)
        hits = np.bincount(actual[actual == predicted], minlength=k)
        predicted_counts = np.bincount(predicted, minlength=k)
        train_counts = np.bincount(train_actual, minlength=k) if train_actual is not None else None
        present = counts > 0

        accuracy = float(hits.sum() / n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # predictions of classes absent from the labels
            balanced = float(balanced_accuracy_score(actual, predicted))
        majority = int(np.argmax(counts))
        majority_baseline = float(counts[majority] / n)
        present_idx = np.flatnonzero(present)
        minority = int(present_idx[np.argmin(counts[present_idx])])

        columns = {}
        for cls in data.classes:
            column = f"score_{cls}"
            if column in rows.columns:
                columns.setdefault(label_text(cls), column)
        pr_auc: dict[int, float] = {}
        for i, name in enumerate(names):
            column = columns.get(name)
            if column is None or not present[i]:
                continue
            scores = rows[column].to_numpy(dtype=float)
            valid = ~np.isnan(scores)
            if valid.sum() == 0 or not (actual[valid] == i).any():
                continue
            pr_auc[i] = float(average_precision_score(actual[valid] == i, scores[valid]))

        classes = []
        for i, name in enumerate(names):
            if not present[i] and not (train_counts is not None and train_counts[i]) and not predicted_counts[i]:
                continue
            classes.append(
                {
                    "class": name,
                    "count": int(counts[i]),
                    "share": float(counts[i] / n),
                    "train_count": int(train_counts[i]) if train_counts is not None else None,
                    "train_share": float(train_counts[i] / train_counts.sum()) if train_counts is not None else None,
                    "recall": float(hits[i] / counts[i]) if present[i] else None,
                    "precision": float(hits[i] / predicted_counts[i]) if predicted_counts[i] else None,
                    "pr_auc": pr_auc.get(i),
                }
            )

        margin = float(data.options.get("margin", 0.02))
        rare_share = float(data.options.get("rare_share", 0.05))
        over = accuracy - majority_baseline
        minority_share = float(counts[minority] / n)
        minority_recall = float(hits[minority] / counts[minority])
        found = []
        if over < margin and present.sum() > 1:
            missed = float((counts.sum() - counts[majority] - (hits.sum() - hits[majority])) / n)
            verdict = "does not beat" if over <= 0 else "barely beats"
            found.append(
                {
                    "kind": "majority_baseline",
                    "severity": "problem" if over <= 0 else "warning",
                    "gain": missed,
                    "text": (
                        f"accuracy {accuracy:.3f} {verdict} the majority-class baseline {majority_baseline:.3f} "
                        f"(always predicting {names[majority]}; margin {over:+.3f} < {margin:g}); "
                        f"balanced accuracy is {balanced:.3f}"
                    ),
                }
            )
        if minority_share < rare_share and present.sum() > 1:
            text = (
                f"class {names[minority]} is only {pct(minority_share)} of {split} ({int(counts[minority])} of {n}): "
                f"accuracy is misleading; look at its recall ({minority_recall:.2f})"
            )
            if minority in pr_auc:
                text += f" and PR-AUC ({pr_auc[minority]:.2f}; chance level {minority_share:.2f})"
            else:
                text += " and PR-AUC (needs class scores)"
            found.append(
                {
                    "kind": "rare_class",
                    "severity": "warning",
                    "gain": float((counts[minority] - hits[minority]) / n),
                    "text": text,
                }
            )
        return {
            "report": self.name,
            "split": split,
            "rows": n,
            "train_split": "train" if has_train else None,
            "classes": classes,
            "majority_class": names[majority],
            "majority_baseline": majority_baseline,
            "minority_class": names[minority],
            "minority_share": minority_share,
            "minority_recall": minority_recall,
            "minority_pr_auc": pr_auc.get(minority),
            "accuracy": accuracy,
            "balanced_accuracy": balanced,
            "accuracy_over_majority": over,
            "margin": margin,
            "rare_share": rare_share,
            "warnings": found,
            "pr_curve": _pr_curve(data, rows),
        }

    def render(self, result: dict[str, Any], console: Console) -> None:
        if render_skipped(self.name, result, console):
            return
        console.print(
            f"[bold]skew[/bold] on {result['split']} ({result['rows']} rows): accuracy {result['accuracy']:.3f}, "
            f"majority baseline {result['majority_baseline']:.3f} (always {result['majority_class']}), "
            f"balanced accuracy {result['balanced_accuracy']:.3f}"
            + (
                f", PR-AUC of {result['minority_class']} {result['minority_pr_auc']:.3f}"
                if result["minority_pr_auc"] is not None
                else ""
            )
        )
        table = rich_table(
            "Class balance",
            ["class", f"{result['split']} count", "share", "train share", "recall", "precision", "PR-AUC"],
        )
        for c in result["classes"]:
            table.add_row(
                c["class"],
                str(c["count"]),
                pct(c["share"]),
                pct(c["train_share"]),
                fmt(c["recall"]),
                fmt(c["precision"]),
                fmt(c["pr_auc"]),
            )
        console.print(table)
        point = (result.get("pr_curve") or {}).get("operating_point")
        if point:
            console.print(
                f"operating point: threshold {point['threshold']:.4g} ({point['source']}), "
                f"precision {point['precision']:.3f}, recall {point['recall']:.3f}"
            )
        for w in result["warnings"]:
            console.print(f"[bold yellow]warning[/bold yellow]: {w['text']}")

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "Class skew"
        if is_skipped(result):
            return html_skipped(title, result)
        classes = result["classes"]
        plot = report_plots.bars(
            "class-shares",
            [c["class"] for c in classes],
            [c["share"] for c in classes],
            title=f"Class shares in {result['split']}; dashed: rare_share {result['rare_share']:g}",
            xlabel="share of examples",
            reference=result["rare_share"],
            highlight=[c["share"] < result["rare_share"] for c in classes],
        )
        summary = (
            f"<p>Split {_html.escape(result['split'])}: {result['rows']} rows. Accuracy {result['accuracy']:.3f}; "
            f"majority-class baseline {result['majority_baseline']:.3f} (always predicting "
            f"{_html.escape(result['majority_class'])}); balanced accuracy {result['balanced_accuracy']:.3f}.</p>"
        )
        warns = "".join(f"<li>{_html.escape(w['text'])}</li>" for w in result["warnings"])
        pr = result.get("pr_curve")
        if pr:
            point = pr["operating_point"]
            plot += report_plots.curve(
                "precision-recall",
                pr["recall"],
                pr["precision"],
                title=f"Precision-recall of class {pr['class']} in {result['split']}",
                xlabel="recall",
                ylabel="precision",
                markers=[
                    (f"threshold {point['threshold']:.3g} ({point['source']})", point["recall"], point["precision"])
                ],
            )
        return "\n".join(
            [
                f"<h2>{title}</h2>",
                summary,
                f"<ul>{warns}</ul>" if warns else "<p>No skew warnings.</p>",
                plot,
                html_table(
                    ["class", "count", "share", "train count", "train share", "recall", "precision", "PR-AUC"],
                    [
                        [
                            c["class"],
                            c["count"],
                            pct(c["share"]),
                            c["train_count"],
                            pct(c["train_share"]),
                            c["recall"],
                            c["precision"],
                            c["pr_auc"],
                        ]
                        for c in classes
                    ],
                ),
            ]
        )

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if is_skipped(result):
            return []
        return [Finding(self.name, w["text"], gain=w["gain"], severity=w["severity"]) for w in result["warnings"]]

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if is_skipped(result):
            return {}
        values = {
            "balanced_accuracy": float(result["balanced_accuracy"]),
            "accuracy_over_majority": float(result["accuracy_over_majority"]),
            "majority_baseline": float(result["majority_baseline"]),
            "minority_recall": float(result["minority_recall"]),
        }
        if result["minority_pr_auc"] is not None:
            values["minority_pr_auc"] = float(result["minority_pr_auc"])
        return values

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if is_skipped(result):
            return []
        out = [
            Comparable("overall", "accuracy", float(result["accuracy"]), True),
            Comparable("overall", "balanced_accuracy", float(result["balanced_accuracy"]), True),
        ]
        for c in result["classes"]:
            for metric in ("recall", "pr_auc"):
                if c[metric] is not None:
                    out.append(Comparable(f"class {c['class']}", metric, float(c[metric]), True))
        return out


CURVE_POINTS = 200
"""A precision-recall curve in a result keeps at most about this many points."""


def _pr_curve(data: ReportInput, rows: Any) -> dict[str, Any] | None:
    """The positive class's precision-recall curve on ``rows`` and where the run's decision
    threshold sits on it (the run's ``decision_threshold`` metric, see
    :mod:`mlrt.thresholds`; else the default 0.5); None unless binary with scores."""
    import numpy as np

    from mlrt import thresholds

    column = f"score_{data.positive}"
    if data.positive is None or column not in rows.columns:
        return None
    scores = rows[column].to_numpy(dtype=float)
    valid = ~np.isnan(scores)
    is_positive = (rows["label"].astype(str) == str(data.positive)).to_numpy()[valid]
    if not is_positive.any():
        return None
    points = thresholds.curve(is_positive, scores[valid])
    chosen = data.metrics.get("decision_threshold")
    threshold = float(chosen) if chosen is not None else 0.5
    predicted = scores[valid] >= threshold
    hits = float((predicted & is_positive).sum())
    step = max(1, len(points.recall) // CURVE_POINTS)
    keep = np.r_[np.arange(0, len(points.recall), step), len(points.recall) - 1]
    return {
        "class": label_text(data.positive),
        "recall": [float(v) for v in points.recall[keep]],
        "precision": [float(v) for v in points.precision[keep]],
        "operating_point": {
            "threshold": threshold,
            "source": "chosen" if chosen is not None else "default",
            "precision": hits / predicted.sum() if predicted.any() else 1.0,
            "recall": hits / is_positive.sum(),
        },
    }
