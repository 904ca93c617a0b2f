"""The ``grid`` tuner: every combination of a discrete space, in a fixed order."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from mlrt.tuning import Goal, Parameter, TrialResult, Tuner
from mlrt_tuners.space import as_number, category_index, space_problem

MAX_COMBINATIONS = 100_000


def _snap(value: float) -> float:
    # min + i * step drifts (0.1 * 3 == 0.30000000000000004); twelve significant
    # digits give the value a person would write, and the same one every time.
    return float(f"{value:.12g}")


def _float_count(p: Parameter) -> int:
    assert p.min is not None and p.max is not None and p.step
    return math.floor((p.max - p.min) / p.step + 1e-9) + 1


def _count(p: Parameter) -> int:
    if p.type == "categorical":
        return len(p.values)
    assert p.min is not None and p.max is not None
    if p.type == "int":
        return (int(p.max) - int(p.min)) // int(p.step or 1) + 1
    return _float_count(p)


def _value(p: Parameter, i: int) -> Any:
    if p.type == "categorical":
        return p.values[i]
    assert p.min is not None and p.max is not None
    if p.type == "int":
        return int(p.min) + i * int(p.step or 1)
    assert p.step
    return min(_snap(p.min + i * p.step), float(p.max))


def _index(p: Parameter, value: Any) -> int | None:
    """Which grid point of ``p`` ``value`` is, or None when it is none of them."""
    if p.type == "categorical":
        return category_index(p.values, value)
    number = as_number(p, value)
    if number is None:
        return None
    assert p.min is not None
    step = p.step or 1
    i = round((number - p.min) / step)
    if not 0 <= i < _count(p):
        return None
    point = _value(p, i)
    return i if math.isclose(point, number, rel_tol=1e-9, abs_tol=1e-12) else None


class GridTuner(Tuner):
    """Exhaustive search: every combination of the parameters' values, once each.

    Each parameter contributes a finite list of values:

    - ``categorical``: its ``values``, in the order listed;
    - ``int``: ``min``, ``min + step``, ... up to ``max`` (``step`` defaults to 1);
    - ``float``: the same with its ``step``, which a float needs here (a
      continuous range has no grid). Values are rounded to twelve significant
      digits so ``0.1 * 3`` is ``0.3``.

    The scale does not matter to a grid: it only says how a sampler spreads
    its draws. (A log scale with a step is refused by every built-in tuner.)

    Combinations come in ``itertools.product`` order over the parameters as
    the space lists them: the first parameter changes slowest, the last
    fastest. ``suggest`` returns None once every combination has been handed
    out. Combinations already in ``history`` (any terminal state: a failed
    point is not retried) are skipped, so a resumed job finishes the grid and
    a warm start from a job over the same grid covers only what is left.
    ``check`` refuses grids of more than 100,000 combinations. The goal and
    seed play no part; ``parallel`` does not change the order.
    """

    name: ClassVar[str] = "grid"
    description: ClassVar[str] = "Every combination of discrete values, in a fixed order"

    def __init__(self) -> None:
        self._space: list[Parameter] = []
        self._counts: list[int] = []
        self._total = 0
        self._position = 0
        self._done: set[tuple[int, ...]] = set()

    def check(self, space: list[Parameter]) -> str | None:
        """Refuse float ranges without a step and grids above 100,000 combinations."""
        problem = space_problem(space)
        if problem:
            return problem
        for p in space:
            if p.type == "float" and p.step is None:
                return f"grid needs values or a step for float parameter {p.name!r}"
        total = math.prod(_count(p) for p in space)
        if total > MAX_COMBINATIONS:
            return (
                f"grid has {total:,} combinations, more than {MAX_COMBINATIONS:,}; use coarser steps or another tuner"
            )
        return None

    def start(self, space: list[Parameter], goal: Goal, seed: int, parallel: int, history: list[TrialResult]) -> None:
        """Size the grid and mark the combinations ``history`` already covers."""
        problem = self.check(space)
        if problem:
            raise ValueError(problem)
        self._space = list(space)
        self._counts = [_count(p) for p in space]
        self._total = math.prod(self._counts)
        self._position = 0
        self._done = set()
        for result in history:
            key = self._key(result.params)
            if key is not None:
                self._done.add(key)

    def suggest(self, number: int) -> dict[str, Any] | None:
        """The next combination not yet suggested nor in history, or None when none is left."""
        while self._position < self._total:
            key = self._combination(self._position)
            self._position += 1
            if key in self._done:
                continue
            self._done.add(key)
            return {p.name: _value(p, i) for p, i in zip(self._space, key, strict=True)}
        return None

    def observe(self, result: TrialResult) -> None:
        """Nothing to learn; a combination counts as done once suggested.

        A result for a combination this tuner did not hand out (another
        process ran it) is marked done so it is not suggested again."""
        key = self._key(result.params)
        if key is not None:
            self._done.add(key)

    def _combination(self, position: int) -> tuple[int, ...]:
        # Mixed-radix decoding of itertools.product order: the last parameter
        # varies fastest. A counter, unlike an iterator, deep-copies cleanly.
        indices = []
        for count in reversed(self._counts):
            position, i = divmod(position, count)
            indices.append(i)
        return tuple(reversed(indices))

    def _key(self, params: dict[str, Any]) -> tuple[int, ...] | None:
        if set(params) != {p.name for p in self._space}:
            return None
        indices = []
        for p in self._space:
            i = _index(p, params[p.name])
            if i is None:
                return None
            indices.append(i)
        return tuple(indices)
