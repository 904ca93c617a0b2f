"""Metric points as a JSON list, written in chunks as they are read.

``mlrt metrics RUN [--key K] --json`` and the service's
``GET /api/v1/runs/{id}/metrics`` both print points this way, so a series
of millions of points is never held whole, as rows or as text."""

from __future__ import annotations

import json
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
        if (value - value) or (stamp - stamp):  # NaN or an infinity (x - x is 0.0 for any finite x)
            numbers = f'"value": {json.dumps(value)}, "timestamp": {json.dumps(stamp)}'
        else:  # repr is what json.dumps writes for a finite float, without its call overhead
            numbers = f'"value": {value!r}, "timestamp": {stamp!r}'
        lines.append(f'{separator}{{"key": {quoted}, "step": {step}, {numbers}}}')
        separator = ",\n"
        if len(lines) >= CHUNK_POINTS:
            yield "".join(lines)
            lines.clear()
    lines.append("[]\n" if separator == "[\n" else "\n]\n")
    yield "".join(lines)
