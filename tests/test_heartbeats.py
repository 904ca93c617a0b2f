"""Controller heartbeats: one row per controller process, and what they say about runs owned on
another host (a run whose owner fell silent is reaped; one whose owner speaks is left alone)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from mlrt.controller import HEARTBEAT_STALE, reap_orphans
from mlrt.store import Store
from mlrt.store.models import ControllerHeartbeat, Job, Run, utcnow

ELSEWHERE = "another-host.example:4242:1700000000.00"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    url = request.getfixturevalue("postgres_db") if request.param == "postgres" else f"sqlite:///{tmp_path / 'mlrt.db'}"
    store = Store(url)
    yield store
    store.engine.dispose()


def running_elsewhere(store: Store, name: str, taken_over: timedelta) -> str:
    """A RUNNING run owned by a controller on another host, which took it over ``taken_over`` ago."""
    job = Job(id=name, name=name, kind="TrainingJob", spec_submitted="", spec_resolved={})
    run = Run(id=name, job_id=name, state="RUNNING", output_uri="file:///nowhere", owner=ELSEWHERE)
    run.heartbeat_at = utcnow() - taken_over
    store.create_job(job, run, {})
    return name


def test_a_heartbeat_is_one_row_per_process_and_silent_processes_are_forgotten(store):
    store.heartbeat("a:1:1.00")
    first = store.owner_heartbeats()["a:1:1.00"]
    store.heartbeat("a:1:1.00")
    store.heartbeat("b:2:2.00")
    beats = store.owner_heartbeats()
    assert set(beats) == {"a:1:1.00", "b:2:2.00"} and beats["a:1:1.00"] >= first
    with store.session() as s:
        s.exec(update(ControllerHeartbeat).values(heartbeat_at=utcnow() - timedelta(hours=2)))
    store.heartbeat("c:3:3.00")
    assert set(store.owner_heartbeats()) == {"c:3:3.00"}


def test_runs_of_a_controller_on_another_host_live_as_long_as_it_beats(store):
    long_ago = 2 * HEARTBEAT_STALE
    speaking = running_elsewhere(store, "speaking", long_ago)
    store.heartbeat(ELSEWHERE)
    assert reap_orphans(store) == []
    assert store.get_run(speaking).state == "RUNNING"

    with store.session() as s:  # the owner falls silent
        s.exec(update(ControllerHeartbeat).values(heartbeat_at=utcnow() - long_ago))
    assert reap_orphans(store) == [speaking]
    run = store.get_run(speaking)
    assert run.state == "FAILED" and ELSEWHERE in run.reason


def test_a_run_just_taken_over_lives_until_its_owner_first_beats(store):
    fresh = running_elsewhere(store, "fresh", timedelta(seconds=1))
    assert reap_orphans(store) == []
    assert store.get_run(fresh).state == "RUNNING"
