"""Property test: any mutation of an example spec is validated or refused cleanly, and quickly.

Hypothesis takes the specs in job_specs/, replaces values at random paths by
hostile ones (NaN, infinity, huge and 4,300-digit integers, huge strings, deep
nesting, alias bombs, binary and non-UTF-8 bytes, negative numbers, wrong
types), deletes keys and adds unknown ones, and runs `mlrt validate` on the
result: it must exit 0 or 2, print no traceback, and finish in under 2 s (the
assertion allows 10 s for a loaded CI machine; the test prints the real
maximum). The run is derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlrt.limits import load_yaml

EXAMPLES = {path.name: path for path in sorted((Path(__file__).resolve().parents[1] / "job_specs").glob("*.yaml"))}
FUZZ_EXAMPLES = 150


def _laughs() -> str:
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, 9)]
    return "[" + ", ".join(levels) + "]"


# Written verbatim where a value was (YAML text or raw bytes).
RAW: dict[str, bytes] = {
    "nan": b".nan",
    "inf": b".inf",
    "-inf": b"-.inf",
    "1e999": b"1.0e+999",
    "huge int": b"9" * 30,
    "4,300-digit int": b"1" * 4300,
    "deep flow nesting": b"[" * 5000 + b"]" * 5000,
    "deep nesting within the loader's reach": b"[" * 100 + b"]" * 100,
    "alias bomb": _laughs().encode(),
    "self alias": b"&self [*self]",
    "huge string": b"x" * 200_000,
    "over the size limit": b"x" * 1_100_000,
    "binary": b"\x00\x01\x02\xff\xfe",
    "non-UTF-8": b"caf\xe9",
    "control character": b"a\x07b",
    "negative": b"-1",
    "negative fraction": b"-0.5",
    "zero": b"0",
    "huge duration": b"99999999999d",
    "huge float": b"1.0e+308",
    "list": b"[a, b]",
    "mapping": b"{a: 1}",
    "true": b"true",
    "null": b"null",
    "set tag": b"!!set {a, b}",
    "date": b"2024-01-31",
    "quoted number": b"'12'",
}
VALUES = st.one_of(
    st.sampled_from(sorted(RAW)),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=4),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in ``node`` (keys and list indices)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _parent(document: Any, path: tuple) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def mutate(document: dict, data: st.DataObject) -> bytes:
    """One to three random mutations of ``document``, as the bytes of a spec file."""
    document = copy.deepcopy(document)
    raw: dict[str, bytes] = {}
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(document)), label="path")
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add unknown key"]), label="action")
        target = _parent(document, path)
        if action == "add unknown key":
            node = target[path[-1]] if path else document
            if isinstance(node, dict):
                node["fuzz_unknown"] = 1
            elif isinstance(node, list):
                node.append({"fuzz_unknown": 1})
            continue
        if not path:
            continue
        if action == "delete":
            del target[path[-1]]
            continue
        value = data.draw(VALUES, label="value")
        if isinstance(value, str) and value in RAW:
            placeholder = f"mlrt_fuzz_placeholder_{len(raw)}"
            raw[placeholder] = RAW[value]
            value = placeholder
        target[path[-1]] = value
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1_000_000).encode()
    for placeholder, replacement in raw.items():
        text = text.replace(placeholder.encode(), replacement)
    return text


def test_mutated_example_specs_exit_0_or_2_without_traceback_quickly(cli, tmp_path):
    documents = {name: load_yaml(path.read_text()) for name, path in EXAMPLES.items()}
    assert len(documents) >= 5
    spec = tmp_path / "fuzzed.yaml"
    (tmp_path / "train_ddp.py").write_text("print('the example script')\n")
    timings: list[float] = []
    outcomes = {0: 0, 2: 0}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(name=st.sampled_from(sorted(documents)), data=st.data())
    def validate_mutation(name: str, data: st.DataObject) -> None:
        spec.write_bytes(mutate(documents[name], data))
        started = time.perf_counter()
        result = cli("validate", str(spec))
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        assert result.exit_code in (0, 2), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert result.stderr.startswith("error: "), result.stderr
        outcomes[result.exit_code] += 1
        assert elapsed < 10, f"validate took {elapsed:.2f} s"

    validate_mutation()
    print(
        f"\nfuzz: {len(timings)} cases, {outcomes[0]} valid, {outcomes[2]} refused;"
        f" max {max(timings):.3f} s, mean {sum(timings) / len(timings):.3f} s"
    )
    assert len(timings) >= FUZZ_EXAMPLES // 2
