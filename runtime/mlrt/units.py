"""Parsing the human units a job spec uses: durations, CPU counts and memory sizes.

Each parser refuses NaN, infinity and values above an optional ``maximum``
(see :mod:`mlrt.limits` for the maxima the spec uses), so a value it returns
is safe for clock arithmetic and resource requests.
"""

from __future__ import annotations

import math
import re
from typing import Any


def shown(value: Any) -> str:
    """:func:`mlrt.limits.shown`, imported only for a problem line: that module loads PyYAML,
    which the commands that only read a unit (the plugins load this module) need not pay for."""
    from mlrt.limits import shown

    return shown(value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CPU_MILLI = re.compile(r"^(\d+)m$", re.ASCII)
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$", re.ASCII)
_MEMORY_FACTOR = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest whole unit: ``365d``, ``1h``, ``90s``."""
    for unit in ("d", "h", "m"):
        size = _DURATION_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def format_bytes(size: int) -> str:
    """``size`` in the largest whole binary unit: ``64Ti``, ``512Mi``, ``1000``."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size >= _MEMORY_FACTOR[unit] and size % _MEMORY_FACTOR[unit] == 0:
            return f"{size // _MEMORY_FACTOR[unit]}{unit}"
    return str(size)


def parse_duration(value: object, maximum: float | None = None) -> float:
    """Seconds in ``value``: a number of seconds, or text like ``90s``, ``30m``, ``1h30m``, ``2d``;
    positive, finite and at most ``maximum`` seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 30m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration such as 90s, 30m or 1h30m, got {shown(value)}")
        seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration such as 90s, 30m or 1h30m, got {shown(value)}")
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration, got {shown(value)}")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"must be at most {format_duration(maximum)}, got {shown(value)}")
    return seconds


def parse_cpu(value: object, maximum: float | None = None) -> float:
    """CPU cores in ``value``: a number (``2``, ``0.5``) or millicores (``500m``); at most ``maximum``."""
    if isinstance(value, bool):
        raise ValueError("expected a CPU count such as 2, 0.5 or 500m")
    milli = _CPU_MILLI.match(value) if isinstance(value, str) else None
    try:
        cores = float(milli.group(1)) / 1000 if milli else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"expected a CPU count such as 2, 0.5 or 500m, got {shown(value)}") from None
    if math.isnan(cores) or cores <= 0:
        raise ValueError(f"must be > 0, got {shown(value)}")
    if maximum is not None and cores > maximum:
        raise ValueError(f"must be at most {maximum:g} cores, got {shown(value)}")
    return cores


def parse_memory(value: object, maximum: int | None = None) -> int:
    """Bytes in a Kubernetes-style quantity: ``512Mi``, ``2Gi``, ``1G`` or a plain number; at most ``maximum``."""
    match = _MEMORY.match(str(value).strip()) if isinstance(value, (str, int, float)) else None
    if not match or isinstance(value, bool):
        raise ValueError(f"expected a memory size such as 512Mi or 2Gi, got {shown(value)}")
    size = float(match.group(1)) * _MEMORY_FACTOR[match.group(2)]
    if maximum is not None and size > maximum:
        raise ValueError(f"must be at most {format_bytes(maximum)}, got {shown(value)}")
    if not size >= 1:
        raise ValueError(f"must be a positive memory size, got {shown(value)}")
    return int(size)
