"""Worker logs in the database (mlrt.logship): shipped once whoever ships them, split into
bounded chunks, cut as the files are cut, and served by every controller replica."""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select

from conftest import wait_for
from mlrt.logfile import CappedLog, read_output
from mlrt.logship import CHUNK_BYTES, LogShipper, read_log
from mlrt.service import auth
from mlrt.store import Store
from mlrt.store.models import Job, LogChunk, Run
from service_process import ServiceProcess

RUN = "logged-run"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    """A store with one run to ship logs for, on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db")
    else:
        url = f"sqlite:///{tmp_path / 'mlrt.db'}"
    store = Store(url)
    job = Job(id=RUN, name=RUN, kind="TrainingJob", spec_submitted="", spec_resolved={})
    store.create_job(job, Run(id=RUN, job_id=RUN, state="SUCCEEDED", output_uri="file:///nowhere"), {})
    yield store
    store.engine.dispose()


def chunks(store: Store, worker: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of a worker's stored chunks, in order."""
    with store.session() as session:
        rows = session.execute(
            select(LogChunk.offset, func.length(LogChunk.data))
            .where(LogChunk.run_id == RUN, LogChunk.worker == worker)
            .order_by(LogChunk.offset)
        )
        return [tuple(row) for row in rows]


def follow(read) -> list[tuple[int, bytes, bool]]:
    """Every piece a follower reads from position 0 on (``read(offset)`` -> OutputPart), as mlrt logs -f does."""
    pieces, offset = [], 0
    while True:
        part = read(offset)
        if not part.data and part.start == offset:
            return pieces
        pieces.append((part.start, part.data, part.cut_after))
        offset = part.start + len(part.data)


def stored(store: Store, worker: int = 0) -> bytes:
    return b"".join(data for _, data, _ in follow(lambda o: read_log(store, RUN, 1, worker, o)))


def test_a_shipper_that_takes_over_continues_where_the_database_ends(store, tmp_path):
    paths = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    logs = [CappedLog(path) for path in paths]
    logs[0].write(b"epoch 0\n")
    logs[1].write(b"rank 1 ready\n")
    first = LogShipper(store, RUN, 1, paths)
    assert first.ship() == len(b"epoch 0\n") + len(b"rank 1 ready\n")

    logs[0].write(b"epoch 1\n")
    successor = LogShipper(store, RUN, 1, paths)  # a new leader, with the same files
    assert successor.ship() == len(b"epoch 1\n")
    assert first.ship() == 0
    assert stored(store, 0) == b"epoch 0\nepoch 1\n" and stored(store, 1) == b"rank 1 ready\n"
    assert chunks(store, 0) == [(0, 8), (8, 8)]

    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert successor.ship() == 0 and statements == [], "a file that did not change costs no query"
    assert read_log(store, RUN, 1, 0, 4).data == b"h 0\nepoch 1\n"
    assert read_log(store, RUN, 1, 0, 16).data == b"" and read_log(store, RUN, 1, 0, 16).start == 16
    assert read_log(store, RUN, 2, 0, 0).data == b"", "another attempt has its own log"


def test_two_shippers_racing_over_a_growing_log_store_each_byte_once(store, tmp_path):
    path = tmp_path / "worker-0.log"
    log = CappedLog(path)
    shippers = [LogShipper(store, RUN, 1, [path]) for _ in range(2)]
    writing = threading.Event()
    writing.set()
    failures = []

    def keep_shipping(shipper: LogShipper) -> None:
        try:
            while writing.is_set():
                shipper.ship()
        except Exception as exc:  # reported below: an exception in a thread would pass unseen
            failures.append(exc)

    threads = [threading.Thread(target=keep_shipping, args=(s,)) for s in shippers]
    for thread in threads:
        thread.start()
    expected = b"".join(f"line {i}\n".encode() for i in range(3000))
    for i in range(3000):
        log.write(f"line {i}\n".encode())
    writing.clear()
    for thread in threads:
        thread.join()
    for shipper in shippers:
        shipper.ship()
    assert failures == []
    assert stored(store) == expected
    positions = chunks(store)
    assert all(
        offset == previous + size for (previous, size), (offset, _) in zip(positions, positions[1:], strict=False)
    )


def test_a_large_write_becomes_several_bounded_chunks(store, tmp_path):
    path = tmp_path / "worker-0.log"
    output = bytes(range(256)) * (CHUNK_BYTES * 5 // 2 // 256) + b"end\n"
    with CappedLog(path) as log:
        log.write(output)
    assert LogShipper(store, RUN, 1, [path]).ship() == len(output)
    assert [size for _, size in chunks(store)] == [CHUNK_BYTES, CHUNK_BYTES, len(output) - 2 * CHUNK_BYTES]
    middle = read_log(store, RUN, 1, 0, CHUNK_BYTES - 10, limit=100)
    assert (middle.start, middle.data) == (CHUNK_BYTES - 10, output[CHUNK_BYTES - 10 : CHUNK_BYTES + 90])
    assert stored(store) == output


def test_the_database_keeps_what_the_size_limit_keeps(store, tmp_path):
    path = tmp_path / "worker-0.log"
    limit = 1 << 20
    log = CappedLog(path, limit=limit)
    shipper = LogShipper(store, RUN, 1, [path])
    lines = [f"step {i:07d} {'x' * 50}\n".encode() for i in range(60_000)]  # ~3.6 MB of output
    for start in range(0, len(lines), 5000):  # shipped while it grows: the database held what the cut removed
        log.write(b"".join(lines[start : start + 5000]))
        shipper.ship()
    log.close()

    for piece in (CHUNK_BYTES, 100_000):  # pieces ending at the cut, across chunks, within a chunk
        from_file = follow(lambda o: read_output(path, o, piece))  # noqa: B023  (called in this iteration)
        from_database = follow(lambda o: read_log(store, RUN, 1, 0, o, piece))  # noqa: B023
        assert any(cut_after for _, _, cut_after in from_file), "the file was cut"
        assert from_database == from_file
    assert sum(size for _, size in chunks(store)) <= limit


def test_logs_without_their_file_are_read_from_the_database(store, tmp_path):
    """`mlrt logs` on another machine than the controller's (MLRT_DB set, no server)."""
    from mlrt.cli import _register
    from mlrt.cli import cli as root
    from mlrt.store.models import Attempt

    path = tmp_path / "elsewhere" / "worker-0.log"
    with CappedLog(path) as log:
        log.write(b"loading data\ntraining\n")
    LogShipper(store, RUN, 1, [path]).ship()
    request = {"workers": [{"rank": 0, "log_path": str(path)}]}
    with store.session() as session:
        session.add(
            Attempt(run_id=RUN, number=1, state="SUCCEEDED", backend="local", request=request, log_dir=str(path.parent))
        )
    path.unlink()

    _register()
    result = CliRunner().invoke(root, ["--db", store.url, "logs", RUN], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["loading data", "training"]


PROGRAM = """
import time
for i in range(40):
    print(f"line {i} of the worker", flush=True)
    time.sleep(0.05)
for i in range(25_000):  # 1.6 MB: past the log's limit, so the stored log is cut
    print(f"burst {i:06d} " + "x" * 50)
print("done", flush=True)
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_every_replica_serves_the_logs_of_a_run_another_replica_drives(postgres_db, tmp_path):
    """Two `mlrt controller` replicas with homes of their own (as the Helm chart's emptyDirs):
    `mlrt logs -f` through the standby prints what the leader's own log file holds."""
    from mlrt.cli import _register
    from mlrt.cli import cli as root

    _register()
    program = tmp_path / "talk.py"
    program.write_text(PROGRAM)
    spec = textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {{name: talker}}
        spec:
          command: [{sys.executable}, {program}]
        """)
    token = auth.issue(Store(postgres_db), "user", "alice", "vision")
    outsider = auth.issue(Store(postgres_db), "user", "bob", "speech")
    replicas = []
    try:
        for name in ("leader", "standby"):
            env = {
                "MLRT_ALLOWED_BACKENDS": "local",
                "MLRT_HOME": str(tmp_path / f"{name}-home"),
                "MLRT_MAX_LOG_BYTES": str(1 << 20),
            }
            replicas.append(ServiceProcess(postgres_db, tmp_path / f"{name}.log", env=env))
        replicas[0].start()
        standby = replicas[1].start(leader=False)
        assert not standby.is_leader()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{standby.url}/api/v1", headers=headers, timeout=30) as client:
            run_id = client.post("/jobs", json={"spec": spec}).json()["run_id"]
            wait_for(lambda: client.get(f"/runs/{run_id}").json()["state"] != "QUEUED", 30)
            followed = CliRunner().invoke(
                root, ["--server", standby.url, "logs", "-f", run_id], env={"MLRT_TOKEN": token}, catch_exceptions=False
            )
            assert followed.exit_code == 0, followed.output
            assert client.get(f"/runs/{run_id}").json()["state"] == "SUCCEEDED"
            refused = client.get(f"/runs/{run_id}/logs/1/0", headers={"Authorization": f"Bearer {outsider}"})
            assert refused.status_code == 403
        assert not list((tmp_path / "standby-home").rglob("worker-*.log")), "the standby has no copy of its own"
        shown = followed.stdout.splitlines()
        assert shown[:40] == [f"line {i} of the worker" for i in range(40)] and shown[-1] == "done"
        # A follower reads output before the size limit cuts it: it sees more than the cut log keeps.
        burst = [line for line in shown[40:-1] if not line.endswith("of the output are cut here ---")]
        numbers = [int(line[6:12]) for line in burst]
        assert burst == [f"burst {n:06d} {'x' * 50}" for n in numbers], "whole lines"
        assert numbers == sorted(set(numbers)) and numbers[-1] == 24_999, "each line once, in order, to the end"

        after = CliRunner().invoke(root, ["--server", standby.url, "logs", run_id], env={"MLRT_TOKEN": token})
        assert list((tmp_path / "leader-home").rglob("worker-0.log")), "the leader keeps its file"
        from_file = CliRunner().invoke(root, ["--db", postgres_db, "logs", run_id], catch_exceptions=False)
        assert after.stdout == from_file.stdout, "the standby shows what the leader's file holds"
        assert len([line for line in after.stdout.splitlines() if line.endswith("are cut here ---")]) == 1
    finally:
        for replica in replicas:
            replica.stop()
