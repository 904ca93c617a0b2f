"""Printing for the CLI: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (datetimes and paths as strings)."""
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def console():
    """A rich console for stdout: colours and the terminal's width on a terminal, plain text
    otherwise (pipes, files, logs)."""
    from rich.console import Console

    return Console(highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table; ``None`` cells show as '-'.

    Cells are printed as they are, never read as rich markup (a reason or a metric
    name may hold brackets); a cell that should be styled is a ``rich.text.Text``
    (see :func:`styled_state`). The first column (run ids, names) never wraps. When
    stdout is not a terminal the table gets the width it needs, so a pipe or a log
    file receives whole lines and whole ids, not a table cut at 80 columns."""
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    out = console()
    # In a pipe the title is a line of its own: a table's title wraps at the table's width.
    tbl = Table(title=title if out.is_terminal else None, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        tbl.add_column(Text(column), overflow="fold", no_wrap=index == 0)
    for row in rows:
        tbl.add_row(*(cell if isinstance(cell, Text) else Text("-" if cell is None else str(cell)) for cell in row))
    if not out.is_terminal:
        out.width = max(out.width, Measurement.get(out, out.options.update(max_width=1 << 20), tbl).maximum)
        if title:
            out.print(Text(title), soft_wrap=True)
    out.print(tbl)


def state_style(state: str) -> str:
    """The colour of a run state, derived from :class:`~mlrt.states.RunState` so every state
    has one: green for SUCCEEDED, red for a terminal failure, yellow for a run stopped on
    purpose (cancelled, pruned), dim while queued, cyan while it is active; none for a name
    this version does not know (a newer service's)."""
    from mlrt.states import RunState

    try:
        known = RunState(state)
    except ValueError:
        return ""
    if known is RunState.SUCCEEDED:
        return "green"
    if known in (RunState.CANCELLED, RunState.PRUNED):
        return "yellow"
    if known.is_terminal():
        return "red"
    return "dim" if known is RunState.QUEUED else "cyan"


def styled_state(state: str):
    """A state name as a styled ``rich.text.Text`` (a table cell or part of a line)."""
    from rich.text import Text

    return Text(str(state), style=state_style(str(state)))


def seconds(value: float | None) -> str | None:
    """``12.3s``, ``4m05s`` or ``1h02m`` for a duration."""
    if value is None:
        return None
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def number(value: float) -> str:
    """A metric value with 4 significant digits."""
    return f"{value:.4g}"
