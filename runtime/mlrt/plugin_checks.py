"""Checks on what a plugin registers, made when its registry is built.

A schema is a mapping of setting name -> :class:`mlrt.algorithms.Hyperparameter`:
an algorithm's ``hyperparameters``, a tuner's or early stopper's or data
scheme's ``settings``, a report's ``options``. Each entry must have a
supported type (``float``, ``int``, ``str``, ``bool``), numeric bounds with
``min <= max`` (whole numbers for an ``int``), a positive ``min`` for a log
scale, choices of its type, and a default that its own check accepts. An item
with any problem is left out of its registry, so a bad default never reaches
a worker; ``mlrt plugins --check`` lists every problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from mlrt.algorithms import Hyperparameter

SCHEMA_ATTRIBUTES = {
    "algorithms": ("hyperparameters", "hyperparameter"),
    "tuners": ("settings", "setting"),
    "early_stoppers": ("settings", "setting"),
    "reports": ("options", "option"),
    "data_schemes": ("settings", "setting"),
}
"""Per registry kind: the class attribute holding the schema, and what one entry is called."""

TYPES = (float, int, str, bool)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def entry_problems(entry: Any) -> list[str]:
    """What is wrong with one schema entry (empty when nothing)."""
    if not isinstance(entry, Hyperparameter):
        return [f"must be an mlrt.algorithms.Hyperparameter, got {type(entry).__name__}"]
    if entry.type not in TYPES:
        shown = getattr(entry.type, "__name__", repr(entry.type))
        return [f"type must be float, int, str or bool, got {shown}"]
    problems = []
    for bound in ("min", "max"):
        value = getattr(entry, bound)
        if value is None:
            continue
        if entry.type not in (float, int):
            problems.append(f"{bound} is only for float and int, not {entry.type.__name__}")
        elif not _number(value) or not math.isfinite(value):
            problems.append(f"{bound} must be a finite number, got {value!r}")
        elif entry.type is int and value != int(value):
            problems.append(f"{bound} of an int must be a whole number, got {value!r}")
    if problems:
        return problems
    if entry.min is not None and entry.max is not None and entry.min > entry.max:
        problems.append(f"min ({entry.min}) is above max ({entry.max})")
    if entry.log and (entry.min is None or entry.min <= 0):
        problems.append(f"log scale needs min > 0, got {entry.min!r}")
    if entry.choices is not None:
        if not isinstance(entry.choices, (tuple, list)) or not entry.choices:
            problems.append("choices must be a non-empty tuple")
        else:
            bare = Hyperparameter(entry.type)
            problems += [f"choice {c!r} {why}" for c in entry.choices for why in [bare.check(c)[1]] if why]
    if entry.default is not None and not problems:
        _, why = entry.check(entry.default)
        if why:
            problems.append(f"default {entry.default!r} {why}")
    return problems


def schema_problems(schema: Any, noun: str) -> list[tuple[str, str]]:
    """``(where, problem)`` for every problem of ``schema``; ``where`` is `` setting 'step'``
    (empty when the schema itself is not a mapping)."""
    if not isinstance(schema, Mapping):
        return [("", f"its schema must be a mapping of name -> Hyperparameter, got {type(schema).__name__}")]
    found = []
    for key, entry in schema.items():
        if not isinstance(key, str) or not key:
            found.append(("", f"{noun} names must be non-empty strings, got {key!r}"))
            continue
        found += [(f" {noun} {key!r}", problem) for problem in entry_problems(entry)]
    return found


def item_problems(kind: str, item: Any) -> list[tuple[str, str]]:
    """``(where, problem)`` for every problem of one registered item of ``kind``."""
    if kind not in SCHEMA_ATTRIBUTES:
        return []
    attribute, noun = SCHEMA_ATTRIBUTES[kind]
    return schema_problems(getattr(item, attribute, {}), noun)
