"""A run's lineage: what produced it, and the runs it came from.

Every run's reproducibility record (:mod:`mlrt.reproducibility`) names its
code (the source bundle's digest, :mod:`mlrt.sources`), its environment (every
installed distribution and one hash of the list, or the image and the digest
the engine or the cluster reported for it), its data (a content hash per
channel) and its parents: the run whose model it starts from
(``spec.init_from.run``), the run whose checkpoint it resumes
(``--resume-from``), the tuning job it is a trial of, and the tuning jobs a
search warm-starts from. :func:`walk` follows the parents from one run,
through any store that answers ``get_run`` and ``get_job`` (the local
database or the service's API).
"""

from __future__ import annotations

from typing import Any

MAX_RUNS = 200
"""Runs a walk visits at most (a lineage is a graph; a long chain of resumes ends here)."""


def parents(run: Any, job: Any) -> list[tuple[str, str]]:
    """``(relation, run id)`` of each run ``run`` (of job ``job``) comes from; the relation names
    the parent's role: ``tuning job``, ``init_from``, ``resume_from`` or ``warm_start``."""
    record = run.record or {}
    found: list[tuple[str, str]] = []
    if run.parent_id:
        found.append(("tuning job", run.parent_id))
    init_from = record.get("init_from") or {}
    if init_from.get("run"):
        found.append(("init_from", init_from["run"]))
    resumed = record.get("resume_from")
    resumed = resumed.get("run") if isinstance(resumed, dict) else resumed
    if resumed:
        found.append(("resume_from", resumed))
    spec = (job.spec_resolved or {}).get("spec") or {}
    for other in spec.get("warm_start") or []:
        found.append(("warm_start", other))
    return found


def environment(record: dict[str, Any]) -> dict[str, Any]:
    """Where a run's code ran: ``packages`` (count) and ``packages_sha256`` for this machine's Python,
    or ``image`` and the ``image_digests`` its containers or pods ran."""
    packages = record.get("packages")
    return {
        "python": record.get("python"),
        "packages": len(packages) if isinstance(packages, dict) else None,
        "packages_sha256": record.get("packages_sha256"),
        "image": record.get("image"),
        "image_digests": list(record.get("image_digests") or []),
    }


def entry(run: Any, job: Any) -> dict[str, Any]:
    """One run's lineage: its code, environment, data and parents."""
    record = run.record or {}
    return {
        "run": run.id,
        "state": run.state,
        "source": (record.get("source") or {}).get("digest"),
        "git": record.get("git"),
        **environment(record),
        "data": {name: channel.get("sha256") for name, channel in (record.get("data") or {}).items()},
        "parents": [{"relation": relation, "run": other} for relation, other in parents(run, job)],
    }


def walk(store: Any, run_id: str) -> list[dict[str, Any]]:
    """The lineage of ``run_id`` and of every run it comes from, breadth first, each once, with its
    ``depth`` (0: the run itself) and how it is related to the run that named it. A parent the
    store no longer has (or this token may not see) is listed with ``missing`` and not followed."""
    from mlrt.remote import RemoteError
    from mlrt.store import NotFound

    seen: set[str] = set()
    queue: list[tuple[str, int, str | None, str | None]] = [(run_id, 0, None, None)]
    found: list[dict[str, Any]] = []
    while queue and len(found) < MAX_RUNS:
        current, depth, relation, child = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        try:
            run = store.get_run(current)
            job = store.get_job(run.job_id)
        except (NotFound, RemoteError) as exc:
            if depth == 0 or (isinstance(exc, RemoteError) and exc.status != 403):
                raise
            found.append({"run": current, "depth": depth, "relation": relation, "of": child, "missing": str(exc)})
            continue
        found.append({**entry(run, job), "depth": depth, "relation": relation, "of": child})
        queue += [(p["run"], depth + 1, p["relation"], current) for p in found[-1]["parents"]]
    return found


_noted: set[tuple[str, str]] = set()
"""(run, digest) pairs already in a record: a pod's digest, seen at every poll, is written once."""


def note_image(store: Any, run_id: str, digest: str | None) -> None:
    """Add ``digest`` (``sha256:...``, what the engine or the pod reported for the image an attempt's
    workers run) to the run's record, once."""
    if not digest or (run_id, digest) in _noted:
        return
    run = store.get_run(run_id)
    digests = list(run.record.get("image_digests") or [])
    if digest not in digests:
        store.update_run(run_id, record={**run.record, "image_digests": [*digests, digest]})
    if len(_noted) > 100_000:
        _noted.clear()
    _noted.add((run_id, digest))
