"""How the kubernetes backend stops pods and reports the failures of their init containers and sidecars.

A detached controller (``mlrt submit --detach``) talks to the API stand-in through the official client; the test
plays the kubelet. Cancelling a run deletes its Job; the pods then get the grace period the spec asked for
(``stopping.grace_period`` as their ``terminationGracePeriodSeconds``, which the garbage collector's deletion
honours), and the controller waits for them: a worker that saves a checkpoint after SIGTERM has it, its log and
its metrics recorded before the run ends CANCELLED. A data fetch that fails names the channel; an upload sidecar
that keeps failing is said in an event on the run.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import import_or_missing, run_ended, submit_detached, wait_for
from mlrt.store import Store

import_or_missing("kubernetes", "kubernetes", "the kubernetes backend needs the kubernetes client")
from kube_cluster import controller_standin  # noqa: E402

pytestmark = pytest.mark.standin_only  # the tests play the kubelet

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  compute: {{backend: kubernetes, kubernetes: {{namespace: ml}}}}
  stopping: {{grace_period: {grace}{limit}}}
"""


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with controller_standin(tmp_path, monkeypatch) as standin:  # mlrt as the chart's ServiceAccount
        yield standin


def submit(cli, write_spec, name, grace="45s", extra="", limit=""):
    spec = write_spec(SPEC.format(name=name, grace=grace, limit=limit) + extra, name=f"{name}.yaml")
    return submit_detached(cli, spec)


def started_pod(kube) -> str:
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=120)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    return pod["metadata"]["name"]


def finished(run_id, timeout=120):
    return run_ended(run_id, timeout)


def cancelling(cli, run_id) -> tuple[threading.Thread, list]:
    """``mlrt cancel RUN`` in a thread: it returns once the run has ended, after the pods' grace period."""
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(cli("cancel", run_id)))
    thread.start()
    return thread, answers


def metric_line(key, step, value):
    return "##mlrt " + json.dumps({"metrics": [[key, step, value, time.time()]]}) + "\n"


def test_cancel_gives_the_pods_their_grace_period_and_keeps_what_the_worker_saved_in_it(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-grace")
    store = Store()
    pod = started_pod(kube)
    kube.append_log(pod, "epoch 0\n" + metric_line("loss", 0, 1.0), namespace="ml")
    wait_for(lambda: store.metrics(run_id, "loss"), timeout=60)

    cancel, answers = cancelling(cli, run_id)
    (terminating,) = wait_for(lambda: kube.terminating_pods("ml"), timeout=60)
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 45, "stopping.grace_period reached the pod"
    assert store.get_run(run_id).state == "RUNNING", "the controller waits for the pod to stop"

    # The worker got SIGTERM: it saves a checkpoint, says so, reports a last metric and exits 0 within its grace.
    kube.append_log(pod, "saved checkpoint step-1\n" + metric_line("loss", 1, 0.5), namespace="ml")
    kube.finish_termination(pod, exit_code=0, namespace="ml")
    cancel.join(120)
    assert answers[0].exit_code == 0 and f"{run_id} CANCELLED" in answers[0].output, answers[0].output
    run = finished(run_id)
    assert (run.state, run.reason) == ("CANCELLED", "cancelled by user")
    assert [(p.step, p.value) for p in store.metrics(run_id, "loss")] == [(0, 1.0), (1, 0.5)]
    assert "saved checkpoint step-1" in cli("logs", run_id).stdout
    assert kube.jobs("ml") == [] and kube.pods("ml") == [], "the Job went once its pod had stopped"


def test_max_runtime_stops_the_pods_within_the_same_grace_period(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-timeout", grace="40s", limit=", max_runtime: 2s")
    pod = started_pod(kube)
    (terminating,) = wait_for(lambda: kube.terminating_pods("ml"), timeout=60)
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 40
    kube.append_log(pod, "saved checkpoint at the deadline\n", namespace="ml")
    kube.finish_termination(pod, exit_code=0, namespace="ml")
    run = finished(run_id)
    assert run.state == "TIMED_OUT" and "max_runtime" in run.reason, run.reason
    assert "saved checkpoint at the deadline" in cli("logs", run_id).stdout


def test_a_data_fetch_that_fails_names_the_channel(cli, write_spec, kube, tmp_path):
    table = tmp_path / "train.csv"
    table.write_text("x,label\n1,0\n2,1\n")
    run_id = submit(cli, write_spec, "kube-fetch", extra=f"  data: {{train: {table.as_uri()}}}\n")
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=120)
    # The termination message is the end of mlrt.fetch's log (FallbackToLogsOnError).
    log = (
        f"[mlrt fetch] channel train: fetching {table.as_uri()}\n"
        "Traceback (most recent call last):\n"
        "OSError: [Errno 28] No space left on device\n"
    )
    kube.fail_init_container(pod["metadata"]["name"], exit_code=1, message=log, namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED"
    assert run.reason.startswith(
        f"worker 0 could not fetch data channel train in pod {pod['metadata']['name']}"
        " (init container fetch-data exited with code 1): OSError: [Errno 28] No space left on device"
    ), run.reason


def test_an_upload_sidecar_that_fails_is_said_on_the_run(cli, write_spec, kube, monkeypatch, s3_endpoint):
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "0.1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    run_id = submit(cli, write_spec, "kube-sidecar", grace="1s", extra='  output: {path: "s3://mlrt-test/faults"}\n')
    pod = started_pod(kube)
    why = "error: checkpoints not uploaded to s3://mlrt-test/faults: AccessDenied"
    kube.fail_sidecar(pod, "upload-output", exit_code=1, message=f"[mlrt s3sync] starting\n{why}\n", namespace="ml")
    store = Store()
    said = f"worker 0: the output upload sidecar upload-output of pod {pod} exited with code 1, restarted 1 time: {why}"
    wait_for(lambda: said in [e.reason for e in store.events(run_id)], timeout=60)
    assert store.get_run(run_id).state == "RUNNING", "a sidecar's exit does not fail the pod"

    cancel, answers = cancelling(cli, run_id)
    (terminating,) = wait_for(lambda: kube.terminating_pods("ml"), timeout=60)
    assert terminating["metadata"]["deletionGracePeriodSeconds"] > 1, "the upload's time comes on top of the grace"
    kube.finish_termination(pod, exit_code=143, namespace="ml")
    cancel.join(120)
    assert answers[0].exit_code == 0 and finished(run_id).state == "CANCELLED"


def test_workers_the_api_would_not_stop_keep_their_run_active_until_they_are_stopped(cli, write_spec, kube):
    """A cancel whose Job deletion cannot reach the API server does not end the run CANCELLED with its pod
    still running: the run stays RUNNING, says why, and is cancelled once the API answers again."""
    run_id = submit(cli, write_spec, "kube-unreachable", grace="5s")
    store = Store()
    pod = started_pod(kube)
    wait_for(lambda: store.get_run(run_id).state == "RUNNING", timeout=60)
    kube.drop_connections(10**9)  # no answer until the controller has said it could not stop the pod
    cancel, answers = cancelling(cli, run_id)
    wait_for(lambda: any("could not stop the workers" in e.reason for e in store.events(run_id)), timeout=60)
    assert store.get_run(run_id).state == "RUNNING", "its pod may still run: the run has not ended"
    kube.drop_connections(0)
    (terminating,) = wait_for(lambda: kube.terminating_pods("ml"), timeout=60)  # once the API answers
    kube.finish_termination(pod, exit_code=0, namespace="ml")
    cancel.join(120)
    assert answers[0].exit_code == 0, answers[0].output
    run = finished(run_id)
    assert (run.state, run.reason) == ("CANCELLED", "cancelled by user")
    stop_events = [e.reason for e in store.events(run_id) if "could not stop the workers" in e.reason]
    assert stop_events[0].startswith("could not stop the workers to end the run CANCELLED (")
    assert "they may still run: trying again in 1s (try 1)" in stop_events[0]
    assert kube.jobs("ml") == [] and kube.pods("ml") == []


def test_workers_that_stay_unstoppable_end_their_run_at_last_saying_they_may_still_run(
    cli, write_spec, kube, monkeypatch
):
    """An API server gone for good must not keep a run active for ever: after ``STOP_GIVE_UP`` seconds of
    failed stops the run ends, and its reason says its workers may still run."""
    import mlrt.controller as controller

    monkeypatch.setattr(controller, "STOP_GIVE_UP", 3.0)
    spec = write_spec(SPEC.format(name="kube-gone", grace="5s", limit=""), name="kube-gone.yaml")
    store = Store()

    def kubelet_then_cancel() -> None:
        started_pod(kube)
        (run,) = wait_for(lambda: [r for r in store.active_runs() if r.state == "RUNNING"], timeout=60)
        kube.drop_connections(10**9)  # no answer from now on
        controller.request_cancel(store, run, "the test")

    helper = threading.Thread(target=kubelet_then_cancel)
    helper.start()
    result = cli("submit", str(spec), "--json")  # the controller in this process, until the run ends
    helper.join(60)
    kube.drop_connections(0)
    run = json.loads(result.stdout)
    assert run["state"] == "CANCELLED", run
    assert run["reason"].startswith("cancelled by user; its workers could not be stopped for 3s ("), run["reason"]
    assert run["reason"].endswith("): they may still run")
    (pod,) = kube.pods("ml")  # nothing stopped it
    # Its log copy (when it started before the API went away) goes on while the pod may run and ends with it.
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    copy = f"mlrt-log-{pod['metadata']['name']}"
    wait_for(lambda: copy not in {thread.name for thread in threading.enumerate()}, timeout=60)


def test_cancelling_a_run_without_its_controller_when_the_api_does_not_answer_says_so(cli, write_spec, kube):
    """``mlrt cancel`` stops a run no controller drives from the command's own process: when the API server
    does not answer, it says the workers may still run (one line, exit 1) and leaves the run as it is."""
    import os
    import signal

    import psutil

    run_id = submit(cli, write_spec, "kube-orphan-cancel", grace="5s")
    store = Store()
    started_pod(kube)
    wait_for(lambda: store.get_run(run_id).state == "RUNNING", timeout=60)
    controller = psutil.Process(int(store.get_run(run_id).owner.rsplit(":", 2)[1]))
    os.kill(controller.pid, signal.SIGKILL)
    controller.wait(30)
    kube.drop_connections(10**9)
    refused = cli("cancel", run_id)
    kube.drop_connections(0)
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: could not stop the workers of {run_id} (")
    assert refused.stderr.rstrip().endswith("; they may still run") and "Traceback" not in refused.output
    assert store.get_run(run_id).state == "RUNNING" and kube.pods("ml")
    cancelled = cli("cancel", run_id)
    assert cancelled.exit_code == 0 and f"{run_id} CANCELLED" in cancelled.stdout, cancelled.output
    assert kube.jobs("ml") == []
