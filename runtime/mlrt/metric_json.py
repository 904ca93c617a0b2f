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
_POINT_FIELDS = {"key", "step", "value", "timestamp"}


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


def points_of_lines(lines: Iterable[str]) -> Iterator[Point]:
    """The points of a list :func:`points_json` wrote, from its lines as they arrive (each point
    is one line, since JSON escapes a newline within a string). Raises ``ValueError`` when a
    line is not a point, or the list never ends (an answer cut off on its way)."""
    ended = False
    for line in lines:
        text = line.strip()
        if text in ("[", ""):
            continue
        if text in ("]", "[]"):
            ended = True
            continue
        if ended:
            raise ValueError(f"text after the end of the list: {text[:80]!r}")
        text = text.removesuffix(",")
        try:
            point = orjson.loads(text)
        except orjson.JSONDecodeError:
            point = json.loads(text)  # NaN and the infinities, which orjson does not read
        if not isinstance(point, dict) or not _POINT_FIELDS <= point.keys():
            raise ValueError(f"not a point: {text[:80]!r}")
        yield point["key"], point["step"], point["value"], point["timestamp"]
    if not ended:
        raise ValueError("the list of points ends early")


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
