"""The bounds every spec is parsed and validated within, and the YAML loader that enforces them.

A spec reaches mlrt from a file (``mlrt validate``/``submit``), from ``--set``
overrides and from the API (``/api/v1/jobs``, ``/api/v1/validate``). All of
them go through :func:`load_yaml` and then :func:`document_problems`, so a
hostile spec is refused with one line per problem (exit 2, HTTP 4xx) before
anything is created, and the largest spec these limits accept validates in
well under a second.

=============================================  ================================  ========================
What                                           Limit                             Where it is checked
=============================================  ================================  ========================
Spec text (file, API body's ``spec``)          1 MiB; ``MLRT_MAX_SPEC_BYTES``    before reading it all
                                               (bytes, or ``512Ki``, ``2Mi``)
Encoding                                       UTF-8, no NUL or control bytes    before parsing
YAML nodes after alias expansion               10,000                            while composing
YAML nesting depth (aliases expanded)          32 levels                         while composing
Aliases that contain themselves                refused                           while composing
Documents in one file                          1                                 while composing
YAML types                                     mappings, lists, strings,         while constructing
                                               numbers, booleans, null (dates
                                               stay strings; ``!!binary``,
                                               ``!!set``, ``!!omap``,
                                               ``!!pairs`` refused)
Integers anywhere                              -2**63 .. 2**63-1                 while constructing
Floats anywhere (hyperparameters,              finite: ``.nan``, ``.inf`` and    whole document
report options, tuning ranges ...)             ``1.0e+999`` refused
Any string value                               65,536 characters                 whole document
Any mapping key                                253 characters                    whole document
Any list or mapping                            1,000 entries                     whole document
``--set`` overrides                            256 per spec, key depth 32        before applying
Out-of-bounds values listed                    20, then one line with the count  whole document
``metadata.labels``                            64 entries                        schema
``spec.env``                                   256 entries                       schema
``spec.data`` channels                         32                                schema
``spec.hyperparameters``                       256                               schema
``spec.metrics`` patterns                      64; regex 1,000 characters,       schema
                                               no nested unbounded repeats
``spec.compute.workers``                       1 .. 1,024                        schema
``spec.compute.cpu`` (per worker)              > 0 .. 1,024 cores                schema
``spec.compute.memory`` (per worker)           > 0 .. 64Ti                       schema
``spec.compute.gpus`` (per worker)             0 .. 64                           schema
``spec.retries.max``                           0 .. 20                           schema
``stopping.max_runtime``,                      365d                              schema
``completion.max_runtime``,
``kubernetes.ttl_after_finished``
``stopping.grace_period``,                     7d                                schema
``compute.rendezvous_timeout``,
``kubernetes.schedule_timeout``
``retries.backoff``                            1h (doubled per retry)            schema
Epochs, steps, patience, ``bins``,             1,000,000,000                     schema
toleration seconds
Tuning ``max_trials``,                         10,000                            schema
``max_failed_trials``,
``completion.no_improvement_trials``
Tuning ``parallel_trials``                     256                               schema
Tuning ``parameters``                          64; ``values`` 1,000;             schema
                                               ``algorithms`` 64; ``min``,
                                               ``max``, ``step`` within
                                               +-2**53; the ``algorithm``
                                               parameter: 64 choices
Tuning ``warm_start``                          100 runs                          schema
Values of an algorithm's or report's           finite (NaN, infinity refused),   hyperparameter schema
hyperparameter schema (also from tuners)       within the schema's min/max
Source bundle (``spec.source``): its files     20 MiB;                           packing, and unpacking
added up                                       ``MLRT_MAX_SOURCE_BYTES``         (mlrt.bundles)
Source bundle files; one path's length         10,000; 1,024 characters          packing and unpacking
=============================================  ================================  ========================

Durations are at most what a ``timedelta`` added to now can hold many times
over, so no duration can overflow the controller's clock arithmetic.
"""

from __future__ import annotations

import math
import os
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor

MAX_SPEC_BYTES = 1024 * 1024
"""Default size limit of a spec's text; ``MLRT_MAX_SPEC_BYTES`` overrides it."""
MAX_NODES = 10_000
"""YAML nodes a spec may expand to (an alias counts as every node it repeats)."""
MAX_DEPTH = 32
"""Nesting levels of lists and mappings, aliases expanded."""
MAX_INT = 2**63 - 1
"""Largest magnitude of an integer anywhere in a spec (a signed 64-bit integer)."""
MAX_STRING_CHARS = 65_536
"""Characters of any string value."""
MAX_KEY_CHARS = 253
"""Characters of any mapping key (the longest Kubernetes name)."""
MAX_ITEMS = 1_000
"""Entries of any list or mapping."""
MAX_OVERRIDES = 256
"""``--set`` overrides per spec."""
MAX_PROBLEMS = 20
"""Out-of-bounds values reported one per line; the rest are counted in one more line."""

MAX_LABELS = 64
MAX_ENV = 256
MAX_CHANNELS = 32
MAX_HYPERPARAMETERS = 256
MAX_METRICS = 64
MAX_REGEX_CHARS = 1_000

MAX_WORKERS = 1_024
MAX_CPU = 1_024.0
MAX_MEMORY = 64 * 2**40
MAX_GPUS = 64
MAX_RETRIES = 20
MAX_PRIORITY = 1000
"""``spec.priority`` lies in [-MAX_PRIORITY, MAX_PRIORITY]; higher runs are admitted first."""
MAX_COUNT = 1_000_000_000
"""Epochs, steps, patience, quantile bins and toleration seconds."""

DAY = 86_400.0
MAX_RUN_DURATION = 365 * DAY
"""``max_runtime`` of a run or a search, and how long a finished Kubernetes Job is kept."""
MAX_WAIT_DURATION = 7 * DAY
"""Grace period, rendezvous and scheduling timeouts."""
MAX_BACKOFF = 3_600.0
"""First retry delay (it doubles per retry: at most ~60 years after 20 retries, still a valid date)."""

MAX_TRIALS = 10_000
MAX_PARALLEL_TRIALS = 256
MAX_PARAMETERS = 64
MAX_VALUES = 1_000
MAX_ALGORITHM_CHOICES = 64
MAX_PARAMETER_BOUND = 2.0**53
"""Largest magnitude of a tuning range's min/max (every integer up to it is exact as a float)."""
MAX_WARM_START = 100

MAX_SOURCE_BYTES = 20 * 2**20
"""Default limit of a source bundle's files, all together (``MLRT_MAX_SOURCE_BYTES`` overrides it)."""
MAX_SOURCE_FILES = 10_000
"""Files in one source bundle."""
MAX_SOURCE_PATH_CHARS = 1_024
"""Characters of one path inside a source bundle."""


def cut(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters for a problem line: a hostile value may be a megabyte long."""
    return text if len(text) <= width else text[: width - 3] + "..."


def shown(value: Any) -> str:
    """``repr(value)`` cut short for a problem line (see :func:`cut`)."""
    return cut(repr(value))


class LimitError(yaml.MarkedYAMLError):
    """A spec's YAML exceeds a limit of this module; ``problem_mark`` says where."""


def max_spec_bytes() -> int:
    """The spec size limit in bytes: ``MLRT_MAX_SPEC_BYTES`` (``1048576``, ``512Ki``, ``2Mi``), else 1 MiB.

    Raises ValueError naming the variable when it is not a positive size."""
    from mlrt.units import parse_memory

    text = os.environ.get("MLRT_MAX_SPEC_BYTES", "").strip()
    if not text:
        return MAX_SPEC_BYTES
    try:
        return parse_memory(text)
    except ValueError:
        raise ValueError(
            f"MLRT_MAX_SPEC_BYTES: expected a size in bytes such as 1048576 or 2Mi, got {text!r}"
        ) from None


def max_source_bytes() -> int:
    """The source bundle limit in bytes: ``MLRT_MAX_SOURCE_BYTES`` (``20971520``, ``64Mi``), else 20 MiB.

    It bounds the files a bundle holds (their sizes added up) when it is packed
    and again when it is unpacked, so a bundle that decompresses to more is refused.
    Raises ValueError naming the variable when it is not a positive size."""
    from mlrt.units import parse_memory

    text = os.environ.get("MLRT_MAX_SOURCE_BYTES", "").strip()
    if not text:
        return MAX_SOURCE_BYTES
    try:
        return parse_memory(text)
    except ValueError:
        raise ValueError(
            f"MLRT_MAX_SOURCE_BYTES: expected a size in bytes such as 20971520 or 64Mi, got {text!r}"
        ) from None


def check_text(data: bytes) -> str:
    """``data`` decoded as UTF-8 text, or ValueError: a binary file, or where the first bad byte is."""
    if b"\x00" in data:
        raise ValueError("a binary file (it holds NUL bytes), not a YAML spec")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) is not valid UTF-8"
        ) from None


class _BoundedComposer(Composer):
    """Composes nodes while counting them as if every alias were copied out, and their depth."""

    def __init__(self) -> None:
        Composer.__init__(self)  # not super(): with the pure-Python SafeLoader, Composer comes after the loader
        self._spent = 0
        self._depth = 0
        self._heights: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)

    def _spend(self, nodes: int, height: int, mark: Any) -> None:
        self._spent += nodes
        if self._spent > MAX_NODES:
            raise LimitError(None, None, f"more than {MAX_NODES} values once aliases are expanded", mark)
        if self._depth + height > MAX_DEPTH:
            raise LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self._heights:
                    raise LimitError(
                        None, None, f"alias *{event.anchor} is inside the value it names", event.start_mark
                    )
                size, height = self._heights[id(target)]
                self._spend(size, height, event.start_mark)
            return super().compose_node(parent, index)
        start = self._spent
        collection = not self.check_event(yaml.ScalarEvent)
        self._spend(1, int(collection), self.peek_event().start_mark)
        self._depth += collection
        node = super().compose_node(parent, index)
        self._depth -= collection
        self._heights[id(node)] = (self._spent - start, self._subtree_height(node))
        return node

    def _subtree_height(self, node: Any) -> int:
        if isinstance(node, yaml.ScalarNode):
            return 0
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        return 1 + max((self._heights[id(child)][1] for child in children), default=0)


def _refuse_tag(loader: SafeConstructor, node: Any) -> Any:
    tag = node.tag.rsplit(":", 1)[-1]
    raise LimitError(
        None, None, f"!!{tag} values are not allowed in a spec (use a string, list or mapping)", node.start_mark
    )


def _bounded_int(loader: SafeConstructor, node: Any) -> int:
    text = str(node.value)
    if len(text.replace("_", "").lstrip("+-")) <= 60:
        value = SafeConstructor.construct_yaml_int(loader, node)
        if -MAX_INT - 1 <= value <= MAX_INT:
            return value
    raise LimitError(None, None, f"integer out of range (at most {MAX_INT}, 19 digits)", node.start_mark)


_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecLoader(_BoundedComposer, _BASE):  # type: ignore[misc, valid-type]
    """``yaml.SafeLoader`` (libyaml's where installed) within this module's limits.

    libyaml makes the events; composing stays in Python so that every node is
    counted as it is made and a bomb stops at :data:`MAX_NODES`. Without
    libyaml the pure-Python parser does the same, about four times slower.

    Dates stay strings; integers must fit 64 bits; ``!!binary``, ``!!set``,
    ``!!omap`` and ``!!pairs`` are refused, so a spec holds only what JSON can.
    A key written ``on``, ``off``, ``yes`` or ``no`` stays that word (YAML 1.1 reads
    them as booleans): ``retries: {on: any}`` means the field ``on``."""

    def __init__(self, stream: str) -> None:
        _BASE.__init__(self, stream)
        _BoundedComposer.__init__(self)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        for key, _ in node.value:
            if (
                isinstance(key, yaml.ScalarNode)
                and key.tag == "tag:yaml.org,2002:bool"
                and not key.style  # plain (libyaml says "", the Python parser None), not quoted
                and key.value.lower() not in ("true", "false")
            ):
                key.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)


SpecLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)
for _tag in ("binary", "set", "omap", "pairs"):
    SpecLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def load_yaml(text: str) -> Any:
    """Parse one YAML document within the limits; raises ``yaml.YAMLError`` (a :class:`LimitError` for a limit)."""
    loader = SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def document_problems(document: Any, root: str = "") -> list[str]:
    """``field.path: problem`` lines for values outside the limits anywhere in ``document``:
    non-finite numbers, overlong strings and keys, overfull lists and mappings."""
    problems: list[str] = []
    pending: list[tuple[str, Any]] = [(root, document)]
    while pending:  # a loop, not recursion: overrides can nest deeper than the loader allows
        path, value = pending.pop()
        where = path or "(document)"
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: must be a finite number, got {value}")
        elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            problems.append(f"{where}: longer than {MAX_STRING_CHARS} characters ({len(value)})")
        elif isinstance(value, (dict, list)):
            if len(value) > MAX_ITEMS:
                problems.append(f"{where}: more than {MAX_ITEMS} entries ({len(value)})")
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                label = str(key)
                if isinstance(key, float) and not math.isfinite(key):
                    problems.append(f"{where}: a key must be a finite number, got {key}")
                    continue
                if len(label) > MAX_KEY_CHARS:
                    problems.append(f"{where}: a key is longer than {MAX_KEY_CHARS} characters ({label[:40]}...)")
                    continue
                pending.append((f"{path}.{label}" if path else label, item))
    problems.sort()
    if len(problems) > MAX_PROBLEMS:  # a hostile spec can hold thousands: the first ones say enough
        hidden = len(problems) - MAX_PROBLEMS
        problems[MAX_PROBLEMS:] = [f"(document): {hidden} more values out of bounds, like those above"]
    return problems


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` may not run over every log line, or None: longer than
    :data:`MAX_REGEX_CHARS`, not a regular expression, or a repeat inside a
    repeat with one of them unbounded (``(a+)+``, ``(\\d+,?)*``), the shape that
    backtracks exponentially on a line that almost matches. Possessive repeats
    and atomic groups (``a++``, ``(?>...)``) never backtrack and are allowed.
    Other slow shapes (``(a|a)*``, long runs of ``.*``) are not detected: the
    log scanner's line-length cap bounds them."""
    import re

    if len(pattern) > MAX_REGEX_CHARS:
        return f"longer than {MAX_REGEX_CHARS} characters ({len(pattern)})"
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"not a valid regular expression: {exc}"
    parser, _ = _sre()
    if _nested_repeat(parser.parse(pattern), outer=None):
        return "a repeat inside a repeat, e.g. (a+)+, can take exponential time on a log line; use a++ or (?>...)"
    return None


def _nested_repeat(items: Any, outer: Any) -> bool:
    """Whether a repeat of more than one inside ``outer`` (a repeat's max, or None) makes a nested unbounded repeat."""
    _, c = _sre()

    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            low, high, body = arg
            if high > 1 and outer is not None and c.MAXREPEAT in (high, outer):
                return True
            if _nested_repeat(body, high if high > 1 else outer):
                return True
        elif op == c.SUBPATTERN and _nested_repeat(arg[-1], outer):
            return True
        elif op == c.BRANCH and any(_nested_repeat(branch, outer) for branch in arg[1]):
            return True
        elif op in (c.ASSERT, c.ASSERT_NOT) and _nested_repeat(arg[1], outer):
            return True
        elif op == c.GROUPREF_EXISTS and any(_nested_repeat(part, outer) for part in arg[1:] if part):
            return True
    return False


def _sre() -> tuple[Any, Any]:
    """The stdlib's regex parser and its constants: the parsed form is what the matcher
    backtracks over (``re._parser`` since Python 3.11, ``sre_parse`` before)."""
    try:
        from re import _constants, _parser
    except ImportError:  # Python 3.10
        import sre_constants as _constants
        import sre_parse as _parser
    return _parser, _constants
