"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def tool(name: str) -> str | None:
    """The console script ``name`` next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def bench_env(workdir: Path, *, bytecode_cache: bool) -> dict[str, str]:
    """The environment every measured command gets.

    With ``bytecode_cache`` (the default), compiled bytecode is cached under
    ``workdir`` even when the calling shell sets PYTHONDONTWRITEBYTECODE, so
    the figures match an ordinary installation (where site-packages and the
    editable source have .pyc files) and no __pycache__ lands in the repo.
    """
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    # Keep peers off the network and quiet.
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.setdefault("TORCHX_DISABLE_TELEMETRY", "1")
    return env


def machine_line() -> str:
    return (
        f"python {platform.python_version()} ({sys.executable}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )


def peer_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def write_json(path: str, summary: dict) -> None:
    """Write a benchmark's figures to ``path`` (``--json``) and say where."""
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")


def clone_finished_runs(store, template_id: str, n: int, metrics: tuple[tuple[str, float], ...] = ()) -> None:
    """Insert ``n`` SUCCEEDED runs cloned from run ``template_id`` of mlrt's ``store``: its job, run, params and
    attempts with new ids, the four state events of a finished run and, per clone, a step-0 point of each
    ``(key, value)`` in ``metrics``; in bulk through mlrt's models, 1,000 clones per transaction.

    The clones read as runs once run: each the template's rows with the template's id replaced by the clone's
    in every text and JSON value (so names derived from it, such as Kubernetes objects', name objects that no
    longer exist), ended a day ago. On PostgreSQL the tables are analyzed afterwards, as autovacuum would
    after such growth, so the planner sees the rows as a database that gathered them over months would."""
    import json
    import time
    import uuid
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import insert, select

    from mlrt.states import RunState
    from mlrt.store.models import Attempt, Event, Job, Metric, Param, Run

    def rows(conn, model, column) -> list[dict]:
        table = model.__table__
        return [dict(r) for r in conn.execute(select(table).where(table.c[column] == template_id)).mappings()]

    def renamed(row: dict, new_id: str) -> dict:
        out = {}
        for key, value in row.items():
            if isinstance(value, str):
                value = value.replace(template_id, new_id)
            elif isinstance(value, (dict, list)):
                value = json.loads(json.dumps(value).replace(template_id, new_id))
            out[key] = value
        return out

    with store.engine.begin() as conn:
        (job,) = rows(conn, Job, "id")
        (run,) = rows(conn, Run, "id")
        params = rows(conn, Param, "run_id")
        attempts = rows(conn, Attempt, "run_id")
    done = RunState.SUCCEEDED.value
    base = datetime.now(timezone.utc) - timedelta(days=1)
    now = time.time()
    for first in range(0, n, 1000):
        jobs, clones, params_out, attempts_out, events, points = [], [], [], [], [], []
        for i in range(first, min(n, first + 1000)):
            new_id = f"bench-done-{i:05d}-{uuid.uuid4().hex[:6]}"
            created = base + timedelta(seconds=i)
            ended = created + timedelta(seconds=30)
            jobs.append(renamed(job, new_id) | {"created_at": created})
            clones.append(
                renamed(run, new_id)
                | {"state": done, "reason": "", "attempts": 1, "created_at": created, "started_at": created}
                | {"ended_at": ended, "heartbeat_at": None, "cancel_requested": False}
            )
            params_out += [renamed(p, new_id) for p in params]
            for a in attempts:
                attempt = renamed(a, new_id) | {"state": done, "exit_code": 0, "started_at": created}
                attempt.pop("id", None)
                attempts_out.append(attempt | {"ended_at": ended})
            previous = None
            for to_state, at in (("QUEUED", created), ("STARTING", created), ("RUNNING", created), (done, ended)):
                events.append({"run_id": new_id, "at": at, "from_state": previous, "to_state": to_state, "reason": ""})
                previous = to_state
            points += [{"run_id": new_id, "key": k, "step": 0, "value": v, "timestamp": now} for k, v in metrics]
        with store.engine.begin() as conn:
            conn.execute(insert(Job.__table__), jobs)
            conn.execute(insert(Run.__table__), clones)
            for model, values in ((Param, params_out), (Attempt, attempts_out), (Event, events), (Metric, points)):
                if values:
                    conn.execute(insert(model.__table__), values)
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
