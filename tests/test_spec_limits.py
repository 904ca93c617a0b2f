"""Hostile specs are refused within bounds: one `error: field.path: problem` line, exit 2, nothing created.

Each class of hostile input (size, encoding, YAML aliases and nesting, huge
numbers, NaN and infinity, out-of-range counts, durations and quantities,
overfull lists and maps, long strings, slow regexes) goes through `mlrt
validate` and `mlrt submit` and through :func:`mlrt.spec.parse_text`, the
function the API calls.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MLRT_SCRIPT
from mlrt.limits import MAX_NODES, MAX_SPEC_BYTES
from mlrt.spec import SpecError, SpecTooLarge, parse_text
from mlrt.store import Store

HEAD = "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: hostile}\nspec:\n  command: [python, -c, pass]\n"
TUNING = """\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {name: hostile-tune}
spec:
  template: {command: [python, -c, pass]}
  objective: {metric: loss, goal: minimize}
"""


def job(extra: str = "") -> str:
    """A valid command job with ``extra`` YAML lines under ``spec:``."""
    return HEAD + extra


def laughs(levels: int = 8) -> str:
    """The 'billion laughs' document: each level repeats the one before nine times (9**8 values, 590 bytes)."""
    lines = ['  lol0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels + 1):
        lines.append(f"  lol{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    return job("  hyperparameters:\n" + "\n".join("  " + line for line in lines) + "\n")


def many(count: int, template: str) -> str:
    return "{" + ", ".join(template.format(i=i) for i in range(count)) + "}"


HOSTILE = {
    # YAML structure
    "billion laughs": (laughs(), f"more than {MAX_NODES} values once aliases are expanded"),
    "alias inside itself": (job("  hyperparameters: &a {x: [*a]}\n"), "alias *a is inside the value it names"),
    "5,000-deep flow nesting": (
        job("  hyperparameters: {x: " + "[" * 5000 + "]" * 5000 + "}\n"),
        "nested deeper than 32 levels",
    ),
    "5,000-deep block nesting": (job("  hyperparameters:\n    x:\n" + "      " + "- " * 5000 + "1\n"), "nested deeper"),
    "4,300-digit integer": (job("  seed: " + "1" * 4300 + "\n"), "integer out of range"),
    "integer past 64 bits": (job("  hyperparameters: {x: 9223372036854775808}\n"), "integer out of range"),
    "!!set": (job("  hyperparameters: {x: !!set {a, b}}\n"), "!!set values are not allowed"),
    "!!binary": (job("  hyperparameters: {x: !!binary aGVsbG8=}\n"), "!!binary values are not allowed"),
    "python object tag": (job("  hyperparameters: {x: !!python/object:os.system {}}\n"), "not valid YAML"),
    "two documents": (job() + "---\n" + job(), "not valid YAML (expected a single document in the stream"),
    "control character": (job("  hyperparameters: {x: \x07}\n"), "not valid YAML (character #x0007"),
    # NaN and infinity, wherever they are
    "NaN hyperparameter": (job("  hyperparameters: {lr: .nan}\n"), "spec.hyperparameters.lr: must be a finite number"),
    "inf in a list": (job("  hyperparameters: {lrs: [1, -.inf]}\n"), "spec.hyperparameters.lrs.1: must be a finite"),
    "NaN report option": (
        job("  report_options: {bias_variance: {learning_curve: .nan}}\n"),
        "spec.report_options.bias_variance.learning_curve: must be a finite number",
    ),
    "NaN baseline": (job("  baseline: {metric: validation_accuracy, value: .NaN}\n"), "spec.baseline.value: must be a"),
    "inf duration": (job("  stopping: {max_runtime: .inf}\n"), "spec.stopping.max_runtime: must be a finite number"),
    "NaN cpu": (job("  compute: {cpu: nan}\n"), "spec.compute.cpu: must be > 0, got 'nan'"),
    "NaN tuning range": (
        TUNING + "  parameters: {lr: {type: float, min: .nan, max: 1}}\n",
        "spec.parameters.lr.min: must be a finite number",
    ),
    "inf tuning value": (
        TUNING + "  parameters: {lr: {type: categorical, values: [1, .inf]}}\n",
        "spec.parameters.lr.values.1: must be a finite number",
    ),
    "NaN early-stopping setting": (
        TUNING + "  parameters: {lr: {type: float, min: 0.1, max: 1}}\n"
        "  early_stopping: {algorithm: asha, reduction_factor: .nan}\n",
        "spec.early_stopping.reduction_factor: must be a finite number",
    ),
    # numbers past their field's range
    "duration that overflows the clock": (
        job("  stopping: {max_runtime: 99999999999d}\n"),
        "spec.stopping.max_runtime: must be at most 365d, got '99999999999d'",
    ),
    "grace period": (job("  stopping: {grace_period: 30d}\n"), "spec.stopping.grace_period: must be at most 7d"),
    "a million workers": (job("  compute: {workers: 1000000}\n"), "spec.compute.workers: must be <= 1024, got 1000000"),
    "gpus": (job("  compute: {gpus: 100000}\n"), "spec.compute.gpus: must be <= 64"),
    "cpu": (job("  compute: {cpu: 1e12}\n"), "spec.compute.cpu: must be at most 1024 cores"),
    "memory": (job("  compute: {memory: 99999Ti}\n"), "spec.compute.memory: must be at most 64Ti"),
    "retries": (job("  retries: {max: 1000}\n"), "spec.retries.max: must be <= 20"),
    "backoff": (job("  retries: {max: 3, backoff: 2d}\n"), "spec.retries.backoff: must be at most 1h"),
    "epochs": (
        job("  stopping: {max_epochs: 9223372036854775807}\n"),
        "spec.stopping.max_epochs: must be <= 1000000000",
    ),
    "max_trials": (
        TUNING + "  parameters: {lr: {type: float, min: 0.1, max: 1}}\n  max_trials: 10000000\n",
        "spec.max_trials: must be <= 10000",
    ),
    "parallel_trials": (
        TUNING + "  parameters: {lr: {type: float, min: 0.1, max: 1}}\n  parallel_trials: 100000\n",
        "spec.parallel_trials: must be <= 256",
    ),
    "tuning range past 2**53": (
        TUNING + "  parameters: {n: {type: int, min: 1, max: 1e300}}\n",
        "spec.parameters.n.max: must be <= 9007199254740992",
    ),
    "bins": (job("  slices: [{column: a, bins: 0}]\n"), "spec.slices.0.bins: a count of bins is 1 .. 1000000000"),
    "algorithm choices": (
        TUNING
        + "  parameters: {algorithm: {type: categorical, values: ["
        + ",".join(f"a{i}" for i in range(65))
        + "]}}\n",
        "spec.parameters: the algorithm parameter chooses among at most 64 algorithms",
    ),
    # lists, maps and strings
    "labels": (
        HEAD.replace("{name: hostile}", "{name: hostile, labels: " + many(65, "l{i}: x") + "}"),
        "metadata.labels: must have at most 64 entries",
    ),
    "env": (job("  env: " + many(257, "V{i}: x") + "\n"), "spec.env: must have at most 256 entries"),
    "data channels": (
        job("  data: " + many(33, "c{i}: file://./x{i}.csv") + "\n"),
        "spec.data: must have at most 32 entries",
    ),
    "hyperparameters": (
        job("  hyperparameters: " + many(257, "h{i}: 1") + "\n"),
        "spec.hyperparameters: must have at most 256 entries",
    ),
    "metric patterns": (
        job("  metrics: [" + ", ".join(f"{{name: m{i}, regex: 'm{i}=(.+)'}}" for i in range(65)) + "]\n"),
        "spec.metrics: must have at most 64 entries",
    ),
    "tuning parameters": (
        TUNING + "  parameters: " + many(65, "p{i}: {{type: float, min: 0, max: 1}}") + "\n",
        "spec.parameters: must have at most 64 entries",
    ),
    "categorical values": (
        TUNING + "  parameters: {c: {type: categorical, values: [" + ",".join(["1"] * 1001) + "]}}\n",
        "spec.parameters.c.values: more than 1000 entries",
    ),
    "a long command list": (job("  hyperparameters: {x: [" + ",".join(["1"] * 1001) + "]}\n"), "more than 1000"),
    "a 100,000-character value": (
        job("  env: {BIG: " + "x" * 100_000 + "}\n"),
        "spec.env.BIG: longer than 65536 characters (100000)",
    ),
    "a long key": (job("  hyperparameters: {" + "k" * 300 + ": 1}\n"), "a key is longer than 253 characters"),
    "a long metric regex": (
        job("  metrics: [{name: m, regex: '(" + "a" * 1000 + ")'}]\n"),
        "spec.metrics.0.regex: longer than 1000 characters",
    ),
    "a backtracking metric regex": (
        job("  metrics: [{name: m, regex: '(\\d+\\s?)*loss=(.+)'}]\n"),
        "spec.metrics.0.regex: a repeat inside a repeat",
    ),
}


def _expect_one_refusal(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], result.stderr
    assert len(lines[0]) < 400, "a problem line must not echo a huge value"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_spec_is_one_line_through_validate_submit_and_parse_text(cli, tmp_path, case):
    text, expected = HOSTILE[case]
    spec = tmp_path / "job.yaml"
    spec.write_text(text)
    for command in ("validate", "submit"):
        _expect_one_refusal(cli(command, str(spec)), expected)
    with pytest.raises(SpecError) as refused:
        parse_text(text, "job.yaml", tmp_path / "job.yaml")
    assert len(refused.value.problems) == 1 and expected in refused.value.problems[0]
    assert Store().list_runs() == [], "a refused spec must not leave a run behind"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("spec.hyperparameters.lr=.nan", "spec.hyperparameters.lr: must be a finite number, got nan"),
        ("spec.stopping.max_runtime=99999999999d", "spec.stopping.max_runtime: must be at most 365d"),
        ("spec.compute.workers=1000000", "spec.compute.workers: must be <= 1024"),
        ("spec.seed=" + "9" * 4300, "--set spec.seed: line 1, column 1: integer out of range"),
        (
            "spec.hyperparameters.x=" + "[" * 40 + "]" * 40,
            "--set spec.hyperparameters.x: line 1, column 33: nested deeper",
        ),
        ("spec.hyperparameters.x=[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(["*a"] * 1100) + "]", "values once aliases"),
        ("spec.hyperparameters.x=[", "--set spec.hyperparameters.x: line 2, column 1: not valid YAML"),
        ("spec." + ".".join(["a"] * 40) + "=1", "at most 32 keys"),
        ("spec.command.1.x=1", "--set spec.command.1.x: spec.command.1 holds no fields"),
    ],
)
def test_hostile_set_override_goes_through_the_same_loader(cli, tmp_path, override, expected):
    spec = tmp_path / "job.yaml"
    spec.write_text(job())
    for command in ("validate", "submit"):
        _expect_one_refusal(cli(command, str(spec), "--set", override), expected)
    with pytest.raises(SpecError) as refused:
        parse_text(job(), "job.yaml", spec, [override])
    assert refused.value.problems == [_line(cli("validate", str(spec), "--set", override))]
    assert Store().list_runs() == []


def _line(result) -> str:
    return result.stderr.strip().removeprefix("error: ")


def test_the_installed_command_refuses_hostile_specs_in_one_line(tmp_path):
    """The real `mlrt` process: no RecursionError, no int-conversion ValueError, no runaway expansion."""
    env = {**os.environ, "MLRT_HOME": str(tmp_path / "home")}
    for case in ("billion laughs", "5,000-deep flow nesting", "5,000-deep block nesting", "4,300-digit integer"):
        text, expected = HOSTILE[case]
        spec = tmp_path / "job.yaml"
        spec.write_text(text)
        done = subprocess.run([str(MLRT_SCRIPT), "validate", str(spec)], capture_output=True, text=True, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and expected in done.stderr


def test_hyperparameter_schemas_refuse_nan_and_infinity():
    """Values from a tuner reach the schema check without passing the YAML loader."""
    from mlrt.algorithms import Hyperparameter, resolve_values

    schema = {"lr": Hyperparameter(float, 0.1), "depth": Hyperparameter(int, 3, min=1)}
    _, problems = resolve_values(schema, {"lr": float("nan"), "depth": 2}, "acme.algo")
    assert problems == {"lr": "must be a finite float, got nan"}
    _, problems = resolve_values(schema, {"lr": float("-inf")}, "acme.algo")
    assert problems == {"lr": "must be a finite float, got -inf"}


def test_oversized_binary_and_non_utf8_files(cli, tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text(job("  env: {A: " + "x" * MAX_SPEC_BYTES + "}\n"))
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(job("  env: {GREETING: caf\xe9}\n").encode("latin-1"))
    expected = {
        big: f"big.yaml: the spec is larger than the limit of {MAX_SPEC_BYTES} bytes (MLRT_MAX_SPEC_BYTES)",
        binary: "model.bin: a binary file (it holds NUL bytes), not a YAML spec",
        latin1: f"latin1.yaml: not UTF-8 text: byte 0xe9 at offset {len(job('  env: {GREETING: caf'))} (line 6) is not",
    }
    for path, line in expected.items():
        for command in ("validate", "submit"):
            _expect_one_refusal(cli(command, str(path)), line)
    _expect_one_refusal(cli("validate", "/dev/zero"), "/dev/zero: the spec is larger than the limit")

    monkeypatch.setenv("MLRT_MAX_SPEC_BYTES", "64")
    _expect_one_refusal(cli("validate", str(latin1)), "the spec is larger than the limit of 64 bytes")
    monkeypatch.setenv("MLRT_MAX_SPEC_BYTES", "2Mi")
    big_ok = tmp_path / "big_ok.yaml"
    big_ok.write_text(job("  env: {A: " + "x" * 60_000 + "}\n" + "  hyperparameters: {B: " + "y" * 60_000 + "}\n"))
    assert cli("validate", str(big_ok)).exit_code == 0
    monkeypatch.setenv("MLRT_MAX_SPEC_BYTES", "lots")
    _expect_one_refusal(cli("validate", str(big_ok)), "MLRT_MAX_SPEC_BYTES: expected a size in bytes")
    assert Store().list_runs() == []


def test_parse_text_bounds_text_from_the_api(tmp_path):
    """The API hands parse_text a decoded JSON string: size and encoding are checked on it too."""
    with pytest.raises(SpecTooLarge) as too_large:
        parse_text(job("  env: {A: " + "é" * (MAX_SPEC_BYTES // 2) + "}\n"), "job.yaml", tmp_path / "job.yaml")
    assert too_large.value.problems == [
        f"job.yaml: the spec is larger than the limit of {MAX_SPEC_BYTES} bytes (MLRT_MAX_SPEC_BYTES)"
    ]
    with pytest.raises(SpecError) as surrogate:
        parse_text(job("  env: {A: \ud800}\n"), "job.yaml", tmp_path / "job.yaml")
    offset = len(job("  env: {A: "))
    assert surrogate.value.problems == [
        f"job.yaml: not UTF-8 text: character U+D800 at offset {offset} cannot be encoded"
    ]
    with pytest.raises(SpecTooLarge):
        parse_text(job(), "job.yaml", tmp_path / "job.yaml", ["spec.env.A=" + "x" * MAX_SPEC_BYTES])
    with pytest.raises(SpecError) as overrides:
        parse_text(job(), "job.yaml", tmp_path / "job.yaml", ["spec.seed=1"] * 257)
    assert overrides.value.problems == ["--set: at most 256 overrides, got 257"]


def test_thousands_of_bad_values_are_twenty_one_lines(cli, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(job("  hyperparameters: {x: [" + ", ".join([".nan"] * 1000) + "]}\n"))
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 21 and all(line.startswith("error: spec.hyperparameters.x.") for line in lines[:20])
    assert lines[20] == "error: (document): 980 more values out of bounds, like those above"


def test_dates_stay_strings_and_the_bounds_accept_ordinary_specs(cli, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        job(
            "  hyperparameters: {since: 2024-01-31, lr: 1e-3, big: 9223372036854775807, ok: &v [1, 2], again: *v}\n"
            "  stopping: {max_runtime: 365d, grace_period: 7d}\n"
            "  compute: {workers: 4, cpu: 1024, memory: 64Ti, gpus: 64}\n"
            "  retries: {max: 20, backoff: 1h}\n"
            "  metrics: [{name: loss, regex: 'step=(?P<step>\\d+) loss=(?P<value>[0-9.e+-]+)'}]\n"
        )
    )
    loaded = parse_text(spec.read_text(), "job.yaml", spec)
    assert loaded.hyperparameters["since"] == "2024-01-31"
    assert loaded.hyperparameters["again"] == [1, 2]
    assert cli("validate", str(spec)).exit_code == 0


def test_the_largest_accepted_specs_validate_quickly(cli, tmp_path):
    """Any spec up to the size limit validates in well under a second (5 s allowed on a loaded machine)."""
    labels = ", ".join(f"l{i}: v{i}" for i in range(64))
    head = HEAD.replace("{name: hostile}", "{name: big, labels: {" + labels + "}}")
    by_bytes = head + "  hyperparameters:\n" + "".join(f"    h{i:03d}: {'x' * 3_950}\n" for i in range(256))
    by_nodes = head + "  hyperparameters:\n" + "".join(f"    h{i:03d}: {list(range(35))}\n" for i in range(256))
    for name, text in (("bytes", by_bytes), ("nodes", by_nodes)):
        assert len(text.encode()) <= MAX_SPEC_BYTES
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(text)
        started = time.perf_counter()
        result = cli("validate", "--json", str(spec))  # the plan as JSON: YAML printing is timed on its own
        elapsed = time.perf_counter() - started
        assert result.exit_code == 0, result.stderr
        assert elapsed < 5, f"{name}: {elapsed:.2f} s"


def test_every_limit_is_in_the_reference_table():
    import mlrt.limits

    table = mlrt.limits.__doc__
    for constant in ("1 MiB", "10,000", "32 levels", "65,536", "253", "1,000 entries", "1 .. 1,024", "365d", "64Ti"):
        assert constant in table, constant
    assert Path(mlrt.limits.__file__).read_text().count("MLRT_MAX_SPEC_BYTES") >= 2
