"""Metric points as a JSON list, written in chunks as they are read.

``mlrt metrics RUN [--key K] --json`` and the service's
``GET /api/v1/runs/{id}/metrics`` both print points this way, so a series
of millions of points is never held whole, as rows or as text."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator

CHUNK_POINTS = 10_000
"""Points per chunk of text."""


def points_json(points: Iterable[tuple[str, int, float, float]]) -> Iterator[str]:
    """Chunks of the JSON list of ``(key, step, value, timestamp)`` points, one point a line,
    each ``{"key": ..., "step": ..., "value": ..., "timestamp": ...}``; the chunks joined
    are what :func:`json.dumps` would give for the list (up to whitespace), NaN included."""
    names: dict[str, str] = {}
    lines: list[str] = []
    separator = "[\n"
    for name, step, value, stamp in points:
        quoted = names.get(name) or names.setdefault(name, json.dumps(name))
        lines.append(
            f'{separator}{{"key": {quoted}, "step": {step}, "value": {_number(value)}, "timestamp": {_number(stamp)}}}'
        )
        separator = ",\n"
        if len(lines) >= CHUNK_POINTS:
            yield "".join(lines)
            lines.clear()
    lines.append("[]\n" if separator == "[\n" else "\n]\n")
    yield "".join(lines)


def _number(value: float) -> str:
    """``value`` as :func:`json.dumps` writes it, at the speed of ``repr``."""
    return repr(value) if math.isfinite(value) else json.dumps(value)
