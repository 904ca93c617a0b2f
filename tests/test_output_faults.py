"""Nothing lost in silence: S3 gone at upload time, a read-only or a full output folder.

A run whose output did not reach S3 ends FAILED ("output not uploaded"),
its files kept in staging until ``mlrt artifacts push``; a folder a run
cannot write fails it at once, not retried, with the system's reason.
Read-only and full folders are real tmpfs mounts (as root, chmod stops
nothing), unmounted afterwards.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import command_spec, import_or_missing, missing, run_json, wait_for

BUCKET = "mlrt-faults"
MODEL = b"weights that must not be lost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoProcess:
    """A moto S3 server in its own process on a fixed port, so a job can kill it and the test can bring it back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, "moto server exited at start"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoProcess]:
    """A private S3 server, the environment pointing at it (as a user would set it), few quick retries."""
    import_or_missing("moto.server", "moto", "the S3 fault tests need moto[server] (the test extra)")
    server = MotoProcess(free_port())
    server.start()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Keep the test short: two attempts per request, three tries per upload 0.2 s apart.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "0.2,0.2")
    try:
        yield server
    finally:
        server.stop()


def make_bucket() -> None:
    from mlrt import s3

    s3.client().create_bucket(Bucket=BUCKET)


@contextmanager
def tmpfs(target: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` at ``target`` for the block; unmount it afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        missing("mount", f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def events(cli: Callable, run_id: str) -> list[str]:
    return [e["reason"] for e in run_json(cli, run_id)["events"]]


def test_s3_gone_at_upload_fails_the_run_keeps_the_files_and_push_uploads_them_later(
    cli, write_spec, moto, home: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlrt import s3

    make_bucket()
    # The worker writes its output, then takes S3 down: the upload at the attempt's end finds nobody.
    program = f"""
        import os, pathlib, signal
        out = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
        (out / "model.bin").write_bytes({MODEL!r})
        (pathlib.Path(os.environ["MLRT_CHECKPOINT_DIR"]) / "last.pt").write_bytes(b"checkpoint")
        os.kill({moto.process.pid}, signal.SIGKILL)
    """
    spec = write_spec(
        command_spec("s3-gone", "[python, train.py]", f"  output: {{path: s3://{BUCKET}/runs}}\n"),
        files={"train.py": program},
    )

    result = cli("submit", str(spec), "--json")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    run = json.loads(result.stdout)
    run_id = run["id"]
    assert run["state"] == "FAILED"
    assert run["reason"].startswith("output not uploaded: ")
    assert "(after 3 tries)" in run["reason"] and f"mlrt artifacts push {run_id}" in run["reason"]
    said = events(cli, run_id)
    assert sum("output upload try" in e for e in said) == 2  # two retries before giving up
    staged = home / "staging" / run_id
    assert (staged / "output" / "model.bin").read_bytes() == MODEL  # nothing lost
    assert (staged / "checkpoints" / "last.pt").read_bytes() == b"checkpoint"
    assert json.loads(cli("artifacts", run_id, "--json").stdout) == []
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["attempts"][0]["state"] == "FAILED"

    # A bad retry setting is one line, exit 2, before anything is tried.
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "1,nan")
    bad = cli("artifacts", "push", run_id)
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: MLRT_S3_UPLOAD_BACKOFF must be up to 10 comma-separated pauses in seconds")
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "0.2,0.2")

    # Still down: push says so in one line, exit 1.
    down = cli("artifacts", "push", run_id)
    assert down.exit_code == 1
    assert down.stderr.strip().splitlines()[-1].startswith("error: output not uploaded: ")

    moto.start()  # S3 is back (empty: moto keeps nothing)
    make_bucket()
    pushed = cli("artifacts", "push", run_id, "--json")

    assert pushed.exit_code == 0, pushed.output
    (model,) = json.loads(pushed.stdout)
    expected = hashlib.sha256(MODEL).hexdigest()
    assert (model["path"], model["size"], model["sha256"]) == ("model.bin", len(MODEL), expected)
    assert model["uri"] == f"s3://{BUCKET}/runs/{run_id}/output/model.bin"
    body = s3.client().get_object(Bucket=BUCKET, Key=f"runs/{run_id}/output/model.bin")["Body"].read()
    assert body == MODEL
    assert s3.sha256_of(f"s3://{BUCKET}/runs/{run_id}/checkpoints/last.pt") == hashlib.sha256(b"checkpoint").hexdigest()
    assert json.loads(cli("artifacts", run_id, "--json").stdout) == [model]
    after = run_json(cli, run_id)
    assert after["state"] == "FAILED"  # a run's ending is final; the push is an event
    assert any(e.startswith("output pushed from ") and "1 artifact(s)" in e for e in events(cli, run_id))


def test_push_refuses_runs_with_nothing_to_push(cli, write_spec, tmp_path: Path):
    spec = write_spec(command_spec("local-out", "[python, -c, 'print(1)']"))
    run_id = json.loads(cli("submit", str(spec), "--json").stdout)["id"]

    result = cli("artifacts", "push", run_id)

    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: run {run_id} writes to {run_json(cli, run_id)['output_uri']} directly: "
        + ("there is nothing to push")
    )
    assert cli("artifacts", "push", "no-such-run").exit_code == 2


def submit_expecting_folder_failure(cli, spec: Path) -> dict:
    result = cli("submit", str(spec), "--json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return json.loads(result.stdout)


def test_a_read_only_output_folder_fails_the_run_at_once_without_retries(cli, write_spec, tmp_path: Path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        spec = write_spec(
            command_spec(
                "ro-out",
                "[python, -c, 'print(1)']",
                f"  output: {{path: {folder}}}\n  retries: {{max: 3, backoff: 1s}}\n",
            )
        )
        run = submit_expecting_folder_failure(cli, spec)

    assert run["state"] == "FAILED"
    assert run["reason"].startswith(
        f"output folder {folder / run['id'] / 'output'} is not writable: Read-only file system"
    )
    shown = run_json(cli, run["id"])
    assert shown["attempts"] == []  # no worker was started
    assert not any("retry" in e for e in events(cli, run["id"]))


def test_a_read_only_log_folder_fails_the_run_at_once(cli, write_spec, home: Path):
    spec = write_spec(command_spec("ro-logs", "[python, -c, 'print(1)']", "  retries: {max: 2, backoff: 1s}\n"))
    with tmpfs(home / "logs", "ro,size=1m"):
        run = submit_expecting_folder_failure(cli, spec)

    assert run["state"] == "FAILED"
    folder = home / "logs" / run["id"] / "attempt-1"
    assert run["reason"].startswith(f"log folder {folder} is not writable: Read-only file system")


def test_a_read_only_log_folder_fails_a_detached_run_too(cli, write_spec, home: Path):
    spec = write_spec(command_spec("ro-logs-detached", "[python, -c, 'print(1)']"))
    with tmpfs(home / "logs", "ro,size=1m"):
        submitted = cli("submit", str(spec), "--detach", "--json")
        assert submitted.exit_code == 0, submitted.output
        run_id = json.loads(submitted.stdout)["run_id"]
        run = wait_for(lambda: (r := run_json(cli, run_id))["state"] == "FAILED" and r)

    folder = home / "logs" / run_id / "attempt-1"
    assert run["reason"].startswith(f"log folder {folder} is not writable: Read-only file system")


def test_a_full_output_folder_fails_the_run_at_once_with_no_space_left(cli, write_spec, tmp_path: Path):
    with tmpfs(tmp_path / "full", "size=64k") as folder:
        filled = subprocess.run(["dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=4k"], capture_output=True)
        assert b"No space left on device" in filled.stderr
        spec = write_spec(
            command_spec(
                "full-out", "[python, -c, 'print(1)']", f"  output: {{path: {folder}}}\n  retries: {{max: 2}}\n"
            )
        )
        run = submit_expecting_folder_failure(cli, spec)

    assert run["state"] == "FAILED"
    assert run["reason"].startswith(
        f"output folder {folder / run['id'] / 'output'} is not writable: No space left on device"
    )
    assert run_json(cli, run["id"])["attempts"] == []


def test_the_folders_of_launches_share_one_sync_of_their_file_system(tmp_path: Path, monkeypatch):
    """Every probe writes; one sync a second per file system stands for all of them."""
    from mlrt import folders

    synced: list[int] = []
    real_fsync = folders.os.fsync
    monkeypatch.setattr(folders.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(folders, "_synced_at", {})
    monkeypatch.setattr(folders, "SYNC_EVERY", 3600.0)
    for run in ("a", "b"):
        for what in ("output", "checkpoint", "log"):
            folders.ensure_writable(tmp_path / run / what, what)
            assert (tmp_path / run / what).is_dir() and list((tmp_path / run / what).iterdir()) == []
    assert len(synced) == 1
    monkeypatch.setattr(folders, "SYNC_EVERY", 0.0)
    folders.ensure_writable(tmp_path / "c", "output")
    assert len(synced) == 2


@pytest.fixture
def s3_service(moto, postgres_db: str, tmp_path: Path, home: Path):
    """A real ``mlrt controller`` on PostgreSQL, started with the environment ``moto`` set (local jobs allowed)."""
    from service_process import ServiceProcess

    started = ServiceProcess(postgres_db, tmp_path / "controller.log", env={"MLRT_ALLOWED_BACKENDS": "local"}).start()
    yield started
    started.stop()


def test_through_the_service_s3_gone_fails_the_run_and_push_uploads_from_the_controller(
    moto, s3_service, postgres_db: str, write_spec, home: Path, tmp_path: Path
):
    from click.testing import CliRunner

    from mlrt.cli import _register
    from mlrt.cli import cli as root
    from mlrt.service import auth
    from mlrt.store import Store

    token = auth.issue(Store(postgres_db), "user", "alice", "vision")
    _register()

    def remote(*args: str):
        return CliRunner().invoke(root, ["--server", s3_service.url, *args], env={"MLRT_TOKEN": token})

    make_bucket()
    program = f"""
        import os, pathlib, signal
        (pathlib.Path(os.environ["MLRT_OUTPUT_DIR"]) / "model.bin").write_bytes({MODEL!r})
        os.kill({moto.process.pid}, signal.SIGKILL)
    """
    spec = write_spec(
        command_spec(
            "s3-gone", f"[{sys.executable}, {tmp_path / 'train.py'}]", f"  output: {{path: s3://{BUCKET}/teams}}\n"
        ),
        files={"train.py": program},
    )

    result = remote("submit", str(spec), "--json")

    assert result.exit_code == 1, result.output
    run = json.loads(result.stdout)
    assert run["state"] == "FAILED" and run["reason"].startswith("output not uploaded: ")
    assert (home / "staging" / run["id"] / "output" / "model.bin").read_bytes() == MODEL
    down = remote("artifacts", "push", run["id"])
    assert down.exit_code == 1
    assert "refused (502): output not uploaded: " in down.stderr

    moto.start()
    make_bucket()
    pushed = remote("artifacts", "push", run["id"], "--json")

    assert pushed.exit_code == 0, pushed.output
    (model,) = json.loads(pushed.stdout)
    assert (model["path"], model["sha256"]) == ("model.bin", hashlib.sha256(MODEL).hexdigest())
    assert json.loads(remote("artifacts", run["id"], "--json").stdout) == [model]
    shown = json.loads(remote("runs", "show", run["id"], "--json").stdout)
    assert shown["state"] == "FAILED"
    assert any(e["reason"].startswith("output pushed from ") for e in shown["events"])
    assert "Traceback" not in s3_service.log_file.read_text()


def test_through_the_service_a_read_only_output_folder_fails_the_run_at_once(
    postgres_db: str, write_spec, tmp_path: Path
):
    from click.testing import CliRunner

    from mlrt.cli import _register
    from mlrt.cli import cli as root
    from mlrt.service import auth
    from mlrt.store import Store
    from service_process import ServiceProcess

    token = auth.issue(Store(postgres_db), "user", "alice", "vision")
    _register()
    spec = write_spec(command_spec("ro-default", f"[{sys.executable}, -c, 'print(1)']", "  retries: {max: 2}\n"))
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        env = {"MLRT_ALLOWED_BACKENDS": "local", "MLRT_DEFAULT_OUTPUT": f"file://{folder}"}
        service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
        try:
            args = ["--server", service.url, "submit", str(spec), "--json"]
            result = CliRunner().invoke(root, args, env={"MLRT_TOKEN": token})
        finally:
            service.stop()

    assert result.exit_code == 1, result.output
    run = json.loads(result.stdout)
    assert run["state"] == "FAILED"
    assert run["reason"].startswith(
        f"output folder {folder / run['id'] / 'output'} is not writable: Read-only file system"
    )
    assert Store(postgres_db).attempts(run["id"]) == []
    assert "Traceback" not in (tmp_path / "controller.log").read_text()
