"""Metric logging throughput into SQLite and PostgreSQL: the mlrt SDK vs MLflow's client, in one run.

Run it with mlrt's own interpreter; MLflow runs from the peers' virtual
environment, which the bench makes on first use (bench/_common.py
``peers_venv``) -- see bench/README.md:

    python bench/metric_logging.py                  # 5 repetitions of every case
    python bench/metric_logging.py -n 3 --points 50000 --json bench/results/metrics.json

Cases (each in its own fresh process; points/s counts every point logged
between the clock's start and the return of the final flush, so it includes
writing them all to the database):

mlrt (each case is a real `mlrt submit --wait -q` job, so the SDK runs inside
a job exactly as a user's script does, with the controller polling beside it):

* one-by-one:        ``mlrt.log_metric("loss", v, step=i)`` N times, then ``mlrt.flush()``
* one-by-one, auto step: the same with ``step`` left out (the SDK numbers the steps)
* batched:           ``mlrt.log_metrics({10 keys}, step=i)`` N/10 times, then ``mlrt.flush()``

mlrt on PostgreSQL (127.0.0.1:5432, a scratch database per run, dropped at
the end): the same jobs with ``MLRT_DB`` naming it; the SDK writes straight
to the database (a local worker's ``MLRT_TRACKING_URI``), with ``COPY``.

MLflow (a plain process of the peers' environment; tracking URI ``sqlite:///.../mlflow.db``),
once with mlrt's SQLite durability (WAL, ``synchronous=NORMAL``, set by a
SQLAlchemy ``connect`` listener: the headline, like with like) and once
with SQLite's defaults (rollback journal, ``synchronous=FULL``):

* one-by-one:        ``mlflow.log_metric("loss", v, step=i)`` (synchronous, the default)
* one-by-one, async: ``mlflow.log_metric(..., synchronous=False)`` then ``mlflow.flush_async_logging()``
* batched:           ``MlflowClient().log_batch(run_id, metrics=[Metric...])``, 1000 per call (its limit)

Setup is outside the clock on both sides: one warm-up point (key ``_warmup``)
is logged and written first, which opens the database (and for MLflow creates
and migrates it and starts the run). After each case the rows are counted in
the database, and the case fails if any point is missing. Each repetition
runs every case once, in turn; min and median points/s over repetitions are
reported, with the load average at the end of each case and the process's
own CPU seconds (a figure the machine's load moves less than wall time).

When is a point durable? mlrt: ``log_metric`` only appends to memory; a
point is committed at ``mlrt.flush()`` (or by the background writer within
a second, or at exit) -- the clock stops there. MLflow: a synchronous
``log_metric``/``log_batch`` has committed when it returns; async logging at
``flush_async_logging()``. The table prints this next to each figure.

Targets: mlrt batched >= 100,000 points/s (SQLite and PostgreSQL); mlrt
one-by-one >= 50x MLflow's one-by-one at the same durability.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SQLITE_DURABILITY,
    bench_env,
    load_line,
    machine_line,
    median,
    peer_python,
    sqlite_pragmas_snippet,
    tool,
    write_json,
)

BATCH_KEYS = [f"m{k}" for k in range(10)]
TARGET_BATCHED = 100_000
TARGET_ONE_BY_ONE_RATIO = 50

JOB_YAML = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  command: {command}
"""

# -- the measured code (runs in a child process) ------------------------------


def child_mlrt(case: str, n: int) -> dict:
    import mlrt

    mlrt.log_metric("_warmup", 0.0, step=0)
    mlrt.flush()
    cpu = time.process_time()
    if case == "one":
        started = time.perf_counter()
        for i in range(n):
            mlrt.log_metric("loss", float(i), step=i)
        logged = time.perf_counter()
        mlrt.flush()
    elif case == "one-auto":
        started = time.perf_counter()
        for i in range(n):
            mlrt.log_metric("loss", float(i))
        logged = time.perf_counter()
        mlrt.flush()
    elif case == "batch":
        steps = n // len(BATCH_KEYS)
        started = time.perf_counter()
        for i in range(steps):
            value = float(i)
            mlrt.log_metrics(dict.fromkeys(BATCH_KEYS, value), step=i)
        logged = time.perf_counter()
        mlrt.flush()
        n = steps * len(BATCH_KEYS)
    else:
        raise ValueError(case)
    done = time.perf_counter()
    return {
        "points": n,
        "seconds": done - started,
        "call_seconds": logged - started,
        "cpu_seconds": time.process_time() - cpu,
        "run_id": os.environ["MLRT_RUN_ID"],
    }


def child_mlflow(case: str, n: int, db_path: str, durability: str) -> dict:
    exec(sqlite_pragmas_snippet(durability), {})  # before MLflow makes its engine
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{db_path}")
    mlflow.set_experiment("mlrt-bench")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        mlflow.log_metric("_warmup", 0.0, step=0)
        cpu = time.process_time()
        if case == "one":
            started = time.perf_counter()
            for i in range(n):
                mlflow.log_metric("loss", float(i), step=i)
            logged = done = time.perf_counter()
        elif case == "one-async":
            started = time.perf_counter()
            for i in range(n):
                mlflow.log_metric("loss", float(i), step=i, synchronous=False)
            logged = time.perf_counter()
            mlflow.flush_async_logging()
            done = time.perf_counter()
        elif case == "batch":
            client = MlflowClient()
            steps = n // len(BATCH_KEYS)
            n = steps * len(BATCH_KEYS)
            started = time.perf_counter()
            batch: list = []
            for i in range(steps):
                stamp = int(time.time() * 1000)
                value = float(i)
                batch.extend(Metric(key, value, stamp, i) for key in BATCH_KEYS)
                if len(batch) >= 1000:
                    client.log_batch(run_id, metrics=batch)
                    batch = []
            if batch:
                client.log_batch(run_id, metrics=batch)
            logged = done = time.perf_counter()
        else:
            raise ValueError(case)
        cpu = time.process_time() - cpu
    with sqlite3.connect(db_path) as db:
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    return {
        "points": n,
        "seconds": done - started,
        "call_seconds": logged - started,
        "cpu_seconds": cpu,
        "run_id": run_id,
        "journal_mode": journal,
    }


# -- the driver ------------------------------------------------------------------

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

WHEN_DURABLE = {
    ("mlrt", "one"): "in memory at the call; committed at flush() (or within 1 s, or at exit)",
    ("mlrt", "one-auto"): "in memory at the call; committed at flush() (or within 1 s, or at exit)",
    ("mlrt", "batch"): "in memory at the call; committed at flush() (or within 1 s, or at exit)",
    ("mlflow", "one"): "committed when log_metric returns",
    ("mlflow", "one-async"): "queued at the call; committed at flush_async_logging()",
    ("mlflow", "batch"): "committed when log_batch returns",
}


class Case:
    """One measured case: which tool, which calls, which database with which durability."""

    def __init__(self, tool: str, case: str, label: str, points: int, database: str, durability: str):
        self.tool, self.case, self.label, self.points = tool, case, label, points
        self.database, self.durability = database, durability
        self.runs: list[dict] = []

    @property
    def name(self) -> str:
        return f"{self.tool} {self.database}/{self.durability} {self.case}"


def count_rows(db_url: str, table: str, run_column: str, run_id: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = f"SELECT COUNT(*) FROM {table} WHERE {run_column} = :run AND key != '_warmup'"
            return conn.execute(text(query), {"run": run_id}).scalar_one()
    finally:
        engine.dispose()


def run_mlrt_case(case: Case, workdir: Path, env: dict[str, str], mlrt: str, db_url: str) -> dict:
    tag = f"{case.database}-{case.case}-{uuid.uuid4().hex[:6]}"
    out = workdir / f"mlrt-{tag}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", f"mlrt:{case.case}"]
    command += ["--points", str(case.points), "--out", str(out)]
    # The specs' folder is the job's source folder (packed at submit): it holds the specs only,
    # not the MLflow databases and caches that grow in the workdir.
    jobs = workdir / "jobs"
    jobs.mkdir(exist_ok=True)
    spec = jobs / f"job-{tag}.yaml"
    spec.write_text(JOB_YAML.format(name=f"bench-{case.case}", command=json.dumps(command)))
    result = subprocess.run(
        [mlrt, "submit", "--wait", "-q", str(spec)],
        cwd=jobs,
        env=dict(env, MLRT_DB=db_url),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"mlrt case {case.name} failed (exit {result.returncode}): {result.stdout}{result.stderr}")
    figures = json.loads(out.read_text())
    figures["rows"] = count_rows(db_url, "metrics", "run_id", figures["run_id"])
    return figures


def run_mlflow_case(case: Case, workdir: Path, env: dict[str, str], python: str) -> dict:
    tag = f"{case.durability}-{case.case}"
    out = workdir / f"mlflow-{tag}.json"
    db_path = workdir / f"mlflow-{case.durability}" / "mlflow.db"
    db_path.parent.mkdir(exist_ok=True)
    command = [python, str(Path(__file__).resolve()), "--child", f"mlflow:{case.case}", "--points", str(case.points)]
    command += ["--out", str(out), "--mlflow-db", str(db_path), "--durability", case.durability]
    result = subprocess.run(command, cwd=db_path.parent, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"mlflow case {case.name} failed (exit {result.returncode}): {result.stderr[-3000:]}")
    figures = json.loads(out.read_text())
    figures["rows"] = count_rows(f"sqlite:///{db_path}", "metrics", "run_uuid", figures["run_id"])
    return figures


def create_postgres_database() -> str:
    """A scratch database on the local server (its URL); :func:`drop_postgres_database` removes it."""
    from sqlalchemy import create_engine, text

    name = f"mlrt_bench_metrics_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        commit = conn.execute(text("SHOW synchronous_commit")).scalar_one()
    admin.dispose()
    print(f"PostgreSQL scratch database {name} (synchronous_commit={commit}: a commit is fsynced)")
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def plan_cases(args) -> list[Case]:
    cases = [
        Case("mlrt", "one", "log_metric one-by-one (step=i) + flush", args.points, "sqlite", "mlrt"),
        Case("mlrt", "one-auto", "log_metric one-by-one (auto step) + flush", args.points, "sqlite", "mlrt"),
        Case("mlrt", "batch", "log_metrics 10 keys/call + flush", args.points, "sqlite", "mlrt"),
    ]
    if not args.no_postgres:
        cases += [
            Case("mlrt", "one", "log_metric one-by-one (step=i) + flush", args.points, "postgresql", "fsync"),
            Case("mlrt", "batch", "log_metrics 10 keys/call + flush (COPY)", args.points, "postgresql", "fsync"),
        ]
    if not args.no_mlflow:
        for durability in ("mlrt", "default") if args.peer_durability == "both" else (args.peer_durability,):
            cases += [
                Case("mlflow", "one", "mlflow.log_metric one-by-one (sync)", args.mlflow_points, "sqlite", durability),
                Case(
                    "mlflow",
                    "batch",
                    "MlflowClient.log_batch, 1000 per call",
                    args.mlflow_batch_points,
                    "sqlite",
                    durability,
                ),
            ]
            if durability == "mlrt":
                label = "mlflow.log_metric(synchronous=False) + flush"
                cases.append(Case("mlflow", "one-async", label, args.mlflow_points, "sqlite", durability))
    return cases


def figure(case: Case) -> dict:
    rates = [r["points"] / r["seconds"] for r in case.runs]
    return {
        "tool": case.tool,
        "case": case.case,
        "label": case.label,
        "database": case.database,
        "durability": case.durability,
        "when_durable": WHEN_DURABLE[(case.tool, case.case)],
        "points": case.points,
        "repetitions": len(case.runs),
        "points_per_s_min": min(rates),
        "points_per_s_median": median(rates),
        "points_per_s_max": max(rates),
        "points_per_cpu_s_median": median([r["points"] / r["cpu_seconds"] for r in case.runs]),
        "all_rows_stored": all(r["rows"] == r["points"] for r in case.runs),
        "load_1min": [r["load_1min"] for r in case.runs],
        "journal_mode": sorted({r.get("journal_mode", "wal") for r in case.runs}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=5, help="repetitions of every case (default 5)")
    parser.add_argument("--points", type=int, default=100_000, help="points per mlrt case (default 100,000)")
    parser.add_argument("--mlflow-points", type=int, default=2_000, help="points for MLflow one-by-one (default 2,000)")
    parser.add_argument(
        "--mlflow-batch-points", type=int, default=20_000, help="points for MLflow log_batch (default 20,000)"
    )
    parser.add_argument(
        "--peer-durability",
        choices=("mlrt", "default", "both"),
        default="both",
        help="MLflow's SQLite settings: mlrt's (WAL, synchronous=NORMAL; the headline), SQLite's defaults, or both",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL cases")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mlflow-db", help=argparse.SUPPRESS)
    parser.add_argument("--durability", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        side, case = args.child.split(":")
        if side == "mlrt":
            figures = child_mlrt(case, args.points)
        else:
            figures = child_mlflow(case, args.points, args.mlflow_db, args.durability)
        Path(args.out).write_text(json.dumps(figures))
        return 0

    mlrt = tool("mlrt")
    if mlrt is None:
        print("error: no mlrt executable found next to this python or on PATH", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-metrics-"))
    env = bench_env(workdir, bytecode_cache=True)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)
    print(f"metric logging throughput; {machine_line()}")
    print(f"workdir {workdir}; {load_line()} at the start")
    for key, promise in SQLITE_DURABILITY.items():
        print(f"SQLite durability '{key}': {promise}")

    cases = plan_cases(args)
    mlflow_note, mlflow_python = None, None
    if args.no_mlflow:
        mlflow_note = "skipped (--no-mlflow)"
    else:
        try:
            mlflow_python = peer_python()
        except RuntimeError as exc:
            mlflow_note = f"NOT RUN: {exc}"
        if mlflow_python is None:
            cases = [c for c in cases if c.tool != "mlflow"]
    sqlite_url = f"sqlite:///{workdir / 'mlrt-home' / 'mlrt.db'}"
    postgres_url = None
    try:
        if not args.no_postgres:
            postgres_url = create_postgres_database()
        for repetition in range(args.repetitions):
            for case in cases:
                print(f"  [{repetition + 1}/{args.repetitions}] {case.name} ({case.points:,} points)...", flush=True)
                try:
                    if case.tool == "mlrt":
                        db = postgres_url if case.database == "postgresql" else sqlite_url
                        run = run_mlrt_case(case, workdir, env, mlrt, db)
                    else:
                        run = run_mlflow_case(case, workdir, env, mlflow_python)
                except RuntimeError as exc:
                    if case.tool == "mlrt":
                        raise
                    mlflow_note = f"NOT RUN: mlflow failed here: {str(exc).strip().splitlines()[-1]}"
                    print(f"  {mlflow_note}")
                    cases = [c for c in cases if c.tool != "mlflow"]
                    break
                run["load_1min"] = os.getloadavg()[0]
                case.runs.append(run)
    finally:
        if postgres_url:
            drop_postgres_database(postgres_url)

    figures = [figure(c) for c in cases if c.runs]
    print()
    print(
        f"{args.repetitions} repetitions; points/s min / median (wall, clock to the final flush); load = 1-min average"
    )
    header = f"{'tool':<7} {'database, durability':<22} {'case':<46} {'points':>8} {'min':>9} {'median':>9} {'/CPU-s':>9} {'load':>11}"
    print(header)
    for f in figures:
        loads = f"{min(f['load_1min']):.0f}-{max(f['load_1min']):.0f}"
        print(
            f"{f['tool']:<7} {f['database'] + ', ' + f['durability']:<22} {f['label']:<46} {f['points']:>8,} "
            f"{f['points_per_s_min']:>9,.0f} {f['points_per_s_median']:>9,.0f} {f['points_per_cpu_s_median']:>9,.0f} "
            f"{loads:>11}  {'' if f['all_rows_stored'] else 'POINTS MISSING'}"
            + (f" (journal_mode {'/'.join(f['journal_mode'])})" if f["tool"] == "mlflow" else "")
        )
    print("/CPU-s: points per CPU second of the logging process (median); the database's own CPU is not in it")
    print("when is a point durable:")
    for (tool_name, case_name), promise in WHEN_DURABLE.items():
        if any(f["tool"] == tool_name and f["case"] == case_name for f in figures):
            print(f"  {tool_name} {case_name}: {promise}")
    by = {(f["tool"], f["database"], f["durability"], f["case"]): f for f in figures}
    summary = {"machine": machine_line(), "repetitions": args.repetitions, "cases": figures, "headline": {}}
    for database in ("sqlite", "postgresql"):
        durability = "mlrt" if database == "sqlite" else "fsync"
        batched = by.get(("mlrt", database, durability, "batch"))
        if batched:
            rate = batched["points_per_s_median"]
            met = "MET" if rate >= TARGET_BATCHED else "MISSED"
            print(f"mlrt batched on {database}: median {rate:,.0f} points/s (target >= {TARGET_BATCHED:,}: {met})")
            summary["headline"][f"batched_{database}_points_per_s"] = rate
    for durability in ("mlrt", "default"):
        theirs = by.get(("mlflow", "sqlite", durability, "one"))
        ours = by.get(("mlrt", "sqlite", "mlrt", "one"))
        if theirs and ours:
            ratio = ours["points_per_s_median"] / theirs["points_per_s_median"]
            met = "MET" if ratio >= TARGET_ONE_BY_ONE_RATIO else "MISSED"
            same = "same durability (headline)" if durability == "mlrt" else "MLflow at SQLite's defaults"
            print(f"one-by-one mlrt/mlflow, {same}: {ratio:,.1f}x (target >= {TARGET_ONE_BY_ONE_RATIO}x: {met})")
            summary["headline"][f"ratio_one_by_one_mlflow_{durability}"] = ratio
        theirs = by.get(("mlflow", "sqlite", durability, "batch"))
        ours = by.get(("mlrt", "sqlite", "mlrt", "batch"))
        if theirs and ours:
            ratio = ours["points_per_s_median"] / theirs["points_per_s_median"]
            print(f"batched mlrt log_metrics / mlflow log_batch, mlflow durability {durability}: {ratio:,.1f}x")
            summary["headline"][f"ratio_batched_mlflow_{durability}"] = ratio
    if mlflow_note:
        print(f"mlflow: {mlflow_note}")
        summary["mlflow"] = mlflow_note
    ok = all(f["all_rows_stored"] for f in figures)
    summary["all_points_in_db"] = ok
    print(f"every logged point found in its database: {'yes' if ok else 'NO -- figures are not valid'}")
    print(f"{load_line()} at the end")
    if args.json:
        write_json(args.json, summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
