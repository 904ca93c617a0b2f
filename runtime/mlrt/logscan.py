"""Metrics from a worker's log, for programs that do not use the SDK, and the
SDK's own records when it tracks through the log.

``spec.metrics`` lists ``{name, regex}`` pairs; every line of the rank-0
worker's log that matches adds a point. The value is the group named
``value`` or else the first group; a group named ``step`` gives the step,
otherwise points of a metric are numbered 0, 1, 2... in log order
(continuing after the points an earlier attempt recorded).

With ``sdk_records`` the scanner also reads the ``##mlrt {json}`` lines the
SDK writes under ``MLRT_TRACKING_URI=log:`` (see :mod:`mlrt.sdk`): metric
batches, params and discards, returned in log order so a resumed worker's
discard lands before the points it logs again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from mlrt.sdk import LOG_RECORD_PREFIX


@dataclasses.dataclass
class LogRecords:
    """What one scan found, in log order: ``("metrics", points)``,
    ``("params", dict)`` and ``("discard", (keys, from_step))`` entries."""

    entries: list[tuple[str, Any]] = dataclasses.field(default_factory=list)

    def add_points(self, points: list[tuple[str, int, float, float]]) -> None:
        if self.entries and self.entries[-1][0] == "metrics":
            self.entries[-1][1].extend(points)
        else:
            self.entries.append(("metrics", list(points)))

    def __bool__(self) -> bool:
        return bool(self.entries)


class LogMetricScanner:
    """Reads new complete lines of one log file and extracts metric points and SDK records."""

    def __init__(
        self, path: Path, patterns: list[dict[str, Any]], next_steps: dict[str, int], *, sdk_records: bool = False
    ):
        self.path = path
        self.patterns = [(p["name"], re.compile(p["regex"])) for p in patterns]
        self.next_steps = dict(next_steps)
        self.sdk_records = sdk_records
        self.offset = 0
        """Bytes of the log already read (an adopting controller starts where the last one stopped)."""

    def scan(self) -> LogRecords:
        """Everything found since the last scan."""
        found = LogRecords()
        if not self.patterns and not self.sdk_records:
            return found
        try:
            if self.path.stat().st_size <= self.offset:
                return found  # nothing new: skip opening the file (every run, every pass)
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return found
        end = chunk.rfind(b"\n")
        if end < 0:
            return found
        self.offset += end + 1
        now = time.time()
        for line in chunk[: end + 1].decode("utf-8", "replace").splitlines():
            if self.sdk_records and LOG_RECORD_PREFIX in line:
                self._sdk_record(line, found)
                continue
            points = []
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
            if points:
                found.add_points(points)
        return found

    @staticmethod
    def _sdk_record(line: str, found: LogRecords) -> None:
        try:
            record = json.loads(line[line.index(LOG_RECORD_PREFIX) + len(LOG_RECORD_PREFIX) :])
        except ValueError:
            return  # a line that only looks like a record
        if "metrics" in record:
            found.add_points([(str(k), int(s), float(v), float(t)) for k, s, v, t in record["metrics"]])
        elif "params" in record:
            found.entries.append(("params", dict(record["params"])))
        elif "discard" in record:
            found.entries.append(("discard", (list(record["discard"]), int(record["from_step"]))))


def is_sdk_record(line: str) -> bool:
    """Whether a log line is an SDK record (``mlrt logs`` hides them)."""
    return LOG_RECORD_PREFIX in line


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log that is not an SDK record (trimmed to ``limit`` characters), or ''."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip() and not is_sdk_record(line)]
    return lines[-1][:limit] if lines else ""
