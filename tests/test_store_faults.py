"""A metadata database that cannot be used is one clear line, exit 1, for any command.

Real files and servers: a SQLite file on a 1 MiB filesystem that fills up
(tmpfs when this runs as root, else a file-size limit on the command), a
SQLite file of garbage bytes, URLs that name nothing, and a PostgreSQL port
nobody listens on; through the real ``mlrt`` executable.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conftest import MLRT_SCRIPT
from service_process import free_port

SPEC = textwrap.dedent(f"""\
    apiVersion: mlrt/v1
    kind: TrainingJob
    metadata: {{name: stored}}
    spec:
      command: [{sys.executable}, -c, "print('ran')"]
    """)


def mlrt(
    *args: str, db: str, limit_file_size: int | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLRT_DB": db, "MLRT_SECRET_KEY": Fernet.generate_key().decode()}

    def limit() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG instead
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [str(MLRT_SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120, preexec_fn=limit
    )


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1 and exactly one ``error:`` line (no traceback) holding every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: database "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


COMMANDS = [("runs", "list"), ("status",), ("submit", "job.yaml"), ("controller", "--port", "0")]


@pytest.fixture
def spec_folder(tmp_path: Path) -> Path:
    (tmp_path / "job.yaml").write_text(SPEC)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_damaged_sqlite_file_is_named_for_every_command(command, tmp_path, spec_folder):
    database = tmp_path / "mlrt.db"
    database.write_bytes(os.urandom(64 * 1024))
    result = mlrt(*command, db=f"sqlite:///{database}", cwd=spec_folder)
    assert_one_line(result, str(database), "damaged or not an SQLite database")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a database URL"),
        ("oracle2://scott:tiger@db/prod", "unknown kind of database 'oracle2'"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_wrong_database_url_is_named_for_every_command(command, url, says, spec_folder):
    line = assert_one_line(mlrt(*command, db=url, cwd=spec_folder), says)
    assert "tiger" not in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_unreachable_postgresql_is_named_with_its_password_masked(command, spec_folder):
    url = f"postgresql+psycopg://mlrt:s3cr3t-pw@127.0.0.1:{free_port()}/mlrt"
    line = assert_one_line(mlrt(*command, db=url, cwd=spec_folder), "cannot connect", "mlrt:***@127.0.0.1")
    assert "s3cr3t-pw" not in line


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None], bool]]:
    """A folder on a 1 MiB filesystem, a function that fills it up, and whether it is a
    real one (tmpfs, when this runs as root) or commands must play it with a file-size limit."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
    mounted = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0

    def fill() -> None:
        if mounted:
            try:
                with open(folder / "ballast", "wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
            except OSError:  # ENOSPC: the filesystem is full
                pass

    try:
        yield folder, fill, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_half_written_job(small_filesystem, spec_folder):
    folder, fill, mounted = small_filesystem
    database = folder / "mlrt.db"
    url = f"sqlite:///{database}"
    assert mlrt("runs", "list", db=url).returncode == 0  # created and migrated while there is room
    fill()
    # Without a real small filesystem, a file-size limit plays the full disk (SQLite then
    # reports a failed write rather than a full disk: EFBIG, not ENOSPC).
    limit = None if mounted else max(path.stat().st_size for path in folder.iterdir())
    says = "disk is full" if mounted else "a write to the disk failed"
    for command in (("submit", "job.yaml"), ("controller", "--port", "0")):
        assert_one_line(mlrt(*command, db=url, cwd=spec_folder, limit_file_size=limit), str(database), says)
    (folder / "ballast").unlink(missing_ok=True)
    listed = mlrt("runs", "list", "--json", db=url)
    assert listed.returncode == 0 and "stored" not in listed.stdout


@pytest.mark.parametrize("name", ["MLRT_MAX_LOG_BYTES", "MLRT_MAX_LINE_BYTES", "MLRT_MAX_REQUEST_BYTES"])
def test_a_bad_size_setting_stops_the_service_at_start_in_one_line(cli, monkeypatch, name):
    monkeypatch.setenv(name, "lots")
    result = cli("controller", "--port", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {name}: 'lots' is not a positive number of bytes, e.g. " + (
        str(8 << 20) if name == "MLRT_MAX_REQUEST_BYTES" else str(100 << 20)
    )


@pytest.mark.parametrize(
    ("name", "value", "least"), [("MLRT_DB_POOL_SIZE", "many", 1), ("MLRT_DB_MAX_OVERFLOW", "-1", 0)]
)
def test_a_bad_pool_setting_is_one_line_naming_it(cli, monkeypatch, postgres_db, name, value, least):
    monkeypatch.setenv(name, value)
    result = cli("--db", postgres_db, "runs", "list")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {name}: {value!r} is not a whole number from {least} to 1000"


def test_bursts_of_database_work_reuse_the_connections_the_first_burst_opened(postgres_db):
    """Connections beyond the pool are closed after one use: with SQLAlchemy's own default of 5,
    every burst of 12 threads reading at once opened 7 server connections again."""
    import threading

    from sqlalchemy import event, text

    from mlrt.store import Store

    store = Store(postgres_db)
    opened = []
    event.listen(store.engine, "connect", lambda *_: opened.append(1))
    barrier = threading.Barrier(12)

    def read() -> None:
        with store.read_connection() as connection:
            connection.execute(text("SELECT 1"))
            barrier.wait(timeout=30)  # all 12 hold a connection at once

    for burst in range(3):
        threads = [threading.Thread(target=read) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        if burst == 0:
            first = len(opened)
    assert first <= 12  # (the pool may hold some from opening the store)
    assert len(opened) == first  # the later bursts opened none
    store.engine.dispose()
