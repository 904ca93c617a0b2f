"""A real ``mlrt controller`` process for tests: start, wait until ready, kill, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import MLRT_SCRIPT
from mlrt.secrets import home_key_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """``mlrt --db DB controller --port PORT`` with its log in ``log_file``."""

    def __init__(
        self,
        db: str,
        log_file: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ):
        self.db = db
        self.options = options
        self.log_file = log_file
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The operator key of the test's MLRT_HOME, shared with CLI commands run on the same database.
        key = {"MLRT_SECRET_KEY_FILE": str(home_key_file())}
        self.env = {**os.environ, **key, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, *, leader: bool = True, timeout: float = 30.0) -> ServiceProcess:
        """Start and wait until /readyz answers (and, with ``leader``, this replica leads)."""
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(MLRT_SCRIPT),
                    "--db",
                    self.db,
                    "controller",
                    "--port",
                    str(self.port),
                    "--poll-interval",
                    "0.1",
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited {self.process.returncode}:\n{self.log_file.read_text()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2)
                if ready.status_code == 200 and (ready.json()["leader"] or not leader):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"controller not ready after {timeout}s:\n{self.log_file.read_text()}")

    def is_leader(self) -> bool:
        return httpx.get(f"{self.url}/readyz", timeout=5).json()["leader"]

    def kill(self) -> None:
        """SIGKILL the controller (its process group: local workers die with it anyway)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
