"""CPU per submission of the API's submit route, in process (a diagnostic for A/B runs, not a benchmark).

    python bench/submission_path.py [-n 400] [--pg-url URL]

Builds the controller's API (no reconcile loop) over a fresh PostgreSQL
database and posts ``-n`` training jobs to ``POST /api/v1/jobs`` through the
whole ASGI stack with Starlette's ``TestClient``, after 30 of warm-up. Prints
the wall time per submission, this process's CPU (the client and the API) and
the CPU of every ``postgres`` process meanwhile. Compare two trees by running
it with ``PYTHONPATH=TREE/runtime:TREE/plugins`` for each, arms alternating
(bench/README.md, "stop 32").
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402
from controller_service import ALGORITHM_SPEC  # noqa: E402

# controller_service's job, on the local backend: the route's checks need no cluster to reach.
SPEC = ALGORITHM_SPEC.replace("backend: kubernetes", "backend: local").replace(
    "    kubernetes: {{namespace: default}}\n", ""
)
WARM_UP = 30


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine so far."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if (process.info["name"] or "").startswith("postgres") and process.info["cpu_times"]:
            total += process.info["cpu_times"].user + process.info["cpu_times"].system
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=400, help="submissions measured (default 400)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", help="server URL")
    args = parser.parse_args()
    home = os.environ["MLRT_HOME"] = tempfile.mkdtemp(prefix="mlrt-bench-submit-")
    os.environ["MLRT_ALLOWED_BACKENDS"] = "local"  # the route's checks, without a cluster to reach

    from starlette.testclient import TestClient

    from mlrt.service import auth
    from mlrt.service.api import create_app
    from mlrt.service.telemetry import Telemetry
    from mlrt.store import Store

    database = f"mlrt_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    store = Store(args.pg_url.rsplit("/", 1)[0] + f"/{database}")
    try:
        token = auth.issue(store, "user", "bench", "bench")
        app = create_app(store, None, Telemetry(store))
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as http:

            def submit(index: int) -> None:
                response = http.post("/api/v1/jobs", json={"spec": SPEC.format(index=index), "filename": "job.yaml"})
                if response.status_code != 201:
                    raise SystemExit(f"submission {index}: HTTP {response.status_code}: {response.text[:300]}")

            for index in range(WARM_UP):
                submit(index)
            cpu, pg, wall = own_cpu(), postgres_cpu(), time.perf_counter()
            for index in range(WARM_UP, WARM_UP + args.n):
                submit(index)
            cpu, pg, wall = own_cpu() - cpu, postgres_cpu() - pg, time.perf_counter() - wall
    finally:
        store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(home)
    print(f"submission path in process: {machine_line()}")
    print(
        f"{args.n} submissions, per submission: wall {wall / args.n * 1000:.2f} ms, "
        f"this process's CPU {cpu / args.n * 1000:.2f} ms, PostgreSQL's CPU {pg / args.n * 1000:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
