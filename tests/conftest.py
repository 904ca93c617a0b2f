"""Shared fixtures: an isolated MLRT_HOME per test and helpers to drive the CLI."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from s3_server import s3_endpoint, s3_server  # noqa: F401  (S3 fixtures for every test module)

MLRT_SCRIPT = Path(sys.executable).parent / "mlrt"

# The suite runs in three pytest-xdist workers on two cores (pyproject's addopts): one BLAS/OpenMP
# thread per process (the workers' training processes inherit it) keeps them from oversubscribing
# the cores. A job that sets compute.cpu still gets that many threads from its backend.
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

# Components a run must have (``MLRT_REQUIRE=postgres,podman,chromium,helm``; ``all``):
# a test that needs one of them fails instead of skipping, so a green CI run
# cannot hide a missing PostgreSQL, container engine, browser or Helm.
REQUIRED = {name.strip() for name in os.environ.get("MLRT_REQUIRE", "").split(",") if name.strip()}


def missing(component: str, reason: str) -> NoReturn:
    """Skip the calling test because ``component`` is absent, or fail it when
    ``MLRT_REQUIRE`` names that component (or ``all``)."""
    if component in REQUIRED or "all" in REQUIRED:
        pytest.fail(f"{component} is required (MLRT_REQUIRE) but missing: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_or_missing(module: str, component: str, reason: str) -> Any:
    """``pytest.importorskip`` that fails when ``component`` is required (see :func:`missing`)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing(component, reason)


@pytest.fixture(scope="session", autouse=True)
def resident_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``mlrt`` console script runs commands in a resident process (:mod:`mlrt.resident`): the
    tests' get one per test process, in a folder of their own, stopped when the session ends."""
    from mlrt.resident import stop_all

    folder = tmp_path_factory.mktemp("resident")
    folder.chmod(0o700)
    os.environ["MLRT_RESIDENT_DIR"] = str(folder)
    yield folder
    stop_all(str(folder))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MLRT_HOME (database, logs, caches, outputs)."""
    home = tmp_path / "mlrt-home"
    monkeypatch.setenv("MLRT_HOME", str(home))
    monkeypatch.delenv("MLRT_DB", raising=False)
    return home


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run ``mlrt ARGS...`` in-process through click's CliRunner."""
    from mlrt.cli import _register
    from mlrt.cli import cli as root

    _register()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a TrainingJob spec (and optional program files) into tmp_path; return its path."""

    def write(spec: str, name: str = "job.yaml", files: dict[str, str] | None = None) -> Path:
        for filename, content in (files or {}).items():
            (tmp_path / filename).write_text(textwrap.dedent(content))
        path = tmp_path / name
        path.write_text(textwrap.dedent(spec))
        return path

    return write


def command_spec(name: str, command: str, extra: str = "") -> str:
    """A command job spec; ``extra`` is more YAML under ``spec:`` (indented 2)."""
    return f"apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {{name: {name}}}\nspec:\n  command: {command}\n{extra}"


def submit_detached(cli: Callable[..., Result], spec_path: Path) -> str:
    """``mlrt submit SPEC --detach --json``, checked; the run id."""
    result = cli("submit", str(spec_path), "--detach", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def run_json(cli: Callable[..., Result], run_id: str) -> dict[str, Any]:
    result = cli("runs", "show", run_id, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def run_ended(run_id: str, timeout: float) -> Any:
    """The run, once it is in a terminal state in this test's store; fails after ``timeout`` seconds."""
    from mlrt.states import RunState
    from mlrt.store import Store

    store = Store()
    return wait_for(lambda: RunState((run := store.get_run(run_id)).state).is_terminal() and run, timeout)


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postgres_url() -> str | None:
    """The test server's URL when PostgreSQL answers on 127.0.0.1:5432, else None."""
    url = os.environ.get("MLRT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2):
            return url
    except Exception:
        return None


@pytest.fixture
def postgres_db():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    url = postgres_url()
    if url is None:
        missing("postgres", "PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"mlrt_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
