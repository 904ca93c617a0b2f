"""The controller under load: finalizing off the loop, admission by priority, fair share,
project limits and the machine's free CPUs (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from datetime import timedelta

import pytest

from mlrt.admission import Admission
from mlrt.controller import Controller
from mlrt.spec import load_spec
from mlrt.store import Store
from mlrt.store.models import Job, Run, utcnow
from mlrt.submission import submit

PRINT = "[python, -c, \"print('done')\"]"


def job(write_spec, name: str, command: str, extra: str = "") -> str:
    spec = f"apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {{name: {name}}}\nspec:\n  command: {command}\n{extra}"
    return write_spec(spec, name=f"{name}.yaml")


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_run_finalizing_blocks_no_other_and_cancel_acts_while_it_finalizes(write_spec, monkeypatch):
    # Run A's output goes to an S3 endpoint that refuses every connection: its upload is
    # retried for ~20 s. Meanwhile the same controller launches and finishes run B, and
    # cancelling A ends it at once, without waiting for the retries.
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "2,2,2,2,2,2,2,2,2,2")
    store = Store()
    uploading = submit(
        store,
        load_spec(job(write_spec, "uploading", PRINT, "  output: {path: s3://nowhere/runs}\n  compute: {cpu: 0.5}")),
    )
    controller = Controller(store)
    driving = threading.Thread(target=controller.run_until_done, args=([uploading],), daemon=True)
    driving.start()
    wait_for(lambda: store.get_run(uploading).state == "FINALIZING", what="FINALIZING")
    wait_for(lambda: any("output upload try 1 failed" in e.reason for e in store.events(uploading)), what="a retry")

    later = submit(store, load_spec(job(write_spec, "later", PRINT, "  compute: {cpu: 0.5}")), owner=controller.owner)
    wait_for(lambda: store.get_run(later).state == "SUCCEEDED", what="the other run to succeed")
    assert store.get_run(uploading).state == "FINALIZING"

    store.update_run(uploading, cancel_requested=True)
    driving.join(15)
    assert not driving.is_alive()
    run = store.get_run(uploading)
    assert (run.state, run.reason) == ("CANCELLED", "cancelled by user while finalizing")
    attempt = store.latest_attempt(uploading)
    assert attempt.state == "CANCELLED" and attempt.ended_at is not None


def test_stopping_a_run_within_its_grace_period_blocks_no_other_run(write_spec, tmp_path):
    # Run A ignores SIGTERM: cancelling it waits out its grace period (10 minutes) before the
    # kill, in the finalizing pool. Meanwhile the same controller launches and finishes run B:
    # B ends before A, which a pass blocked by A's stop could not let happen. Then the test
    # kills A's worker itself, which ends the wait.
    stubborn = (
        '[python, -c, "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        "open('ignoring', 'w').write(str(os.getpid())); time.sleep(1200)\"]"
    )
    store = Store()
    first = submit(
        store,
        load_spec(job(write_spec, "stubborn", stubborn, "  compute: {cpu: 0.5}\n  stopping: {grace_period: 10m}")),
    )
    controller = Controller(store)
    driven = [first]  # run_until_done reads the list each pass: B joins it below
    driving = threading.Thread(target=controller.run_until_done, args=(driven,), daemon=True)
    driving.start()
    # Only once the worker ignores SIGTERM: on a loaded machine the interpreter may still be
    # starting, and a SIGTERM then ends it at once.
    wait_for(lambda: (tmp_path / "ignoring").exists(), timeout=120, what="the worker to ignore SIGTERM")
    store.update_run(first, cancel_requested=True)
    later = submit(store, load_spec(job(write_spec, "later", PRINT, "  compute: {cpu: 0.5}")), owner=controller.owner)
    driven.append(later)
    wait_for(lambda: store.get_run(later).state == "SUCCEEDED", timeout=180, what="the other run to succeed")
    assert store.get_run(first).state == "RUNNING", "the stubborn run is still within its grace period"
    os.kill(int((tmp_path / "ignoring").read_text()), signal.SIGKILL)
    driving.join(180)
    assert not driving.is_alive()
    stopped, other = store.get_run(first), store.get_run(later)
    assert (stopped.state, stopped.reason) == ("CANCELLED", "cancelled by user")
    assert other.ended_at < stopped.ended_at, [(e.to_state, e.at, e.reason) for e in store.events(later)]


def test_a_run_asking_for_the_whole_machine_waits_for_the_one_before_it(cli, write_spec):
    # compute.cpu beyond any machine: one run starts (nothing else runs there), the other,
    # from another controller process, waits, saying why, until the first has ended.
    sleeper = job(write_spec, "whole", '[python, -c, "import time; time.sleep(2)"]', "  compute: {cpu: 1024}")
    runs = [json.loads(cli("submit", str(sleeper), "--detach", "--json").stdout)["run_id"] for _ in range(2)]
    store = Store()
    second = wait_for(lambda: next((r for r in runs if store.get_run(r).waiting), None), what="a run to wait")
    first = next(r for r in runs if r != second)
    waiting = store.get_run(second).waiting
    assert waiting.startswith("this machine has 0 of ") and "the run asks for 1024" in waiting
    status = json.loads(cli("status", second, "--json").stdout)
    assert status["state"] == "QUEUED" and status["waiting"] == waiting
    wait_for(lambda: store.get_run(second).state == "SUCCEEDED", timeout=120, what="the second run to succeed")
    first_run, second_run = store.get_run(first), store.get_run(second)
    assert first_run.state == "SUCCEEDED" and second_run.waiting == ""
    assert second_run.started_at >= first_run.ended_at


def _queued(store: Store, project: str | None, name: str, age: int, priority: int = 0, cpus: float = 1.0) -> Run:
    run_id = f"{name}-{age}"
    created = utcnow() - timedelta(seconds=1000 - age)
    store.create_job(
        Job(id=run_id, name=name, kind="TrainingJob", spec_submitted="", spec_resolved={}, project=project),
        Run(
            id=run_id,
            job_id=run_id,
            state="QUEUED",
            output_uri="file:///tmp",
            created_at=created,
            priority=priority,
            backend="kubernetes",
            cpus=cpus,
        ),
        {},
    )
    return store.get_run(run_id)


def test_admission_orders_by_priority_then_fair_share_then_age_and_holds_at_project_limits():
    store = Store()
    crowd = [_queued(store, "vision", "a", age) for age in range(6)]
    newcomer = [_queued(store, "speech", "b", 10 + age) for age in range(2)]
    urgent = _queued(store, "speech", "c", 20, priority=5)
    store.set_project_limit("vision", max_running=2, max_cpus=None, max_gpus=None, max_memory=None)
    admission = Admission(store, frozenset())
    admission.refresh()
    runs = crowd + newcomer + [urgent]
    projects = store.projects_of([r.id for r in runs])
    order = [run.id for run in admission.order(runs, projects)]
    # Priority first; then the project holding least goes next (speech's urgent run counts),
    # the oldest run first on a tie.
    assert order == ["c-20", "a-0", "a-1", "b-10", "a-2", "b-11", "a-3", "a-4", "a-5"]
    held = {run_id: admission.hold(store.get_run(run_id), projects[run_id]) for run_id in order}
    assert [run_id for run_id, why in held.items() if not why] == ["c-20", "a-0", "a-1", "b-10", "b-11"]
    assert held["a-2"] == "project vision is at its limit of 2 running runs"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"max_cpus": 3.0}, "project vision is at its limit of 3 CPUs; the run asks for 2"),
        ({"max_memory": 2**30}, "project vision is at its limit of 1Gi memory; the run asks for 1Gi"),
    ],
)
def test_resource_limits_count_what_active_runs_asked_for(limit, expected):
    store = Store()
    running = _queued(store, "vision", "r", 1, cpus=2.0)
    store.update_run(running.id, state="RUNNING", memory=2**30)
    waiting = _queued(store, "vision", "w", 2, cpus=2.0)
    store.update_run(waiting.id, memory=2**30)
    store.set_project_limit(
        "vision", **{"max_running": None, "max_cpus": None, "max_gpus": None, "max_memory": None, **limit}
    )
    admission = Admission(store, frozenset())
    admission.refresh()
    assert admission.hold(store.get_run(waiting.id), "vision") == expected


@pytest.mark.parametrize("value", ["x", "kubernetes=0", "local=2,=", "4.5"])
def test_an_unusable_pool_size_is_one_line_before_anything_is_written(cli, write_spec, monkeypatch, value):
    monkeypatch.setenv("MLRT_LAUNCH_CONCURRENCY", value)
    result = cli("submit", str(job(write_spec, "pools", PRINT)))
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: MLRT_LAUNCH_CONCURRENCY: {value!r} is not N or BACKEND=N,... with N a whole number from 1"
    )
    assert Store().list_runs() == []


def test_a_pass_reads_only_the_head_of_each_queue_in_launch_order():
    store = Store()
    for age in range(5):
        _queued(store, "vision", "a", age)
    for age in range(3):
        _queued(store, "speech", "b", 10 + age)
    _queued(store, "vision", "u", 30, priority=5)
    cancelled = _queued(store, "speech", "x", 1)
    later = _queued(store, "speech", "y", 2)
    for run_id in [f"a-{age}" for age in range(5)] + [f"b-{10 + age}" for age in range(3)] + ["u-30", "x-1", "y-2"]:
        store.update_run(run_id, owner="me")
    store.update_run(cancelled.id, cancel_requested=True)
    store.update_run(later.id, not_before=utcnow() + timedelta(hours=1))
    heads = store.queue_heads("me", ["kubernetes"], 2, utcnow())
    by_project: dict[str | None, list[str]] = {}
    for run, project in heads:
        by_project.setdefault(project, []).append(run.id)
    # Per project: the higher priority first, then the oldest; neither a cancelled run
    # nor one waiting for its retry backoff; nothing of another backend or owner.
    assert sorted(by_project["vision"]) == ["a-0", "u-30"]
    assert sorted(by_project["speech"]) == ["b-10", "b-11"]
    assert store.queue_heads("me", ["local"], 2, utcnow()) == []
    assert store.queue_heads("someone-else", ["kubernetes"], 2, utcnow()) == []
    # The cancelled run is handled one by one (it is cancelled before launch), like every non-queued run.
    assert [run.id for run in store.busy_runs("me")] == [cancelled.id]


def test_the_digest_of_a_controllers_runs_changes_with_them_on_postgres(postgres_db):
    # A pass learns that nothing changed from one row the database computes (issue 14 item 3):
    # the digest moves with a state, a cancel request, a new busy run, an owner and the queue.
    store = Store(postgres_db)
    for age in range(3):
        _queued(store, "vision", "a", age)
        store.update_run(f"a-{age}", owner="me", state="RUNNING")
    _queued(store, "vision", "q", 10)
    store.update_run("q-10", owner="me")
    signature = store.active_signature("me")
    assert [row[0] for row in signature.rows] == ["a-0", "a-1", "a-2"] and signature.queued == 1
    assert store.active_digest("me") == (1, signature.digest)
    seen = {signature.digest}
    for change in (
        lambda: store.update_run("a-1", state="FINALIZING"),
        lambda: store.update_run("a-2", cancel_requested=True),
        lambda: store.update_run("q-10", cancel_requested=True),
        lambda: store.update_run("a-0", owner="someone-else"),
    ):
        change()
        queued, digest = store.active_digest("me")
        assert digest not in seen
        assert store.active_signature("me") == (store.active_signature("me").rows, queued, digest)
        seen.add(digest)
    _queued(store, "vision", "r", 11)
    store.update_run("r-11", owner="me")
    assert store.active_digest("me") == (1, digest)  # the queue is counted apart
    assert store.active_digest("nobody") == (0, "0:0")
    assert Store().active_digest("me") is None  # SQLite: the rows are read


def test_admission_reads_usage_summed_by_the_database(postgres_db):
    # One row per project, however many runs are active (issue 14 item 3), on both databases.
    import socket

    from mlrt.admission import ACTIVE_STATES

    host = socket.gethostname()
    for store in (Store(postgres_db), Store()):
        _queued(store, "vision", "a", 0, cpus=1.5)
        _queued(store, "vision", "a", 1, cpus=2.0)
        _queued(store, "speech", "b", 2, cpus=4.0)
        _queued(store, "speech", "w", 3, cpus=8.0)  # still queued: holds nothing
        store.update_run("a-0", state="RUNNING", backend="local", owner=f"{host}:1:2.00", memory=1 << 30)
        store.update_run("a-1", state="STARTING", backend="local", owner="elsewhere:1:2.00")
        store.update_run("b-2", state="RUNNING", backend="kubernetes", owner=f"{host}:1:2.00", gpus=1)
        projects, machine = store.active_usage(ACTIVE_STATES, {"local"}, host)
        assert sorted(projects) == [("speech", 1, 4.0, 0, 1), ("vision", 2, 3.5, 1 << 30, 0)]
        assert machine == (1, 1.5, 1 << 30, 0)  # local runs of a controller on this host only
        assert store.active_usage(ACTIVE_STATES, set(), host)[1] == (0, 0.0, 0, 0)


def test_a_project_priority_cap_refuses_higher_priorities_and_is_shown(cli):
    from mlrt.admission import priority_problem
    from mlrt.service import auth

    result = cli("projects", "limit", "vision", "--max-priority", "10", "--running", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["max_priority"] == 10
    store = Store()  # the API reads the cap with the submitter's token
    vision, speech = (auth.authenticate(store, auth.issue(store, "user", "u", p)) for p in ("vision", "speech"))
    assert (vision.max_priority, speech.max_priority) == (10, None)
    assert priority_problem("vision", vision.max_priority, 10) is None
    assert priority_problem("speech", speech.max_priority, 500) is None
    assert priority_problem("vision", vision.max_priority, 11).startswith(
        "spec.priority: 11 is above project vision's limit of 10"
    )
    bad = cli("projects", "limit", "vision", "--max-priority", "5000")
    assert bad.exit_code == 2 and "--max-priority" in bad.output and "-1000 to 1000" in bad.output
    shown = cli("projects", "list")
    assert "max priority" in shown.output and "10" in shown.output
    assert (
        json.loads(cli("projects", "limit", "vision", "--max-priority", "none", "--json").stdout)[0]["max_running"] == 4
    )


def test_a_pass_reads_whole_only_the_runs_it_has_work_for(write_spec, monkeypatch):
    # Four running runs whose backend says nothing changed: a pass reads none of them whole
    # (issue 14 item 3: the idle pass stays flat as runs accumulate). A cancel request makes
    # the next pass read that run, and only it.
    from mlrt import plugins

    monkeypatch.setattr(type(plugins.launchers()["local"]), "resync_interval", 3600.0)
    store = Store()
    sleeper = '[python, -c, "import time; time.sleep(120)"]'
    small = "  compute: {cpu: 0.25}"  # four fit on the smallest machine
    ids = [submit(store, load_spec(job(write_spec, f"sleeper{i}", sleeper, small))) for i in range(4)]
    controller = Controller(store)
    for run_id in ids:
        controller.claim(run_id)
    try:
        wait_for(
            lambda: controller.reconcile() is not None and all(store.get_run(r).state == "RUNNING" for r in ids),
            what="four runs RUNNING",
        )
        controller.reconcile()  # each has been handled once as RUNNING: its max_runtime is known
        monkeypatch.setattr(plugins.launchers()["local"], "changed_runs", lambda: set())
        read: list[str] = []
        original = store.busy_runs_by_id

        def recording(run_ids):
            read.extend(run_ids)
            return original(run_ids)

        monkeypatch.setattr(store, "busy_runs_by_id", recording)
        monkeypatch.setattr(store, "busy_runs", lambda owner: pytest.fail("read every busy run"))
        controller.reconcile()
        assert read == []

        store.update_run(ids[1], cancel_requested=True)
        controller.reconcile()
        assert read == [ids[1]]
        wait_for(lambda: controller.reconcile() is not None and store.get_run(ids[1]).state == "CANCELLED")
        assert [store.get_run(r).state for r in (ids[0], ids[2], ids[3])] == ["RUNNING"] * 3
    finally:
        controller.cancel_all("test over")


def test_launches_that_end_together_are_recorded_together_and_a_refused_one_alone(write_spec, monkeypatch):
    # The launches a pass collects are written in one transaction; when it is refused for one
    # run, the others are recorded one by one and that run alone is in trouble.
    import mlrt.controller as controller_module

    monkeypatch.setenv("MLRT_LAUNCH_CONCURRENCY", "local=4")
    monkeypatch.setattr(controller_module, "_POOLS", {})  # a local pool of 4 for this test
    store = Store()
    sleeper = '[python, -c, "import time; time.sleep(120)"]'
    small = "  compute: {cpu: 0.25}"  # four fit on the smallest machine
    ids = [submit(store, load_spec(job(write_spec, f"batch{i}", sleeper, small))) for i in range(4)]
    batches: list[list[int]] = []
    original = store.record_running

    def refusing(attempts, changes):
        batches.append([attempt_id for attempt_id, _ in attempts])
        if any(run_id == ids[0] for run_id, *_ in changes):
            raise ValueError("refused in the test")
        return original(attempts, changes)

    monkeypatch.setattr(store, "record_running", refusing)
    controller = Controller(store)
    for run_id in ids:
        controller.claim(run_id)
    try:
        controller.reconcile()  # admits all four; their launches run in the pool
        assert sorted(controller._launching) == sorted(ids)
        wait_for(lambda: all(future.done() for _, future in controller._launching.values()), what="launches")
        controller.reconcile()  # collects the four at once
        assert [len(batch) for batch in batches] == [4, 1, 1, 1, 1]
        assert [store.get_run(r).state for r in ids] == ["STARTING", "RUNNING", "RUNNING", "RUNNING"]
        assert any("refused in the test" in e.reason for e in store.events(ids[0]))
        assert not any("refused" in e.reason for r in ids[1:] for e in store.events(r))
    finally:
        controller.cancel_all("test over")
