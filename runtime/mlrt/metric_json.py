"""Metric points as a JSON list, written in chunks as they are read.

``mlrt metrics RUN [--key K] --json`` and the service's
``GET /api/v1/runs/{id}/metrics`` both print points this way, so a series
of millions of points is never held whole, as rows or as text."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from operator import itemgetter

import orjson

CHUNK_POINTS = 10_000
"""Points per chunk of text."""

Point = tuple[str, int, float, float]


def points_json(points: Iterable[Point]) -> Iterator[str]:
    """Chunks of the JSON list of ``(key, step, value, timestamp)`` points, one point a line,
    each ``{"key": ..., "step": ..., "value": ..., "timestamp": ...}``; the chunks joined
    are what :func:`json.dumps` would give for the list (up to whitespace), NaN included.
    Each float is written in its shortest form that reads back as the same float."""
    separator = "[\n"
    source = iter(points)
    while chunk := list(itertools.islice(source, CHUNK_POINTS)):
        yield separator + _chunk_text(chunk)
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


def _chunk_text(chunk: list[Point]) -> str:
    """The lines of one chunk's points, joined by ``,\\n``.

    orjson writes them (a third of the time of writing each float in Python) when every value
    and timestamp is finite, and no key holds ``},{`` (where one point's line ends and the next
    begins); otherwise they are written point by point, NaN and the infinities as
    :func:`json.dumps` writes them (``NaN``, ``Infinity``), which orjson would make ``null``."""
    if _finite(chunk) and not any("},{" in key for key in set(map(itemgetter(0), chunk))):
        rows = [{"key": key, "step": step, "value": value, "timestamp": stamp} for key, step, value, stamp in chunk]
        return orjson.dumps(rows)[1:-1].replace(b"},{", b"},\n{").decode()
    names: dict[str, str] = {}
    lines = []
    for name, step, value, stamp in chunk:
        quoted = names.get(name) or names.setdefault(name, json.dumps(name))
        lines.append(f'{{"key":{quoted},"step":{step},"value":{json.dumps(value)},"timestamp":{json.dumps(stamp)}}}')
    return ",\n".join(lines)


def _finite(chunk: list[Point]) -> bool:
    """Whether every value and timestamp of ``chunk`` is a finite number (their exact sums are
    finite; a sum too large for a float counts as not finite, and takes the slower path)."""
    try:
        return math.isfinite(math.fsum(map(itemgetter(2), chunk))) and math.isfinite(
            math.fsum(map(itemgetter(3), chunk))
        )
    except (OverflowError, ValueError):  # ValueError: both infinities among them
        return False
