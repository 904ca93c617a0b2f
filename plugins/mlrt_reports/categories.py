"""The ``error_categories`` report: which categories (tags) of examples the errors fall in."""

from __future__ import annotations

import html
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrt.algorithms import Hyperparameter
from mlrt.reports import RESERVED_COLUMNS, Comparable, Finding, Report, ReportInput
from mlrt_reports.common import (
    label_text,
    num,
    skipped,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from rich.console import Console

SAMPLE_FILE = "error_sample.csv"
UNTAGGED = "(no tag)"
KEY_SEPARATOR = "\x1f"  # between split and id (not NUL: numpy strips trailing NULs)


class ErrorCategoriesReport(Report):
    """Error analysis by category: what share of the errors each tag accounts for.

    Following Andrew Ng's manual error analysis: tag examples with categories
    ("blurry", "contains a URL", "dark"), count how many of the errors carry
    each tag, and read that share as the *ceiling* on what fixing the category
    could gain. Tags are not mutually exclusive, so the shares may add up to
    more than 1. Tags come from ``spec.tags`` (all sources are combined; a tag
    named by several sources tags the union of their rows):

    ``rules``
        ``{tag: rule}``; a rule looks at one ``column`` and sets exactly one
        test: ``contains`` (a substring of the text), ``regex`` (searched in
        the text), ``equals`` (the value; numbers compare as numbers on a
        numeric column, anything else as text), ``min``/``max`` (an
        inclusive numeric range) or ``function``: ``"module:callable"``,
        imported (from ``spec.working_dir`` too) and called with the analysis
        split's rows (a DataFrame); it returns one boolean per row (a list,
        an array, or a Series on the rows' index). Missing values never match.
    ``column`` / ``separator``
        A column that already holds tags, e.g. ``"blurry,dark"``.
    ``files``
        Reviewed CSVs with columns ``id`` and ``tags`` (``separator``-separated)
        and optionally ``split``; their tags apply to the rows with that id
        (and split, when given). Relative paths are under ``spec.working_dir``.
        The sample this report writes is such a file: fill in its ``tags``
        column and list it here.

    A rule whose column is missing, a function that fails or returns the
    wrong length, an unreadable file: each raises ``ValueError`` naming the tag
    or file.

    *Errors* are the misclassified rows of the analysis split; for regression,
    the rows whose absolute error is above ``regression_threshold`` (default:
    the 90th percentile of the absolute error on the split, so about 10% of
    the rows).

    Per tag, on the analysis split: ``rows`` tagged, ``errors`` among them,
    ``share_of_errors`` (errors with the tag / all errors: the ceiling),
    ``error_rate`` within the tag, ``rest_error_rate`` (rows without the tag)
    and ``gain`` = max(0, errors with the tag - tagged rows x rest error rate) /
    all rows: the drop in the overall error rate if the tagged rows were no
    worse than the rest. ``untagged`` is the "other" bucket: errors with no
    tag at all. Tags are sorted by share of errors, then gain.

    The report also writes a reproducible random sample of ``sample_size``
    errors (seeded by option ``seed``, else ``spec.seed``, else 0) to
    ``<output_dir>/error_sample.csv`` with columns ``id``, ``split``,
    ``label``, ``prediction``, the ``score_<class>`` columns, ``abs_error``
    (regression only), the feature columns (a feature named ``tags`` is
    written as ``feature:tags``) and an empty ``tags`` column for a person to
    fill in. If that file already exists with tags filled in, the new sample
    goes to ``error_sample.1.csv`` (the first free number) rather than
    overwrite the review. With no ``spec.tags`` the report still writes the
    sample and says "no tags defined".

    Options: ``sample_size`` (int, default 100; 0 writes no sample),
    ``seed`` (int), ``regression_threshold`` (float), ``split``.

    Result::

        {"report": "error_categories", "split": "validation", "rows": 2000,
         "task": "classification",
         "errors": 240, "error_rate": 0.12,
         "error_definition": "prediction != label",
         "regression_threshold": null,          # the threshold used, for regression
         "tags_defined": true,
         "message": null,                        # "no tags defined" without spec.tags,
                                                 # "no row has a tag" when they tag nothing
         "tags": [{"tag": "contains http", "sources": ["rule"], "rows": 300,
                   "row_share": 0.15, "errors": 150, "share_of_errors": 0.625,
                   "error_rate": 0.5, "rest_error_rate": 0.053, "gain": 0.067,
                   "mean_abs_error": null,       # regression only
                   "share_of_reviewed_errors": null}, ...],
         "untagged": {"rows": 1500, "errors": 60, "share_of_errors": 0.25},
         "reviewed": null | {"files": [...], "rows": 100, "errors": 100,
                             "file_rows": 100, "unmatched": 0},
         "sample": {"path": ".../error_sample.csv", "rows": 100, "seed": 0,
                    "columns": [...], "read_back": "..."} | null}

    ``share_of_reviewed_errors`` (only with ``files``) is the tag's share
    among the errors that were reviewed: when a person tagged a sample of the
    errors, that is the estimate of the tag's share of all errors.

    Gate values: ``max_share_of_errors`` (the largest share of errors of any
    tag; 0 without tags) and ``untagged_share`` (share of errors with no tag;
    1 without tags, 0 without errors). Comparable: ``error_rate`` per
    ``"tag <name>"`` (``mean_abs_error`` too for regression), lower is better.
    """

    name = "error_categories"
    description = "Share of the errors per tag (spec.tags) and a sample of errors to review and tag."
    gate_value_names = frozenset({"max_share_of_errors", "untagged_share"})
    options = {
        "sample_size": Hyperparameter(int, 100, min=0, help="Misclassified examples written to error_sample.csv."),
        "seed": Hyperparameter(int, None, min=0, help="Seed of the sample (default: spec.seed, else 0)."),
        "regression_threshold": Hyperparameter(
            float, None, min=0, help="Regression: an absolute error above this is an error (default: 90th percentile)."
        ),
    }

    # -- build -----------------------------------------------------------------

    def build(self, data: ReportInput) -> dict[str, Any]:
        import numpy as np

        rows = data.rows()
        split = data.analysis_split
        if rows.empty:
            return skipped(self.name, f"no labelled rows in split {split!r}")
        n = len(rows)
        loss = data.loss(rows).to_numpy(dtype=float)
        threshold = None
        if data.task == "classification":
            errors = loss > 0
            definition = "prediction != label"
        else:
            threshold = data.options.get("regression_threshold")
            if threshold is None:
                threshold = float(np.quantile(loss, 0.9))
                definition = f"absolute error > {threshold:.4g} (the 90th percentile)"
            else:
                definition = f"absolute error > {threshold:.4g} (option regression_threshold)"
            errors = loss > threshold
        total_errors = int(errors.sum())

        tags_spec = data.spec.get("tags") or None
        defined = bool(tags_spec and (tags_spec.get("rules") or tags_spec.get("column") or tags_spec.get("files")))
        tag_masks, sources, reviewed_mask, reviewed_info = _tag_masks(rows, tags_spec, data.spec)
        if reviewed_mask is not None:
            reviewed_info["rows"] = int(reviewed_mask.sum())
            reviewed_info["errors"] = int((errors & reviewed_mask).sum())
        names = list(tag_masks)
        tag_rows = []
        if names:
            matrix = np.column_stack([tag_masks[t] for t in names])
            tagged = matrix.sum(axis=0)
            tag_errors = errors.astype(np.int64) @ matrix.astype(np.int64)
            any_tag = matrix.any(axis=1)
            if reviewed_mask is not None:
                reviewed_errors = errors & reviewed_mask
                reviewed_tag_errors = reviewed_errors.astype(np.int64) @ matrix.astype(np.int64)
            if data.task == "regression":
                mean_abs = (loss @ matrix.astype(float)) / np.maximum(tagged, 1)
            overall_rate = total_errors / n
            for j, tag in enumerate(names):
                t_rows, t_err = int(tagged[j]), int(tag_errors[j])
                rest_rows = n - t_rows
                rest_rate = (total_errors - t_err) / rest_rows if rest_rows else overall_rate
                gain = max(0.0, t_err - t_rows * rest_rate) / n
                entry = {
                    "tag": tag,
                    "sources": sources[tag],
                    "rows": t_rows,
                    "row_share": t_rows / n,
                    "errors": t_err,
                    "share_of_errors": t_err / total_errors if total_errors else 0.0,
                    "error_rate": t_err / t_rows if t_rows else None,
                    "rest_error_rate": float(rest_rate),
                    "gain": float(gain),
                    "mean_abs_error": float(mean_abs[j]) if data.task == "regression" and t_rows else None,
                    "share_of_reviewed_errors": None,
                }
                if reviewed_mask is not None and reviewed_info["errors"]:
                    entry["share_of_reviewed_errors"] = int(reviewed_tag_errors[j]) / reviewed_info["errors"]
                tag_rows.append(entry)
            tag_rows.sort(key=lambda e: (-e["share_of_errors"], -e["gain"], e["tag"]))
        else:
            any_tag = np.zeros(n, dtype=bool)
        untagged_errors = int((errors & ~any_tag).sum())

        sample = self._write_sample(data, rows, errors, loss)
        return {
            "report": self.name,
            "split": split,
            "rows": n,
            "task": data.task,
            "errors": total_errors,
            "error_rate": total_errors / n,
            "error_definition": definition,
            "regression_threshold": None if threshold is None else float(threshold),
            "tags_defined": defined,
            "message": None if names else ("no row has a tag" if defined else "no tags defined"),
            "tags": tag_rows,
            "untagged": {
                "rows": int((~any_tag).sum()),
                "errors": untagged_errors,
                "share_of_errors": untagged_errors / total_errors if total_errors else 0.0,
            },
            "reviewed": reviewed_info,
            "sample": sample,
        }

    def _write_sample(
        self, data: ReportInput, rows: pd.DataFrame, errors: np.ndarray, loss: np.ndarray
    ) -> dict[str, Any] | None:
        import numpy as np

        size = int(data.options.get("sample_size", 100) or 0)
        if size <= 0:
            return None
        seed = data.options.get("seed")
        if seed is None:
            seed = data.spec.get("seed")
        seed = int(seed or 0)
        positions = np.flatnonzero(errors)
        if len(positions) > size:
            chosen = np.random.default_rng(seed).choice(len(positions), size=size, replace=False)
            positions = positions[np.sort(chosen)]
        picked = rows.iloc[positions]
        scores = [c for c in rows.columns if str(c).startswith("score_")]
        skip = set(RESERVED_COLUMNS) | set(scores)
        features = [c for c in data.features if c in rows.columns and c not in skip]
        sample = picked[["id", "split", "label", "prediction", *scores]].copy()
        if data.task != "classification":
            sample["abs_error"] = loss[positions]
        for column in features:
            sample["feature:tags" if column == "tags" else column] = picked[column].to_numpy()
        sample["tags"] = ""
        folder = Path(data.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = _free_sample_path(folder)
        sample.to_csv(path, index=False)
        return {
            "path": str(path),
            "rows": len(sample),
            "seed": seed,
            "columns": [str(c) for c in sample.columns],
            "read_back": (
                "fill in the tags column (separated by spec.tags.separator) and list this file "
                "(or a copy) in spec.tags.files; its tags then apply to those ids"
            ),
        }

    # -- presentation ----------------------------------------------------------

    def render(self, result: dict[str, Any], console: Console) -> None:
        from rich.table import Table
        from rich.text import Text

        if result.get("skipped"):
            console.print(f"{self.name}: skipped: {result['skipped']}")
            return
        console.print(
            f"[bold]Error categories[/bold] on {result['split']}: {result['errors']} errors in {result['rows']} rows "
            f"(error rate {result['error_rate']:.3f}; errors: {result['error_definition']})"
        )
        if not result["tags"]:
            console.print(f"{result['message']} (spec.tags: rules, a tags column, or reviewed files)")
        else:
            table = Table(title="Errors per tag (tags may overlap)")
            for header in ("tag", "rows", "% rows", "errors", "% of errors", "error rate", "rest", "gain"):
                table.add_column(header, justify="left" if header == "tag" else "right")
            for e in result["tags"]:
                table.add_row(
                    Text(e["tag"]),
                    str(e["rows"]),
                    f"{e['row_share']:.1%}",
                    str(e["errors"]),
                    f"{e['share_of_errors']:.1%}",
                    num(e["error_rate"]),
                    num(e["rest_error_rate"]),
                    f"{e['gain']:.4f}",
                )
            untagged = result["untagged"]
            table.add_row(
                UNTAGGED, str(untagged["rows"]), "", str(untagged["errors"]), f"{untagged['share_of_errors']:.1%}"
            )
            console.print(table)
        reviewed = result.get("reviewed")
        if reviewed:
            console.print(f"reviewed files: {reviewed['rows']} rows matched ({reviewed['errors']} errors)")
        sample = result.get("sample")
        if sample:
            console.print(f"sample of {sample['rows']} errors to review: {sample['path']}", markup=False)

    def html(self, result: dict[str, Any]) -> str:
        from mlrt import report_plots

        title = "<h2>Error categories</h2>"
        if result.get("skipped"):
            return f"{title}<p>Skipped: {html.escape(result['skipped'])}</p>"
        parts = [
            title,
            f"<p>{result['errors']} errors in {result['rows']} rows of {html.escape(result['split'])} "
            f"(error rate {result['error_rate']:.3f}; errors: {html.escape(result['error_definition'])}).</p>",
        ]
        if not result["tags"]:
            parts.append(
                f"<p>{html.escape(result['message'].capitalize())}: see <code>spec.tags</code> "
                "(rules, a tags column or reviewed files).</p>"
            )
        else:
            head = "".join(
                f"<th>{h}</th>"
                for h in ("tag", "rows", "% rows", "errors", "% of errors", "error rate", "rest error rate", "gain")
            )
            body = "".join(
                f"<tr><td>{html.escape(e['tag'])}</td><td>{e['rows']}</td><td>{e['row_share']:.1%}</td>"
                f"<td>{e['errors']}</td><td>{e['share_of_errors']:.1%}</td><td>{num(e['error_rate'])}</td>"
                f"<td>{num(e['rest_error_rate'])}</td><td>{e['gain']:.4f}</td></tr>"
                for e in result["tags"]
            )
            u = result["untagged"]
            body += (
                f"<tr><td>{UNTAGGED}</td><td>{u['rows']}</td><td></td><td>{u['errors']}</td>"
                f"<td>{u['share_of_errors']:.1%}</td><td></td><td></td><td></td></tr>"
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        labels = [e["tag"] for e in result["tags"]] + [UNTAGGED]
        values = [e["share_of_errors"] for e in result["tags"]] + [result["untagged"]["share_of_errors"]]
        parts.append(
            report_plots.bars(
                "error_categories",
                labels,
                values,
                title="Share of errors per tag",
                xlabel="share of errors",
                highlight=[False] * len(result["tags"]) + [True],
            )
        )
        sample = result.get("sample")
        if sample:
            parts.append(
                f"<p>A sample of {sample['rows']} errors to review: <code>{html.escape(sample['path'])}</code>; "
                "fill in its <code>tags</code> column and list it in <code>spec.tags.files</code>.</p>"
            )
        return "\n".join(parts)

    def findings(self, result: dict[str, Any]) -> list[Finding]:
        if result.get("skipped"):
            return []
        found = []
        if not result["tags"]:
            sample = result.get("sample")
            where = f" in {sample['path']}" if sample else ""
            found.append(
                Finding(
                    self.name,
                    f"{result['message']}: tag the sampled errors{where} and list the file in spec.tags.files",
                    0.0,
                    "info",
                )
            )
            return found
        for e in [e for e in result["tags"] if e["errors"]][:3]:
            text = (
                f"tag {e['tag']!r}: {e['share_of_errors']:.0%} of errors "
                f"(error rate {num(e['error_rate'], 2)} in {e['row_share']:.0%} of rows)"
            )
            found.append(Finding(self.name, text, e["gain"], "warning" if e["gain"] > 0 else "info"))
        return found

    def gate_values(self, result: dict[str, Any]) -> dict[str, float]:
        if result.get("skipped"):
            return {}
        shares = [e["share_of_errors"] for e in result["tags"]]
        untagged = result["untagged"]["share_of_errors"] if result["errors"] else 0.0
        return {"max_share_of_errors": float(max(shares, default=0.0)), "untagged_share": float(untagged)}

    def comparable(self, result: dict[str, Any]) -> list[Comparable]:
        if result.get("skipped"):
            return []
        out = []
        for e in result["tags"]:
            if e["error_rate"] is not None:
                out.append(Comparable(f"tag {e['tag']}", "error_rate", e["error_rate"], False))
            if e.get("mean_abs_error") is not None:
                out.append(Comparable(f"tag {e['tag']}", "mean_abs_error", e["mean_abs_error"], False))
        return out


# -- tagging -------------------------------------------------------------------


def _tag_masks(
    rows: pd.DataFrame, tags_spec: dict[str, Any] | None, spec: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray | None, dict[str, Any] | None]:
    """Boolean row masks per tag, the sources of each tag, the reviewed rows (files) and file stats."""

    masks: dict[str, np.ndarray] = {}
    sources: dict[str, list[str]] = {}

    def add(tag: str, mask: np.ndarray, source: str) -> None:
        masks[tag] = masks[tag] | mask if tag in masks else mask
        if source not in sources.setdefault(tag, []):
            sources[tag].append(source)

    if not tags_spec:
        return masks, sources, None, None
    for tag, rule in (tags_spec.get("rules") or {}).items():
        add(str(tag), _rule_mask(rows, str(tag), rule or {}, spec), "rule")
    separator = tags_spec.get("separator") or ","
    column = tags_spec.get("column")
    if column:
        if column not in rows.columns:
            raise ValueError(f"error_categories: spec.tags.column {column!r} is not a column of the data")
        for tag, mask in _split_tags(rows[column], separator).items():
            add(tag, mask, "column")
    reviewed, info = None, None
    files = tags_spec.get("files") or []
    if files:
        reviewed, file_masks, info = _file_tags(rows, files, separator, spec.get("working_dir"))
        for tag, mask in file_masks.items():
            add(tag, mask, "file")
    return masks, sources, reviewed, info


def _rule_mask(rows: pd.DataFrame, tag: str, rule: dict[str, Any], spec: dict[str, Any]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    where = f"error_categories: spec.tags.rules.{tag}"
    if rule.get("function"):
        return _function_mask(rows, rule["function"], where, spec.get("working_dir"))
    column = rule.get("column")
    if not column:
        raise ValueError(f"{where}: set column (the column the rule looks at)")
    if column not in rows.columns:
        raise ValueError(f"{where}: column {column!r} is not a column of the data")
    values = rows[column]
    if rule.get("contains") is not None or rule.get("regex") is not None:
        text = values.astype("string")
        if rule.get("contains") is not None:
            found = text.str.contains(str(rule["contains"]), regex=False)
        else:
            try:
                found = text.str.contains(str(rule["regex"]), regex=True)
            except Exception as exc:  # re.error and friends
                raise ValueError(f"{where}: bad regex {rule['regex']!r}: {exc}") from exc
        return found.fillna(False).to_numpy(dtype=bool)
    if rule.get("equals") is not None:
        target = rule["equals"]
        numeric_target = isinstance(target, int | float) and not isinstance(target, bool)
        if numeric_target and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return (values == target).fillna(False).to_numpy(dtype=bool)
        return (values.astype("string") == label_text(target)).fillna(False).to_numpy(dtype=bool)
    if rule.get("min") is not None or rule.get("max") is not None:
        number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        mask = ~np.isnan(number)
        if rule.get("min") is not None:
            mask &= number >= float(rule["min"])
        if rule.get("max") is not None:
            mask &= number <= float(rule["max"])
        return mask
    raise ValueError(f"{where}: set one of contains, regex, equals, min/max or function")


def _function_mask(rows: pd.DataFrame, target: str, where: str, working_dir: str | None) -> np.ndarray:
    import numpy as np
    import pandas as pd

    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{where}: function must be module:callable, got {target!r}")
    try:
        module = _import(module_name, working_dir)
        function = module
        for part in attribute.split("."):
            function = getattr(function, part)
    except Exception as exc:
        raise ValueError(f"{where}: cannot import function {target!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(function):
        raise ValueError(f"{where}: {target!r} is not callable")
    try:
        result = function(rows)
    except Exception as exc:
        raise ValueError(f"{where}: function {target!r} failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(result, pd.Series):
        if result.index.equals(rows.index):
            values = result
        elif len(result) == len(rows):
            values = pd.Series(result.to_numpy(), index=rows.index)
        else:
            values = result.reindex(rows.index)
    else:
        array = np.asarray(result)
        if array.shape != (len(rows),):
            raise ValueError(
                f"{where}: function {target!r} must return one boolean per row ({len(rows)}), got shape {array.shape}"
            )
        values = pd.Series(array, index=rows.index)
    try:
        return values.astype("boolean").fillna(False).to_numpy(dtype=bool)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: function {target!r} must return booleans: {exc}") from exc


def _import(module_name: str, working_dir: str | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not working_dir or exc.name != module_name.split(".")[0] or working_dir in sys.path:
            raise
    sys.path.insert(0, working_dir)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(working_dir)


def _parse(text: str, separator: str) -> list[str]:
    return [t.strip() for t in str(text).split(separator) if t.strip()]


def _split_tags(values: pd.Series, separator: str) -> dict[str, np.ndarray]:
    """Masks per tag of a column of ``separator``-separated tags (parsed once per distinct value)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(values)
    masks: dict[str, np.ndarray] = {}
    per_unique: dict[str, list[int]] = {}
    for index, text in enumerate(uniques):
        for tag in _parse(text, separator):
            per_unique.setdefault(tag, []).append(index)
    for tag, indices in per_unique.items():
        hit = np.zeros(len(uniques) + 1, dtype=bool)  # the extra slot: code -1 (missing)
        hit[indices] = True
        masks[tag] = hit[codes]
    return masks


def _file_tags(
    rows: pd.DataFrame, files: list[str], separator: str, working_dir: str | None
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Reviewed rows, masks per tag and stats from reviewed CSVs (``id``, ``tags``, optional ``split``)."""
    import numpy as np
    import pandas as pd

    ids = rows["id"].astype(str).to_numpy()
    keys = (rows["split"].astype(str) + KEY_SEPARATOR + rows["id"].astype(str)).to_numpy()
    ids_index, keys_index = pd.Index(ids), pd.Index(keys)
    reviewed = np.zeros(len(rows), dtype=bool)
    per_tag: dict[str, tuple[set[str], set[str]]] = {}
    file_rows = unmatched = 0
    paths = []
    for name in files:
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = Path(working_dir or ".") / path
        paths.append(str(path))
        where = f"error_categories: spec.tags.files: {path}"
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise ValueError(f"{where}: cannot read it: {type(exc).__name__}: {exc}") from exc
        missing = {"id", "tags"} - set(table.columns)
        if missing:
            raise ValueError(f"{where}: missing column(s) {', '.join(sorted(missing))} (it needs id and tags)")
        file_ids = table["id"].str.strip()
        file_splits = table["split"].str.strip() if "split" in table.columns else pd.Series("", index=table.index)
        with_split = (file_splits != "").to_numpy()
        file_keys = (file_splits + KEY_SEPARATOR + file_ids).to_numpy()
        file_rows += len(table)
        by_key = set(file_keys[with_split])
        by_id = set(file_ids.to_numpy()[~with_split])
        hits = keys_index.isin(by_key) | ids_index.isin(by_id)
        reviewed |= hits
        unmatched += int((~pd.Index(list(by_key), dtype=object).isin(keys_index)).sum())
        unmatched += int((~pd.Index(list(by_id), dtype=object).isin(ids_index)).sum())
        for key, id_, has_split, text in zip(
            file_keys, file_ids.to_numpy(), with_split, table["tags"].to_numpy(), strict=True
        ):
            for tag in _parse(text, separator):
                entry = per_tag.setdefault(tag, (set(), set()))
                (entry[0] if has_split else entry[1]).add(key if has_split else id_)
    masks = {tag: keys_index.isin(k) | ids_index.isin(i) for tag, (k, i) in per_tag.items()}
    info = {"files": paths, "file_rows": file_rows, "unmatched": int(unmatched), "rows": 0, "errors": 0}
    return reviewed, {t: np.asarray(m, dtype=bool) for t, m in masks.items()}, info


def _free_sample_path(folder: Path) -> Path:
    """``error_sample.csv``, unless it holds a person's tags: then the first free ``error_sample.N.csv``."""
    import pandas as pd

    path = folder / SAMPLE_FILE
    if not path.exists():
        return path
    try:
        existing = pd.read_csv(path, dtype=str, keep_default_na=False)
        reviewed = "tags" in existing.columns and (existing["tags"].str.strip() != "").any()
    except Exception:  # noqa: BLE001 - unreadable: not a review worth keeping
        reviewed = False
    if not reviewed:
        return path
    number = 1
    while (folder / f"error_sample.{number}.csv").exists():
        number += 1
    return folder / f"error_sample.{number}.csv"
