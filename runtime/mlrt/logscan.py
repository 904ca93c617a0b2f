"""Metrics from a worker's log, for programs that do not use the SDK.

``spec.metrics`` lists ``{name, regex}`` pairs; every line of the rank-0
worker's log that matches adds a point. The value is the group named
``value`` or else the first group; a group named ``step`` gives the step,
otherwise points of a metric are numbered 0, 1, 2... in log order
(continuing after the points an earlier attempt recorded).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any


class LogMetricScanner:
    """Reads new complete lines of one log file and extracts metric points."""

    def __init__(self, path: Path, patterns: list[dict[str, Any]], next_steps: dict[str, int]):
        self.path = path
        self.patterns = [(p["name"], re.compile(p["regex"])) for p in patterns]
        self.next_steps = dict(next_steps)
        self._offset = 0

    def scan(self) -> list[tuple[str, int, float, float]]:
        """Points ``(key, step, value, timestamp)`` found since the last scan."""
        if not self.patterns:
            return []
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        now = time.time()
        points = []
        for line in chunk[: end + 1].decode("utf-8", "replace").splitlines():
            for name, pattern in self.patterns:
                match = pattern.search(line)
                if not match:
                    continue
                groups = match.groupdict()
                try:
                    value = float(groups["value"] if groups.get("value") is not None else match.group(1))
                except ValueError:
                    continue
                if groups.get("step") is not None:
                    step = int(groups["step"])
                else:
                    step = self.next_steps.get(name, 0)
                self.next_steps[name] = step + 1
                points.append((name, step, value, now))
        return points


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (trimmed to ``limit`` characters), or ''."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""
