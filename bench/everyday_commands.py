"""Wall time of the everyday read commands on a large store, whole process.

    python bench/everyday_commands.py                       # SQLite and PostgreSQL, 10,000 runs, 1,000,000 points
    python bench/everyday_commands.py --backends sqlite -n 9
    python bench/everyday_commands.py --compare /tmp/before/runtime  # and another checkout's mlrt, taking turns

The store: one real run (``mlrt submit --wait -q`` of a no-op command job)
that then gets 1,000,000 points of metric ``m0`` and 1,000 points of each of
``m1``..``m3``, and 9,999 finished runs cloned from it in bulk (job, run,
params, attempt, four state events, three metric points each), so ``runs
list`` and ``status`` read a database of 10,000 runs. PostgreSQL gets a
database of its own (``mlrt_bench_x`` on 127.0.0.1:5432, dropped at the end)
and is analyzed after filling.

Each command runs as a whole ``mlrt --db URL ...`` process (output to
/dev/null), once to warm the page cache and then ``-n`` times; the figures are
the min and the median wall time. Each is timed two ways, taking turns:
``resident``, through the resident process (``mlrt.resident``) that a user's
first command starts, and ``own process`` (``MLRT_RESIDENT=0``), every import
in the command's own process. ``mlrt --help`` is the floor (the
interpreter, click and mlrt's entry module). ``--compare DIR`` also runs each
command with DIR first on PYTHONPATH, so the same store is read by another
version of mlrt (the ``mlrt`` package each imports is printed); the two
versions take turns, so both see the same machine load.

Targets (issue 20): every command under 0.3 s, the metrics summary under
0.5 s, one 1,000,000-point series as JSON under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bench_env,
    clone_finished_runs,
    machine_line,
    median,
    start_resident,
    stop_resident,
    tool,
    write_json,
)

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_NAME = "mlrt_bench_x"


def commands(run_id: str) -> list[tuple[str, list[str]]]:
    return [
        ("--help", ["--help"]),
        ("runs list", ["runs", "list"]),
        (
            "runs list --where --sort",
            ["runs", "list", "--where", "validation_accuracy > 0.5", "--sort", "-validation_accuracy", "--limit", "20"],
        ),
        ("status", ["status"]),
        ("runs show RUN", ["runs", "show", run_id]),
        ("metrics RUN", ["metrics", run_id]),
        ("metrics RUN --key m0 --json", ["metrics", run_id, "--key", "m0", "--json"]),
    ]


def make_template(db: str, workdir: Path, env: dict[str, str]) -> str:
    """Run a no-op job for real and return its run id."""
    spec = workdir / "noop.yaml"
    spec.write_text(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: noop}\n"
        f"spec:\n  command: [{sys.executable}, -c, pass]\n"
    )
    out = subprocess.run(
        [tool("mlrt"), "--db", db, "submit", str(spec), "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["id"]


def fill(db: str, template_id: str, runs: int, points: int) -> float:
    """Give the template its points and clone it ``runs - 1`` times; seconds taken."""
    from mlrt.store import Store

    started = time.perf_counter()
    store = Store(db)
    now = time.time()
    chunk = 100_000
    for first in range(0, points, chunk):
        store.insert_metrics(
            template_id, [("m0", i, (i % 977) / 977, now) for i in range(first, min(points, first + chunk))]
        )
    for key in ("m1", "m2", "m3"):
        store.insert_metrics(template_id, [(key, i, 1 / (i + 1), now) for i in range(1000)])
    clone_finished_runs(
        store, template_id, runs - 1, metrics=(("validation_accuracy", 0.9), ("train_accuracy", 0.95), ("loss", 0.1))
    )
    store.engine.dispose()
    return time.perf_counter() - started


def time_commands(db: str, args: list[str], envs: dict[str, dict[str, str]], repeat: int) -> dict[str, dict]:
    """Wall times of ``mlrt --db DB ARGS`` under each of ``envs`` (one per mlrt version), the
    versions taking turns, so a change in the machine's load falls on all of them alike."""
    argv = [tool("mlrt"), "--db", db, *args]
    times: dict[str, list[float]] = {label: [] for label in envs}
    for i in range(repeat + 1):
        for label, env in envs.items():
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"mlrt {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
            if i:  # the first round warms the page cache
                times[label].append(elapsed)
    return {
        label: {"min_s": round(min(t), 3), "median_s": round(median(t), 3), "runs": repeat}
        for label, t in times.items()
    }


def measure(backend: str, args, workdir: Path) -> dict:
    from sqlalchemy import create_engine, text

    env = bench_env(workdir, bytecode_cache=True)
    env["MLRT_HOME"] = str(workdir / "home")
    admin = None
    if backend == "postgresql":
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{PG_NAME}"'))
        db = PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_NAME}"
    else:
        db = f"sqlite:///{workdir / 'home' / 'mlrt.db'}"
    try:
        template_id = make_template(db, workdir, env)
        fill_s = fill(db, template_id, args.runs, args.points)
        print(f"{backend}: {args.runs} runs, {args.points} points of m0 in run {template_id} ({fill_s:.0f} s to fill)")
        envs = {"resident": env, "own process": env | {"MLRT_RESIDENT": "0"}}
        if args.compare:
            envs["--compare"] = env | {
                "PYTHONPATH": os.pathsep.join(filter(None, [args.compare, env.get("PYTHONPATH")])),
                "MLRT_RESIDENT": "0",
            }
        start_resident([tool("mlrt"), "--db", db, "--help"], env)
        versions = {}
        for label, version_env in envs.items():
            versions[label] = subprocess.run(
                [sys.executable, "-c", "import mlrt; print(mlrt.__file__)"],
                env=version_env,
                capture_output=True,
                text=True,
            ).stdout.strip()
            print(f"  {label}: mlrt imported from {versions[label]}")
        figures = {}
        for name, argv in commands(template_id):
            figures[name] = time_commands(db, argv, envs, args.repeat)
            for label, f in figures[name].items():
                print(f"  {name:<30} {label:<14} min {f['min_s']:.3f} s  median {f['median_s']:.3f} s")
        return {"db": backend, "mlrt": versions, "commands": figures, "load_after": os.getloadavg()}
    finally:
        stop_resident(workdir / "resident")
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list of sqlite, postgresql")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000, help="points of metric m0 in the big run")
    parser.add_argument("-n", "--repeat", type=int, default=5, help="timed runs per command (after one warm-up)")
    parser.add_argument(
        "--compare", help="another checkout's runtime/ directory: its mlrt is timed too, taking turns with this one"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    print(machine_line())
    print(f"load: {os.getloadavg()}")
    results = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="mlrt-everyday-") as folder:
            results.append(measure(backend, args, Path(folder)))
    if args.json:
        write_json(args.json, {"machine": machine_line(), "results": results})


if __name__ == "__main__":
    main()
