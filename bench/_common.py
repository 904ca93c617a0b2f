"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / ".peers"
"""Where :func:`peers_venv` keeps the peers' virtual environment (git-ignored)."""
PEER_INPUTS = (BENCH_DIR / "requirements.txt", REPO_ROOT / "constraints.txt")


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


def peers_venv() -> Path:
    """The virtual environment holding the peers (MLflow, Optuna, TorchX), made on first use.

    ``bench/.peers/venv``, built from the base interpreter of this Python with
    ``pip install -c constraints.txt -r bench/requirements.txt``, so the peers'
    own pins (torchx 0.7 wants ``urllib3<1.27``, which breaks the kubernetes
    client) never touch mlrt's environment. It is rebuilt when either file
    changes (their hash is kept in ``bench/.peers/inputs.sha256``). Raises
    ``RuntimeError`` with pip's last lines when the install fails."""
    import fcntl

    PEERS_DIR.mkdir(exist_ok=True)
    with open(PEERS_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one bench at a time makes it; the others wait and use it
        return _make_peers_venv()


def _make_peers_venv() -> Path:
    venv = PEERS_DIR / "venv"
    stamp = PEERS_DIR / "inputs.sha256"
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in PEER_INPUTS)).hexdigest()
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return venv
    print(f"making the peers' virtual environment in {venv} (once; a few minutes)...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = (
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-c", str(PEER_INPUTS[1]), "-r", str(PEER_INPUTS[0])],
    )
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"could not make the peers' environment ({' '.join(argv[:4])} ...):\n{tail}")
    stamp.write_text(digest + "\n")
    return venv


def peer_python() -> str:
    """The peers' interpreter (see :func:`peers_venv`)."""
    return str(peers_venv() / "bin" / "python")


def peer_tool(name: str) -> str:
    """The peers' console script ``name`` (``torchx``, ``mlflow``)."""
    return str(peers_venv() / "bin" / name)


def peer_versions() -> dict[str, str]:
    """Name -> version of every distribution in the peers' environment."""
    script = "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    import json

    return json.loads(subprocess.run([peer_python(), "-c", script], capture_output=True, text=True, check=True).stdout)


def load_line() -> str:
    """The machine's load averages (1, 5, 15 min), to print beside every figure."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


SQLITE_DURABILITY = {
    "mlrt": "WAL, synchronous=NORMAL (mlrt's own settings): a commit is durable at the next WAL checkpoint, "
    "safe against a crash of the process, not of the machine",
    "default": "rollback journal, synchronous=FULL (SQLite's defaults): every commit is fsynced",
}
"""What each SQLite setting promises; the benchmarks print the one each side used."""


def sqlite_pragmas_snippet(mode: str) -> str:
    """Python source that makes every SQLAlchemy engine of the process open SQLite as ``mode`` says.

    ``mode`` is ``"mlrt"`` (WAL and ``synchronous=NORMAL``, what mlrt sets) or
    ``"default"`` (SQLite's own). The peers (MLflow's and Optuna's storages)
    create their engines themselves; a ``connect`` listener on the ``Engine``
    class reaches them all without patching the peer."""
    if mode == "default":
        return ""
    if mode != "mlrt":
        raise ValueError(mode)
    return (
        "from sqlalchemy import event as _event\n"
        "from sqlalchemy.engine import Engine as _Engine\n"
        "@_event.listens_for(_Engine, 'connect')\n"
        "def _bench_pragmas(dbapi_connection, _record):\n"
        "    if type(dbapi_connection).__module__.startswith('sqlite3'):\n"
        "        cursor = dbapi_connection.cursor()\n"
        "        cursor.execute('PRAGMA journal_mode=WAL')\n"
        "        cursor.execute('PRAGMA synchronous=NORMAL')\n"
        "        cursor.close()\n"
    )


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
    # The resident process the bench's mlrt commands start (mlrt.resident) lives in the workdir
    # and exits 30 s after the bench's last command, not 10 minutes.
    env["MLRT_RESIDENT_DIR"] = str(workdir / "resident")
    env["MLRT_RESIDENT_IDLE"] = "30"
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
    ``(key, value)`` in ``metrics`` with its summary row (the store keeps one per run and key); in bulk through
    mlrt's models, 1,000 clones per transaction.

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
    from mlrt.store.models import Attempt, Event, Job, Metric, MetricSummary, Param, Run

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
        jobs, clones, params_out, attempts_out, events, points, summaries = [], [], [], [], [], [], []
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
            summaries += [
                {"run_id": new_id, "key": k, "points": 1, "low": v, "high": v, "last_step": 0, "last_value": v}
                for k, v in metrics
            ]
        with store.engine.begin() as conn:
            conn.execute(insert(Job.__table__), jobs)
            conn.execute(insert(Run.__table__), clones)
            for model, values in (
                (Param, params_out),
                (Attempt, attempts_out),
                (Event, events),
                (Metric, points),
                (MetricSummary, summaries),
            ):
                if values:
                    conn.execute(insert(model.__table__), values)
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


def start_resident(argv: list[str], env: dict[str, str], timeout: float = 120.0) -> None:
    """Run ``argv`` (an ``mlrt`` command) once, which starts the resident process of ``env``'s
    ``MLRT_RESIDENT_DIR`` (:mod:`mlrt.resident`), and wait until it listens: the timed commands
    then measure what a user's second and later commands cost."""
    folder = Path(env["MLRT_RESIDENT_DIR"])
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    deadline = time.monotonic() + timeout
    while not list(folder.glob("*.sock")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no resident mlrt process listened in {folder} within {timeout:.0f} s")
        time.sleep(0.1)


def stop_resident(folder: Path) -> None:
    """Stop the resident process whose socket folder is ``folder``."""
    from mlrt.resident import stop_all

    stop_all(str(folder))
