"""Business metrics per split, and what the model is worth against simple policies."""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING, Any

from mlrt import business
from mlrt.reports import Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    confusion_counts,
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
    import numpy as np
    import pandas as pd
    from rich.console import Console

HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}
LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}
SPLIT_ORDER = ("train", "validation", "test")


def _direction(definition: dict[str, Any]) -> bool | None:
    """Whether a business metric is better high (True), low (False), or either (None)."""
    if definition.get("cost_matrix") is not None:
        return False
    signs = set()
    for metric, weight in definition["weights"].items():
        if weight == 0:
            continue
        if metric in HIGHER_IS_BETTER:
            signs.add(weight > 0)
        elif metric in LOWER_IS_BETTER:
            signs.add(weight < 0)
        else:
            return None
    return signs.pop() if len(signs) == 1 else None


class _Classes:
    """Stands in for a fitted model in :mod:`mlrt.evaluation`'s metric functions: only ``classes_``."""

    def __init__(self, classes: np.ndarray) -> None:
        self.classes_ = classes


def _ml_metrics(
    data: ReportInput,
    split: str,
    rows: pd.DataFrame,
    codes: tuple[np.ndarray, np.ndarray] | None,
    k: int,
    scored: bool,
    needed: set[str],
) -> dict[str, float]:
    """The split's ML metrics as the worker defines them (:mod:`mlrt.evaluation`), from the frame.

    Accuracy, precision, recall and F1 come from the confusion counts (for
    two classes of the second class, the larger label; else the mean over
    the classes seen), which is what scikit-learn computes with
    ``zero_division=0``, in a fraction of the time. ``roc_auc`` and
    ``log_loss`` are the run's recorded ``<split>_roc_auc``/``<split>_log_loss``
    (the worker computed them on the same predictions); only when the run has
    none and a weight needs them are they computed from the score columns (a
    sort per class: seconds at a million rows).
    """
    import numpy as np

    from mlrt import evaluation

    if data.task != "classification":
        labels = rows["label"].to_numpy(dtype=float)
        return evaluation._regression_metrics(labels, rows["prediction"].to_numpy(dtype=float))
    actual, predicted = codes
    counts = confusion_counts(actual, predicted, k).astype(float)
    hits = np.diag(counts)
    support = counts.sum(axis=1)
    predicted_counts = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        denominator = support + predicted_counts  # 2 tp + fp + fn
        f1 = np.where(denominator > 0, 2 * hits / denominator, 0.0)
    if k == 2:
        chosen = np.array([False, True])
    else:
        chosen = (support > 0) | (predicted_counts > 0)
    result = {
        "accuracy": float(hits.sum() / max(counts.sum(), 1)),
        "precision": float(precision[chosen].mean()),
        "recall": float(recall[chosen].mean()),
        "f1": float(f1[chosen].mean()),
    }
    ranked = {"roc_auc", "log_loss"}
    for key in ranked:
        if f"{split}_{key}" in data.metrics:
            result[key] = float(data.metrics[f"{split}_{key}"])
    if scored and (ranked & needed) - set(result):
        scores = rows[[f"score_{c}" for c in data.classes]].to_numpy(dtype=float)
        if not np.isnan(scores).any():
            full = evaluation._classification_metrics(_Classes(np.arange(k)), actual, predicted, scores)
            result.update({key: value for key, value in full.items() if key in ranked and key not in result})
    return result


class BusinessReport(Report):
    """The spec's business metrics on every labelled split, with the cost breakdown of a cost matrix.

    Skipped when ``spec.business_metrics`` is empty. Each definition is
    evaluated like the worker does (:func:`mlrt.business.evaluate`) on each
    labelled split (train, validation, test, ...), next to the split's ML
    metrics: accuracy, precision, recall, f1 (rmse, mae, r2 for regression)
    recomputed from the frame; roc_auc and log_loss from the run's recorded
    ``<split>_roc_auc``/``<split>_log_loss``, else (only when a weight needs
    them) from the ``score_<class>`` columns; a weight on any other metric is
    read from the run's ``<split>_<metric>``.

    For a ``cost_matrix`` (mean cost per example; pairs not listed cost 0)
    the report adds the total cost, the cost by (actual, predicted) pair, and
    the cost of reference policies on the same examples, so the value of the
    model shows: ``majority`` (always predicting the most frequent class of
    the train split, else of the split itself: the "always says no disease"
    model), ``best_constant`` (the single prediction with the lowest cost,
    among the classes and the cost matrix's predicted keys) and ``perfect``
    (always right: the cost of the diagonal, usually 0). Labels and
    predictions are compared as strings with the matrix's keys (an integer
    label read back as ``1.0`` is ``"1"``). Cost matrices are not evaluated
    for regression (value null, with a note in ``problems``).

    Findings: for each cost matrix on the analysis split, a ``problem`` when
    the model costs no less than the majority policy, a ``warning`` when no
    less than the best constant policy, else an ``info`` line with its cost,
    the policies' cost and the costliest pair (``gain``: the share of rows
    with a cost, resp. in the costliest pair); an ``info`` line per weighted
    metric.

    Options (``spec.report_options.business``):

    ``split`` (str)
        The analysis split of ``gate_values``/``findings`` (default:
        validation, else test, else train); every split is reported.

    Result (JSON)::

        {"report": "business", "split": "validation", "rows": 2000,
         "definitions": [{"name": "cost", "kind": "cost_matrix", "higher_is_better": false,
                          "cost_matrix": {"1": {"0": 50.0}, "0": {"1": 1.0}}},
                         {"name": "score", "kind": "weights", "higher_is_better": true,
                          "weights": {"recall": 2.0, "precision": 1.0}}],
         "splits": {"validation": {"rows": 2000,
                                   "ml_metrics": {"accuracy": 0.97, ...},
                                   "business": {"cost": 0.41, "score": 2.6}}, ...},
         "costs": {"cost": {"validation": {
             "rows": 2000, "total_cost": 820.0, "cost_per_example": 0.41,
             "by_pair": [{"actual": "1", "predicted": "0", "count": 15, "cost_each": 50.0,
                          "total": 750.0, "share_of_cost": 0.91}, ...],   # pairs with a cost, biggest first
             "policies": {"majority": {"predict": "0", "total_cost": 2500.0, "cost_per_example": 1.25},
                          "best_constant": {...}, "perfect": {...}},
             "savings_vs_majority": 0.84}}},          # per example: majority policy - model
         "problems": ["score on train: ..."]}        # definitions that could not be evaluated

    ``gate_values``: ``<name>`` for each business metric on the analysis
    split, and ``<name>_savings`` (cost per example saved against the
    majority policy) for each cost matrix. ``comparable``: each metric on the
    analysis split (key ``<name>``, metric ``cost`` or ``value``;
    ``higher_is_better`` False for a cost matrix, for weights True/False when
    every weighted metric points the same way, else None).
    """

    name = "business"
    description = "Business metrics per split; for cost matrices the cost by error type and vs. simple policies."

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np

        definitions = list(data.spec.get("business_metrics") or [])
        if not definitions:
            return skipped(self.name, "no business_metrics in the spec")
        analysis = data.analysis_split
        present = data.frame["split"].unique().tolist()
        order = [s for s in SPLIT_ORDER if s in present] + sorted(s for s in present if s not in SPLIT_ORDER)
        frames = {s: data.rows(s) for s in order}
        frames = {s: f for s, f in frames.items() if not f.empty}
        if analysis not in frames:
            return skipped(self.name, f"no labelled rows in split {analysis!r}")
        classification = data.task == "classification"
        names: list[str] = []
        codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if classification:
            encoded, names = encode(list(frames.values()), data.classes)
            codes = dict(zip(frames, encoded, strict=True))
        k = len(names)
        scored = (
            classification
            and bool(data.classes)
            and k == len(data.classes)
            and all(f"score_{c}" in data.frame.columns for c in data.classes)
        )

        problems: list[str] = []
        splits: dict[str, Any] = {}
        costs: dict[str, dict[str, Any]] = {}
        majority_source = "train" if "train" in codes else None
        needed = {metric for d in definitions if d.get("weights") for metric in d["weights"]}
        for split, rows in frames.items():
            ml = _ml_metrics(data, split, rows, codes.get(split), k, scored, needed)
            values: dict[str, float | None] = {}
            for definition in definitions:
                metric_name = definition["name"]
                if definition.get("cost_matrix") is not None:
                    if not classification:
                        values[metric_name] = None
                        problems.append(f"{metric_name} on {split}: a cost matrix needs class labels ({data.task})")
                        continue
                    detail = self._costs(definition["cost_matrix"], names, codes[split], codes.get(majority_source))
                    costs.setdefault(metric_name, {})[split] = detail
                    values[metric_name] = detail["cost_per_example"]
                else:
                    available = dict(ml)
                    for metric in definition["weights"]:
                        if metric not in available and f"{split}_{metric}" in data.metrics:
                            available[metric] = float(data.metrics[f"{split}_{metric}"])
                    try:
                        values.update(business.evaluate([definition], np.zeros(0), [], available))
                    except ValueError as error:
                        values[metric_name] = None
                        problems.append(f"{metric_name} on {split}: {error}")
            splits[split] = {
                "rows": len(rows),
                "ml_metrics": {key: float(value) for key, value in ml.items()},
                "business": {key: (None if value is None else float(value)) for key, value in values.items()},
            }
        return {
            "report": self.name,
            "split": analysis,
            "rows": splits[analysis]["rows"],
            "task": data.task,
            "definitions": [
                {
                    "name": d["name"],
                    "kind": "cost_matrix" if d.get("cost_matrix") is not None else "weights",
                    "higher_is_better": _direction(d),
                    **(
                        {"cost_matrix": d["cost_matrix"]}
                        if d.get("cost_matrix") is not None
                        else {"weights": d["weights"]}
                    ),
                }
                for d in definitions
            ],
            "splits": splits,
            "costs": costs,
            "problems": problems,
        }

    @staticmethod
    def _costs(
        matrix: dict[str, dict[str, float]],
        names: list[str],
        codes: tuple[np.ndarray, np.ndarray],
        majority_codes: tuple[np.ndarray, np.ndarray] | None,
    ) -> dict[str, Any]:
        """Total and per-pair cost of one split, and of the reference policies, for one cost matrix."""
        import numpy as np

        actual, predicted = codes
        k = len(names)
        matrix = {label_text(a): {label_text(p): float(c) for p, c in row.items()} for a, row in matrix.items()}
        candidates = names + sorted({p for row in matrix.values() for p in row} - set(names))
        cost = np.array([[matrix.get(a, {}).get(p, 0.0) for p in candidates] for a in names], dtype=float)
        pairs = confusion_counts(actual, predicted, k)
        n = int(pairs.sum())
        totals = pairs * cost[:, :k]
        total = float(totals.sum())
        support = pairs.sum(axis=1).astype(float)
        by_pair = []
        nonzero = np.argwhere((pairs > 0) & (cost[:, :k] != 0))
        absolute = float(np.abs(totals).sum())
        for i, j in sorted(nonzero.tolist(), key=lambda ij: -abs(totals[ij[0], ij[1]])):
            by_pair.append(
                {
                    "actual": names[i],
                    "predicted": names[j],
                    "count": int(pairs[i, j]),
                    "cost_each": float(cost[i, j]),
                    "total": float(totals[i, j]),
                    "share_of_cost": float(abs(totals[i, j]) / absolute) if absolute else 0.0,
                }
            )

        def policy(total_cost: float, predict: str | None) -> dict[str, Any]:
            return {"predict": predict, "total_cost": total_cost, "cost_per_example": total_cost / max(n, 1)}

        reference = (majority_codes or codes)[0]
        majority = int(np.argmax(np.bincount(reference, minlength=k)))
        constant = support @ cost  # the total cost of always predicting each candidate
        best = majority if constant[majority] <= constant.min() else int(np.argmin(constant))
        perfect = float(support @ np.diag(cost[:, :k]))
        majority_cost = float(constant[majority])
        return {
            "rows": n,
            "total_cost": total,
            "cost_per_example": total / max(n, 1),
            "by_pair": by_pair,
            "policies": {
                "majority": policy(majority_cost, names[majority]),
                "best_constant": policy(float(constant[best]), candidates[best]),
                "perfect": policy(perfect, None),
            },
            "savings_vs_majority": (majority_cost - total) / max(n, 1),
        }

    def render(self, result: dict[str, Any], console: Console) -> None:
        if render_skipped(self.name, result, console):
            return
        splits = list(result["splits"])
        console.print(f"[bold]business[/bold]: analysis split {result['split']} ({result['rows']} rows)")
        table = rich_table("Business and ML metrics per split", ["metric", *splits])
        for d in result["definitions"]:
            table.add_row(
                f"[bold]{d['name']}[/bold] ({'cost' if d['kind'] == 'cost_matrix' else 'weighted'})",
                *[fmt(result["splits"][s]["business"].get(d["name"]), 4) for s in splits],
            )
        ml_names = sorted({m for s in splits for m in result["splits"][s]["ml_metrics"]})
        for metric in ml_names:
            table.add_row(metric, *[fmt(result["splits"][s]["ml_metrics"].get(metric), 4) for s in splits])
        console.print(table)
        for metric_name, per_split in result["costs"].items():
            detail = per_split.get(result["split"])
            if detail is None:
                continue
            table = rich_table(
                f"{metric_name} on {result['split']}: total {detail['total_cost']:g}, "
                f"{detail['cost_per_example']:.4f} per example",
                ["policy", "predicts", "total cost", "per example"],
            )
            table.add_row("this model", "-", f"{detail['total_cost']:g}", f"{detail['cost_per_example']:.4f}")
            for policy_name, policy in detail["policies"].items():
                table.add_row(
                    policy_name.replace("_", " "),
                    policy["predict"] or "the label",
                    f"{policy['total_cost']:g}",
                    f"{policy['cost_per_example']:.4f}",
                )
            console.print(table)
            if detail["by_pair"]:
                table = rich_table(
                    f"{metric_name}: cost by error", ["actual -> predicted", "count", "each", "total", "share"]
                )
                for p in detail["by_pair"]:
                    table.add_row(
                        f"{p['actual']} -> {p['predicted']}",
                        str(p["count"]),
                        f"{p['cost_each']:g}",
                        f"{p['total']:g}",
                        pct(p["share_of_cost"]),
                    )
                console.print(table)
        for problem in result["problems"]:
            console.print(f"[yellow]could not evaluate[/yellow] {problem}")

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "Business metrics"
        if is_skipped(result):
            return html_skipped(title, result)
        splits = list(result["splits"])
        ml_names = sorted({m for s in splits for m in result["splits"][s]["ml_metrics"]})
        rows = [
            [d["name"], *[result["splits"][s]["business"].get(d["name"]) for s in splits]]
            for d in result["definitions"]
        ]
        rows += [[m, *[result["splits"][s]["ml_metrics"].get(m) for s in splits]] for m in ml_names]
        parts = [
            f"<h2>{title}</h2>",
            f"<p>Analysis split {_html.escape(result['split'])} ({result['rows']} rows).</p>",
            html_table(["metric", *splits], rows),
        ]
        for d in result["definitions"]:
            metric_name = d["name"]
            detail = result["costs"].get(metric_name, {}).get(result["split"])
            if detail is None:
                values = [result["splits"][s]["business"].get(metric_name) for s in splits]
                known = [(s, v) for s, v in zip(splits, values, strict=True) if v is not None]
                if known:
                    parts.append(
                        report_plots.bars(
                            f"business-{metric_name}",
                            [s for s, _ in known],
                            [v for _, v in known],
                            title=f"{metric_name} per split",
                            xlabel=metric_name,
                        )
                    )
                continue
            escaped = _html.escape(metric_name)
            policies = detail["policies"]
            parts.append(
                f"<h3>{escaped} on {_html.escape(result['split'])}</h3>\n<p>Total cost {detail['total_cost']:g}, "
                f"{detail['cost_per_example']:.4f} per example; always predicting "
                f"{_html.escape(str(policies['majority']['predict']))} would cost "
                f"{policies['majority']['cost_per_example']:.4f} per example, the best constant prediction "
                f"({_html.escape(str(policies['best_constant']['predict']))}) "
                f"{policies['best_constant']['cost_per_example']:.4f}, a perfect model "
                f"{policies['perfect']['cost_per_example']:.4f}.</p>"
            )
            parts.append(
                report_plots.bars(
                    f"business-{metric_name}-policies",
                    ["this model", "majority", "best constant", "perfect"],
                    [
                        detail["cost_per_example"],
                        policies["majority"]["cost_per_example"],
                        policies["best_constant"]["cost_per_example"],
                        policies["perfect"]["cost_per_example"],
                    ],
                    title=f"{metric_name}: cost per example vs. reference policies",
                    xlabel="cost per example",
                    highlight=[True, False, False, False],
                )
            )
            if detail["by_pair"]:
                parts.append(
                    report_plots.bars(
                        f"business-{metric_name}-pairs",
                        [f"{p['actual']} -> {p['predicted']}" for p in detail["by_pair"]],
                        [p["total"] for p in detail["by_pair"]],
                        title=f"{metric_name}: total cost by (actual -> predicted)",
                        xlabel="total cost",
                    )
                )
                parts.append(
                    html_table(
                        ["actual", "predicted", "count", "cost each", "total", "share of cost"],
                        [
                            [
                                p["actual"],
                                p["predicted"],
                                p["count"],
                                f"{p['cost_each']:g}",
                                f"{p['total']:g}",
                                pct(p["share_of_cost"]),
                            ]
                            for p in detail["by_pair"]
                        ],
                    )
                )
        if result["problems"]:
            items = "".join(f"<li>{_html.escape(p)}</li>" for p in result["problems"])
            parts.append(f"<p>Could not evaluate:</p><ul>{items}</ul>")
        return "\n".join(parts)

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if is_skipped(result):
            return []
        split = result["split"]
        found = []
        for d in result["definitions"]:
            metric_name = d["name"]
            value = result["splits"][split]["business"].get(metric_name)
            if value is None:
                continue
            detail = result["costs"].get(metric_name, {}).get(split)
            if detail is None:
                others = ", ".join(
                    f"{s} {v['business'][metric_name]:.4g}"
                    for s, v in result["splits"].items()
                    if s != split and v["business"].get(metric_name) is not None
                )
                text = f"{metric_name} = {value:.4g} on {split}" + (f" ({others})" if others else "")
                found.append(Finding(self.name, text, severity="info"))
                continue
            majority = detail["policies"]["majority"]
            perfect = detail["policies"]["perfect"]
            costly = sum(p["count"] for p in detail["by_pair"] if p["cost_each"] > 0)
            top = detail["by_pair"][0] if detail["by_pair"] else None
            where = (
                f"; most of it from {top['actual']} predicted as {top['predicted']} "
                f"({top['count']} examples, {pct(top['share_of_cost'])} of the cost)"
                if top
                else ""
            )
            best = detail["policies"]["best_constant"]
            worse_than_perfect = detail["total_cost"] > perfect["total_cost"]
            if detail["cost_per_example"] >= majority["cost_per_example"] and worse_than_perfect:
                text = (
                    f"{metric_name}: the model costs {detail['cost_per_example']:.4g} per example on {split}, "
                    f"no less than always predicting {majority['predict']} ({majority['cost_per_example']:.4g}){where}"
                )
                found.append(Finding(self.name, text, gain=costly / max(detail["rows"], 1), severity="problem"))
            elif detail["cost_per_example"] >= best["cost_per_example"] and worse_than_perfect:
                text = (
                    f"{metric_name}: the model costs {detail['cost_per_example']:.4g} per example on {split}, "
                    f"no less than always predicting {best['predict']} ({best['cost_per_example']:.4g}; "
                    f"always {majority['predict']}: {majority['cost_per_example']:.4g}){where}"
                )
                found.append(Finding(self.name, text, gain=costly / max(detail["rows"], 1), severity="warning"))
            else:
                text = (
                    f"{metric_name}: {detail['cost_per_example']:.4g} per example on {split} "
                    f"(total {detail['total_cost']:g}); always predicting {majority['predict']} would cost "
                    f"{majority['cost_per_example']:.4g}, a perfect model {perfect['cost_per_example']:.4g}{where}"
                )
                gain = (top["count"] / max(detail["rows"], 1)) if top and top["cost_each"] > 0 else 0.0
                found.append(Finding(self.name, text, gain=gain, severity="info"))
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if is_skipped(result):
            return {}
        split = result["split"]
        values = {
            name: float(value) for name, value in result["splits"][split]["business"].items() if value is not None
        }
        for name, per_split in result["costs"].items():
            if split in per_split:
                values[f"{name}_savings"] = float(per_split[split]["savings_vs_majority"])
        return values

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if is_skipped(result):
            return []
        split = result["split"]
        out = []
        for d in result["definitions"]:
            value = result["splits"][split]["business"].get(d["name"])
            if value is not None:
                metric = "cost" if d["kind"] == "cost_matrix" else "value"
                out.append(Comparable(d["name"], metric, float(value), d["higher_is_better"]))
        return out
