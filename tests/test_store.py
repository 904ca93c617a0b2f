"""The metadata store: migrations match the models, SQLite WAL, and the same code on PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

import mlrt.store.engine as engine_module
import mlrt.store.registry  # noqa: F401  (the registry's tables, which the migrations create too)
from conftest import command_spec
from mlrt.states import IllegalTransition, RunState
from mlrt.store import Store
from mlrt.store.migrations import HEAD_REVISION
from mlrt.store.models import Attempt, Job, Run, Token


def migrations_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(engine_module.__file__).with_name("migrations")))
    return config


def upgraded_to(url: str, revision: str):
    """An engine on ``url`` whose schema alembic has upgraded to ``revision`` (an older one)."""
    from alembic import command

    engine = engine_module.create_db_engine(url)
    config = migrations_config()
    with engine.connect() as conn:  # as mlrt runs them: each migration commits its own transaction
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return engine


def test_migrations_produce_exactly_the_models(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/m.db")
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_head_revision_constant_matches_the_newest_migration():
    assert ScriptDirectory.from_config(migrations_config()).get_current_head() == HEAD_REVISION


def test_sqlite_uses_wal_and_reopening_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path}/wal.db"
    store = Store(url)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        conn.execute(text("CREATE TABLE keep_me (x INTEGER)"))
        conn.execute(text("INSERT INTO keep_me VALUES (42)"))
        conn.commit()
    again = Store(url)  # migrate() on an up-to-date database must not touch data
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM keep_me")).scalar() == 42


def test_illegal_transitions_are_refused(cli, write_spec):
    run = json.loads(cli("submit", str(write_spec(command_spec("t", "[python, -c, '0']"))), "--json").stdout)
    store = Store()
    with pytest.raises(IllegalTransition):
        store.transition(run["id"], RunState.RUNNING, "from SUCCEEDED? never")
    assert store.get_run(run["id"]).state == "SUCCEEDED"


def test_default_database_lives_under_mlrt_home(cli, write_spec, home):
    cli("submit", str(write_spec(command_spec("t", "[python, -c, '0']"))), "--json")
    assert (home / "mlrt.db").is_file()


def test_db_option_selects_another_database(cli, write_spec, tmp_path, home):
    other = tmp_path / "elsewhere.db"
    result = cli(
        "--db", f"sqlite:///{other}", "submit", str(write_spec(command_spec("t", "[python, -c, '0']"))), "--json"
    )
    assert json.loads(result.stdout)["state"] == "SUCCEEDED"
    assert other.is_file() and not (home / "mlrt.db").exists()


@pytest.mark.postgres
def test_a_job_runs_end_to_end_on_postgresql(cli, write_spec, postgres_db):
    program = (
        "import mlrt\n"
        "for i in range(100):\n"
        "    mlrt.log_metric('loss', 1 / (i + 1))\n"
        "mlrt.log_params({'lr': 0.1})\n"
        "print('done val=0.5')\n"
    )
    spec = write_spec(
        command_spec("pg", "[python, pg.py]", "  metrics: [{name: val, regex: 'val=([0-9.]+)'}]\n"),
        files={"pg.py": program},
    )
    result = cli("--db", postgres_db, "submit", str(spec), "--json")
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    points = json.loads(cli("--db", postgres_db, "metrics", run["id"], "--json").stdout)
    assert len([p for p in points if p["key"] == "loss"]) == 100
    assert [p["value"] for p in points if p["key"] == "val"] == [0.5]
    details = json.loads(cli("--db", postgres_db, "runs", "show", run["id"], "--json").stdout)
    assert details["params"]["lr"] == "0.1"
    assert [e["to_state"] for e in details["events"] if e["to_state"]] == [
        "QUEUED",
        "STARTING",
        "RUNNING",
        "FINALIZING",
        "SUCCEEDED",
    ]
    store = Store(postgres_db)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_a_store_outlives_its_server_connections_being_dropped(postgres_db):
    """A pooled connection the server dropped (a restart, an idle timeout) is replaced when it is
    next used after sitting idle: the caller never sees the dead one. One used a moment ago comes
    straight back from the pool."""
    store = Store(postgres_db)

    def server_process() -> int:
        with store.session() as s:
            return s.execute(text("SELECT pg_backend_pid()")).scalar()

    first = server_process()
    assert server_process() == first
    database = postgres_db.rsplit("/", 1)[1]
    admin = Store(postgres_db.rsplit("/", 1)[0] + "/test", migrate_schema=False)
    with admin.engine.connect() as conn:
        dropped = conn.execute(
            text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d"), {"d": database}
        ).scalar()
    admin.engine.dispose()
    assert dropped >= 1
    time.sleep(engine_module.PING_AFTER_IDLE + 0.2)
    assert server_process() != first  # a new connection, not an error
    assert store.list_runs() == []


@pytest.mark.postgres
def test_reads_on_postgresql_take_no_transaction_and_writes_on_the_same_connection_still_do(postgres_db):
    """``now()`` is when the transaction began: two statements of a read session see two times (each ran
    on its own), two of a writing session one. The pool hands both sessions the same server connection,
    so a read's autocommit must not stay with it."""
    store = Store(postgres_db)
    clock = text("SELECT now(), pg_backend_pid()")

    def two_statements(session: Session) -> tuple[object, object, int]:
        first, pid = session.execute(clock).one()
        time.sleep(0.01)
        second, again = session.execute(clock).one()
        assert pid == again
        return first, second, pid

    with store.read_session() as s:
        read_first, read_second, read_pid = two_statements(s)
    with store.session() as s:
        write_first, write_second, write_pid = two_statements(s)
    assert read_pid == write_pid
    assert read_first != read_second
    assert write_first == write_second


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_an_attempt_is_written_with_what_planning_made_all_or_nothing(database, request, tmp_path):
    """An attempt, its run's new record and its workers' token are one write (on PostgreSQL one
    statement): it comes back with its id, and a token id that is taken leaves none of them."""
    url = request.getfixturevalue("postgres_db") if database == "postgres" else f"sqlite:///{tmp_path}/a.db"
    store = Store(url)
    job_id = "planned-0123456789abcdef"
    store.create_job(
        Job(id=job_id, name="planned", kind="TrainingJob", spec_submitted="", spec_resolved={}),
        Run(id=job_id, job_id=job_id, state="STARTING", output_uri="file:///out"),
        {"lr": 0.1},
    )

    def attempt(number: int) -> Attempt:
        return Attempt(run_id=job_id, number=number, state="STARTING", backend="local", log_dir="/logs")

    token = Token(id="tok-1", secret_hash="x", kind="worker", user="planned", run_id=job_id)
    first = store.add_attempt(attempt(1), record={"planned": 1}, rows=[token])
    assert first.id is not None
    assert store.get_run(job_id).record == {"planned": 1}
    with pytest.raises(IntegrityError):
        store.add_attempt(attempt(2), record={"planned": 2}, rows=[Token(**token.model_dump())])
    assert store.get_run(job_id).record == {"planned": 1}
    assert [a.number for a in store.attempts(job_id)] == [1]
    assert store.add_attempt(attempt(2)).id not in (None, first.id)  # nothing planned: the attempt alone
    assert store.params(job_id) == {"lr": "0.1"}


def test_upgrading_an_older_schema_keeps_its_data(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = upgraded_to(url, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, kind, labels, spec_submitted, spec_resolved, created_at) "
                "VALUES ('old-1', 'old', 'TrainingJob', '{}', 'x', '{}', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, job_id, state, reason, attempts, max_attempts, output_uri, record, "
                "cancel_requested, created_at) VALUES ('old-1', 'old-1', 'SUCCEEDED', 'done', 1, 1, 'file:///x', "
                "'{}', 0, '2026-01-01 00:00:00')"
            )
        )
    store = Store(url)  # migrates to the newest revision
    run = store.get_run("old-1")
    assert (run.state, run.reason, run.parent_id) == ("SUCCEEDED", "done", None)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_upgrading_to_0009_drops_the_metrics_foreign_key_and_sums_up_the_points(backend, tmp_path, request):
    from sqlalchemy import inspect

    url = request.getfixturevalue("postgres_db") if backend == "postgresql" else f"sqlite:///{tmp_path}/old.db"
    engine = upgraded_to(url, "0008")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, kind, labels, spec_submitted, spec_resolved, created_at) "
                "VALUES ('old-1', 'old', 'TrainingJob', '{}', 'x', '{}', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, job_id, state, reason, attempts, max_attempts, output_uri, record, "
                "cancel_requested, created_at, priority, cpus, memory, gpus, waiting) VALUES ('old-1', 'old-1', "
                "'SUCCEEDED', 'done', 1, 1, 'file:///x', '{}', false, '2026-01-01 00:00:00', 0, 0, 0, 0, '')"
            )
        )
        points = [("loss", 0, 3.0), ("loss", 2, 1.0), ("loss", 2, 1.5), ("loss", 1, 0.5), ("acc", 7, 0.9)]
        conn.execute(
            text("INSERT INTO metrics (run_id, key, step, value, timestamp) VALUES ('old-1', :k, :s, :v, 0)"),
            [{"k": k, "s": s, "v": v} for k, s, v in points],
        )
    engine.dispose()
    store = Store(url)  # migrates to the newest revision
    assert store.metric_summary("old-1") == [
        {"key": "acc", "points": 1, "last": 0.9, "min": 0.9, "max": 0.9},
        {"key": "loss", "points": 4, "last": 1.5, "min": 0.5, "max": 3.0},  # of equal steps, the later
    ]
    assert store.max_steps("old-1") == {"acc": 7, "loss": 2}
    with store.engine.connect() as conn:
        assert inspect(conn).get_foreign_keys("metrics") == []
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


@pytest.mark.postgres
def test_upgrading_to_0012_indexes_the_points_by_id_too_and_rebuilds_an_index_left_by_a_cut_short_build(
    postgres_db,
):
    """On PostgreSQL the index is built CONCURRENTLY, outside the migration's transaction: a build
    cut short leaves an invalid index of the new name, which the next upgrade drops and builds."""
    from sqlalchemy import inspect

    engine = upgraded_to(postgres_db, "0011")
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_metrics_run_key_step_id ON metrics (run_id)"))  # the wrong columns
        conn.execute(
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_metrics_run_key_step_id'::regclass")
        )
    engine.dispose()
    store = Store(postgres_db)  # migrates to the newest revision
    with store.engine.connect() as conn:
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("metrics")}
        assert indexes == {"ix_metrics_run_key_step_id": ["run_id", "key", "step", "id"]}
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_metrics_run_key_step_id'::regclass"
        assert conn.execute(text(valid)).scalar() is True
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


@pytest.mark.postgres
def test_replicas_that_start_together_all_migrate_without_a_deadlock(postgres_db):
    """Replicas (the chart runs two) open the database at once: one migrates, the others wait for
    it. While one waited inside a statement for the migration lock, its snapshot held up the
    holder's CREATE INDEX CONCURRENTLY, and PostgreSQL failed a replica with "deadlock detected"."""
    import subprocess
    import sys

    engine = upgraded_to(postgres_db, "0011")
    with engine.begin() as conn:  # points enough that the index takes a while to build
        conn.execute(
            text(
                "INSERT INTO metrics (run_id, key, step, value, timestamp)"
                " SELECT 'r', 'loss', n, 1.0 / n, n FROM generate_series(1, 300000) AS n"
            )
        )
    engine.dispose()
    opening = f"from mlrt.store import Store; Store({postgres_db!r})"
    replicas = [subprocess.Popen([sys.executable, "-c", opening], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for replica in replicas:
        _, err = replica.communicate(timeout=120)
        assert replica.returncode == 0, err.strip().splitlines()[-1:]
    with Store(postgres_db).engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_row_built_without_an_instance_is_written_as_the_instance_would_be(database, request, tmp_path):
    """``row_of`` fills each column the constructor would (defaults and default factories)."""
    from mlrt.store.models import Row, row_of

    url = request.getfixturevalue("postgres_db") if database == "postgres" else f"sqlite:///{tmp_path}/a.db"
    store = Store(url)

    job = row_of(Job, id="rows-1", name="rows", kind="TrainingJob", spec_submitted="x", spec_resolved={"spec": {}})
    run = row_of(Run, id="rows-1", job_id="rows-1", state="QUEUED", output_uri="file:///nowhere")
    assert isinstance(job, Row) and job.values["labels"] == {} and job.values["project"] is None
    store.create_job(job, run, {"C": 0.5, "kernel": "rbf"})
    stored = store.get_run("rows-1")
    model = Run(id="rows-1", job_id="rows-1", state="QUEUED", output_uri="file:///nowhere")
    same = ("max_attempts", "attempts", "priority", "record", "memory", "owner", "backend")
    assert {key: getattr(stored, key) for key in same} == {key: getattr(model, key) for key in same}
    assert store.get_job("rows-1").labels == {} and [e.reason for e in store.events("rows-1")] == ["submitted"]
    assert store.params("rows-1") == {"C": "0.5", "kernel": "rbf"}
    with pytest.raises(TypeError, match="Run has no column 'colour'"):
        row_of(Run, id="x", colour="red")
