"""Request time of the web UI's pages on a large store, through a real ``mlrt ui`` server.

    python bench/ui_pages.py                        # SQLite and PostgreSQL, 10,000 runs, 1,000,000 points
    python bench/ui_pages.py --backends sqlite -n 5 --no-mlflow

The store is the one ``everyday_commands.py`` builds (its ``make_template`` and ``fill``): one
real run (``mlrt submit --wait`` of a no-op command job) that then gets 1,000,000 points of
metric ``m0`` and 1,000 points of each of ``m1``..``m3``, and 9,999 finished runs cloned from it
in bulk, each with a last ``validation_accuracy``, ``train_accuracy`` and ``loss``. PostgreSQL
gets a database of its own (``mlrt_bench_ui`` on 127.0.0.1:5432, dropped at the end).

``mlrt --db URL ui --port 0`` serves it (uvicorn, one process, as a user runs it); each page is
asked once to warm up, then ``-n`` times over one keep-alive connection on loopback; the figures
are the min and median wall time from request to the last byte of the answer (server time plus
a loopback round trip). Targets (issue 15): the runs page under 300 ms with 10,000 runs, a
1,000,000-point metric chart under 1 s.

Peer: MLflow's tracking server (``mlflow server``, ``bench/.peers`` environment, SQLite store)
holding the same shape -- 10,000 runs with three metrics each, one of them with 1,000,000 points
of ``m0`` -- written first through MLflow's own client (the experiment, the big run's first 1,000
points, one finished run), then in bulk as copies of the rows MLflow wrote (its client takes
~0.2 s a run here, which would make filling it take an hour); asked the REST calls its UI makes for the same
views: ``runs/search`` for a page of 50 runs (newest first, and by a metric), and
``metrics/get-history-bulk-interval`` (what MLflow's charts ask: the server samples a series to
``max_results`` points at evenly spaced steps, here 1,000 like mlrt's charts) for the whole
series and for a 10,000-step window (``start_step``/``end_step``, its zoom). MLflow's figures
are the data alone: its browser then renders the table and the chart, where mlrt's page comes
rendered. ``--mlflow-runs``/``--mlflow-points`` scale the peer down when filling it would take
too long; the figures say what was used.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, load_line, machine_line, median, peer_python, peer_tool, tool, write_json  # noqa: E402
from everyday_commands import PG_ADMIN, fill, make_template  # noqa: E402

PG_NAME = "mlrt_bench_ui"


def pages(template_id: str, other_id: str, runs: int, points: int) -> list[tuple[str, str]]:
    """``(name, path)`` of every page timed."""
    chart = f"/ui/runs/{template_id}/chart.svg?key=m0"
    return [
        (f"runs page (50 newest of {runs:,})", "/ui/"),
        ("runs page sorted by a metric", "/ui/?sort=-validation_accuracy&col=validation_accuracy&col=loss"),
        ("runs table refresh (live part)", "/ui/runs/table"),
        (f"chart of {points:,} points", chart),
        ("chart zoomed to 10,000 of them", chart + f"&x0={points // 2}&x1={points // 2 + 9999}"),
        (f"run page ({points:,} + 3x1,000 points)", f"/ui/runs/{template_id}"),
        ("compare page (2 runs)", f"/ui/compare?run={template_id}&run={other_id}"),
    ]


def start_ui(db: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``mlrt --db DB ui --port 0``; the process and the URL it prints."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [tool("mlrt"), "--db", db, "ui", "--port", "0"], stdout=subprocess.PIPE, stderr=out, env=env
        )
    line = process.stdout.readline().decode()
    found = re.search(r"(http://[^/\s]+)/ui/", line)
    if not found:
        process.kill()
        raise SystemExit(f"mlrt ui printed {line!r}: {log.read_text()[-2000:]}")
    return process, found.group(1)


def time_requests(client, url: str, repeat: int, method: str = "GET", body: dict | None = None) -> dict:
    """Min and median seconds of ``repeat`` requests (after one warm-up), and the answer's size."""
    times, size = [], 0
    for i in range(repeat + 1):
        started = time.perf_counter()
        answer = client.request(method, url, json=body)
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            raise SystemExit(f"{method} {url}: {answer.status_code} {answer.text[:500]}")
        size = len(answer.content)
        if i:
            times.append(elapsed)
    return {"min_s": round(min(times), 4), "median_s": round(median(times), 4), "bytes": size, "n": repeat}


def measure(backend: str, args, workdir: Path) -> dict:
    import httpx
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
    process = None
    try:
        template_id = make_template(db, workdir, env)
        fill_s = fill(db, template_id, args.runs, args.points)
        print(
            f"{backend}: {args.runs:,} runs, {args.points:,} points of m0 in run {template_id} ({fill_s:.0f} s to fill)"
        )
        from mlrt.store import Store

        store = Store(db)
        other_id = next(r.id for r in store.list_runs(limit=2) if r.id != template_id)
        store.engine.dispose()
        process, base = start_ui(db, env, workdir / f"ui-{backend}.log")
        figures = {}
        with httpx.Client(base_url=base, timeout=120) as client:
            for name, path in pages(template_id, other_id, args.runs, args.points):
                figures[name] = time_requests(client, path, args.repeat)
                f = figures[name]
                print(
                    f"  {name:<40} min {f['min_s'] * 1000:7.1f} ms  median {f['median_s'] * 1000:7.1f} ms  ({f['bytes']:,} bytes)"
                )
        return {"db": backend, "runs": args.runs, "points": args.points, "pages": figures, "load_after": load_line()}
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)'))
            admin.dispose()


MLFLOW_FILL = """
import sqlite3, sys, time, uuid
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

uri, runs, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = MlflowClient(uri)
experiment = client.create_experiment("bench")
now = int(time.time() * 1000)
started = time.perf_counter()
# Through MLflow's client: the big run's first 1,000 points and one finished run with three metrics.
big = client.create_run(experiment, run_name="big").info.run_id
client.log_batch(big, metrics=[Metric("m0", (i % 977) / 977, now, i) for i in range(min(points, 1000))])
client.set_terminated(big)
template = client.create_run(experiment, run_name="clone").info.run_id
metrics = (("validation_accuracy", 0.9), ("train_accuracy", 0.95), ("loss", 0.1))
client.log_batch(template, metrics=[Metric(k, v, now, 0) for k, v in metrics])
client.set_terminated(template)
# The rest in bulk, as copies of the rows MLflow wrote (its client takes ~0.2 s a run, ~0.8 s per
# 1,000 points here): the big run's other points, and the template's rows under new run ids.
db = sqlite3.connect(uri.removeprefix("sqlite:///"))
db.executemany(
    "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES ('m0', ?, ?, ?, ?, 0)",
    (((i % 977) / 977, now, big, i) for i in range(1000, points)),
)
db.execute("UPDATE latest_metrics SET value = ?, step = ? WHERE run_uuid = ? AND key = 'm0'",
           (((points - 1) % 977) / 977, points - 1, big))
ids = [uuid.UUID(int=i + 1).hex for i in range(runs - 2)]
for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    shifted = {"run_uuid": "?", "start_time": "start_time + ?", "end_time": "end_time + ?"}
    select = ", ".join(shifted.get(c, c) for c in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} WHERE run_uuid = ?"
    marks = sum(c in shifted for c in columns)
    db.executemany(sql, ([new] + [i] * (marks - 1) + [template] for i, new in enumerate(ids)))
db.commit()
print(experiment, big, round(time.perf_counter() - started, 1))
"""


def measure_mlflow(args, workdir: Path) -> dict:
    """MLflow's tracking server on SQLite, filled through its client beforehand, asked the REST calls of its UI."""
    import httpx

    env = bench_env(workdir, bytecode_cache=True)
    port = 5000 + os.getpid() % 1000
    db = f"sqlite:///{workdir / 'mlflow.db'}"
    filled = subprocess.run(
        [peer_python(), "-c", MLFLOW_FILL, db, str(args.mlflow_runs), str(args.mlflow_points)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    log = open(workdir / "mlflow.log", "wb")
    server = subprocess.Popen(
        [peer_tool("mlflow"), "server", "--backend-store-uri", db, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--default-artifact-root", str(workdir / "mlartifacts")],
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"mlflow server did not start: {(workdir / 'mlflow.log').read_text()[-1000:]}")
            time.sleep(0.5)
        experiment, big, fill_s = filled.stdout.split()
        print(f"mlflow: {args.mlflow_runs:,} runs, {args.mlflow_points:,} points of m0 ({float(fill_s):.0f} s to fill)")
        api = "/api/2.0/mlflow"
        search = {"experiment_ids": [experiment], "max_results": 50, "order_by": ["attributes.start_time DESC"]}
        by_metric = search | {"order_by": ["metrics.validation_accuracy DESC"]}
        interval = f"/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={big}&metric_key=m0"
        window = f"start_step={args.mlflow_points // 2}&end_step={args.mlflow_points // 2 + 9999}"
        figures = {}
        with httpx.Client(base_url=base, timeout=300) as client:
            for name, method, path, body in (
                ("runs/search (50 newest)", "POST", f"{api}/runs/search", search),
                ("runs/search sorted by a metric", "POST", f"{api}/runs/search", by_metric),
                (f"chart: {args.mlflow_points:,} points sampled to 1,000", "GET", f"{interval}&max_results=1000", None),
                ("chart zoomed to 10,000 of them", "GET", f"{interval}&max_results=1000&{window}", None),
            ):  # fmt: skip
                figures[name] = time_requests(client, path, args.repeat, method, body)
                f = figures[name]
                print(
                    f"  {name:<40} min {f['min_s'] * 1000:7.1f} ms  median {f['median_s'] * 1000:7.1f} ms  ({f['bytes']:,} bytes)"
                )
        versions = subprocess.run(
            [peer_python(), "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True
        )
        return {
            "mlflow": versions.stdout.strip(),
            "runs": args.mlflow_runs,
            "points": args.mlflow_points,
            "calls": figures,
        }
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list of sqlite, postgresql")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000, help="points of metric m0 in the big run")
    parser.add_argument("-n", "--repeat", type=int, default=5, help="timed requests per page (after one warm-up)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow peer")
    parser.add_argument("--mlflow-runs", type=int, default=10_000)
    parser.add_argument("--mlflow-points", type=int, default=1_000_000)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    print(machine_line())
    print(load_line())
    results = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="mlrt-ui-bench-") as folder:
            results.append(measure(backend, args, Path(folder)))
    peer: dict = {}
    if not args.no_mlflow:
        with tempfile.TemporaryDirectory(prefix="mlrt-ui-bench-mlflow-") as folder:
            try:
                peer = measure_mlflow(args, Path(folder))
            except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                print(f"mlflow: NOT RUN: {detail.strip().splitlines()[-1] if detail.strip() else exc}")
                peer = {"not_run": str(exc)}
    print(load_line())
    if args.json:
        write_json(args.json, {"machine": machine_line(), "results": results, "mlflow": peer})


if __name__ == "__main__":
    main()
