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
import os
import re
import time
from pathlib import Path
from typing import Any

from mlrt.logfile import cut_path, read_output, take_unreported_cut
from mlrt.sdk import LOG_RECORD_PREFIX

DEFAULT_MAX_LINE = 64 << 10


def max_line_bytes() -> int:
    """The longest log line the controller reads: ``MLRT_MAX_LINE_BYTES``, else 64 KiB (longer ones are skipped)."""
    try:
        return max(1024, int(os.environ.get("MLRT_MAX_LINE_BYTES") or DEFAULT_MAX_LINE))
    except ValueError:
        return DEFAULT_MAX_LINE


@dataclasses.dataclass
class LogRecords:
    """What one scan found, in log order: ``("metrics", points)``,
    ``("batch", (points, batch_id))`` (an SDK record: stored once per id),
    ``("params", dict)`` and ``("discard", (keys, from_step))`` entries, and
    ``("event", text)`` for a note on the run (a log cut by its size limit)."""

    entries: list[tuple[str, Any]] = dataclasses.field(default_factory=list)

    def add_points(self, points: list[tuple[str, int, float, float]]) -> None:
        if self.entries and self.entries[-1][0] == "metrics":
            self.entries[-1][1].extend(points)
        else:
            self.entries.append(("metrics", list(points)))

    def __bool__(self) -> bool:
        return bool(self.entries)


class LogMetricScanner:
    """Reads new complete lines of one log file and extracts metric points and SDK records.

    Memory stays bounded whatever the worker prints: the log is read in
    ``CHUNK`` pieces and a line longer than ``max_line`` bytes
    (``MLRT_MAX_LINE_BYTES``, 64 KiB by default) is skipped without being held.
    ``offset`` is an output position (:mod:`mlrt.logfile`), so a cut of the
    stored log does not make the scanner read anything twice; output cut
    before it was scanned is not scanned. Each log of ``logs`` (every worker's)
    whose size limit cut it is reported once as an ``("event", text)`` entry."""

    CHUNK = 1 << 20

    def __init__(
        self,
        path: Path,
        patterns: list[dict[str, Any]],
        next_steps: dict[str, int],
        *,
        sdk_records: bool = False,
        logs: list[Path] | None = None,
        max_line: int | None = None,
    ):
        self.path = path
        self.patterns = [(p["name"], re.compile(p["regex"])) for p in patterns]
        self.next_steps = dict(next_steps)
        self.sdk_records = sdk_records
        self.logs = logs or [path]
        self.max_line = min(max_line or max_line_bytes(), self.CHUNK)
        self.offset = 0
        """Output position of the log already read (an adopting controller starts where the last one stopped)."""
        self._skipping = False  # inside an over-long line: drop bytes up to its end

    def scan(self) -> LogRecords:
        """Everything found since the last scan (to the end of what the log holds now)."""
        found = LogRecords()
        for rank, log in enumerate(self.logs):
            cut = take_unreported_cut(log)
            if cut is not None:
                found.entries.append(("event", f"log of worker {rank} cut: {cut.describe()}"))
        if not self.patterns and not self.sdk_records:
            return found
        try:
            if self.path.stat().st_size <= self.offset and not cut_path(self.path).exists():
                return found  # nothing new: skip opening the file (every run, every pass)
        except FileNotFoundError:
            return found
        now = time.time()
        while True:
            part = read_output(self.path, self.offset, self.CHUNK)
            if part.start != self.offset:  # the log was cut past what was read; go on after the cut
                self.offset, self._skipping = part.start, False
            data = part.data
            if not data:
                return found
            if self._skipping:
                end = data.find(b"\n")
                if end < 0:
                    self.offset += len(data)
                    self._skipping = not part.cut_after
                    continue
                self.offset += end + 1
                data = data[end + 1 :]
                self._skipping = False
            end = data.rfind(b"\n")
            if end >= 0:
                self.offset += end + 1
                self._lines(data[: end + 1], found, now)
            rest = len(data) - end - 1
            if part.cut_after:  # a line the cut ended: never complete
                self.offset += rest
            elif rest >= self.max_line:
                self.offset += rest
                self._skipping = True
            elif len(part.data) < self.CHUNK:
                return found  # the end of the log: wait for the rest of its last line

    def _lines(self, chunk: bytes, found: LogRecords, now: float) -> None:
        for line in chunk.decode("utf-8", "replace").splitlines():
            if len(line) > self.max_line:
                continue
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

    @staticmethod
    def _sdk_record(line: str, found: LogRecords) -> None:
        try:
            record = json.loads(line[line.index(LOG_RECORD_PREFIX) + len(LOG_RECORD_PREFIX) :])
        except ValueError:
            return  # a line that only looks like a record
        if "metrics" in record:
            points = [(str(k), int(s), float(v), float(t)) for k, s, v, t in record["metrics"]]
            if "batch" in record:
                found.entries.append(("batch", (points, str(record["batch"]))))
            else:
                found.add_points(points)
        elif "params" in record:
            found.entries.append(("params", dict(record["params"])))
        elif "discard" in record:
            found.entries.append(("discard", (list(record["discard"]), int(record["from_step"]))))


def is_sdk_record(line: str) -> bool:
    """Whether a log line is an SDK record (``mlrt logs`` hides them)."""
    return LOG_RECORD_PREFIX in line


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log that is not an SDK record (trimmed to ``limit`` characters), or ''."""
    from mlrt.failures import tail_lines

    lines = tail_lines(path, 1, limit)
    return lines[0].strip() if lines else ""
