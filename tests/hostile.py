"""A shared controller as a hostile user meets it: a real ``mlrt controller`` on PostgreSQL
whose only allowed backend is podman, with tokens of two projects and an operator.

The security tests (``tests/test_security_*.py``) import the fixtures from here::

    from hostile import hostile, training_image  # noqa: F401  (fixtures)

    def test_something(hostile):
        response = hostile.client("alice").post("/jobs", json={"spec": TEXT})
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import missing, wait_for
from mlrt.service import auth
from mlrt.store import Store
from mlrt_container.engine import configured_engine
from service_process import ServiceProcess

ENGINE = shutil.which(configured_engine())
RUN_ARGS = os.environ.get("MLRT_CONTAINER_RUN_ARGS") or (
    ("--runtime runc " if shutil.which("runc") else "") + "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
)
TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_GATE", "CANCELLED", "TIMED_OUT", "PRUNED"}


def engine_problem() -> str | None:
    """Why the container engine (podman, or docker) cannot run containers here, or None."""
    if ENGINE is None:
        return "needs podman or docker (apt-get install podman runc); neither is installed"
    info = subprocess.run([ENGINE, "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"{ENGINE} cannot run containers here: {(info.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


@pytest.fixture(scope="session")
def training_image() -> str:
    """The locally built training image (see ``tests/container_image.py``)."""
    problem = engine_problem()
    if problem:
        missing("podman", f"security tests against the container backend: {problem}")
    from container_image import build_image

    return build_image(ENGINE, RUN_ARGS.split())


@dataclasses.dataclass
class Hostile:
    """The service under attack, its database and one token per principal."""

    service: ServiceProcess
    db: str
    tokens: dict[str, str]
    """``alice`` (project vision), ``bob`` (project speech), ``admin`` (operator)."""
    image: str
    home: Path

    def client(self, who: str | None, **kwargs: Any) -> httpx.Client:
        """An HTTP client of ``/api/v1`` with ``who``'s token (None: no token)."""
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=f"{self.service.url}/api/v1", headers=headers, timeout=60, **kwargs)

    def submit(self, who: str, spec: str, **body: Any) -> httpx.Response:
        with self.client(who) as client:
            return client.post("/jobs", json={"spec": spec, **body})

    def wait_terminal(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The run's row once it reached a terminal state."""
        with self.client("admin") as client:

            def done() -> dict[str, Any] | None:
                row = client.get(f"/runs/{run_id}").json()
                return row if row["state"] in TERMINAL else None

            return wait_for(done, timeout=timeout, interval=0.2)

    def alive(self) -> bool:
        """The service still answers ``/healthz``."""
        try:
            return httpx.get(f"{self.service.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def hostile(postgres_db: str, tmp_path: Path, home: Path, training_image: str, monkeypatch: pytest.MonkeyPatch):
    """A started service (``MLRT_ALLOWED_BACKENDS=container``) and its tokens; stopped afterwards."""
    store = Store(postgres_db)
    tokens = {
        "alice": auth.issue(store, "user", "alice", "vision"),
        "bob": auth.issue(store, "user", "bob", "speech"),
        "admin": auth.issue(store, "admin", "ops"),
    }
    env = {
        "MLRT_ALLOWED_BACKENDS": "container",
        "MLRT_CONTAINER_RUN_ARGS": RUN_ARGS,
        "MLRT_TRAINING_IMAGE": training_image,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
    try:
        yield Hostile(service, postgres_db, tokens, training_image, home)
    finally:
        service.stop()
        _remove_containers([run.id for run in store.list_runs(limit=10_000)])


def _remove_containers(run_ids: list[str]) -> None:
    """Remove what the runs left behind: containers outlive a stopped controller (to be adopted),
    so a test that stops its service while a job runs would leave the job's container and network."""
    for run_id in run_ids:
        label = f"label=mlrt.run-id={run_id}"
        names = subprocess.run(
            [ENGINE, "ps", "-a", "-q", "--filter", label], capture_output=True, text=True, check=False
        ).stdout.split()
        if names:
            subprocess.run([ENGINE, "rm", "-f", *names], capture_output=True, check=False)
        networks = subprocess.run(
            [ENGINE, "network", "ls", "-q", "--filter", f"name=^mlrt-{run_id}"], capture_output=True, text=True
        ).stdout.split()
        if networks:
            subprocess.run([ENGINE, "network", "rm", *networks], capture_output=True, check=False)
