"""Metric batches are stored once, and a worker outlives its tracking endpoint: a real
`mlrt controller` on PostgreSQL, and worker processes using the SDK the way a pod does
(``MLRT_TRACKING_URI`` = the service, a run-scoped token)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from conftest import wait_for
from mlrt.service import auth
from mlrt.store import Store
from mlrt.store.models import Job, Run, utcnow
from service_process import ServiceProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def service(postgres_db: str, tmp_path: Path):
    started = ServiceProcess(postgres_db, tmp_path / "controller.log").start()
    yield started
    started.stop()


@pytest.fixture
def run_id(postgres_db: str) -> str:
    """A run the controller leaves alone (queued for an hour), as the target of a worker's tracking."""
    store = Store(postgres_db)
    run = f"tracked-{uuid.uuid4().hex[:6]}"
    job = Job(id=run, name="tracked", kind="TrainingJob", spec_submitted="", spec_resolved={}, project="vision")
    later = utcnow() + timedelta(hours=1)
    store.create_job(job, Run(id=run, job_id=run, state="QUEUED", output_uri="file:///nowhere", not_before=later), {})
    return run


@pytest.fixture
def worker_token(postgres_db: str, run_id: str) -> str:
    return auth.issue(Store(postgres_db), "worker", "controller", "vision", run_id=run_id)


def steps(db: str, run_id: str, key: str) -> list[int]:
    return [point.step for point in Store(db).metrics(run_id, key)]


def test_a_batch_sent_again_is_stored_once(service, postgres_db, run_id, worker_token):
    url = f"{service.url}/api/v1/runs/{run_id}/tracking/metrics"
    headers = {"Authorization": f"Bearer {worker_token}"}
    batch = {"points": [["loss", step, 1.0 / (step + 1), 1.7e9] for step in range(500)], "batch": uuid.uuid4().hex}
    answers = [httpx.post(url, json=batch, headers=headers, timeout=30).status_code for _ in range(2)]
    assert answers == [204, 204]
    assert steps(postgres_db, run_id, "loss") == list(range(500))

    # Senders racing with one batch (a retry overtaking a slow first try): one of them stores it.
    racing = {"points": [["acc", step, 0.5, 1.7e9] for step in range(2000)], "batch": uuid.uuid4().hex}
    threads = [
        threading.Thread(target=httpx.post, args=(url,), kwargs={"json": racing, "headers": headers}) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert steps(postgres_db, run_id, "acc") == list(range(2000))

    # Without an id (an older SDK) nothing can be recognised: both are stored.
    unnamed = {"points": [["lr", 0, 0.1, 1.7e9]]}
    for _ in range(2):
        httpx.post(url, json=unnamed, headers=headers, timeout=30)
    assert steps(postgres_db, run_id, "lr") == [0, 0]

    refused = httpx.post(url, json={**unnamed, "batch": "no spaces; please"}, headers=headers, timeout=30)
    assert refused.status_code == 422
    counts = {row["key"]: row["points"] for row in Store(postgres_db).metric_summary(run_id)}
    assert counts == {"loss": 500, "acc": 2000, "lr": 2}  # the summaries count each batch once too


def test_points_for_a_run_that_does_not_exist_or_is_not_the_tokens_are_refused(
    service, postgres_db, run_id, worker_token
):
    store = Store(postgres_db)
    other = f"other-{uuid.uuid4().hex[:6]}"
    job = Job(id=other, name="other", kind="TrainingJob", spec_submitted="", spec_resolved={}, project="audio")
    later = utcnow() + timedelta(hours=1)
    store.create_job(
        job, Run(id=other, job_id=other, state="QUEUED", output_uri="file:///nowhere", not_before=later), {}
    )
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    ghost_token = auth.issue(store, "worker", "controller", "vision", run_id=ghost)  # a run that never was
    point = {"points": [["loss", 0, 1.0, 1.7e9]], "batch": uuid.uuid4().hex}
    answers = [
        httpx.post(
            f"{service.url}/api/v1/runs/{target}/tracking/metrics",
            json=point,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        for target, token in ((ghost, ghost_token), (other, worker_token))
    ]
    assert [a.status_code for a in answers] == [404, 403]
    assert ghost in answers[0].text
    with store.engine.connect() as conn:
        for table in ("metrics", "metric_summaries", "metric_batches"):
            query = text(f"SELECT COUNT(*) FROM {table} WHERE run_id IN (:a, :b)")
            assert conn.execute(query, {"a": ghost, "b": other}).scalar() == 0, table


WORKER = """
import os, pathlib, time
import mlrt

progress = pathlib.Path(os.environ["PROGRESS"])
for step in range(int(os.environ["STEPS"])):
    mlrt.log_metric("loss", 1.0 / (step + 1), step=step)
    mlrt.log_metric("acc", step / 1000)  # no step: numbered when the store answers
    progress.write_text(str(step))
    time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
mlrt.log_params({"steps": int(os.environ["STEPS"])})
progress.write_text("done")
go = os.environ.get("GO")
while go and not os.path.exists(go):
    time.sleep(0.05)
"""


def start_worker(tmp_path: Path, service: ServiceProcess, run_id: str, token: str, **env: str) -> subprocess.Popen:
    program = tmp_path / "worker.py"
    program.write_text(WORKER)
    variables = {
        **os.environ,
        "MLRT_RUN_ID": run_id,
        "MLRT_TRACKING_URI": service.url,
        "MLRT_TRACKING_TOKEN": token,
        "PROGRESS": str(tmp_path / "progress"),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, str(program)], env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def progress(tmp_path: Path) -> int:
    text = (tmp_path / "progress").read_text() if (tmp_path / "progress").exists() else ""
    return 10**9 if text == "done" else int(text or -1)


def test_a_worker_keeps_training_while_the_endpoint_is_down_and_every_point_arrives_once(
    service, postgres_db, run_id, worker_token, tmp_path
):
    worker = start_worker(tmp_path, service, run_id, worker_token, STEPS="600", STEP_SECONDS="0.01")
    wait_for(lambda: len(steps(postgres_db, run_id, "loss")) >= 50, timeout=60)
    service.stop()
    down_at = progress(tmp_path)
    wait_for(lambda: progress(tmp_path) > down_at + 100, timeout=60)  # training goes on without the endpoint
    service.start()
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    assert "could not record metrics yet" in stderr and "answers again" in stderr
    assert steps(postgres_db, run_id, "loss") == list(range(600))
    assert steps(postgres_db, run_id, "acc") == list(range(600))
    params = Store(postgres_db).params(run_id)
    assert "mlrt_points_dropped" not in params and params["steps"] == "600"


def test_unsent_points_are_bounded_and_the_dropped_count_is_recorded(
    service, postgres_db, run_id, worker_token, tmp_path
):
    service.stop()
    go = tmp_path / "go"
    worker = start_worker(
        tmp_path, service, run_id, worker_token, STEPS="3000", MLRT_TRACKING_BUFFER="1000", GO=str(go)
    )
    wait_for(lambda: progress(tmp_path) == 10**9, timeout=60)
    service.start()
    go.touch()
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    assert "dropping the oldest" in stderr
    # 6,000 points (loss and acc), 1,000 kept: the newest.
    stored = [(p.key, p.step) for p in Store(postgres_db).metrics(run_id)]
    assert len(stored) == 1000
    assert sorted(stored) == sorted([("acc", s) for s in range(2500, 3000)] + [("loss", s) for s in range(2500, 3000)])
    params = Store(postgres_db).params(run_id)
    assert (params["mlrt_points_dropped"], params["steps"]) == ("5000", "3000"), "kept while the service was down"


LOG_WORKER = """
import mlrt
for step in range(1200):
    mlrt.log_metric("loss", 1.0 / (step + 1), step=step)
print("trained", flush=True)
"""


def test_sdk_records_read_twice_from_a_log_are_stored_once(postgres_db, run_id, tmp_path):
    """MLRT_TRACKING_URI=log:: a controller that stored points and stopped before recording how far it
    read leaves the next one to read those lines again; their batch ids keep them from being stored twice."""
    from mlrt.logscan import LogMetricScanner

    log = tmp_path / "worker-0.log"
    with log.open("wb") as out:
        env = {**os.environ, "MLRT_RUN_ID": run_id, "MLRT_TRACKING_URI": "log:"}
        subprocess.run([sys.executable, "-c", LOG_WORKER], env=env, stdout=out, check=True, timeout=60)
    store = Store(postgres_db)
    for _ in range(2):  # the first controller, then the adopting one from the same position
        for kind, value in LogMetricScanner(log, [], {}, sdk_records=True).scan().entries:
            assert kind == "batch"
            store.insert_metrics(run_id, value[0], batch_id=value[1])
    assert steps(postgres_db, run_id, "loss") == list(range(1200))


def test_a_run_whose_workers_have_their_share_in_flight_waits_and_every_point_arrives(
    postgres_db, run_id, worker_token, tmp_path
):
    """With a share of one request per caller, a request of the run's token that is still sending
    its body holds the run's share: the worker's batch is answered 429, the SDK sends it again
    after the pause (at least the Retry-After), and once the slow request is gone every point
    arrives."""
    import socket

    from test_service_hardening import refusals

    service = ServiceProcess(
        postgres_db, tmp_path / "controller.log", env={"MLRT_MAX_REQUESTS_PER_CALLER": "1"}
    ).start()
    try:
        slow = socket.create_connection(("127.0.0.1", service.port), timeout=30)
        slow.sendall(
            (
                f"POST /api/v1/runs/{run_id}/tracking/metrics HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {worker_token}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n"
            ).encode()
            + b'{"points": ['  # and no more, for now
        )
        worker = start_worker(tmp_path, service, run_id, worker_token, STEPS="50")
        wait_for(lambda: refusals(service) >= 1, timeout=60)  # the worker's first batch was refused
        slow.close()  # the body never comes: the service drops the request, and its share is free
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        assert steps(postgres_db, run_id, "loss") == list(range(50))
    finally:
        service.stop()
