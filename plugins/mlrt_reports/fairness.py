"""The ``fairness`` report: selection rate, TPR and FPR per group of each protected attribute."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    float_or_none,
    label_text,
    natural_key,
    num,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from rich.console import Console

MISSING = "(missing)"
MAX_CLASSES = 50


class FairnessReport(Report):
    """Group fairness of a classifier over the protected attributes in ``spec.protected``.

    For each protected column, the rows of the analysis split are grouped by
    its value (a numeric column with more than ``max_categories`` distinct
    values is cut into ``bins`` quantile bins, right-closed, e.g. ``(30, 45]``;
    missing values form the group ``(missing)``). Per group: ``rows``,
    ``share`` of the rows, ``accuracy``, ``positive_rate`` (share actually
    positive), ``selection_rate`` (share predicted positive), ``tpr`` (true
    positive rate, None without positives), ``fpr`` (false positive rate,
    None without negatives) and ``precision`` (None when nothing is predicted
    positive).

    Differences follow fairlearn's definitions (computed here with
    pandas/numpy; fairlearn is not needed): the *demographic parity
    difference* is the largest minus the smallest selection rate over the
    groups; the *equalized odds difference* is the larger of the TPR
    difference and the FPR difference (each max - min over the groups).
    Unlike fairlearn, groups with fewer than ``min_group_rows`` rows are
    shown but left out of the differences (their rates are noise), and a
    rate that is undefined for a group (TPR without positives) is left out of
    that rate's difference; a difference needs two groups, else it is None.

    A difference above ``threshold`` flags the attribute, naming the metric
    and the best and worst groups, taking the positive class as the
    favourable outcome: for demographic parity the worst group has the
    lowest selection rate; for equalized odds, when the TPR difference is the
    larger, the worst group has the lowest TPR, else the highest FPR.

    Binary classification: the positive class is ``data.positive`` (the
    larger label). Multiclass: one-vs-rest, each class in turn taken as the
    positive class; an attribute's differences are the largest over the
    classes (``demographic_parity_class`` and ``equalized_odds_class`` say
    which), and each group's rates are listed per class under ``by_class``.
    More than 50 classes, or a regression task, skip the report; so does an
    empty ``spec.protected``. Protected columns missing from the data are
    listed under ``missing`` (and reported as a finding); the report is
    skipped when none is present.

    Options: ``threshold`` (float, default 0.1), ``bins`` (int, default 4),
    ``max_categories`` (int, default 10), ``min_group_rows`` (int, default 20),
    ``split``.

    Result::

        {"report": "fairness", "split": "validation", "rows": 20000,
         "mode": "binary",                   # or "one-vs-rest"
         "positive": "1",                    # binary only
         "classes": ["0", "1"], "threshold": 0.1, "min_group_rows": 20,
         "attributes": [
           {"attribute": "group", "binned": false, "edges": null,
            "groups": [{"group": "A", "rows": 6700, "share": 0.335, "included": true,
                        "accuracy": 0.97, "positive_rate": 0.5, "selection_rate": 0.5,
                        "tpr": 0.98, "fpr": 0.03, "precision": 0.97}, ...],
                        # multiclass: "accuracy" plus "by_class": {class: {the five rates}}
            "demographic_parity_difference": 0.21, "tpr_difference": 0.35,
            "fpr_difference": 0.03, "equalized_odds_difference": 0.35,
            "demographic_parity_class": "1", "equalized_odds_class": "1",
            "by_class": [...],               # multiclass: the four differences per class
            "flags": [{"metric": "demographic_parity_difference", "value": 0.21,
                       "class": "1", "rate": "selection_rate",
                       "best": "C", "best_value": 0.52, "worst": "B", "worst_value": 0.31}, ...],
            "flagged": true}, ...],
         "missing": [],
         "flagged": ["group"],
         "max_demographic_parity_difference": 0.21,
         "max_equalized_odds_difference": 0.35}

    Gate values: ``max_demographic_parity_difference`` and
    ``max_equalized_odds_difference`` (the largest over the attributes; absent
    when no attribute has two groups large enough). Findings: one
    ``problem`` per flagged attribute; its ``gain`` is the largest flagged
    difference (a gap between groups, not an error-rate drop). Comparable,
    per ``"group <attribute>=<value>"``: ``selection_rate`` (neither direction
    is better), ``tpr`` (higher is better), ``fpr`` (lower is better) and
    ``accuracy``; multiclass rates are named ``selection_rate[<class>]`` etc.
    """

    name = "fairness"
    description = "Selection rate, TPR and FPR per protected group; demographic parity and equalized odds."
    gate_value_names = frozenset({"max_demographic_parity_difference", "max_equalized_odds_difference"})
    options = {
        "threshold": Hyperparameter(
            float, 0.1, min=0.0, max=1.0, help="Flag a demographic parity or equalized odds difference above this."
        ),
        "bins": Hyperparameter(int, 4, min=2, help="Quantile bins for a numeric protected column with many values."),
        "max_categories": Hyperparameter(
            int, 10, min=1, help="A numeric column with more distinct values than this is binned."
        ),
        "min_group_rows": Hyperparameter(
            int, 20, min=1, help="Smaller groups are shown but left out of the differences."
        ),
    }

    # -- build -----------------------------------------------------------------

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np

        protected = [str(c) for c in data.spec.get("protected") or []]
        if not protected:
            return skipped(self.name, "no protected attributes (spec.protected is empty)")
        if data.task != "classification":
            return skipped(
                self.name,
                "fairness needs a classification task (selection rate, TPR and FPR are defined on "
                "predicted classes); this is a regression task",
            )
        rows = data.rows()
        split = data.analysis_split
        if rows.empty:
            return skipped(self.name, f"no labelled rows in split {split!r}")
        present = [c for c in protected if c in rows.columns]
        missing = [c for c in protected if c not in rows.columns]
        if not present:
            return skipped(
                self.name,
                f"protected column(s) {', '.join(missing)} not in the data",
            )
        labels = _as_text(rows["label"]).to_numpy()
        predictions = _as_text(rows["prediction"]).to_numpy()
        classes = [label_text(c) for c in data.classes] or sorted(
            set(labels.tolist()) | set(predictions.tolist()), key=natural_key
        )
        if len(classes) > MAX_CLASSES:
            return skipped(self.name, f"{len(classes)} classes: fairness handles at most {MAX_CLASSES}")
        binary = len(classes) <= 2
        positive = None
        if binary:
            positive = label_text(data.positive) if data.positive is not None else max(classes, key=natural_key)
            evaluated = [positive]
        else:
            evaluated = classes
        correct = (labels == predictions).astype(float)
        threshold = float(data.options.get("threshold", 0.1))
        min_rows = int(data.options.get("min_group_rows", 20))
        truth = {c: labels == c for c in evaluated}
        chosen = {c: predictions == c for c in evaluated}

        attributes = []
        for attribute in present:
            names, codes, edges = _groups(
                rows[attribute], int(data.options.get("bins", 4)), int(data.options.get("max_categories", 10))
            )
            count = np.bincount(codes, minlength=len(names)).astype(float)
            keep = count > 0
            names = [name for name, k in zip(names, keep, strict=True) if k]
            remap = np.cumsum(keep) - 1
            codes, count = remap[codes], count[keep]
            included = count >= min_rows
            accuracy = np.bincount(codes, weights=correct, minlength=len(names)) / count
            per_class = {c: _rates(codes, truth[c], chosen[c], count) for c in evaluated}
            differences = {c: _differences(per_class[c], included) for c in evaluated}
            entry: dict[str, Any] = {
                "attribute": attribute,
                "binned": edges is not None,
                "edges": edges,
                "groups": [],
            }
            for g, name in enumerate(names):
                group: dict[str, Any] = {
                    "group": name,
                    "rows": int(count[g]),
                    "share": float(count[g] / len(rows)),
                    "included": bool(included[g]),
                    "accuracy": float(accuracy[g]),
                }
                if binary:
                    group.update({k: float_or_none(v[g]) for k, v in per_class[positive].items()})
                else:
                    group["by_class"] = {
                        c: {k: float_or_none(v[g]) for k, v in per_class[c].items()} for c in evaluated
                    }
                entry["groups"].append(group)
            dp_class = _argmax(evaluated, [differences[c]["demographic_parity_difference"] for c in evaluated])
            eo_class = _argmax(evaluated, [differences[c]["equalized_odds_difference"] for c in evaluated])
            entry["demographic_parity_difference"] = differences[dp_class]["demographic_parity_difference"]
            entry["tpr_difference"] = differences[eo_class]["tpr_difference"]
            entry["fpr_difference"] = differences[eo_class]["fpr_difference"]
            entry["equalized_odds_difference"] = differences[eo_class]["equalized_odds_difference"]
            entry["demographic_parity_class"] = dp_class
            entry["equalized_odds_class"] = eo_class
            if not binary:
                entry["by_class"] = [{"class": c, **differences[c]} for c in evaluated]
            entry["flags"] = _flags(names, included, per_class, dp_class, eo_class, entry, threshold)
            entry["flagged"] = bool(entry["flags"])
            attributes.append(entry)

        dps = [a["demographic_parity_difference"] for a in attributes if a["demographic_parity_difference"] is not None]
        eos = [a["equalized_odds_difference"] for a in attributes if a["equalized_odds_difference"] is not None]
        return {
            "report": self.name,
            "split": split,
            "rows": len(rows),
            "mode": "binary" if binary else "one-vs-rest",
            "positive": positive,
            "classes": classes,
            "threshold": threshold,
            "min_group_rows": min_rows,
            "attributes": attributes,
            "missing": missing,
            "flagged": [a["attribute"] for a in attributes if a["flagged"]],
            "max_demographic_parity_difference": max(dps) if dps else None,
            "max_equalized_odds_difference": max(eos) if eos else None,
        }

    # -- presentation ----------------------------------------------------------

    def render(self, result: dict[str, Any], console: Console) -> None:
        from rich.table import Table
        from rich.text import Text

        if result.get("skipped"):
            console.print(f"{self.name}: skipped: {result['skipped']}")
            return
        mode = f"positive class {result['positive']}" if result["mode"] == "binary" else "one-vs-rest per class"
        console.print(
            Text(f"Fairness on {result['split']} ({result['rows']} rows, {mode}; threshold {result['threshold']:g})")
        )
        for attribute in result["attributes"]:
            table = Table(title=f"{attribute['attribute']}{' (binned)' if attribute['binned'] else ''}")
            columns = ["group", "rows", "accuracy"]
            if result["mode"] == "binary":
                columns += ["selection rate", "TPR", "FPR", "precision"]
            for column in columns:
                table.add_column(column, justify="left" if column == "group" else "right")
            for group in attribute["groups"]:
                cells = [Text(group["group"] + ("" if group["included"] else " (small)")), str(group["rows"])]
                cells.append(num(group["accuracy"]))
                if result["mode"] == "binary":
                    cells += [num(group[k]) for k in ("selection_rate", "tpr", "fpr", "precision")]
                table.add_row(*cells)
            console.print(table)
            console.print(
                Text(
                    f"demographic parity difference {num(attribute['demographic_parity_difference'])}, "
                    f"equalized odds difference {num(attribute['equalized_odds_difference'])}"
                )
            )
            for flag in attribute["flags"]:
                console.print(Text(_flag_text(attribute["attribute"], flag, result["threshold"]), style="bold red"))
        if result.get("missing"):
            console.print(Text(f"protected column(s) not in the data: {', '.join(result['missing'])}"))

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "<h2>Fairness</h2>"
        if result.get("skipped"):
            return f"{title}<p>Skipped: {html.escape(result['skipped'])}</p>"
        binary = result["mode"] == "binary"
        mode = f"positive class {result['positive']}" if binary else "one-vs-rest per class"
        parts = [
            title,
            f"<p>{result['rows']} rows of {html.escape(result['split'])}, {html.escape(mode)}; differences above "
            f"{result['threshold']:g} are flagged.</p>",
        ]
        for attribute in result["attributes"]:
            name = attribute["attribute"]
            parts.append(f"<h3>{html.escape(name)}{' (binned)' if attribute['binned'] else ''}</h3>")
            headers = ["group", "rows", "accuracy"] + (["selection rate", "TPR", "FPR", "precision"] if binary else [])
            body = ""
            for group in attribute["groups"]:
                cells = [html.escape(group["group"]) + ("" if group["included"] else " (small)"), str(group["rows"])]
                cells.append(num(group["accuracy"]))
                if binary:
                    cells += [num(group[k]) for k in ("selection_rate", "tpr", "fpr", "precision")]
                body += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
            head = "".join(f"<th>{h}</th>" for h in headers)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            parts.append(
                f"<p>Demographic parity difference {num(attribute['demographic_parity_difference'])}, "
                f"equalized odds difference {num(attribute['equalized_odds_difference'])}.</p>"
            )
            for flag in attribute["flags"]:
                parts.append(f"<p><strong>{html.escape(_flag_text(name, flag, result['threshold']))}</strong></p>")
            worst = {flag["worst"] for flag in attribute["flags"]}
            labels = [g["group"] for g in attribute["groups"]]
            highlight = [label in worst for label in labels]
            for rate, label, cls in (
                ("selection_rate", "selection rate", attribute["demographic_parity_class"]),
                ("tpr", "TPR", attribute["equalized_odds_class"]),
            ):
                values = [_rate(g, rate, None if binary else cls) for g in attribute["groups"]]
                suffix = "" if binary else f" (class {cls})"
                parts.append(
                    report_plots.bars(
                        f"fairness_{rate}",
                        labels,
                        [0.0 if v is None else v for v in values],
                        title=f"{label.capitalize()} by {name}{suffix}",
                        xlabel=label,
                        highlight=highlight,
                    )
                )
        if result.get("missing"):
            missing = ", ".join(html.escape(m) for m in result["missing"])
            parts.append(f"<p>Protected column(s) not in the data: {missing}.</p>")
        return "\n".join(parts)

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if result.get("skipped"):
            return []
        found = []
        for attribute in result["attributes"]:
            if attribute["flags"]:
                text = "; ".join(_flag_text(attribute["attribute"], f, result["threshold"]) for f in attribute["flags"])
                gain = max(f["value"] for f in attribute["flags"])
                found.append(Finding(self.name, text, gain, "problem"))
        if result.get("missing"):
            found.append(
                Finding(self.name, f"protected column(s) not in the data: {', '.join(result['missing'])}", 0.0)
            )
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if result.get("skipped"):
            return {}
        values = {}
        for key in ("max_demographic_parity_difference", "max_equalized_odds_difference"):
            if result.get(key) is not None:
                values[key] = float(result[key])
        return values

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if result.get("skipped"):
            return []
        out = []
        directions = {"selection_rate": None, "tpr": True, "fpr": False}
        for attribute in result["attributes"]:
            for group in attribute["groups"]:
                key = f"group {attribute['attribute']}={group['group']}"
                out.append(Comparable(key, "accuracy", group["accuracy"], True))
                if result["mode"] == "binary":
                    rates = {"": group}
                else:
                    rates = {f"[{c}]": values for c, values in group["by_class"].items()}
                for suffix, values in rates.items():
                    for metric, better in directions.items():
                        if values.get(metric) is not None:
                            out.append(Comparable(key, f"{metric}{suffix}", values[metric], better))
        return out


# -- computation -----------------------------------------------------------------


def _groups(values: pd.Series, bins: int, max_categories: int) -> tuple[list[str], np.ndarray, list[float] | None]:
    """Group names, each row's group code, and the bin edges when the column was binned."""
    import numpy as np
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique() > max_categories:
        number = values.to_numpy(dtype=float)
        known = ~np.isnan(number)
        edges = np.unique(np.quantile(number[known], np.linspace(0, 1, bins + 1)))
        if len(edges) >= 2:
            codes = np.searchsorted(edges[1:-1], number, side="left")
            names = [f"{'[' if i == 0 else '('}{edges[i]:.4g}, {edges[i + 1]:.4g}]" for i in range(len(edges) - 1)]
            codes = np.where(known, codes, len(names))
            return [*names, MISSING], codes.astype(np.int64), [float(e) for e in edges]
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types: sort as text
        codes, uniques = pd.factorize(values.astype("string"), sort=True)
    names = [label_text(u) for u in uniques]
    codes = np.where(codes < 0, len(names), codes)
    return [*names, MISSING], codes.astype(np.int64), None


def _rates(codes: np.ndarray, truth: np.ndarray, chosen: np.ndarray, count: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates for one positive class (NaN where undefined)."""
    import numpy as np

    k = len(count)
    positives = np.bincount(codes, weights=truth, minlength=k)
    selected = np.bincount(codes, weights=chosen, minlength=k)
    true_positives = np.bincount(codes, weights=truth & chosen, minlength=k)
    false_positives = selected - true_positives
    negatives = count - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "positive_rate": positives / count,
            "selection_rate": selected / count,
            "tpr": np.where(positives > 0, true_positives / positives, np.nan),
            "fpr": np.where(negatives > 0, false_positives / negatives, np.nan),
            "precision": np.where(selected > 0, true_positives / selected, np.nan),
        }


def _spread(values: np.ndarray, included: np.ndarray) -> float | None:
    import numpy as np

    usable = values[included & ~np.isnan(values)]
    return float(usable.max() - usable.min()) if len(usable) >= 2 else None


def _differences(rates: dict[str, np.ndarray], included: np.ndarray) -> dict[str, float | None]:
    tpr, fpr = _spread(rates["tpr"], included), _spread(rates["fpr"], included)
    parts = [d for d in (tpr, fpr) if d is not None]
    return {
        "demographic_parity_difference": _spread(rates["selection_rate"], included),
        "tpr_difference": tpr,
        "fpr_difference": fpr,
        "equalized_odds_difference": max(parts) if parts else None,
    }


def _flags(
    names: list[str],
    included: np.ndarray,
    per_class: dict[str, dict[str, np.ndarray]],
    dp_class: str,
    eo_class: str,
    entry: dict[str, Any],
    threshold: float,
) -> list[dict[str, Any]]:
    """Flags for the differences above ``threshold``, naming the best and worst groups."""
    flags = []
    dp = entry["demographic_parity_difference"]
    if dp is not None and dp > threshold:
        flags.append(
            _extremes("demographic_parity_difference", dp, dp_class, "selection_rate", True, names, included, per_class)
        )
    eo = entry["equalized_odds_difference"]
    if eo is not None and eo > threshold:
        by_tpr = (entry["tpr_difference"] or -1.0) >= (entry["fpr_difference"] or -1.0)
        rate = "tpr" if by_tpr else "fpr"
        flags.append(_extremes("equalized_odds_difference", eo, eo_class, rate, by_tpr, names, included, per_class))
    return flags


def _extremes(
    metric: str,
    value: float,
    cls: str,
    rate: str,
    higher_is_better: bool,
    names: list[str],
    included: np.ndarray,
    per_class: dict[str, dict[str, np.ndarray]],
) -> dict[str, Any]:
    import numpy as np

    values = np.where(included, per_class[cls][rate], np.nan)
    high, low = int(np.nanargmax(values)), int(np.nanargmin(values))
    best, worst = (high, low) if higher_is_better else (low, high)
    return {
        "metric": metric,
        "value": value,
        "class": cls,
        "rate": rate,
        "best": names[best],
        "best_value": float(values[best]),
        "worst": names[worst],
        "worst_value": float(values[worst]),
    }


def _flag_text(attribute: str, flag: dict[str, Any], threshold: float) -> str:
    metric = flag["metric"].replace("_", " ")
    rate = {"selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR"}[flag["rate"]]
    return (
        f"attribute {attribute!r}: {metric} {flag['value']:.2f} > {threshold:g} for class {flag['class']} "
        f"(worst group {flag['worst']!r}: {rate} {flag['worst_value']:.2f}; "
        f"best {flag['best']!r}: {flag['best_value']:.2f})"
    )


def _argmax(classes: list[str], values: list[float | None]) -> str:
    best = classes[0]
    top = -1.0
    for cls, value in zip(classes, values, strict=True):
        if value is not None and value > top:
            best, top = cls, value
    return best


def _rate(group: dict[str, Any], rate: str, cls: str | None) -> float | None:
    return group[rate] if cls is None else group["by_class"][cls][rate]


def _as_text(values: pd.Series) -> pd.Series:
    """Labels as text, with integral floats (``1.0``, from a column with gaps) written as ``1``."""
    if values.dtype.kind == "f":
        known = values.dropna()
        if (known == known.round()).all():
            return values.astype("Int64").astype(str)
    return values.astype(str)
