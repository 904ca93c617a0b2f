"""Where the launch overhead of `mlrt submit --wait -q` goes (a diagnostic, not a benchmark).

    python bench/profile_launch.py [-n 10]

Part 1 times fresh interpreters that only import what a submit imports,
layer by layer (median of n), so the import cost of each layer shows.
Part 2 submits a no-op job n times against one MLRT_HOME and splits each
wall time at the run's own event timestamps (UTC, written by the store):

    start -> submitted        interpreter start, imports, spec validation, job rows
    submitted -> RUNNING      controller start, reap_orphans, claim, materialize, plan, launch
    RUNNING -> SUCCEEDED      the worker's own run time plus the poll latency
    SUCCEEDED -> exit         record load, output, interpreter teardown
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, machine_line, median, tool  # noqa: E402

LAYERS = [
    ("python -c pass", "pass"),
    ("import click", "import click"),
    ("import mlrt.cli (+ plugins, commands)", "from mlrt.cli import _register; _register()"),
    ("  + mlrt.spec (pydantic, yaml)", "from mlrt.cli import _register; _register(); import mlrt.spec"),
    (
        "  + mlrt.store (sqlalchemy, sqlmodel, models)",
        "from mlrt.cli import _register; _register(); import mlrt.spec, mlrt.store",
    ),
    (
        "  + controller, submission, records (all of submit)",
        "from mlrt.cli import _register; _register(); import mlrt.spec, mlrt.store, mlrt.controller, "
        "mlrt.submission, mlrt.records",
    ),
    ("sqlalchemy alone", "import sqlalchemy"),
    ("sqlmodel alone", "import sqlmodel"),
    ("pydantic alone", "import pydantic"),
]


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    start_wall = time.time()
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed: {result.stderr.decode()[-1000:]}")
    return elapsed, start_wall, start_wall + elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-profile-"))
    env = bench_env(workdir, bytecode_cache=True)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)
    python = sys.executable
    print(f"{machine_line()}; median of {args.n}; workdir {workdir}")

    print("\n1) fresh-interpreter import cost (wall s, bytecode cached)")
    for label, code in LAYERS:
        timed([python, "-c", code], workdir, env)  # compile / warm the page cache
        values = [timed([python, "-c", code], workdir, env)[0] for _ in range(args.n)]
        print(f"   {label:<55} {median(values):.3f}")

    print("\n2) one no-op submit split at its event timestamps (median s)")
    (workdir / "noop.py").write_text("")
    (workdir / "job.yaml").write_text(
        f"apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {{name: noop}}\nspec:\n  command: [{json.dumps(python)}, noop.py]\n"
    )
    mlrt = tool("mlrt")
    timed([mlrt, "submit", "-q", "job.yaml"], workdir, env)  # creates the database
    phases: dict[str, list[float]] = {
        k: [] for k in ("total", "start->submitted", "submitted->RUNNING", "RUNNING->SUCCEEDED", "SUCCEEDED->exit")
    }
    db = sqlite3.connect(workdir / "mlrt-home" / "mlrt.db")
    for _ in range(args.n):
        total, start, end = timed([mlrt, "submit", "-q", "job.yaml"], workdir, env)
        run_id = db.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        at = {}
        for to_state, stamp in db.execute("SELECT to_state, at FROM events WHERE run_id = ? ORDER BY id", (run_id,)):
            at.setdefault(to_state, datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp())
        phases["total"].append(total)
        phases["start->submitted"].append(at["QUEUED"] - start)
        phases["submitted->RUNNING"].append(at["RUNNING"] - at["QUEUED"])
        phases["RUNNING->SUCCEEDED"].append(at["SUCCEEDED"] - at["RUNNING"])
        phases["SUCCEEDED->exit"].append(end - at["SUCCEEDED"])
    for name, values in phases.items():
        print(f"   {name:<22} {median(values):.3f}")
    direct = [timed([python, "noop.py"], workdir, env)[0] for _ in range(args.n)]
    print(f"   (the worker alone, `python noop.py`: {median(direct):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
