"""Helpers the built-in reports share: skipped results, label encoding, formatting, tables.

Labels and predictions are compared as strings (:func:`label_text`: an
integer label ``1`` read back as the float ``1.0`` is the class ``"1"``), and
classes are listed in the order of :attr:`mlrt.reports.ReportInput.classes`
(the score-column order), followed by any other label or prediction seen in
the data (:func:`encode`).
"""

from __future__ import annotations

import html as _html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlrt.reports import ReportInput

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from rich.console import Console


def label_text(value: Any) -> str:
    """A class label as the string reports use: ``1``, ``1.0`` and ``np.int64(1)`` are all ``"1"``."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def natural_key(name: str) -> tuple[int, float, str]:
    """Sorts numbers numerically before other text: ``"2" < "10" < "a"``."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _factorize(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes per row and the label text of each code (one Python call per distinct value, not per row)."""
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes, [label_text(u) for u in uniques]


def encode(
    frames: Sequence[pd.DataFrame], classes: Sequence[Any]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Integer-code the ``label`` and ``prediction`` columns of each frame against one class list.

    Returns ``([(actual, predicted), ...], names)``: per frame two int arrays
    indexing ``names``, the class names (strings): ``classes`` first (so
    code ``i`` is score column ``i``), then any other label or prediction
    seen, sorted (numbers numerically).
    """
    import numpy as np

    factorized = [(_factorize(frame["label"]), _factorize(frame["prediction"])) for frame in frames]
    names: list[str] = []
    for cls in classes:
        text = label_text(cls)
        if text not in names:
            names.append(text)
    seen = {name for pair in factorized for _, uniques in pair for name in uniques}
    names += sorted(seen - set(names), key=natural_key)
    index = {name: i for i, name in enumerate(names)}
    encoded = []
    for pair in factorized:
        arrays = []
        for codes, uniques in pair:
            lookup = np.array([index[name] for name in uniques], dtype=np.int64)
            arrays.append(lookup[codes] if len(codes) else np.zeros(0, dtype=np.int64))
        encoded.append((arrays[0], arrays[1]))
    return encoded, names


def confusion_counts(actual: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """The ``k x k`` confusion matrix (rows actual, columns predicted) of two code arrays."""
    import numpy as np

    return np.bincount(actual * k + predicted, minlength=k * k).reshape(k, k)


def skipped(name: str, reason: str) -> dict[str, Any]:
    """The result of a report that does not apply to this input."""
    return {"report": name, "skipped": reason}


def is_skipped(result: dict[str, Any]) -> bool:
    """Whether ``result`` is a :func:`skipped` one."""
    return "skipped" in result


def render_skipped(name: str, result: dict[str, Any], console: Console) -> bool:
    """Print the skip reason; True when the result was skipped."""
    if is_skipped(result):
        console.print(f"[bold]{name}[/bold]: skipped ({result['skipped']})")
        return True
    return False


def html_skipped(title: str, result: dict[str, Any]) -> str:
    """The HTML section of a skipped report: its title and the reason."""
    return f"<h2>{_html.escape(title)}</h2>\n<p>Skipped: {_html.escape(str(result['skipped']))}</p>"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], flagged: Sequence[bool] | None = None) -> str:
    """A plain HTML table; every cell is escaped; ``flagged`` rows get ``class="flagged"``."""
    head = "".join(f"<th>{_html.escape(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="flagged"' if flagged and flagged[i] else ""
        cells = "".join(f"<td>{_html.escape(fmt(cell))}</td>" for cell in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats with ``digits`` decimals, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal, None as a dash."""
    return "-" if value is None else f"{100 * value:.1f}%"


def rich_table(title: str, headers: Sequence[str]):
    """A rich table with a left-aligned first column and right-aligned numbers."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    return table


def classification_rows(data: ReportInput) -> tuple[str, pd.DataFrame | None, str | None]:
    """``(split, labelled rows, None)`` of the analysis split, or ``(split, None, reason)``
    when a classification-only report cannot run on ``data``."""
    split = data.analysis_split
    if data.task != "classification":
        return split, None, f"{data.task} task; this report is for classification"
    rows = data.rows(split)
    if rows.empty:
        return split, None, f"no labelled rows in split {split!r}"
    return split, rows, None


def num(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, None as a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def float_or_none(value: Any) -> float | None:
    """``value`` as a float, None for NaN (a metric that could not be computed)."""
    value = float(value)
    return None if math.isnan(value) else value
