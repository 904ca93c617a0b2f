"""Checks and value matching shared by the built-in tuners."""

from __future__ import annotations

import json
import math
from typing import Any

from mlrt.tuning import Parameter


def space_problem(space: list[Parameter]) -> str | None:
    """A one-line problem with ``space`` that every built-in tuner shares, else None.

    A step is only for linear ranges: a log-scale range with a step has no
    natural grid (and Optuna cannot sample one), so it is refused everywhere
    rather than by some tuners only; switching ``tuner`` never needs the space
    rewritten. An int range on a log scale with no step (or step 1) is fine.
    """
    if not space:
        return "the search space is empty"
    seen: set[str] = set()
    for p in space:
        if p.name in seen:
            return f"parameter {p.name!r} appears twice in the search space"
        seen.add(p.name)
        if p.type == "categorical":
            if not p.values:
                return f"categorical parameter {p.name!r} has no values"
            continue
        if p.type not in ("int", "float"):
            return f"parameter {p.name!r} has unknown type {p.type!r}"
        if p.min is None or p.max is None:
            return f"{p.type} parameter {p.name!r} needs a min and a max"
        if p.min > p.max:
            return f"parameter {p.name!r} has min {p.min} above max {p.max}"
        if p.scale == "log" and p.min <= 0:
            return f"log-scale parameter {p.name!r} needs a min above 0"
        if p.step is not None:
            if p.step <= 0:
                return f"parameter {p.name!r} needs a step above 0"
            if p.type == "int" and p.step != int(p.step):
                return f"int parameter {p.name!r} needs a whole-number step"
            if p.scale == "log" and not (p.type == "int" and p.step == 1):
                return f"parameter {p.name!r} has a log scale and a step; a step is only for linear ranges"
        if p.type == "int" and (p.min != int(p.min) or p.max != int(p.max)):
            return f"int parameter {p.name!r} needs whole-number bounds"
    return None


def _canonical(value: Any) -> str:
    # JSON round trips turn tuples into lists; compare on a form both share.
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def category_index(values: tuple[Any, ...], value: Any) -> int | None:
    """Where ``value`` is among a categorical parameter's ``values`` (None if absent).

    An exact type match wins, so ``True`` is not taken for ``1``; otherwise
    values equal after a JSON round trip match (a stored ``[64, 64]`` is the
    listed ``(64, 64)``).
    """
    for i, candidate in enumerate(values):
        if type(candidate) is type(value) and candidate == value:
            return i
    key = _canonical(value)
    for i, candidate in enumerate(values):
        if _canonical(candidate) == key:
            return i
    return None


def as_number(p: Parameter, value: Any) -> int | float | None:
    """``value`` as ``p``'s type if it is a finite number of that type in range, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if p.type == "int":
        if value != int(value):
            return None
        value = int(value)
    else:
        value = float(value)
    assert p.min is not None and p.max is not None
    # A bound computed as min + k * step may overshoot by float drift; take it as the bound.
    slack = 1e-9 * max(abs(p.min), abs(p.max), 1e-300)
    if p.min - slack <= value < p.min:
        value = type(value)(p.min)
    elif p.max < value <= p.max + slack:
        value = type(value)(p.max)
    if not p.min <= value <= p.max:
        return None
    return value
