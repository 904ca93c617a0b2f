"""The kubernetes backend under the faults of a real cluster, through the official client, the stand-in and a
detached controller: log streams and watches that end or break mid-run, watch history that expires (410 Gone),
a watch that RBAC forbids (403), and an API server that throttles (429 with Retry-After)."""

from __future__ import annotations

import json
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
    workers: 1
    kubernetes: {{namespace: ml}}
  stopping: {{grace_period: 1s}}
"""


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with controller_standin(tmp_path, monkeypatch) as standin:  # mlrt as the chart's ServiceAccount
        standin.bookmark_interval = 0.5
        yield standin


def submit(cli, write_spec, name):
    return submit_detached(cli, write_spec(SPEC.format(name=name), name=f"{name}.yaml"))


def running_pod(kube, job_prefix):
    """The name of the run's pod, once it exists, started by the test as a kubelet would."""
    pod = wait_for(lambda: next((p for p in kube.pods("ml") if p["metadata"]["name"].startswith(job_prefix)), None), 30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    return pod["metadata"]["name"]


def finished(run_id, timeout=30):
    return run_ended(run_id, timeout)


def metric_line(step):
    return "##mlrt " + json.dumps({"metrics": [["loss", step, 1.0 / (step + 1), time.time()]]}) + "\n"


def test_streams_cut_and_watches_expired_mid_run_lose_no_line_and_no_metric(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-cut")
    pod = running_pod(kube, "")
    store = Store()
    steps = iter(range(100))

    def write_batch():
        """Two lines and a metric, written at once: they share a timestamp, so a resumed copy must count them."""
        step = next(steps)
        kube.append_log(pod, f"line {step}a\nline {step}b\n" + metric_line(step), namespace="ml")
        wait_for(lambda: len(store.metrics(run_id, "loss")) == step + 1, 30)

    write_batch()
    kube.cut_streams("log")  # a clean end while the pod runs (an idle timeout, a kubelet's log rotation)
    write_batch()
    kube.cut_streams(error=True)  # both streams dropped mid-way (an API server restart)
    write_batch()
    kube.compact_history()  # the watch history moved on: resuming the watches gets 410 Gone, then they list again
    kube.cut_streams("watch")
    write_batch()
    kube.append_log(pod, "the end, without a newline", namespace="ml")
    kube.succeed_pod(pod, namespace="ml")  # seen only through a watch that recovered: poll reads its cache
    run = finished(run_id)

    assert run.state == "SUCCEEDED", run.reason
    assert [(p.step, p.value) for p in store.metrics(run_id, "loss")] == [(s, 1.0 / (s + 1)) for s in range(4)]
    logs = cli("logs", run_id).stdout.splitlines()
    expected = [f"line {s}{half}" for s in range(4) for half in "ab"] + ["the end, without a newline"]
    assert [line.removeprefix("[worker 0] ") for line in logs if "line" in line or "end" in line] == expected
    assert not [e.reason for e in store.events(run_id) if "keeps failing" in e.reason or "forbids" in e.reason]


def test_runs_are_polled_rarely_while_the_watches_work_and_often_while_they_do_not(kube):
    # Between watch events a running run is polled as a safety net only (issue 14 item 3: 10,000 running
    # runs polled every 5 s would be 2,000 polls a second): every RESYNC_WATCHED seconds while both watches
    # of every namespace are open, every RESYNC_INTERVAL seconds while one is down (polls then read the API).
    from mlrt.launchers import RESYNC_INTERVAL
    from mlrt_kubernetes.launcher import RESYNC_WATCHED, KubernetesLauncher

    launcher = KubernetesLauncher()
    launcher._watch("ml")
    wait_for(lambda: launcher.resync_interval == RESYNC_WATCHED, 30)
    # The watches' next tries fail: they back off 0.8, 1.6... s. Each request is tried 4 times (the client's
    # Retry(total=3)) and the two watches' retries interleave: 4 drops could fall 2 and 2 and leave both up.
    # With 8, one of them takes 4 whatever the order.
    kube.drop_connections(8, method="GET")
    kube.cut_streams("watch", error=True)
    wait_for(lambda: launcher.resync_interval == RESYNC_INTERVAL, 30)
    wait_for(lambda: launcher.resync_interval == RESYNC_WATCHED, 60)


def test_a_forbidden_watch_is_an_event_on_the_run_which_still_completes(cli, write_spec, kube, tmp_path, monkeypatch):
    everything_but_watching_pods = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get", "create", "patch", "delete"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    ]
    meta = {"name": "mlrt", "namespace": "ml"}
    kube.apply_rbac(
        [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
             "rules": everything_but_watching_pods},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mlrt"},
             "subjects": [{"kind": "ServiceAccount", "name": "mlrt", "namespace": "ml"}]},
        ]
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kube.serviceaccount_kubeconfig(tmp_path / "sa-kubeconfig", "ml", "mlrt")))
    run_id = submit(cli, write_spec, "kube-forbidden")
    pod = running_pod(kube, "")
    store = Store()
    event = wait_for(lambda: next((e.reason for e in store.events(run_id) if "forbids" in e.reason), None), 30)
    assert "forbids mlrt to watch pods in namespace ml" in event and "grant the verb watch on pods" in event
    assert 'cannot watch resource "pods"' in event, "the API server's own message"
    kube.append_log(pod, metric_line(0), namespace="ml")
    kube.succeed_pod(pod, namespace="ml")
    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    assert [p.step for p in store.metrics(run_id, "loss")] == [0]
    assert sum("forbids" in e.reason for e in store.events(run_id)) == 1, "one event, not one per retry"


def test_a_throttled_api_slows_but_completes_every_launch(cli, write_spec, kube):
    launches = 4
    kube.throttle(requests=8, retry_after=1)
    run_ids = [submit(cli, write_spec, f"kube-throttled-{n}") for n in range(launches)]
    wait_for(lambda: len(kube.jobs("ml")) == launches, 60)
    for job in kube.jobs("ml"):
        pod = running_pod(kube, job["metadata"]["name"] + "-")
        kube.succeed_pod(pod, namespace="ml")
    runs = [finished(run_id, timeout=60) for run_id in run_ids]
    assert [run.state for run in runs] == ["SUCCEEDED"] * launches, [run.reason for run in runs]
    assert [run.attempts for run in runs] == [1] * launches, "no launch failed on a 429"
    assert kube.throttled_left == 0
    posted = [path for method, path in kube.requests if method == "POST" and path.endswith("/jobs")]
    assert len(posted) >= launches


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        # Retry-After: 0, so client-go's ten retries go at once; the eleventh answer is a 429 too.
        ("throttled", "the cluster's API is throttling requests"),
        # The Job's POST gets no answer (the API server restarted, or a proxy closed a kept-alive
        # connection): urllib3 does not send a POST again.
        ("dropped", "the cluster's API did not answer"),
    ],
)
def test_a_launch_the_api_cannot_take_now_is_launched_again_uncharged(cli, write_spec, kube, fault, said):
    # The run is queued again (LaunchDeferred) instead of failing its only attempt.
    if fault == "throttled":
        kube.throttle(requests=40, retry_after=0)  # more than the watch and the launch retry through
    else:
        kube.drop_connections(requests=1, method="POST")
    run_id = submit(cli, write_spec, f"kube-{fault}")
    pod = running_pod(kube, "")
    kube.succeed_pod(pod, namespace="ml")
    run = finished(run_id, timeout=120)
    assert run.state == "SUCCEEDED", run.reason
    assert run.attempts == 1 and run.max_attempts == 1, "the deferral charged no attempt"
    events = [e.reason for e in Store().events(run_id)]
    assert any(r.startswith(f"attempt 1 not launched: {said}") for r in events), events
    assert len(kube.jobs("ml")) == 1, "one Job: the attempt was launched again under its own name"


def test_a_launch_deferred_past_the_limit_is_a_failed_attempt_charged_to_the_retries(
    cli, write_spec, kube, monkeypatch
):
    # A cluster that keeps throttling must not hold a run QUEUED for ever: past
    # MLRT_LAUNCH_DEFER_LIMIT (30 min by default; 0 here) the deferral is a failed attempt.
    monkeypatch.setenv("MLRT_LAUNCH_DEFER_LIMIT", "0")
    kube.throttle(requests=40, retry_after=0)
    run_id = submit(cli, write_spec, "kube-deferred-too-long")
    run = finished(run_id, timeout=120)
    assert run.state == "FAILED", run.reason
    assert "the cluster's API is throttling requests" in run.reason and "past the limit of 0 s" in run.reason
    assert run.attempts == 1
