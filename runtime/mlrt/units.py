"""Parsing the human units a job spec uses: durations, CPU counts and memory sizes."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
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


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds, or text like ``90s``, ``30m``, ``1h30m``, ``2d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 30m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration such as 90s, 30m or 1h30m, got {value!r}")
        seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration such as 90s, 30m or 1h30m, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


def parse_cpu(value: object) -> float:
    """CPU cores in ``value``: a number (``2``, ``0.5``) or millicores (``500m``)."""
    if isinstance(value, bool):
        raise ValueError("expected a CPU count such as 2, 0.5 or 500m")
    if isinstance(value, str) and value.endswith("m") and value[:-1].isdigit():
        cores = int(value[:-1]) / 1000
    else:
        try:
            cores = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"expected a CPU count such as 2, 0.5 or 500m, got {value!r}") from None
    if cores <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return cores


def parse_memory(value: object) -> int:
    """Bytes in a Kubernetes-style quantity: ``512Mi``, ``2Gi``, ``1G`` or a plain number."""
    match = _MEMORY.match(str(value).strip()) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"expected a memory size such as 512Mi or 2Gi, got {value!r}")
    size = int(float(match.group(1)) * _MEMORY_FACTOR[match.group(2)])
    if size <= 0:
        raise ValueError(f"must be a positive memory size, got {value!r}")
    return size
