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
    from rich.console import Console

    return Console(highlight=False)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table; ``None`` cells show as '-'."""
    from rich.table import Table

    tbl = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        tbl.add_column(column, overflow="fold")
    for row in rows:
        tbl.add_row(*("-" if cell is None else str(cell) for cell in row))
    console().print(tbl)


STATE_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "FAILED_GATE": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "STARTING": "cyan",
    "QUEUED": "dim",
}


def styled_state(state: str) -> str:
    """Rich markup for a state name."""
    return f"[{STATE_STYLE.get(state, '')}]{state}[/]"


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
