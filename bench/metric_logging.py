"""Metric logging throughput into SQLite: the mlrt SDK vs MLflow's client, in one run.

Run it from an environment that has mlrt (and, for the comparison, mlflow)
installed -- see bench/README.md:

    python bench/metric_logging.py
    python bench/metric_logging.py --points 200000 --mlflow-points 2000 --json bench/results/metrics.json

Cases (each in its own fresh process; points/s counts every point logged
between the clock's start and the return of the final flush, so it includes
writing them all to the database):

mlrt (each case is a real `mlrt submit --wait -q` job, so the SDK runs inside
a job exactly as a user's script does, with the controller polling beside it):

* one-by-one:        ``mlrt.log_metric("loss", v, step=i)`` N times, then ``mlrt.flush()``
* one-by-one, auto step: the same with ``step`` left out (the SDK numbers the steps)
* batched:           ``mlrt.log_metrics({10 keys}, step=i)`` N/10 times, then ``mlrt.flush()``

MLflow (a plain process; tracking URI ``sqlite:///.../mlflow.db``):

* one-by-one:        ``mlflow.log_metric("loss", v, step=i)`` (synchronous, the default)
* one-by-one, async: ``mlflow.log_metric(..., synchronous=False)`` then ``mlflow.flush_async_logging()``
* batched:           ``MlflowClient().log_batch(run_id, metrics=[Metric...])``, 1000 per call (its limit)

Setup is outside the clock on both sides: one warm-up point (key ``_warmup``)
is logged and written first, which opens the database (and for MLflow creates
and migrates it and starts the run). After each case the rows are counted in
the database, and the case fails if any point is missing.

Targets: mlrt batched >= 100,000 points/s; mlrt one-by-one >= 50x MLflow's
one-by-one (MLflow measured about 286 points/s one-by-one, 9,600/s batched).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, machine_line, peer_version, write_json  # noqa: E402

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
        "run_id": os.environ["MLRT_RUN_ID"],
    }


def child_mlflow(case: str, n: int, db_path: str) -> dict:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{db_path}")
    mlflow.set_experiment("mlrt-bench")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        mlflow.log_metric("_warmup", 0.0, step=0)
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
    return {"points": n, "seconds": done - started, "call_seconds": logged - started, "run_id": run_id}


# -- the driver ------------------------------------------------------------------


def count_rows(db_path: Path, table: str, run_column: str, run_id: str) -> int:
    with sqlite3.connect(db_path) as db:
        query = f"SELECT COUNT(*) FROM {table} WHERE {run_column} = ? AND key != '_warmup'"
        return db.execute(query, (run_id,)).fetchone()[0]


def run_mlrt_case(case: str, n: int, workdir: Path, env: dict[str, str], mlrt: str) -> dict:
    out = workdir / f"mlrt-{case}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"mlrt:{case}",
        "--points",
        str(n),
        "--out",
        str(out),
    ]
    spec = workdir / f"job-{case}.yaml"
    spec.write_text(JOB_YAML.format(name=f"bench-{case}", command=json.dumps(command)))
    result = subprocess.run(
        [mlrt, "submit", "--wait", "-q", str(spec)], cwd=workdir, env=env, capture_output=True, text=True
    )
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"mlrt case {case} failed (exit {result.returncode}): {result.stdout}{result.stderr}")
    figures = json.loads(out.read_text())
    figures["rows"] = count_rows(workdir / "mlrt-home" / "mlrt.db", "metrics", "run_id", figures["run_id"])
    return figures


def run_mlflow_case(case: str, n: int, workdir: Path, env: dict[str, str]) -> dict:
    out = workdir / f"mlflow-{case}.json"
    db_path = workdir / "mlflow" / "mlflow.db"
    db_path.parent.mkdir(exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", f"mlflow:{case}", "--points", str(n)]
    command += ["--out", str(out), "--mlflow-db", str(db_path)]
    result = subprocess.run(command, cwd=db_path.parent, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"mlflow case {case} failed (exit {result.returncode}): {result.stderr[-3000:]}")
    figures = json.loads(out.read_text())
    figures["rows"] = count_rows(db_path, "metrics", "run_uuid", figures["run_id"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="points per mlrt case (default 100,000)")
    parser.add_argument("--mlflow-points", type=int, default=2_000, help="points for MLflow one-by-one (default 2,000)")
    parser.add_argument(
        "--mlflow-batch-points", type=int, default=20_000, help="points for MLflow log_batch (default 20,000)"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mlflow-db", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        side, case = args.child.split(":")
        figures = child_mlrt(case, args.points) if side == "mlrt" else child_mlflow(case, args.points, args.mlflow_db)
        Path(args.out).write_text(json.dumps(figures))
        return 0

    from _common import tool

    mlrt = tool("mlrt")
    if mlrt is None:
        print("error: no mlrt executable found next to this python or on PATH", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-metrics-"))
    env = bench_env(workdir, bytecode_cache=True)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)
    print(f"metric logging throughput into SQLite; {machine_line()}")
    print(f"workdir {workdir}")

    rows: list[tuple[str, str, dict]] = []
    cases = [
        ("mlrt", "one", "log_metric one-by-one (step=i) + flush", args.points),
        ("mlrt", "one-auto", "log_metric one-by-one (auto step) + flush", args.points),
        ("mlrt", "batch", "log_metrics 10 keys/call + flush", args.points),
    ]
    mlflow_note = None
    if args.no_mlflow:
        mlflow_note = "skipped (--no-mlflow)"
    elif peer_version("mlflow") is None:
        mlflow_note = "NOT RUN: mlflow is not installed in this environment (see bench/README.md)"
    else:
        cases += [
            ("mlflow", "one", "mlflow.log_metric one-by-one (sync)", args.mlflow_points),
            ("mlflow", "one-async", "mlflow.log_metric(synchronous=False) + flush", args.mlflow_points),
            ("mlflow", "batch", "MlflowClient.log_batch, 1000 per call", args.mlflow_batch_points),
        ]
    for side, case, label, n in cases:
        print(f"  running {side} {case} ({n:,} points)...", flush=True)
        try:
            figures = (
                run_mlrt_case(case, n, workdir, env, mlrt) if side == "mlrt" else run_mlflow_case(case, n, workdir, env)
            )
        except RuntimeError as exc:
            if side == "mlrt":
                raise
            mlflow_note = f"NOT RUN: mlflow failed here: {str(exc).strip().splitlines()[-1]}"
            print(f"  {mlflow_note}")
            break
        rows.append((side, case, {**figures, "label": label}))

    print()
    print(f"{'tool':<7} {'case':<48} {'points':>8} {'in DB':>8} {'seconds':>8} {'points/s':>11} {'us/call*':>9}")
    by_key: dict[tuple[str, str], dict] = {}
    ok = True
    for side, case, f in rows:
        f["points_per_s"] = f["points"] / f["seconds"]
        calls = f["points"] // (len(BATCH_KEYS) if case == "batch" and side == "mlrt" else 1)
        f["us_per_call"] = f["call_seconds"] / calls * 1e6 if side == "mlrt" or case != "batch" else float("nan")
        by_key[(side, case)] = f
        ok &= f["rows"] == f["points"]
        print(
            f"{side:<7} {f['label']:<48} {f['points']:>8,} {f['rows']:>8,} {f['seconds']:>8.3f} "
            f"{f['points_per_s']:>11,.0f} {f['us_per_call']:>9.2f}"
        )
    print("* us/call: time in the logging calls only (before the final flush), per call")
    print()

    one = by_key[("mlrt", "one")]["points_per_s"]
    batched = by_key[("mlrt", "batch")]["points_per_s"]
    summary = {
        "machine": machine_line(),
        "cases": [{"tool": s, "case": c, **f} for s, c, f in rows],
        "all_points_in_db": ok,
        "batched_target_met": batched >= TARGET_BATCHED,
    }
    print(
        f"mlrt batched: {batched:,.0f} points/s (target >= {TARGET_BATCHED:,}: {'MET' if batched >= TARGET_BATCHED else 'MISSED'})"
    )
    if ("mlflow", "one") in by_key:
        ratio_one = one / by_key[("mlflow", "one")]["points_per_s"]
        met = ratio_one >= TARGET_ONE_BY_ONE_RATIO
        print(f"mlflow {peer_version('mlflow')}:")
        print(
            f"  one-by-one: mlrt/mlflow = {ratio_one:,.1f}x (target >= {TARGET_ONE_BY_ONE_RATIO}x: {'MET' if met else 'MISSED'})"
        )
        summary["mlflow_version"] = peer_version("mlflow")
        summary["ratio_one_by_one"] = ratio_one
        summary["one_by_one_target_met"] = met
        if ("mlflow", "one-async") in by_key:
            ratio_async = one / by_key[("mlflow", "one-async")]["points_per_s"]
            print(f"  one-by-one vs mlflow async logging: mlrt/mlflow = {ratio_async:,.1f}x")
            summary["ratio_one_by_one_vs_async"] = ratio_async
        if ("mlflow", "batch") in by_key:
            ratio_batch = batched / by_key[("mlflow", "batch")]["points_per_s"]
            print(f"  batched: mlrt log_metrics / mlflow log_batch = {ratio_batch:,.1f}x")
            summary["ratio_batched"] = ratio_batch
    if mlflow_note:
        print(f"mlflow: {mlflow_note}")
        summary["mlflow"] = mlflow_note
    print(f"every logged point found in its database: {'yes' if ok else 'NO -- figures are not valid'}")
    if args.json:
        write_json(args.json, summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
