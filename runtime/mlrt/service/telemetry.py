"""Prometheus metrics of the controller service (``GET /metrics``).

- ``mlrt_runs{state}``: runs by state, read from the database at scrape time
  (so every replica reports the same numbers);
- ``mlrt_queue_depth``: QUEUED runs;
- ``mlrt_leader``: 1 on the replica that reconciles, 0 on standbys;
- ``mlrt_reconcile_seconds``: how long a reconcile pass takes;
- ``mlrt_reconcile_failures_total``: passes (or leader elections) that failed,
  such as while the database is unreachable (``/readyz`` says degraded meanwhile);
- ``mlrt_metric_points_total``: metric points received on the tracking endpoint;
- ``mlrt_api_requests_total{method,status}``: API requests answered;
- ``process_*`` (CPU seconds, resident memory, open files) and ``python_gc_*``
  (collections and the objects they freed, per generation) of the process that
  took the scrape, as the Prometheus client's default registry has them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func
from sqlmodel import select

from mlrt.states import RunState
from mlrt.store import Store
from mlrt.store.models import Run


class _RunStates:
    """Collects ``mlrt_runs`` and ``mlrt_queue_depth`` with one GROUP BY per scrape."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        with self.store.read_session() as s:
            counts = dict(s.exec(select(Run.state, func.count()).group_by(Run.state)).all())
        runs = GaugeMetricFamily("mlrt_runs", "Runs by state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], counts.get(state.value, 0))
        yield runs
        yield GaugeMetricFamily("mlrt_queue_depth", "Runs waiting to be launched", value=counts.get("QUEUED", 0))


class Telemetry:
    """The service's metrics, in a registry of its own."""

    def __init__(self, store: Store):
        self.registry = CollectorRegistry()
        # The process's CPU, memory and open files, and its garbage collector's work, as the
        # client library's default registry has them (process_*, python_gc_*).
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_RunStates(store))
        self.leader = Gauge("mlrt_leader", "1 when this replica is the leader", registry=self.registry)
        self.reconcile_seconds = Histogram(
            "mlrt_reconcile_seconds",
            "Duration of one reconcile pass",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_failures = Counter(
            "mlrt_reconcile_failures", "Reconcile passes and leader elections that failed", registry=self.registry
        )
        self.metric_points = Counter(
            "mlrt_metric_points", "Metric points received on the tracking endpoint", registry=self.registry
        )
        self.requests = Counter(
            "mlrt_api_requests", "API requests answered", ["method", "status"], registry=self.registry
        )
