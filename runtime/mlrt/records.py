"""Read-only views of runs handed to plugins and printed by the CLI."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.store import Store
    from mlrt.store.models import Run


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A snapshot of one run: identity, state and why, params and latest metrics.

    ``waiting`` says why a QUEUED run is not launched yet (a project limit, the
    resources it asks for; empty when nothing holds it back); ``priority`` orders
    queued runs (higher first)."""

    id: str
    job_id: str
    state: str
    reason: str
    attempts: int
    max_attempts: int
    output_uri: str
    params: dict[str, str]
    metrics: dict[str, float]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    waiting: str = ""
    priority: int = 0

    @classmethod
    def load(cls, store: Store, run_id: str) -> RunRecord:
        """Read the run ``run_id`` from ``store``."""
        run = store.get_run(run_id)
        return cls.of(run, store.params(run_id), store.latest_metrics(run_id))

    @classmethod
    def load_many(cls, store: Store, runs: list[Run]) -> list[RunRecord]:
        """Records of ``runs`` (rows already read), their params and latest metrics read in
        two queries for all of them, not two per run."""
        ids = [run.id for run in runs]
        params, metrics = store.params_of(ids), store.latest_metrics_of(ids)
        return [cls.of(run, params.get(run.id, {}), metrics.get(run.id, {})) for run in runs]

    @classmethod
    def of(cls, run: Run, params: dict[str, str], metrics: dict[str, float]) -> RunRecord:
        """The record of a run row with its params and latest metrics."""
        return cls(
            id=run.id,
            job_id=run.job_id,
            state=run.state,
            reason=run.reason,
            attempts=run.attempts,
            max_attempts=run.max_attempts,
            output_uri=run.output_uri,
            params=params,
            metrics=metrics,
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
            waiting=run.waiting,
            priority=run.priority,
        )

    def duration(self) -> float | None:
        """Seconds from first RUNNING to the end (or until now, while running)."""
        if self.started_at is None:
            return None
        from mlrt.store.models import utcnow

        return ((self.ended_at or utcnow()) - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("created_at", "started_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["duration_s"] = self.duration()
        return data
