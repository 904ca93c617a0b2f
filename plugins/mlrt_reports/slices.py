"""Slice analysis: metrics per value of chosen columns, and automatic weak-slice discovery.

Two parts, one report (``slices``):

* **listed slices**: every column of ``spec.slices`` is broken down by value
  (numbers into bins) with, per slice, its rows, errors, error rate, accuracy,
  share of all errors and *potential gain*;
* **discovered slices**: a search over *all* feature columns for the
  conjunctions of up to ``max_predicates`` predicates (``region == north and
  age >= 65``) where the model is much worse than overall, after SliceLine
  (Sagadeeva and Boehm, "SliceLine: Fast, Linear-Algebra-based Slice Finding
  for ML Model Debugging", SIGMOD 2021).

The *potential gain* of a slice is how much the overall error would drop if
the slice's error rate fell to the rate of the other rows::

    potential_gain = max(0, (errors_in_slice - rows_in_slice * error_rate_of_rest) / total_rows)

(in points of error rate for classification, in units of the mean absolute
error for regression). It ranks slices by what fixing them is worth: a small
slice that is always wrong and a big slice that is a little worse can be
worth the same.
"""

from __future__ import annotations

import dataclasses
import html as _html
import math
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import RESERVED_COLUMNS, Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    pct,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from rich.console import Console

NAME = "slices"
DISTINCT_FOR_BINS = 10
"""A numeric column with more distinct values than this is binned; one with fewer is sliced by value."""
QUANTILE_SAMPLE = 200_000
"""Quantile edges are computed on at most this many values (an evenly strided subset of larger columns)."""
REFINE_Z = 3.0
REFINE_LIFT = 1.1
"""A slice with k+1 predicates is kept only if, against each of its k-predicate parents, its error rate is at
least ``REFINE_LIFT`` times the parent's and ``REFINE_Z`` standard errors above the rest of the parent."""
MAX_PARENTS = 256
SHARP_CHECKS = 200
"""At most this many of the highest-lift slices are checked against the model's expected errors."""
"""At most this many 2-predicate slices (the highest score bounds first) are expanded to 3 predicates."""
COVERED = 0.8
"""A finding is left out when a narrower slice (more predicates) accounts for this share of its potential gain."""
CHUNK_ELEMENTS = 1 << 23
"""Rows are one-hot encoded in chunks of about this many matrix cells (32 MiB of float32)."""
PLOT_LABEL = 60
DISCOVERY_VALUES = 100
"""Discovery makes a predicate of at most this many values of a categorical column (the most frequent)."""


class SlicesReport(Report):
    """Error rates by slice: the columns a job lists, and the weak slices found among all features.

    **Listed slices.** For each ``spec.slices`` entry ``{"column": name,
    "bins": None | int | [edges]}``: a numeric column is cut into bins
    (``bins`` quantile bins; a list gives the cut points; with ``bins: null``
    a numeric column with more than 10 distinct values gets the ``bins``
    option's number of quantile bins, default 4, and one with fewer is sliced
    by value). Bins are ``<e1``, ``[e1, e2)``, ..., ``>=ek``; quantile edges are
    rounded to about 1/100 of the column's range. Other columns are sliced by
    value; values beyond the ``top_n`` most frequent are grouped as
    ``other``, and missing values as ``missing``. Each column's slices are
    sorted by potential gain.

    **Discovered slices** (SliceLine). Every feature column is encoded into
    basic predicates: ``column == value`` (every value with the minimum
    support, at least the ``top_n`` and at most the 100 most frequent) for categorical columns and numeric ones with at most 10 distinct values,
    ``column < e`` / ``column in [a, b)`` / ``column >= e`` for the ``bins``
    quantile bins of other numeric columns, ``column is missing``. A slice is
    a conjunction of up to ``max_predicates`` predicates on different columns
    with at least ``max(min_support * rows, min_rows)`` rows (predicates and
    pairs below that are pruned, and a conjunction is only formed from
    parents that meet it). Its score is SliceLine's::

        score = alpha * (slice_error_rate / overall_error_rate - 1) - (1 - alpha) * (rows / slice_rows - 1)

    which trades how much worse the slice is against how small it is. Sizes
    and error counts of all pairs come from one product of the one-hot
    predicate matrix with itself (and with the errors); 3-predicate slices
    are formed from the 2-predicate slices whose score upper bound can still
    reach the top-K. A slice with more predicates is dropped unless it is
    meaningfully worse than each parent with one predicate fewer (error rate
    at least 1.1 times the parent's and 3 standard errors above the rest of
    the parent), so a planted weak slice ranks ahead of its noisy refinements;
    its broader parents score lower by construction. The ``top_k`` slices with
    a score above 0 are kept, best score first.

    **Sharpest slices.** The score favours slices that hold many errors, so a
    small segment the model gets badly wrong can rank below a broad band near
    the decision boundary. ``sharpest`` lists, from the same candidates (every
    slice with at least the minimum support; a refinement only when it is worse
    than its parents as above), those whose error rate is 3 standard errors
    above the rest of the rows, by *lift* (slice error rate / overall error
    rate), highest first, at most ``top_k``. With class scores, a slice must
    also have 3 standard deviations more errors than the model's own scores
    expect (the sum over its rows of 1 - the predicted class's score, scaled
    so that the split's expected errors add up to its errors): a band along
    the decision boundary, where the model knows it is unsure, is not sharp;
    a segment where it is confidently wrong is. Such a row also gives
    ``expected_error_rate``.

    For regression the error of an example is its absolute error, so the
    "error rate" of a slice is its mean absolute error (``accuracy`` is absent).

    Options (``spec.report_options.slices``): ``split``, ``bins`` (4),
    ``top_n`` (10), ``max_predicates`` (2, at most 3), ``min_support`` (0.01),
    ``min_rows`` (30), ``alpha`` (0.95), ``top_k`` (10; 0 turns discovery off).

    Result::

        {"report": "slices", "split": "validation", "rows": 20000, "task": "classification",
         "error_metric": "error_rate",          # or "mean_absolute_error" (regression)
         "overall": {"rows": 20000, "errors": 2440, "error_rate": 0.122, "accuracy": 0.878},
         "listed": {"region": [                 # per spec.slices column, sorted by potential gain
             {"column": "region", "value": "north",        # "<35", "[35, 50)", ">=65", "other", "missing"
              "description": "region == north",
              "predicate": {"column": "region", "op": "==", "value": "north"},   # None for "other"
              "rows": 5000, "share": 0.25, "errors": 1300, "error_rate": 0.26, "accuracy": 0.74,
              "share_of_errors": 0.53, "potential_gain": 0.047}, ...]},
         "discovered": [                        # best score first, at most top_k
             {"predicates": [{"column": "age", "op": ">=", "value": 65.0},
                             {"column": "region", "op": "==", "value": "north"}],
              "description": "age >= 65 and region == north",
              "rows": 1250, "share": 0.0625, "errors": 1125, "error_rate": 0.9, "accuracy": 0.1,
              "share_of_errors": 0.46, "score": 5.3, "potential_gain": 0.053}, ...],
         "sharpest": [                          # highest lift first, at most top_k
             {"predicates": [...], "description": "segment == z", "rows": 300, "share": 0.015,
              "errors": 141, "error_rate": 0.47, "accuracy": 0.53, "share_of_errors": 0.06,
              "potential_gain": 0.005, "lift": 4.1, "expected_error_rate": 0.12}, ...],
         "search": {"features": 11, "predicates": 43, "pairs": 770, "triples": 0, "min_rows": 200},
         "settings": {...the resolved options...},
         "notes": ["column 'zip' is not in the data"]}

    Predicate ops are ``==`` (value), ``<`` / ``>=`` (a number), ``in``
    (``[low, high]``, low inclusive, high exclusive) and ``is missing``.

    Findings: the three slices (listed or discovered) with the largest
    potential gain, leaving out a slice when a narrower one in the results
    accounts for most of its gain, and the sharpest slice when it is not one
    of them (pinned, so the end-of-run summary shows both lists' tops). Gate values: ``worst_accuracy``
    (classification) and ``worst_error_rate`` over listed slices with at
    least ``min_rows`` rows, ``max_potential_gain`` over all slices.
    Comparable: ``error_rate`` (or ``mae``) and ``accuracy`` per listed slice
    (key ``slice <column>=<value>``) and per discovered or sharpest slice (key
    ``slice <description>``). Discovery searches the features and the
    report-only columns (:attr:`mlrt.reports.ReportInput.analysis`).
    """

    name = NAME
    description = "Error rate per slice of the listed columns, and the weakest slices found among all features."
    gate_value_names = frozenset({"worst_accuracy", "worst_error_rate", "max_potential_gain"})
    options = {
        "bins": Hyperparameter(int, 4, min=2, max=50, help="Quantile bins for numeric columns without bins."),
        "top_n": Hyperparameter(
            int, 10, min=1, max=200, help="Most frequent values kept per categorical column; the rest are 'other'."
        ),
        "max_predicates": Hyperparameter(
            int, 2, min=1, max=3, help="Predicates per discovered slice at most (e.g. 2: 'a == x and b < 3')."
        ),
        "min_support": Hyperparameter(
            float, 0.01, min=0.0, max=1.0, help="Smallest discovered slice, as a share of the rows."
        ),
        "min_rows": Hyperparameter(
            int, 30, min=1, help="Smallest discovered slice in rows; also the support worst_* gates need."
        ),
        "alpha": Hyperparameter(
            float, 0.95, min=0.0, max=1.0, help="SliceLine weight of the error rate against the slice size."
        ),
        "top_k": Hyperparameter(int, 10, min=0, max=1000, help="Discovered slices kept (0: no discovery)."),
    }

    # ------------------------------------------------------------------------------------------------ build

    def build(self, data: ReportInput) -> dict[str, Any]:
        """Listed slices from ``spec.slices`` and discovered weak slices over ``data.features``."""
        import numpy as np

        settings = {key: hp.default for key, hp in self.options.items()}
        settings.update({key: value for key, value in (data.options or {}).items() if key in settings})
        split = data.analysis_split
        rows = data.rows(split)
        if rows.empty:
            return skipped(NAME, f"no labelled rows in split {split!r}")
        classification = data.task == "classification"
        loss = data.loss(rows).to_numpy(dtype=float)
        loss = np.where(np.isfinite(loss), loss, np.nan)
        if np.isnan(loss).any():  # unusable predictions (regression NaN): leave those rows out
            keep = ~np.isnan(loss)
            rows, loss = rows[keep], loss[keep]
            if rows.empty:
                return skipped(NAME, f"no rows with a usable prediction in split {split!r}")
        n = len(rows)
        total = float(loss.sum())
        notes: list[str] = []

        listed: dict[str, list[dict[str, Any]]] = {}
        for entry in (data.spec or {}).get("slices") or []:
            entry = {"column": entry} if isinstance(entry, str) else dict(entry)
            column, bins = entry.get("column"), entry.get("bins")
            if column in listed:
                notes.append(f"column {column!r} is listed twice in spec.slices; the first entry is used")
                continue
            if column not in rows.columns or column in RESERVED_COLUMNS:
                notes.append(f"column {column!r} is not in the data")
                continue
            levels = _levels(column, rows[column], bins=bins, default_bins=settings["bins"], top_n=settings["top_n"])
            listed[column] = _listed_rows(column, levels, loss, total, classification)

        features = [
            f
            for f in dict.fromkeys([*(data.features or []), *(data.analysis or [])])
            if f in rows.columns and f not in RESERVED_COLUMNS and not str(f).startswith("score_")
        ]
        discovered: list[dict[str, Any]] = []
        sharpest: list[dict[str, Any]] = []
        search: dict[str, Any] = {"features": len(features), "predicates": 0, "pairs": 0, "triples": 0}
        if settings["top_k"] > 0 and features:
            if total <= 0:
                notes.append("no errors in this split: there is no weak slice to find")
            else:
                # every value with the minimum support can be a predicate (a small weak segment is
                # often a rare value), at most DISCOVERY_VALUES per column
                support = max(math.ceil(float(settings["min_support"]) * n), int(settings["min_rows"]), 1)
                top = max(settings["top_n"], min(DISCOVERY_VALUES, n // support))
                encoded = [
                    (f, _levels(f, rows[f], bins=None, default_bins=settings["bins"], top_n=top, other=False))
                    for f in features
                ]
                expected = _expected_errors(data, rows, total) if classification else None
                discovered, sharpest, search = _discover(encoded, loss, classification, settings, expected)
        elif not features:
            notes.append("no feature columns: no slice discovery")

        overall: dict[str, Any] = {"rows": n, "errors": _errors(total, classification), "error_rate": total / n}
        if classification:
            overall["accuracy"] = 1 - total / n
        result: dict[str, Any] = {
            "report": NAME,
            "split": split,
            "rows": n,
            "task": data.task,
            "error_metric": "error_rate" if classification else "mean_absolute_error",
            "overall": overall,
            "listed": listed,
            "discovered": discovered,
            "sharpest": sharpest,
            "search": search,
            "settings": settings,
        }
        if notes:
            result["notes"] = notes
        return _plain(result)

    # ------------------------------------------------------------------------------------------------ views

    def render(self, result: dict[str, Any], console: Console) -> None:
        """Overall error, a table per listed column and a table of discovered slices."""
        from rich.table import Table

        if "skipped" in result:
            console.print(f"{NAME}: skipped ({result['skipped']})")
            return
        metric = _metric_name(result)
        overall = result["overall"]
        console.print(
            f"[bold]slices[/bold] ({result['split']}, {result['rows']} rows): overall {metric} "
            f"{_num(overall['error_rate'])}"
        )
        classification = result.get("task") == "classification"
        for column, slices in result["listed"].items():
            table = Table(title=f"slices by {column}", title_justify="left")
            for header in ("slice", "rows", "share", metric, *(["accuracy"] if classification else [])):
                table.add_column(header, justify="left" if header == "slice" else "right")
            table.add_column("share of errors", justify="right")
            table.add_column("potential gain", justify="right")
            for row in slices:
                table.add_row(
                    str(row["value"]),
                    str(row["rows"]),
                    pct(row["share"]),
                    _num(row["error_rate"]),
                    *([_num(row["accuracy"])] if classification else []),
                    pct(row["share_of_errors"]),
                    _gain(row["potential_gain"], classification),
                )
            console.print(table)
        found = (
            ("weakest slices found (SliceLine)", "discovered", "score", lambda row: f"{row['score']:.2f}"),
            ("sharpest slices (error-rate lift)", "sharpest", "lift", lambda row: f"{row['lift']:.2f}x"),
        )
        for title, key, measure, shown in found:
            if not result.get(key):
                if key == "discovered":
                    console.print("no weak slice found")
                continue
            table = Table(title=title, title_justify="left")
            for header in ("#", "slice", "rows", "share", metric, measure, "potential gain"):
                table.add_column(header, justify="left" if header == "slice" else "right")
            for rank, row in enumerate(result[key], 1):
                table.add_row(
                    str(rank),
                    row["description"],
                    str(row["rows"]),
                    pct(row["share"]),
                    _num(row["error_rate"]),
                    shown(row),
                    _gain(row["potential_gain"], classification),
                )
            console.print(table)
        for note in result.get("notes", []):
            console.print(f"note: {note}")

    def html(self, result: dict[str, Any]) -> str:
        """Tables and error-rate bars (overall rate as the dashed reference) per listed column and discovered."""
        from mlrt import report_plots

        esc = _html.escape
        if "skipped" in result:
            return f"<h2>Slices</h2><p>Skipped: {esc(str(result['skipped']))}</p>"
        metric = _metric_name(result)
        classification = result.get("task") == "classification"
        overall = result["overall"]["error_rate"]
        parts = [
            "<h2>Slices</h2>",
            f"<p>Split <code>{esc(str(result['split']))}</code>, {result['rows']} rows, overall {esc(metric)} "
            f"{_num(overall)}. Potential gain: how much the overall {esc(metric)} would drop if the slice did as "
            "well as the other rows.</p>",
        ]

        def table(rows: list[dict[str, Any]], first: str, label: str, score: bool, lift: bool = False) -> str:
            headers = [first, "rows", "share", metric, *(["accuracy"] if classification else [])]
            headers += ["share of errors", *(["score"] if score else []), *(["lift"] if lift else []), "potential gain"]
            head = "".join(f"<th>{esc(h)}</th>" for h in headers)
            body = []
            for row in rows:
                cells = [esc(str(row[label])), str(row["rows"]), pct(row["share"]), _num(row["error_rate"])]
                if classification:
                    cells.append(_num(row["accuracy"]))
                cells.append(pct(row["share_of_errors"]))
                if score:
                    cells.append(f"{row['score']:.2f}")
                if lift:
                    cells.append(f"{row['lift']:.2f}x")
                cells.append(esc(_gain(row["potential_gain"], classification)))
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"

        for index, (column, rows) in enumerate(result["listed"].items()):
            parts.append(f"<h3>By {esc(str(column))}</h3>")
            if not rows:
                continue
            parts.append(table(rows, "slice", "value", score=False))
            parts.append(
                report_plots.bars(
                    f"slices-{index}",
                    [_short(str(r["value"])) for r in rows],
                    [r["error_rate"] for r in rows],
                    title=f"{metric} by {column}",
                    xlabel=f"{metric} (dashed: overall)",
                    reference=overall,
                    highlight=[r["error_rate"] > overall for r in rows],
                )
            )
        parts.append("<h3>Weakest slices found</h3>")
        if result["discovered"]:
            top = result["discovered"]
            parts.append(table(top, "slice", "description", score=True))
            shown = top[:10]
            parts.append(
                report_plots.bars(
                    "slices-discovered",
                    [_short(r["description"]) for r in shown],
                    [r["error_rate"] for r in shown],
                    title="weakest slices found",
                    xlabel=f"{metric} (dashed: overall)",
                    reference=overall,
                    highlight=[i == 0 for i in range(len(shown))],
                )
            )
        else:
            parts.append("<p>No slice scores above 0: no weak slice found.</p>")
        if result.get("sharpest"):
            parts.append(
                "<h3>Sharpest slices</h3><p>Highest error rate relative to the overall rate (lift) among slices "
                "with enough support: small segments the model gets badly wrong.</p>"
            )
            parts.append(table(result["sharpest"], "slice", "description", score=False, lift=True))
        for note in result.get("notes", []):
            parts.append(f"<p>Note: {esc(str(note))}</p>")
        return "\n".join(parts)

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        """The three slices with the largest potential gain (narrower slices stand for their broader parents),
        and the sharpest slice when it is not one of them (pinned: the summary shows it)."""
        if "skipped" in result:
            return []
        classification = result.get("task") == "classification"
        overall = result["overall"]["error_rate"]
        pool = []
        for rows in result["listed"].values():
            for row in rows:
                preds = [row["predicate"]] if row.get("predicate") else []
                pool.append((row, row["description"], _key(preds)))
        for row in result["discovered"]:
            pool.append((row, row["description"], _key(row["predicates"])))
        pool = [item for item in pool if item[0]["potential_gain"] > 1e-9]
        pool.sort(key=lambda item: -item[0]["potential_gain"])
        chosen: list[tuple[dict[str, Any], str, frozenset]] = []
        for row, text, key in pool:
            if key and any(key == other for _, _, other in chosen):
                continue
            gain = row["potential_gain"]
            if key and any(key < other and o["potential_gain"] >= COVERED * gain for o, _, other in pool):
                continue
            chosen.append((row, text, key))
            if len(chosen) == 3:
                break
        out = []
        sharpest = (result.get("sharpest") or [None])[0]
        if sharpest is not None and not any(_key(sharpest["predicates"]) == key for _, _, key in chosen):
            if classification:
                what = f"error {sharpest['error_rate']:.2f} vs {overall:.2f} overall"
            else:
                what = f"mean absolute error {_num(sharpest['error_rate'])} vs {_num(overall)} overall"
            out.append(
                Finding(
                    report=NAME,
                    text=(
                        f"sharpest slice '{sharpest['description']}' ({100 * sharpest['share']:.1f}% of rows): "
                        f"{what}, {sharpest['lift']:.1f}x"
                    ),
                    gain=float(sharpest["potential_gain"]),
                    severity="problem" if sharpest["lift"] >= 2 else "warning",
                    pinned=True,
                )
            )
        for row, text, _ in chosen:
            gain = row["potential_gain"]
            relative = gain / overall if overall > 0 else 0.0
            if classification:
                what = (
                    f"error {row['error_rate']:.2f} vs {overall:.2f} overall; "
                    f"fixing it would lower the error by {100 * gain:.1f} points"
                )
            else:
                what = (
                    f"mean absolute error {_num(row['error_rate'])} vs {_num(overall)} overall; "
                    f"fixing it would lower the MAE by {_num(gain)}"
                )
            out.append(
                Finding(
                    report=NAME,
                    text=f"slice '{text}' ({100 * row['share']:.1f}% of rows): {what}",
                    gain=float(gain),
                    severity="problem" if relative >= 0.2 else "warning" if relative >= 0.05 else "info",
                )
            )
        return out

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        """``worst_accuracy`` (classification), ``worst_error_rate`` and ``max_potential_gain``."""
        if "skipped" in result:
            return {}
        min_rows = (result.get("settings") or {}).get("min_rows", 30)
        supported = [r for rows in result["listed"].values() for r in rows if r["rows"] >= min_rows]
        values: dict[str, float] = {}
        if supported:
            if result.get("task") == "classification":
                values["worst_accuracy"] = float(min(r["accuracy"] for r in supported))
            values["worst_error_rate"] = float(max(r["error_rate"] for r in supported))
        every = [r for rows in result["listed"].values() for r in rows] + list(result["discovered"])
        values["max_potential_gain"] = float(max((r["potential_gain"] for r in every), default=0.0))
        return values

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        """Error rate (``mae`` for regression) and accuracy per listed and per discovered slice."""
        if "skipped" in result:
            return []
        classification = result.get("task") == "classification"
        metric = "error_rate" if classification else "mae"
        out = []
        keyed = [(f"slice {column}={row['value']}", row) for column, rows in result["listed"].items() for row in rows]
        keyed += [(f"slice {row['description']}", row) for row in result["discovered"] + result.get("sharpest", [])]
        seen = set()
        for key, row in keyed:
            if key in seen:
                continue
            seen.add(key)
            out.append(Comparable(key, metric, float(row["error_rate"]), higher_is_better=False))
            if classification:
                out.append(Comparable(key, "accuracy", float(row["accuracy"]), higher_is_better=True))
        return out


# -------------------------------------------------------------------------------------------------- encoding


@dataclasses.dataclass
class _Levels:
    """A column cut into levels: a level code per row (-1: none) and each level's label and predicate."""

    codes: np.ndarray
    labels: list[str]
    predicates: list[dict[str, Any] | None]


def _levels(column: str, series: pd.Series, *, bins: Any, default_bins: int, top_n: int, other: bool = True) -> _Levels:
    """Bins for numbers (``bins``: count, edges, or None: quantile bins if many distinct values), else values.

    Values beyond the ``top_n`` most frequent go to an ``other`` level (or to no level when ``other`` is
    False); missing values to a ``missing`` level."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    numeric = is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype)
    values = series.to_numpy(dtype=float, na_value=np.nan) if numeric else None
    labels: list[str] = []
    predicates: list[dict[str, Any] | None] = []
    if numeric and (bins is not None or _many_distinct(values)):
        if isinstance(bins, (list, tuple)):
            edges = sorted({float(b) for b in bins})
        else:
            edges = _quantile_edges(values, int(bins or default_bins))
        codes = np.searchsorted(np.asarray(edges, dtype=float), values, side="right").astype(np.int64)
        for i in range(len(edges) + 1):
            if i == 0:
                labels.append(f"<{_fmt(edges[0])}" if edges else "all")
                predicates.append({"column": column, "op": "<", "value": edges[0]} if edges else None)
            elif i == len(edges):
                labels.append(f">={_fmt(edges[-1])}")
                predicates.append({"column": column, "op": ">=", "value": edges[-1]})
            else:
                labels.append(f"[{_fmt(edges[i - 1])}, {_fmt(edges[i])})")
                predicates.append({"column": column, "op": "in", "value": [edges[i - 1], edges[i]]})
        missing = np.isnan(values)
    else:
        try:
            raw, uniques = pd.factorize(series, sort=True)
        except TypeError:  # values that do not sort together (numbers and text): first-seen order
            raw, uniques = pd.factorize(series)
        raw = np.asarray(raw, dtype=np.int64)
        missing = raw < 0
        counts = np.bincount(raw[~missing], minlength=len(uniques))
        order = np.argsort(-counts, kind="stable")
        kept = [int(i) for i in order[:top_n] if counts[i] > 0]
        remap = np.full(len(uniques) + 1, -1, dtype=np.int64)  # last entry: the -1 sentinel
        for code, index in enumerate(kept):
            value = _json_value(uniques[index])
            labels.append(_fmt(value))
            predicates.append({"column": column, "op": "==", "value": value})
            remap[index] = code
        rest = np.ones(len(uniques), dtype=bool)
        rest[kept] = False
        if other and (counts[rest] > 0).any():
            remap[: len(uniques)][rest] = len(labels)
            labels.append("other (rest)" if "other" in labels else "other")
            predicates.append(None)
        codes = remap[raw]
    if missing.any():
        codes[missing] = len(labels)
        labels.append("missing")
        predicates.append({"column": column, "op": "is missing", "value": None})
    return _Levels(codes, labels, predicates)


def _many_distinct(values: np.ndarray) -> bool:
    import numpy as np
    import pandas as pd

    finite = values[~np.isnan(values)]
    if len(finite) > 50_000 and len(pd.unique(finite[:: len(finite) // 20_000])) > DISTINCT_FOR_BINS:
        return True
    return len(pd.unique(finite)) > DISTINCT_FOR_BINS


def _quantile_edges(values: np.ndarray, k: int) -> list[float]:
    """Interior quantile edges (data values), rounded to about 1/100 of the range, distinct."""
    import numpy as np

    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    if len(finite) > QUANTILE_SAMPLE:
        finite = finite[:: math.ceil(len(finite) / QUANTILE_SAMPLE)]
    edges = np.quantile(finite, np.arange(1, k) / k, method="inverted_cdf")
    spread = float(finite.max() - finite.min())
    if spread > 0:
        edges = np.round(edges, int(-math.floor(math.log10(spread / 100))))
    return [float(e) for e in np.unique(edges)]


# -------------------------------------------------------------------------------------------------- listed


def _listed_rows(
    column: str, levels: _Levels, loss: np.ndarray, total: float, classification: bool
) -> list[dict[str, Any]]:
    import numpy as np

    n = len(loss)
    count = len(levels.labels)
    valid = levels.codes >= 0
    sizes = np.bincount(levels.codes[valid], minlength=count)
    errors = np.bincount(levels.codes[valid], weights=loss[valid], minlength=count)
    out = []
    for i in range(count):
        size = int(sizes[i])
        if size == 0:
            continue
        err = float(errors[i])
        predicate = levels.predicates[i]
        row: dict[str, Any] = {
            "column": column,
            "value": levels.labels[i],
            "description": _describe([predicate]) if predicate else f"{column}: {levels.labels[i]}",
            "predicate": predicate,
            **_stats(size, err, n, total, classification),
        }
        out.append(row)
    out.sort(key=lambda row: -row["potential_gain"])
    return out


def _stats(size: int, err: float, n: int, total: float, classification: bool) -> dict[str, Any]:
    rest = n - size
    rest_rate = (total - err) / rest if rest > 0 else err / size
    row: dict[str, Any] = {
        "rows": size,
        "share": size / n,
        "errors": _errors(err, classification),
        "error_rate": err / size,
    }
    if classification:
        row["accuracy"] = 1 - err / size
    row["share_of_errors"] = err / total if total > 0 else 0.0
    row["potential_gain"] = max(0.0, (err - size * rest_rate) / n)
    return row


# -------------------------------------------------------------------------------------------------- discovery


def _discover(
    encoded: list[tuple[str, _Levels]],
    loss: np.ndarray,
    classification: bool,
    settings: dict[str, Any],
    expected: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """SliceLine over the encoded features: the top_k slices by score, and the top_k by error-rate
    lift among the slices with support (see :class:`SlicesReport`)."""
    import numpy as np

    n = len(loss)
    total = float(loss.sum())
    rate = total / n
    alpha = float(settings["alpha"])
    top_k = int(settings["top_k"])
    minsup = max(math.ceil(float(settings["min_support"]) * n), int(settings["min_rows"]))
    variance = float(np.var(loss))

    # level 1: basic predicates with enough rows, numbered globally in feature order
    predicates: list[dict[str, Any]] = []
    feature_of: list[int] = []
    column_of: list[int] = []  # the column of ``codes`` that holds each predicate
    columns: list[np.ndarray] = []
    for index, (_, levels) in enumerate(encoded):
        valid = levels.codes >= 0
        counts = np.bincount(levels.codes[valid], minlength=len(levels.labels))
        ok = [i for i in np.flatnonzero(counts >= minsup) if levels.predicates[i] is not None]
        if not ok:
            continue
        remap = np.full(len(levels.labels) + 1, -1, dtype=np.int64)
        for i in ok:
            remap[i] = len(predicates)
            predicates.append(levels.predicates[i])
            feature_of.append(index)
            column_of.append(len(columns))
        columns.append(remap[levels.codes])
    m = len(predicates)
    search = {"features": len(encoded), "predicates": m, "pairs": 0, "triples": 0, "min_rows": minsup}
    if m == 0:
        return [], [], search
    feature = np.asarray(feature_of)
    dtype = np.int16 if m < np.iinfo(np.int16).max else np.int32
    codes = np.empty((n, len(columns)), dtype=dtype)
    for j, column in enumerate(columns):
        codes[:, j] = np.where(column >= 0, column, m)  # m: a dummy column for "no predicate"
    del columns
    errors_mask = loss > 0 if classification else None

    sizes, errs = np.zeros((m + 1, m + 1)), np.zeros((m + 1, m + 1))
    for start, X in _onehot_chunks(codes, m + 1):
        sizes += X.T @ X
        part = loss[start : start + len(X)]
        if classification:
            Xe = X[errors_mask[start : start + len(X)]]
            errs += Xe.T @ Xe
        else:
            errs += X.T @ (X * part[:, None].astype(np.float32))
    sizes, errs = sizes[:m, :m], errs[:m, :m]

    found: list[tuple[tuple[int, ...], float, float, float]] = []  # (predicate indices, size, errors, score)
    one_size, one_err = np.diag(sizes).copy(), np.diag(errs).copy()
    one_score = _score(one_size, one_err, n, rate, alpha)
    for i in np.flatnonzero(one_score > 0):
        found.append(((int(i),), one_size[i], one_err[i], one_score[i]))
    # candidates for the sharpest list: every slice with support, refinements only when worse than their parents
    sharp: list[tuple[tuple[int, ...], float, float]] = [((i,), one_size[i], one_err[i]) for i in range(m)]

    pair_a, pair_b = np.triu_indices(m, 1)
    keep = feature[pair_a] != feature[pair_b]
    pair_a, pair_b = pair_a[keep], pair_b[keep]
    pair_size, pair_err = sizes[pair_a, pair_b], errs[pair_a, pair_b]
    keep = pair_size >= minsup
    pair_a, pair_b, pair_size, pair_err = pair_a[keep], pair_b[keep], pair_size[keep], pair_err[keep]
    search["pairs"] = len(pair_a)
    if settings["max_predicates"] >= 2 and len(pair_a):
        pair_score = _score(pair_size, pair_err, n, rate, alpha)
        worse = _worse(pair_size, pair_err, sizes, errs, [(pair_a, pair_a), (pair_b, pair_b)], classification, variance)
        for j in np.flatnonzero((pair_score > 0) & worse):
            found.append(((int(pair_a[j]), int(pair_b[j])), pair_size[j], pair_err[j], pair_score[j]))
        sharp += [((int(pair_a[j]), int(pair_b[j])), pair_size[j], pair_err[j]) for j in np.flatnonzero(worse)]

        if settings["max_predicates"] >= 3:
            scores = sorted((f[3] for f in found), reverse=True)
            floor = scores[top_k - 1] if len(scores) >= top_k else 0.0
            max_error = 1.0 if classification else float(loss.max())
            bound = _upper_bound(pair_size, pair_err, n, rate, alpha, minsup, max_error)
            parents = np.flatnonzero(bound > max(floor, 0.0))
            parents = parents[np.argsort(-bound[parents], kind="stable")][:MAX_PARENTS]
            if len(parents):
                triples = _triples(codes, m, loss, errors_mask, pair_a[parents], pair_b[parents], feature, minsup)
                search["triples"] = len(triples[1])
                if len(triples[0]):
                    (ta, tb, tc), t_size, t_err = triples
                    t_score = _score(t_size, t_err, n, rate, alpha)
                    worse = _worse(t_size, t_err, sizes, errs, [(ta, tb), (ta, tc), (tb, tc)], classification, variance)
                    for j in np.flatnonzero(worse):
                        key = (int(ta[j]), int(tb[j]), int(tc[j]))
                        sharp.append((key, t_size[j], t_err[j]))
                        if t_score[j] > 0:
                            found.append((key, t_size[j], t_err[j], t_score[j]))

    found.sort(key=lambda f: (-f[3], len(f[0]), f[0]))
    out = []
    for indices, size, err, score in found[:top_k]:
        row = _slice_row(indices, predicates, size, err, n, total, classification)
        row["score"] = float(score)
        out.append(row)
    sharpest = []
    for indices, size, err, surprise in _sharpest(
        sharp, n, total, classification, variance, top_k, expected, codes, column_of
    ):
        row = _slice_row(indices, predicates, size, err, n, total, classification)
        row["lift"] = float(err / size / rate)
        if surprise is not None:
            row["expected_error_rate"] = surprise
        sharpest.append(row)
    return out, sharpest, search


def _expected_errors(data: ReportInput, rows: pd.DataFrame, errors: float) -> np.ndarray | None:
    """Each row's chance of being wrong by the model's own scores (1 - the predicted class's score),
    scaled so that they add up to the ``errors`` the rows have (scores of a model trained with weights,
    or predicting at a chosen threshold, are off by a factor); None when the frame lacks a score column
    for a class or a prediction is not one of the classes."""
    import numpy as np
    import pandas as pd

    columns = [f"score_{c}" for c in data.classes]
    if not columns or any(c not in rows.columns for c in columns):
        return None
    index = {str(c): i for i, c in enumerate(data.classes)}
    predicted = rows["prediction"].astype(str).map(index)
    if predicted.isna().any():  # numbers written differently (1.0 for class 1)
        numbers = pd.to_numeric(pd.Series(list(index)), errors="coerce")
        by_number = dict(zip(numbers, index.values(), strict=True))
        predicted = pd.to_numeric(rows["prediction"], errors="coerce").map(by_number)
        if predicted.isna().any():
            return None
    scores = rows[columns].to_numpy(dtype=float)
    expected = 1 - scores[np.arange(len(rows)), predicted.to_numpy(dtype=int)]
    if np.isnan(expected).any() or not expected.sum() > 0:
        return None
    return np.clip(expected * (errors / expected.sum()), 0.0, 1.0)


def _slice_row(
    indices: tuple[int, ...], predicates: list[dict[str, Any]], size: float, err: float, n: int, total: float, cls: bool
) -> dict[str, Any]:
    preds = [predicates[i] for i in sorted(indices)]
    row = {"predicates": preds, "description": _describe(preds)}
    row.update(_stats(int(round(size)), float(err), n, total, cls))
    return row


def _sharpest(
    candidates: list[tuple[tuple[int, ...], float, float]],
    n: int,
    total: float,
    classification: bool,
    variance: float,
    top_k: int,
    expected: np.ndarray | None,
    codes: np.ndarray,
    column_of: list[int],
) -> list[tuple[tuple[int, ...], float, float, float | None]]:
    """At most ``top_k`` candidates whose error rate is ``REFINE_Z`` standard errors above the rest of the
    rows and, with ``expected`` (each row's chance of an error by the model's own scores), above what the
    model expected in the slice; highest error-rate lift (slice rate / overall rate) first. Each comes with
    the slice's expected error rate (None without ``expected``)."""
    import numpy as np

    if not candidates:
        return []
    size = np.array([c[1] for c in candidates], dtype=float)
    err = np.array([c[2] for c in candidates], dtype=float)
    rest = np.maximum(n - size, 1.0)
    rate, rest_rate = err / size, (total - err) / rest
    overall = total / n
    var = overall * (1 - overall) if classification else variance
    se = np.sqrt(max(var, 1e-12) * (1 / size + 1 / rest))
    keep = np.flatnonzero((rate - rest_rate >= REFINE_Z * se) & (n - size > 0.5))
    order = sorted(keep, key=lambda j: (-rate[j], len(candidates[j][0]), candidates[j][0]))
    out: list[tuple[tuple[int, ...], float, float, float | None]] = []
    for j in order[: SHARP_CHECKS if expected is not None else top_k]:
        indices, slice_size, slice_err = candidates[j]
        surprise = None
        if expected is not None:
            mask = np.ones(n, dtype=bool)
            for i in indices:
                mask &= codes[:, column_of[i]] == i
            chances = expected[mask]
            spread = math.sqrt(max(float((chances * (1 - chances)).sum()), 1e-12))
            if slice_err - chances.sum() < REFINE_Z * spread:
                continue  # as many errors as the model's own scores expect: uncertain, not weak
            surprise = float(chances.mean())
        out.append((indices, slice_size, slice_err, surprise))
        if len(out) == top_k:
            break
    return out


def _onehot_chunks(codes: np.ndarray, width: int):
    """``(start, X)`` with X the float32 one-hot matrix (rows x width) of each chunk of ``codes``."""
    import numpy as np

    step = max(1024, CHUNK_ELEMENTS // width)
    for start in range(0, len(codes), step):
        chunk = codes[start : start + step].astype(np.intp)
        X = np.zeros((len(chunk), width), dtype=np.float32)
        np.put_along_axis(X, chunk, 1.0, axis=1)
        yield start, X


def _score(size: np.ndarray, err: np.ndarray, n: int, rate: float, alpha: float) -> np.ndarray:
    """SliceLine's score: alpha * (rate ratio - 1) - (1 - alpha) * (n / size - 1)."""
    import numpy as np

    size = np.maximum(size, 1e-12)
    return alpha * ((err / size) / rate - 1) - (1 - alpha) * (n / size - 1)


def _upper_bound(
    size: np.ndarray, err: np.ndarray, n: int, rate: float, alpha: float, minsup: int, max_error: float
) -> np.ndarray:
    """The best score any sub-slice (at least ``minsup`` rows) of these slices could reach.

    A sub-slice has at most the parent's rows and errors, and at most ``max_error`` per row; for a size s the
    best errors are min(err, s * max_error), and the score is then monotone on each side of err / max_error,
    so its maximum is at one of the candidate sizes below."""
    import numpy as np

    best = np.full(len(size), -np.inf)
    turn = np.clip(err / max_error, minsup, size)
    for s in (np.full(len(size), float(minsup)), turn, size):
        s = np.minimum(s, size)
        e = np.minimum(err, s * max_error)
        value = _score(s, e, n, rate, alpha)
        best = np.where(s >= minsup, np.maximum(best, value), best)
    return best


def _worse(
    size: np.ndarray,
    err: np.ndarray,
    sizes: np.ndarray,
    errs: np.ndarray,
    parents: list[tuple[np.ndarray, np.ndarray]],
    classification: bool,
    variance: float,
) -> np.ndarray:
    """Whether each slice is meaningfully worse than each of its parents.

    ``parents`` holds, per parent, the predicate index pair ``(a, b)`` of every slice's parent in the pair
    matrices (``a == b``: a single predicate, on the diagonal). Worse means an error rate at least
    REFINE_LIFT times the parent's and REFINE_Z standard errors above the parent's other rows (a
    two-proportion test; for regression with the overall variance of the absolute error)."""
    import numpy as np

    ok = np.ones(len(size), dtype=bool)
    rate = err / size
    for a, b in parents:
        p_size, p_err = sizes[a, b], errs[a, b]
        rest = p_size - size
        p_rate = p_err / p_size
        rest_rate = np.where(rest > 0.5, (p_err - err) / np.maximum(rest, 1), rate)
        var = p_rate * (1 - p_rate) if classification else np.full(len(size), variance)
        se = np.sqrt(np.maximum(var, 1e-12) * (1 / size + 1 / np.maximum(rest, 1)))
        ok &= (rest > 0.5) & (rate - rest_rate >= REFINE_Z * se) & (rate >= REFINE_LIFT * p_rate)
    return ok


def _triples(
    codes: np.ndarray,
    m: int,
    loss: np.ndarray,
    errors_mask: np.ndarray | None,
    pa: np.ndarray,
    pb: np.ndarray,
    feature: np.ndarray,
    minsup: int,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """Sizes and errors of the 3-predicate extensions of the pairs ``(pa, pb)`` that meet ``minsup``.

    One more chunked product: the pair indicator columns (products of two one-hot columns) times the one-hot
    matrix. An extension needs a predicate on a third feature (its own pairs then meet minsup as well: they are
    supersets of it)."""
    import numpy as np

    t_size = np.zeros((len(pa), m + 1))
    t_err = np.zeros((len(pa), m + 1))
    for start, X in _onehot_chunks(codes, m + 1):
        P = X[:, pa] * X[:, pb]
        t_size += P.T @ X
        if errors_mask is not None:
            rows = errors_mask[start : start + len(X)]
            t_err += P[rows].T @ X[rows]
        else:
            t_err += (P * loss[start : start + len(X), None].astype(np.float32)).T @ X
    t_size, t_err = t_size[:, :m], t_err[:, :m]
    j, c = np.nonzero(t_size >= minsup)
    a, b = pa[j], pb[j]
    keep = (feature[c] != feature[a]) & (feature[c] != feature[b])
    j, c, a, b = j[keep], c[keep], a[keep], b[keep]
    triple = np.sort(np.stack([a, b, c], axis=1), axis=1)
    triple, first = np.unique(triple, axis=0, return_index=True)
    empty = np.zeros(0, dtype=np.int64)
    if not len(triple):
        return (empty, empty, empty), np.zeros(0), np.zeros(0)
    return (triple[:, 0], triple[:, 1], triple[:, 2]), t_size[j[first], c[first]], t_err[j[first], c[first]]


# -------------------------------------------------------------------------------------------------- helpers


def _describe(predicates: list[dict[str, Any]]) -> str:
    parts = []
    for p in predicates:
        column, op, value = p["column"], p["op"], p["value"]
        if op == "in":
            parts.append(f"{column} in [{_fmt(value[0])}, {_fmt(value[1])})")
        elif op == "is missing":
            parts.append(f"{column} is missing")
        else:
            parts.append(f"{column} {op} {_fmt(value)}")
    return " and ".join(parts)


def _key(predicates: list[dict[str, Any]]) -> frozenset:
    return frozenset(
        (p["column"], p["op"], tuple(p["value"]) if isinstance(p["value"], list) else p["value"]) for p in predicates
    )


def _json_value(value: Any) -> Any:
    """A category value as JSON: numbers and strings as they are, numpy scalars unwrapped, others as text."""
    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _errors(value: float, classification: bool) -> float | int:
    return int(round(value)) if classification else float(value)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python numbers (and NaN/inf into None), recursively."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metric_name(result: dict[str, Any]) -> str:
    return "error rate" if result.get("task") == "classification" else "mean abs error"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _gain(value: float, classification: bool) -> str:
    return f"{100 * value:.2f} pts" if classification else f"{value:.4g}"


def _short(text: str) -> str:
    return text if len(text) <= PLOT_LABEL else text[: PLOT_LABEL - 1] + "…"
