"""Bounded memory for workers' output: the controller's memory does not grow with a job's output,
a stored log keeps within MLRT_MAX_LOG_BYTES (head and end kept, a marker between, one event),
and metric lines on either side of a cut are recorded once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import command_spec, missing
from mlrt.logfile import CappedLog, load_cut, output_size, read_output
from mlrt.logscan import LogMetricScanner
from mlrt.store import Store

LIMIT = 8 << 20
MLRT = str(Path(sys.executable).with_name("mlrt"))

FLOOD = """
    import os, sys
    megabytes = int(os.environ["FLOOD_MB"])
    piece = (b"x" * 1023 + b"\\n") * 1024 if os.environ.get("FLOOD_NEWLINES") == "1" else b"x" * (1 << 20)
    print("loss=1.5", flush=True)
    for _ in range(megabytes):
        sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()
    print("\\nloss=0.5", flush=True)
"""

METRICS = "  metrics:\n    - {name: loss, regex: 'loss=([0-9.]+)'}\n"


def submit_and_watch(spec: Path, home: Path, megabytes: int, newlines: bool = False) -> tuple[dict, int]:
    """``mlrt submit`` in a process of its own (it is the controller); its run and peak RSS in bytes."""
    env = {
        **os.environ,
        "MLRT_HOME": str(home),
        "MLRT_MAX_LOG_BYTES": str(LIMIT),
        "FLOOD_MB": str(megabytes),
        "FLOOD_NEWLINES": "1" if newlines else "0",
    }
    process = subprocess.Popen(
        [MLRT, "submit", str(spec), "--json", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out), peak


def logs_of(run: dict, home: Path) -> Path:
    return home / "logs" / run["id"] / "attempt-1" / "worker-0.log"


def mlrt_cli(home: Path, *args: str) -> str:
    env = {**os.environ, "MLRT_HOME": str(home)}
    result = subprocess.run([MLRT, *args], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout.decode()


@pytest.mark.parametrize(("megabytes", "newlines"), [(500, False), (100, True)], ids=["no-newlines", "lines"])
def test_the_controller_stays_small_while_a_job_floods_its_log(write_spec, tmp_path, megabytes, newlines):
    spec = write_spec(command_spec("flood", "[python, flood.py]", METRICS), files={"flood.py": FLOOD})
    _, baseline = submit_and_watch(spec, tmp_path / "quiet", 0)
    home = tmp_path / "loud"
    run, peak = submit_and_watch(spec, home, megabytes, newlines)
    print(f"controller peak RSS: {baseline / 2**20:.0f} MiB quiet, {peak / 2**20:.0f} MiB with {megabytes} MB")
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert peak - baseline < 100 << 20

    log = logs_of(run, home)
    assert log.stat().st_size <= LIMIT + (1 << 20)
    assert output_size(log) == megabytes * (1 << 20) + len("loss=1.5\n\nloss=0.5\n")
    store = Store(f"sqlite:///{home / 'mlrt.db'}")
    assert [(p.step, p.value) for p in store.metrics(run["id"], "loss")] == [(0, 1.5), (1, 0.5)]
    cut_events = [e.reason for e in store.events(run["id"]) if "MLRT_MAX_LOG_BYTES" in e.reason]
    assert len(cut_events) == 1 and cut_events[0].startswith("log of worker 0 cut: it passed its limit of 8388608")

    shown = [line for line in mlrt_cli(home, "logs", run["id"]).splitlines() if not line.startswith("xxxx")]
    assert shown[0] == "loss=1.5" and shown[-1] == "loss=0.5"
    assert [line for line in shown if "are cut here" in line] == [shown[1]]
    assert shown[1].startswith(f"--- mlrt: bytes {load_cut(log).head}-{load_cut(log).resume} of the output")


def test_a_cut_log_reads_back_in_output_positions_and_continues(tmp_path):
    log = tmp_path / "worker-0.log"
    lines = [f"step {i} loss={1 / (i + 1):.6f} {'.' * (i % 300)}\n".encode() for i in range(30_000)]
    output = b"".join(lines)
    limit = 1 << 20
    with CappedLog(log, limit) as writer:
        for start in range(0, len(output), 5000):
            writer.write(output[start : start + 5000])
    cut = load_cut(log)
    assert log.stat().st_size <= limit and output_size(log) == len(output)
    assert output[cut.head - 1 : cut.head] == b"\n" and output[cut.resume - 1 : cut.resume] == b"\n"

    def read_all() -> bytes:
        parts, offset = [], 0
        while (part := read_output(log, offset, 100_000)).data:
            parts.append(part.data)
            offset = part.start + len(part.data)
        return b"".join(parts)

    assert read_all() == output[: cut.head] + output[cut.resume :]
    # Another writer (an adopting controller) continues the same log: positions go on.
    with CappedLog(log, limit) as writer:
        writer.write(output[:400_000])
    assert output_size(log) == len(output) + 400_000
    assert read_all() == (output + output[:400_000])[: cut.head] + (output + output[:400_000])[load_cut(log).resume :]


def test_the_scanner_skips_over_long_lines_and_reads_each_metric_line_once(tmp_path):
    log = tmp_path / "worker-0.log"
    patterns = [{"name": "loss", "regex": r"loss=(?P<value>[0-9.]+) step=(?P<step>\d+)"}]
    scanner = LogMetricScanner(log, patterns, {}, max_line=64 << 10)
    found = []
    with CappedLog(log, 2 << 20) as writer:
        for step in range(40):
            writer.write(f"loss={step / 10} step={step}\n".encode())
            found += scanner.scan().entries  # a controller that keeps up (output cut unread is not scanned)
            if step % 10 == 3:  # a long line without its end yet (the log is cut), then the rest of it
                writer.write(b"loss=99 step=999 " + b"y" * (3 << 20))
                found += scanner.scan().entries
                writer.write(b"y" * 1000 + b"\n")
    found += scanner.scan().entries
    points = [(step, value) for kind, batch in found if kind == "metrics" for _, step, value, _ in batch]
    assert points == [(step, step / 10) for step in range(40)]
    assert [entry for entry in found if entry[0] == "event"] == [
        ("event", f"log of worker 0 cut: {load_cut(log).describe()}")
    ]


FAIL_LOUDLY = """
    import os, sys
    with open(os.environ["MLRT_FAILURE_FILE"], "w") as failure:
        failure.write("z" * (50 << 20))
        failure.write("\\nValueError: the real reason\\n")
    sys.stdout.write("q" * (20 << 20))
    sys.exit(3)
"""


def test_a_huge_failure_file_gives_its_last_line_as_the_reason(cli, write_spec):
    spec = write_spec(command_spec("loud-failure", "[python, fail.py]"), files={"fail.py": FAIL_LOUDLY})
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "FAILED"
    assert run["reason"] == "worker 0 exited with code 3: ValueError: the real reason"


# Paced: podman 4.3's `logs -f` drops lines of a log written faster than it reads (seen: 17 of 64 MB kept).
PODMAN_FLOOD = """
    import sys, time
    print("loss=1.5", flush=True)
    for _ in range(40):
        sys.stdout.write("x" * (1 << 20))
        sys.stdout.flush()
        time.sleep(0.1)
    print("\\nloss=0.5", flush=True)
"""


def test_the_container_backend_keeps_a_flooded_log_within_its_limit(cli, write_spec, monkeypatch, request):
    import test_container_backend as containers

    if containers.PROBLEM is not None:
        missing("podman", f"container backend: {containers.PROBLEM}")
    image = request.getfixturevalue("engine_env")
    monkeypatch.setenv("MLRT_MAX_LOG_BYTES", str(LIMIT))
    spec = write_spec(
        containers.container_spec("boxed-flood", "[python, flood.py]", image, METRICS),
        files={"flood.py": PODMAN_FLOOD},
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    log = Path(Store().attempts(run["id"])[0].log_dir) / "worker-0.log"
    assert log.stat().st_size <= LIMIT + (1 << 20)
    kept_besides_the_flood = re.sub(rb"x+", b"x..", log.read_bytes())
    assert output_size(log) == (40 << 20) + len("loss=1.5\n\nloss=0.5\n"), kept_besides_the_flood
    assert [(p.step, p.value) for p in Store().metrics(run["id"], "loss")] == [(0, 1.5), (1, 0.5)]
    assert sum("MLRT_MAX_LOG_BYTES" in e.reason for e in Store().events(run["id"])) == 1


@pytest.fixture
def engine_env(monkeypatch) -> str:
    """The container tests' image (built once per machine) and engine settings."""
    import test_container_backend as containers
    from container_image import build_image

    image = build_image(containers.ENGINE, containers.RUN_ARGS.split())
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", containers.RUN_ARGS)
    monkeypatch.setenv("MLRT_TRAINING_IMAGE", image)
    monkeypatch.delenv("MLRT_CONTAINER_ENGINE", raising=False)
    return image
