"""Metric points written to PostgreSQL with COPY (``Store.insert_metrics``) are stored exactly as logged:
keys, steps and values unchanged, every point once, a batch sent again not stored twice; and the SDK
writing straight to the database (a local worker's ``MLRT_TRACKING_URI``) goes through that path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from mlrt.store import Store
from mlrt.store.models import Job, Run

pytestmark = [pytest.mark.postgres]

WORKER = """\
import mlrt
for step in range(12_345):
    mlrt.log_metrics({"loss": 1.0 / (step + 1), "acc": step * 1e-5}, step=step)
for _ in range(3):
    mlrt.log_metric("auto", 0.5)
mlrt.flush()
"""


def new_run(store: Store) -> str:
    run_id = f"copy-{uuid.uuid4().hex[:8]}"
    job = Job(id=run_id, name="copy", kind="TrainingJob", spec_submitted="", spec_resolved={}, project="default")
    store.create_job(job, Run(id=run_id, job_id=run_id, state="RUNNING", output_uri="file:///nowhere"), {})
    return run_id


def stored(store: Store, run_id: str) -> list[tuple[str, int, float, float]]:
    with store.engine.connect() as conn:
        query = "SELECT key, step, value, timestamp FROM metrics WHERE run_id = :run ORDER BY id"
        rows = [tuple(row) for row in conn.execute(text(query), {"run": run_id})]
    return sorted(rows, key=lambda row: (row[0], row[1]))  # stable: points of one key and step in insert order


def test_copied_points_are_stored_exactly_and_a_resent_batch_once(postgres_db):
    store = Store(postgres_db)
    assert store.engine.dialect.driver == "psycopg"  # the COPY path
    run_id = new_run(store)
    odd_keys = ["loss", "tab\there", "new\nline", "back\\slash", "ünïcode", "comma,quote\"'"]
    values = [0.0, -0.0, 1.5, -2.25e-300, 1.7976931348623157e308, 5e-324, math.inf, -math.inf]
    points = [
        (key, step, values[step % len(values)] * (i + 1), 1.7e9 + step)
        for i, key in enumerate(odd_keys)
        for step in (0, 1, 2, 3, 2**31 - 1, -5, 7, 8)
    ]
    batch = uuid.uuid4().hex

    assert store.insert_metrics(run_id, points, batch_id=batch) == len(points)
    assert store.insert_metrics(run_id, points, batch_id=batch) == 0  # sent again: stored once
    assert store.insert_metrics(run_id, points[:2], batch_id=uuid.uuid4().hex) == 2  # a new batch is stored

    expected = sorted([*points, *points[:2]], key=lambda p: (p[0], p[1]))
    rows = stored(store, run_id)
    assert [(k, s) for k, s, _, _ in rows] == [(k, s) for k, s, _, _ in expected]
    # Bit for bit: -0.0 keeps its sign, infinities and the smallest subnormal survive.
    assert [(math.copysign(1, v), v, t) for _, _, v, t in rows] == [
        (math.copysign(1, v), v, t) for _, _, v, t in expected
    ]


def test_the_sdk_writes_straight_to_postgresql_every_point_once(postgres_db, tmp_path: Path):
    store = Store(postgres_db)
    run_id = new_run(store)
    (tmp_path / "worker.py").write_text(WORKER)
    env = dict(os.environ, MLRT_RUN_ID=run_id, MLRT_TRACKING_URI=postgres_db)
    subprocess.run([sys.executable, "worker.py"], cwd=tmp_path, env=env, check=True, timeout=300)

    rows = stored(store, run_id)
    by_key: dict[str, list[tuple[int, float]]] = {}
    for key, step, value, _ in rows:
        by_key.setdefault(key, []).append((step, value))
    assert by_key["loss"] == [(step, 1.0 / (step + 1)) for step in range(12_345)]
    assert by_key["acc"] == [(step, step * 1e-5) for step in range(12_345)]
    assert by_key["auto"] == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert len(rows) == 2 * 12_345 + 3
    with store.engine.connect() as conn:
        batches = conn.execute(text("SELECT points FROM metric_batches WHERE run_id = :run"), {"run": run_id})
        assert sum(points for (points,) in batches) == len(rows)  # every batch recorded for de-duplication
