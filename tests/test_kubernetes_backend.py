"""The kubernetes backend end to end through the official client and an in-process API stand-in.

A detached controller (``mlrt submit --detach``) talks to the stand-in as it
would to a cluster; the test plays the cluster's part (pods start, log,
succeed, fail, are OOM-killed or cannot be scheduled) and checks what mlrt
records: states, reasons, metrics that travelled in the pod log, logs per
worker, and that a restarted controller adopts the Job instead of creating
a second one.
"""

from __future__ import annotations

import json
import os
import signal
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
  compute:
    backend: kubernetes
    workers: {workers}
    kubernetes: {{namespace: ml, schedule_timeout: {schedule_timeout}}}
  stopping: {{grace_period: 1s}}
"""


@pytest.fixture
def kube(tmp_path, monkeypatch):
    # mlrt is the chart's ServiceAccount, under the chart's RBAC; the test plays the cluster as its admin.
    with controller_standin(tmp_path, monkeypatch) as standin:
        yield standin


def submit(cli, write_spec, name, workers=1, schedule_timeout="15m"):
    spec = write_spec(SPEC.format(name=name, workers=workers, schedule_timeout=schedule_timeout), name=f"{name}.yaml")
    return submit_detached(cli, spec)


def pods_of(kube, count):
    return wait_for(lambda: (p := kube.pods("ml")) and len(p) >= count and p, timeout=30)


def finished(run_id, timeout=30):
    return run_ended(run_id, timeout)


def metric_line(key, step, value):
    return "##mlrt " + json.dumps({"metrics": [[key, step, value, time.time()]]}) + "\n"


def name(pod):
    return pod["metadata"]["name"]


def test_two_workers_succeed_with_metrics_from_the_pod_log_and_logs_per_worker(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-ok", workers=2)
    pods = pods_of(kube, 2)
    (job,) = kube.jobs("ml")
    owners = wait_for(lambda: kube.services("ml")[0]["metadata"].get("ownerReferences"), timeout=10)
    assert owners[0]["uid"] == job["metadata"]["uid"], "deleting the Job deletes its Service"
    for pod in pods:
        kube.start_pod(name(pod), namespace="ml")
    kube.append_log(name(pods[0]), "epoch 0\n" + metric_line("validation_accuracy", 0, 0.5), namespace="ml")
    kube.append_log(name(pods[1]), "rank 1 here\n", namespace="ml")
    kube.append_log(name(pods[0]), metric_line("validation_accuracy", 1, 0.75) + "done\n", namespace="ml")
    for pod in pods:
        kube.succeed_pod(name(pod), namespace="ml")
    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    points = json.loads(cli("metrics", run_id, "--key", "validation_accuracy", "--json").stdout)
    assert [(p["step"], p["value"]) for p in points] == [(0, 0.5), (1, 0.75)]
    logs = cli("logs", run_id).stdout
    assert "[worker 0] epoch 0" in logs and "[worker 1] rank 1 here" in logs and "[worker 0] done" in logs
    assert "##mlrt" not in logs
    assert [m for m, path in kube.requests if m == "POST" and path.endswith("/jobs")] == ["POST"]

    kube.finish_ttl("ml")  # the cluster's TTL controller removes the finished Job, its pods and Service
    assert kube.jobs("ml") == [] and kube.pods("ml") == [] and kube.services("ml") == []
    assert "[worker 0] epoch 0" in cli("logs", run_id).stdout, "mlrt kept the logs"


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"exit_code": 3}, "exited with code 3"),
        ({"exit_code": 137, "reason": "OOMKilled"}, "OOM-killed (exit code 137)"),
    ],
)
def test_a_failed_pod_fails_the_run_with_its_exit_and_last_log_line(cli, write_spec, kube, how, expected):
    run_id = submit(cli, write_spec, "kube-fail")
    (pod,) = pods_of(kube, 1)
    kube.start_pod(name(pod), namespace="ml")
    kube.append_log(name(pod), "loading\nValueError: bad shard 7\n", namespace="ml")
    kube.fail_pod(name(pod), namespace="ml", **how)
    run = finished(run_id)
    assert run.state == "FAILED"
    assert expected in run.reason and "ValueError: bad shard 7" in run.reason
    assert Store().latest_attempt(run_id).exit_code == how["exit_code"]


def test_an_image_that_cannot_be_pulled_fails_at_once(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-pull")
    (pod,) = pods_of(kube, 1)
    kube.image_pull_backoff(name(pod), namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED" and "ImagePullBackOff" in run.reason and "could not be pulled" in run.reason


def test_an_unschedulable_pod_is_reported_then_fails_after_the_schedule_timeout(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-pending", schedule_timeout="2s")
    (pod,) = pods_of(kube, 1)
    kube.unschedulable(name(pod), namespace="ml", message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    store = Store()
    wait_for(lambda: any("Unschedulable" in e.reason for e in store.events(run_id)), timeout=20)
    run = finished(run_id)
    assert run.state == "FAILED"
    assert "could not be scheduled within 2s" in run.reason and "Insufficient nvidia.com/gpu" in run.reason


def test_cancel_deletes_the_job_and_its_pods(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-cancel", workers=2)
    for pod in pods_of(kube, 2):
        kube.start_pod(name(pod), namespace="ml")
    result = cli("cancel", run_id)
    assert result.exit_code == 0, result.output
    assert finished(run_id).state == "CANCELLED"
    assert kube.jobs("ml") == [] and kube.pods("ml") == [] and kube.services("ml") == []


def test_a_restarted_controller_adopts_the_running_job_instead_of_creating_another(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-adopt")
    store = Store()
    (pod,) = pods_of(kube, 1)
    kube.start_pod(name(pod), namespace="ml")
    kube.append_log(name(pod), "before\n" + metric_line("loss", 0, 1.0), namespace="ml")
    wait_for(lambda: store.metrics(run_id, "loss"), timeout=20)
    first = store.get_run(run_id).owner
    os.kill(int(first.split(":")[1]), signal.SIGKILL)
    wait_for(lambda: cli("status", run_id) and store.get_run(run_id).owner != first, timeout=30)
    kube.append_log(name(pod), "after\n" + metric_line("loss", 1, 0.5), namespace="ml")
    kube.succeed_pod(name(pod), namespace="ml")
    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    assert run.attempts == 1
    assert [m for m, path in kube.requests if m == "POST" and path.endswith("/jobs")] == ["POST"]
    assert [(p.step, p.value) for p in store.metrics(run_id, "loss")] == [(0, 1.0), (1, 0.5)]
    assert any("adopted" in e.reason for e in store.events(run_id))
    logs = cli("logs", run_id).stdout.splitlines()
    assert logs.count("before") == 1 and logs.count("after") == 1, "the log copy resumed where it stopped"
