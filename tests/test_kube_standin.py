"""The Kubernetes API stand-in, exercised only through the official client, the way the kubernetes backend uses it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pydantic
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from kube_standin import KubeStandIn

INDEX = "batch.kubernetes.io/job-completion-index"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeStandIn]:
    with KubeStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def api_client(kube: KubeStandIn) -> Iterator[client.ApiClient]:
    with kube.api_client() as api:
        yield api


@pytest.fixture
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A namespace of the test's own, so that tests sharing the stand-in do not see each other's objects."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:63]


def job_manifest(name: str, completions: int = 2, **spec: Any) -> dict[str, Any]:
    """An Indexed training Job the way the backend writes one; ``spec`` adds or overrides Job spec fields."""
    container = {
        "name": "trainer",
        "image": "ghcr.io/example/mlrt-trainer:0.1.0",
        "command": ["python", "-m", "mlrt.worker"],
        "args": ["--run", name],
        "env": [{"name": "MLRT_RUN_ID", "value": name}, {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"}],
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        },
        "ports": [{"name": "rendezvous", "containerPort": 29500}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mlrt", "mlrt.io/run": name}},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": {"mlrt.io/run": name}, "annotations": {"mlrt.io/attempt": "1"}},
                "spec": {"restartPolicy": "Never", "subdomain": name, "containers": [container]},
            },
            **spec,
        },
    }


def service_manifest(job: client.V1Job) -> dict[str, Any]:
    """The headless Service giving the Job's pods stable DNS names, owned by the Job."""
    name = job.metadata.name
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid, "controller": True}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"clusterIP": "None", "selector": {"job-name": name}, "ports": [{"name": "rendezvous", "port": 29500}]},
    }


def pod_names(core: client.CoreV1Api, ns: str, job: str) -> list[str]:
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return [pod.metadata.name for pod in sorted(pods, key=lambda pod: int(pod.metadata.labels[INDEX]))]


def watch_until(func: Callable[..., Any], *args: Any, until: Callable[[list[dict]], bool], **kwargs: Any) -> list[dict]:
    """The events of a watch through the client, up to the one after which ``until(events)`` holds (or 5 s)."""
    events: list[dict] = []
    stream = watch.Watch()
    for event in stream.stream(func, *args, timeout_seconds=5, **kwargs):
        events.append(event)
        if until(events):
            stream.stop()
    return events


def status_of(error: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The ``Status`` object the server answered with."""
    return json.loads(error.value.body)


def test_indexed_job_runs_to_completion(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    job = batch.create_namespaced_job(ns, job_manifest("train"))
    service = core.create_namespaced_service(ns, service_manifest(job))
    assert service.spec.cluster_ip == "None"
    assert kube.requests.count(("POST", f"/apis/batch/v1/namespaces/{ns}/jobs")) == 1

    kube.wait_for_pods("train", 2, ns)
    listed = core.list_namespaced_pod(ns, label_selector="job-name=train")
    assert len(listed.items) == 2
    for pod in listed.items:
        index = pod.metadata.labels[INDEX]
        assert re.fullmatch(rf"train-{index}-[a-z]{{5}}", pod.metadata.name)
        assert pod.metadata.annotations == {"mlrt.io/attempt": "1", INDEX: index}
        assert pod.metadata.labels["controller-uid"] == pod.metadata.labels["batch.kubernetes.io/controller-uid"]
        assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "train"
        assert pod.metadata.labels["mlrt.io/run"] == "train"
        [owner] = pod.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "train", job.metadata.uid, True)
        assert (pod.spec.hostname, pod.spec.subdomain) == (f"train-{index}", "train")
        assert [env.name for env in pod.spec.containers[0].env] == [
            "MLRT_RUN_ID",
            "MASTER_ADDR",
            "JOB_COMPLETION_INDEX",
        ]
        assert pod.status.phase == "Pending"
    assert batch.read_namespaced_job("train", ns).status.active == 2

    first, second = pod_names(core, ns, "train")
    for name in (first, second):
        kube.start_pod(name, ns)
    running = core.read_namespaced_pod(first, ns)
    assert running.status.pod_ip and running.status.container_statuses[0].state.running.started_at
    assert {c.type: c.status for c in running.status.conditions}["PodScheduled"] == "True"
    kube.settle()
    assert batch.read_namespaced_job("train", ns).status.ready == 2
    for name in (first, second):
        kube.succeed_pod(name, ns)

    events = watch_until(
        core.list_namespaced_pod,
        ns,
        label_selector="job-name=train",
        resource_version=listed.metadata.resource_version,
        until=lambda events: (
            events[-1]["object"].metadata.name == second and events[-1]["object"].status.phase == "Succeeded"
        ),
    )
    assert [(e["type"], e["object"].metadata.name, e["object"].status.phase) for e in events] == [
        ("MODIFIED", first, "Running"),
        ("MODIFIED", second, "Running"),
        ("MODIFIED", first, "Succeeded"),
        ("MODIFIED", second, "Succeeded"),
    ]
    terminated = events[-1]["object"].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")

    kube.settle()
    status = batch.read_namespaced_job("train", ns).status
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [
        ("SuccessCriteriaMet", "True", "CompletionsReached"),
        ("Complete", "True", "CompletionsReached"),
    ]
    assert (status.succeeded, status.completed_indexes, status.active, status.failed) == (2, "0-1", None, None)
    assert status.start_time and status.completion_time
    [stored] = kube.jobs(ns)
    assert stored["status"]["completedIndexes"] == "0-1"


def test_watch_starts_with_existing_objects_then_streams_live(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("live", completions=1))
    [name] = [pod["metadata"]["name"] for pod in kube.wait_for_pods("live", 1, ns)]
    events: list[tuple[str, str]] = []
    first_event = threading.Event()

    def follow() -> None:
        stream = watch.Watch()
        for event in stream.stream(core.list_namespaced_pod, ns, timeout_seconds=5):
            events.append((event["type"], event["object"].status.phase))
            first_event.set()
            if event["object"].status.phase == "Succeeded":
                stream.stop()

    watcher = threading.Thread(target=follow)
    watcher.start()
    assert first_event.wait(5)
    kube.start_pod(name, ns)
    kube.succeed_pod(name, ns)
    watcher.join(5)
    assert events == [("ADDED", "Pending"), ("MODIFIED", "Running"), ("MODIFIED", "Succeeded")]


def test_api_errors(batch: client.BatchV1Api, ns: str):
    batch.create_namespaced_job(ns, job_manifest("dup"))
    with pytest.raises(ApiException) as conflict:
        batch.create_namespaced_job(ns, job_manifest("dup"))
    assert conflict.value.status == 409
    assert status_of(conflict)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as missing:
        batch.read_namespaced_job("missing", ns)
    assert missing.value.status == 404
    assert status_of(missing)["message"] == 'jobs.batch "missing" not found'

    # The client checks required fields itself, so a container without a name reaches the server only from an
    # unvalidated model (or raw JSON).
    with pytest.raises(pydantic.ValidationError):
        batch.create_namespaced_job(
            ns, job_manifest("nameless") | {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
        )
    nameless = client.V1Job(
        metadata=client.V1ObjectMeta(name="nameless"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never", containers=[client.V1Container.model_construct(image="x")]
                )
            )
        ),
    )
    with pytest.raises(ApiException) as invalid:
        batch.create_namespaced_job(ns, nameless)
    assert invalid.value.status == 422
    assert status_of(invalid)["reason"] == "Invalid"
    assert status_of(invalid)["message"] == (
        "Job.batch \"nameless\" is invalid: spec.template.spec.containers[0]: 'name' is a required property"
    )

    restarting = job_manifest("restarting")
    restarting["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as invalid:
        batch.create_namespaced_job(ns, restarting)
    assert invalid.value.status == 422
    assert "spec.template.spec.restartPolicy: Unsupported value" in status_of(invalid)["message"]


@pytest.mark.parametrize("via", ["query", "body"])
@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_delete_collects_pods_and_owned_service(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str, policy: str, via: str
):
    job = batch.create_namespaced_job(ns, job_manifest("doomed"))
    core.create_namespaced_service(ns, service_manifest(job))
    started = kube.wait_for_pods("doomed", 2, ns)[0]["metadata"]["name"]
    kube.start_pod(started, ns)
    if via == "query":
        answer = batch.delete_namespaced_job("doomed", ns, propagation_policy=policy)
    else:
        answer = batch.delete_namespaced_job("doomed", ns, body=client.V1DeleteOptions(propagation_policy=policy))
    assert answer["status"] == "Success"
    # The garbage collector deletes the pods with no grace period of its own: the running pod gets its
    # terminationGracePeriodSeconds (defaulted to 30), the one never scheduled goes at once.
    [terminating] = core.list_namespaced_pod(ns).items
    assert terminating.metadata.name == started and terminating.metadata.deletion_grace_period_seconds == 30
    assert terminating.metadata.deletion_timestamp
    jobs = batch.list_namespaced_job(ns).items
    if policy == "Foreground":  # the Job waits for its blocking dependents
        assert [(j.metadata.finalizers, bool(j.metadata.deletion_timestamp)) for j in jobs] == [
            (["foregroundDeletion"], True)
        ]
    else:
        assert jobs == []
    kube.finish_termination(started, namespace=ns)
    assert core.list_namespaced_pod(ns).items == []
    assert core.list_namespaced_service(ns).items == []
    assert batch.list_namespaced_job(ns).items == []

    def deleted_at(func: Callable[..., Any], count: int) -> list[int]:
        events = watch_until(
            func,
            ns,
            resource_version=job.metadata.resource_version,
            until=lambda events: sum(e["type"] == "DELETED" for e in events) == count,
        )
        return [int(e["object"].metadata.resource_version) for e in events if e["type"] == "DELETED"]

    [job_deleted] = deleted_at(batch.list_namespaced_job, 1)
    pods_deleted = deleted_at(core.list_namespaced_pod, 2)
    if policy == "Foreground":
        assert max(pods_deleted) < job_deleted
    else:
        assert min(pods_deleted) > job_deleted


def test_orphan_delete_keeps_dependents(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    job = batch.create_namespaced_job(ns, job_manifest("orphaning"))
    core.create_namespaced_service(ns, service_manifest(job))
    kube.wait_for_pods("orphaning", 2, ns)
    batch.delete_namespaced_job("orphaning", ns, propagation_policy="Orphan")
    assert batch.list_namespaced_job(ns).items == []
    pods = core.list_namespaced_pod(ns, label_selector="job-name=orphaning").items
    assert len(pods) == 2
    assert all(pod.metadata.owner_references in (None, []) for pod in pods)
    [service] = core.list_namespaced_service(ns).items
    assert service.metadata.owner_references in (None, [])
    assert kube.get("Job", ns, "orphaning") is None
    assert [s["metadata"]["name"] for s in kube.services(ns)] == ["orphaning"]


def test_pod_failure_beyond_backoff_limit_fails_the_job(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("fragile"))
    kube.wait_for_pods("fragile", 2, ns)
    failing, running = pod_names(core, ns, "fragile")
    kube.start_pod(failing, ns)
    kube.start_pod(running, ns)
    kube.fail_pod(failing, exit_code=1, message="Traceback (most recent call last): ...", namespace=ns)

    kube.settle()
    status = batch.read_namespaced_job("fragile", ns).status
    assert [(c.type, c.reason) for c in status.conditions] == [
        ("FailureTarget", "BackoffLimitExceeded"),
        ("Failed", "BackoffLimitExceeded"),
    ]
    assert (status.failed, status.active, status.terminating) == (1, None, 1)
    # The running pod is deleted (gracefully: it terminates), the failed one kept.
    assert [pod["metadata"]["name"] for pod in kube.terminating_pods(ns)] == [running]
    kube.finish_termination(running, exit_code=143, namespace=ns)
    assert pod_names(core, ns, "fragile") == [failing]
    terminated = core.read_namespaced_pod(failing, ns).status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        1,
        "Error",
        "Traceback (most recent call last): ...",
    )


def test_failed_pod_within_backoff_limit_is_replaced(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("retrying", backoffLimit=2))
    kube.wait_for_pods("retrying", 2, ns)
    first, second = pod_names(core, ns, "retrying")
    kube.start_pod(second, ns)
    kube.fail_pod(second, namespace=ns)
    kube.settle()
    pods = core.list_namespaced_pod(ns, label_selector=f"{INDEX}=1").items
    replacement = next(pod for pod in pods if pod.metadata.name != second)
    assert re.fullmatch(r"retrying-1-[a-z]{5}", replacement.metadata.name)
    assert replacement.status.phase == "Pending"
    status = batch.read_namespaced_job("retrying", ns).status
    assert (status.failed, status.active, status.conditions) == (1, 2, None)


def test_non_indexed_job_and_a_deleted_pod(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("plain", completionMode="NonIndexed", backoffLimit=1))
    kube.wait_for_pods("plain", 2, ns)
    pods = core.list_namespaced_pod(ns, label_selector="job-name=plain").items
    assert all(re.fullmatch(r"plain-[a-z]{5}", pod.metadata.name) and pod.spec.hostname is None for pod in pods)
    doomed = pods[0].metadata.name
    kube.start_pod(doomed, ns)
    deleted = core.delete_namespaced_pod(doomed, ns)
    assert deleted.metadata.name == doomed and deleted.metadata.deletion_timestamp
    kube.settle()
    status = batch.read_namespaced_job("plain", ns).status
    # With podReplacementPolicy TerminatingOrFailed (the default without a podFailurePolicy) a terminating pod
    # counts as failed and is replaced at once.
    assert (status.failed, status.active, status.terminating) == (1, 2, 1)
    kube.finish_termination(doomed, exit_code=143, namespace=ns)
    kube.settle()
    assert batch.read_namespaced_job("plain", ns).status.failed == 1, "counted once"

    for pod in kube.pods(ns, job="plain"):
        kube.start_pod(pod["metadata"]["name"], ns)
        kube.succeed_pod(pod["metadata"]["name"], ns)
    kube.settle()
    status = batch.read_namespaced_job("plain", ns).status
    assert (status.succeeded, status.failed, status.completed_indexes) == (2, 1, None)
    assert [c.type for c in status.conditions] == ["SuccessCriteriaMet", "Complete"]


def test_pod_failure_policy(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    batch.create_namespaced_job(ns, job_manifest("policed", podFailurePolicy=policy))
    kube.wait_for_pods("policed", 2, ns)
    preempted, doomed = pod_names(core, ns, "policed")
    kube.start_pod(preempted, ns)
    kube.fail_pod(preempted, exit_code=143, namespace=ns, disruption="PreemptionByScheduler")
    kube.settle()
    status = batch.read_namespaced_job("policed", ns).status
    assert (status.failed, status.active, status.conditions) == (None, 2, None)  # ignored, and replaced

    kube.start_pod(doomed, ns)
    kube.fail_pod(doomed, exit_code=42, namespace=ns)
    kube.settle()
    status = batch.read_namespaced_job("policed", ns).status
    assert [(c.type, c.reason) for c in status.conditions] == [
        ("FailureTarget", "PodFailurePolicy"),
        ("Failed", "PodFailurePolicy"),
    ]
    assert status.conditions[-1].message == (
        f"Container trainer for pod {ns}/{doomed} failed with exit code 42 matching FailJob rule at index 0"
    )


def test_oom_kill_is_visible_in_container_statuses(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("hungry", completions=1))
    kube.wait_for_pods("hungry", 1, ns)
    [name] = pod_names(core, ns, "hungry")
    kube.start_pod(name, ns)
    kube.fail_pod(name, exit_code=137, reason="OOMKilled", namespace=ns)
    pod = core.read_namespaced_pod(name, ns)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")
    assert terminated.started_at and terminated.finished_at


def test_suspended_job_gets_pods_once_resumed(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("waiting", suspend=True))
    kube.settle()
    assert core.list_namespaced_pod(ns).items == []
    job = batch.read_namespaced_job("waiting", ns)
    assert [(c.type, c.status) for c in job.status.conditions] == [("Suspended", "True")]
    assert job.status.start_time is None

    with pytest.raises(ApiException) as unsupported:  # a list is sent as a JSON patch, which the stand-in refuses
        batch.patch_namespaced_job("waiting", ns, [{"op": "replace", "path": "/spec/suspend", "value": False}])
    assert unsupported.value.status == 415

    resumed = batch.patch_namespaced_job("waiting", ns, {"spec": {"suspend": False}})
    assert resumed.spec.suspend is False
    assert resumed.metadata.generation == 2
    assert len(kube.wait_for_pods("waiting", 2, ns)) == 2
    kube.settle()
    status = batch.read_namespaced_job("waiting", ns).status
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [("Suspended", "False", "JobResumed")]
    assert (status.active, bool(status.start_time)) == (2, True)


def test_follow_log_streams_until_the_pod_succeeds(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("chatty", completions=1))
    kube.wait_for_pods("chatty", 1, ns)
    [name] = pod_names(core, ns, "chatty")
    kube.start_pod(name, ns)
    kube.append_log(name, "epoch 1\n", ns)
    response = core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
    received: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        for chunk in response.stream(amt=None, decode_content=False):
            with arrived:
                received.append(chunk.decode())
                arrived.notify_all()

    reader = threading.Thread(target=read)
    reader.start()
    with arrived:
        assert arrived.wait_for(lambda: "".join(received) == "epoch 1\n", 5)
    kube.append_log(name, "epoch 2\n", ns)
    with arrived:
        assert arrived.wait_for(lambda: "".join(received) == "epoch 1\nepoch 2\n", 5)
    kube.succeed_pod(name, ns)
    reader.join(5)
    assert not reader.is_alive()
    assert core.read_namespaced_pod_log(name, ns) == "epoch 1\nepoch 2\n"
    assert core.read_namespaced_pod_log(name, ns, tail_lines=1) == "epoch 2\n"


def test_pending_pods_and_their_logs(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    batch.create_namespaced_job(ns, job_manifest("stuck"))
    kube.wait_for_pods("stuck", 2, ns)
    unscheduled, pulling = pod_names(core, ns, "stuck")
    kube.unschedulable(unscheduled, namespace=ns)
    kube.image_pull_backoff(pulling, namespace=ns)

    scheduled = {c.type: c for c in core.read_namespaced_pod(unscheduled, ns).status.conditions}["PodScheduled"]
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert scheduled.message == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    waiting = core.read_namespaced_pod(pulling, ns).status.container_statuses[0].state.waiting
    assert (waiting.reason, waiting.message) == (
        "ImagePullBackOff",
        'Back-off pulling image "ghcr.io/example/mlrt-trainer:0.1.0"',
    )

    for name, why in ((unscheduled, "ContainerCreating"), (pulling, "trying and failing to pull image")):
        with pytest.raises(ApiException) as not_started:
            core.read_namespaced_pod_log(name, ns)
        assert not_started.value.status == 400
        assert status_of(not_started)["message"] == f'container "trainer" in pod "{name}" is waiting to start: {why}'
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod_log("nowhere", ns, follow=True, _preload_content=False)
    assert missing.value.status == 404


def test_selectors_and_generated_names(core: client.CoreV1Api, ns: str):
    def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
        spec = {"containers": [{"name": "main", "image": "busybox"}]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}

    core.create_namespaced_pod(ns, pod("a", {"app": "x", "tier": "web"}))
    core.create_namespaced_pod(ns, pod("b", {"app": "y"}))
    core.create_namespaced_pod(ns, pod("c", {"app": "x", "canary": "true"}))

    def names(**selectors: str) -> list[str]:
        return [item.metadata.name for item in core.list_namespaced_pod(ns, **selectors).items]

    assert names(label_selector="app=x") == ["a", "c"]
    assert names(label_selector="app!=x") == ["b"]
    assert names(label_selector="canary") == ["c"]
    assert names(label_selector="!canary") == ["a", "b"]
    assert names(label_selector="app in (x,y),tier notin (web)") == ["b", "c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    with pytest.raises(ApiException) as unparsable:
        names(label_selector="app in x")
    assert unparsable.value.status == 400

    events = watch_until(core.list_namespaced_pod, ns, label_selector="app=x", until=lambda events: len(events) == 2)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a"), ("ADDED", "c")]

    generated = core.create_namespaced_pod(ns, {**pod("", {}), "metadata": {"generateName": "gen-"}})
    assert re.fullmatch(r"gen-[a-z]{5}", generated.metadata.name)
    assert generated.metadata.uid and generated.metadata.creation_timestamp and generated.status.phase == "Pending"
    assert int(generated.metadata.resource_version) > int(core.read_namespaced_pod("c", ns).metadata.resource_version)


def test_deadline_and_ttl(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    batch.create_namespaced_job(ns, job_manifest("slow", activeDeadlineSeconds=3600))
    kube.wait_for_pods("slow", 2, ns)
    names = pod_names(core, ns, "slow")
    for name in names:
        kube.start_pod(name, ns)
    kube.settle()
    kube.expire_deadline("slow", ns)
    status = batch.read_namespaced_job("slow", ns).status
    assert [(c.type, c.reason) for c in status.conditions] == [
        ("FailureTarget", "DeadlineExceeded"),
        ("Failed", "DeadlineExceeded"),
    ]
    assert sorted(pod["metadata"]["name"] for pod in kube.terminating_pods(ns)) == names
    for name in names:
        kube.finish_termination(name, exit_code=143, namespace=ns)
    assert core.list_namespaced_pod(ns).items == []

    kube.finish_ttl(ns)
    assert batch.list_namespaced_job(ns).items == []


def test_kubeconfig_and_authentication(kube: KubeStandIn, tmp_path: Path):
    configuration = client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kube.write_kubeconfig(tmp_path / "kubeconfig")), client_configuration=configuration
    )
    with client.ApiClient(configuration) as api:
        assert client.VersionApi(api).get_code().git_version == "v1.33.0"
        assert client.CoreV1Api(api).list_namespaced_service("kubeconfig").items == []

    with client.ApiClient(client.Configuration(host=kube.url)) as anonymous:
        with pytest.raises(ApiException) as unauthorized:
            client.CoreV1Api(anonymous).list_namespaced_pod("default")
    assert unauthorized.value.status == 401


def test_stop_ends_open_streams():
    standin = KubeStandIn().start()
    with standin.api_client() as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job("default", job_manifest("forever", completions=1))
        [pod] = standin.wait_for_pods("forever", 1)
        standin.start_pod(pod["metadata"]["name"])
        standin.append_log(pod["metadata"]["name"], "step 1\n")
        log = core.read_namespaced_pod_log(pod["metadata"]["name"], "default", follow=True, _preload_content=False)
        received: list[str] = []
        watching = threading.Event()

        def watch_pods() -> None:
            for event in watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=30):
                received.append(event["type"])
                watching.set()

        def read_log() -> None:
            received.append(b"".join(log.stream(amt=None, decode_content=False)).decode())

        streams = [threading.Thread(target=watch_pods), threading.Thread(target=read_log)]
        for stream in streams:
            stream.start()
        assert watching.wait(5)
        standin.stop()
        for stream in streams:
            stream.join(5)
            assert not stream.is_alive()
    assert sorted(received) == ["ADDED", "step 1\n"]


def test_graceful_pod_deletion(kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str):
    manifest = job_manifest("graceful", completions=3, backoffLimit=5)
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    batch.create_namespaced_job(ns, manifest)
    clean, killed, pending = (pod["metadata"]["name"] for pod in kube.wait_for_pods("graceful", 3, ns))
    kube.start_pod(clean, ns)
    kube.start_pod(killed, ns)

    # DeleteOptions' grace period wins over the pod's; a later, shorter one shortens it; a longer one does not.
    answer = core.delete_namespaced_pod(clean, ns, grace_period_seconds=600)
    assert (answer.metadata.deletion_grace_period_seconds, answer.status.phase) == (600, "Running")
    assert core.delete_namespaced_pod(clean, ns, grace_period_seconds=300).metadata.deletion_grace_period_seconds == 300
    assert core.delete_namespaced_pod(clean, ns, grace_period_seconds=900).metadata.deletion_grace_period_seconds == 300
    kube.append_log(clean, "saved checkpoint\n", ns)
    kube.finish_termination(clean, namespace=ns)  # the worker exits 0 after SIGTERM: Succeeded, then removed
    assert kube.get("Pod", ns, clean) is None

    core.delete_namespaced_pod(killed, ns)  # the pod's own terminationGracePeriodSeconds: 1
    events = watch_until(
        core.list_namespaced_pod,
        ns,
        field_selector=f"metadata.name={killed}",
        until=lambda events: events[-1]["type"] == "DELETED",
    )
    last_state = events[-2]["object"]
    assert last_state.metadata.deletion_grace_period_seconds == 1
    terminated = last_state.status.container_statuses[0].state.terminated
    assert (last_state.status.phase, terminated.exit_code) == ("Failed", 137), "killed when its grace period ran out"

    core.delete_namespaced_pod(pending, ns)  # never scheduled: removed at once
    assert kube.get("Pod", ns, pending) is None
    with pytest.raises(ValueError, match="not terminating"):
        kube.finish_termination(kube.wait_for_pods("graceful", 1, ns)[0]["metadata"]["name"], namespace=ns)


def test_a_zero_grace_period_deletes_at_once(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("forced", completions=1))
    [pod] = kube.wait_for_pods("forced", 1, ns)
    kube.start_pod(pod["metadata"]["name"], ns)
    core.delete_namespaced_pod(pod["metadata"]["name"], ns, grace_period_seconds=0)
    assert kube.get("Pod", ns, pod["metadata"]["name"]) is None


def test_init_container_and_sidecar_statuses(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    manifest = job_manifest("sidecars", completions=2)
    inits = [
        {"name": "fetch", "image": "busybox", "command": ["true"]},
        {"name": "sync", "image": "busybox", "command": ["sleep", "inf"], "restartPolicy": "Always"},
    ]
    manifest["spec"]["template"]["spec"]["initContainers"] = inits
    batch.create_namespaced_job(ns, manifest)
    running, broken = (pod["metadata"]["name"] for pod in kube.wait_for_pods("sidecars", 2, ns))

    kube.start_pod(running, ns)
    states = {s.name: s.state for s in core.read_namespaced_pod(running, ns).status.init_container_statuses}
    assert states["fetch"].terminated.exit_code == 0 and states["sync"].running.started_at
    kube.fail_sidecar(running, "sync", exit_code=2, message="S3 unreachable", namespace=ns)
    pod = core.read_namespaced_pod(running, ns)
    sync = next(s for s in pod.status.init_container_statuses if s.name == "sync")
    assert (sync.state.waiting.reason, sync.restart_count) == ("CrashLoopBackOff", 1)
    assert (sync.last_state.terminated.exit_code, sync.last_state.terminated.message) == (2, "S3 unreachable")
    assert pod.status.phase == "Running", "a sidecar's exit does not fail its pod"

    kube.fail_init_container(broken, exit_code=3, message="no such bucket", namespace=ns)
    pod = core.read_namespaced_pod(broken, ns)
    fetch, sync = pod.status.init_container_statuses
    assert (fetch.state.terminated.exit_code, fetch.state.terminated.message) == (3, "no such bucket")
    assert sync.state.waiting.reason == "PodInitializing"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert (pod.status.phase, {c.type: c.reason for c in pod.status.conditions}["Initialized"]) == (
        "Failed",
        "ContainersNotInitialized",
    )
    kube.settle()
    assert [c.reason for c in batch.read_namespaced_job("sidecars", ns).status.conditions] == [
        "BackoffLimitExceeded",
        "BackoffLimitExceeded",
    ]


def test_resource_version_preconditions_and_strategic_merge(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "patched", "finalizers": ["example.com/a"]},
        "spec": {
            "containers": [
                {"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "helper", "image": "busybox"},
            ]
        },
    }
    created = core.create_namespaced_pod(ns, pod)
    stale = created.metadata.resource_version
    patch = {
        "spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}
    }
    patched = core.patch_namespaced_pod("patched", ns, {**patch, "metadata": {"resourceVersion": stale}})
    main, helper = patched.spec.containers
    assert [(e.name, e.value) for e in main.env] == [("A", "1"), ("B", "3"), ("C", "4")], "merged by name"
    assert (main.image, helper.name) == ("busybox", "helper"), "the other container kept"
    assert core.patch_namespaced_pod(
        "patched", ns, {"metadata": {"finalizers": ["example.com/b"]}}
    ).metadata.finalizers == [
        "example.com/a",
        "example.com/b",
    ]

    with pytest.raises(ApiException) as conflict:
        core.patch_namespaced_pod("patched", ns, {"metadata": {"resourceVersion": stale, "labels": {"x": "y"}}})
    assert conflict.value.status == 409
    assert status_of(conflict)["reason"] == "Conflict"
    assert status_of(conflict)["message"] == (
        'Operation cannot be fulfilled on pods "patched": the object has been modified; please apply your changes'
        " to the latest version and try again"
    )
    assert "x" not in (core.read_namespaced_pod("patched", ns).metadata.labels or {})

    with pytest.raises(ApiException) as directive:
        core.patch_namespaced_pod("patched", ns, {"spec": {"containers": [{"name": "helper", "$patch": "delete"}]}})
    assert directive.value.status == 400 and "$patch" in status_of(directive)["message"]


def test_field_selectors_are_limited_to_the_fields_of_each_kind(
    kube: KubeStandIn, batch: client.BatchV1Api, core: client.CoreV1Api, ns: str
):
    batch.create_namespaced_job(ns, job_manifest("selected", completions=2))
    first, second = (pod["metadata"]["name"] for pod in kube.wait_for_pods("selected", 2, ns))
    kube.start_pod(first, ns)

    def names(**selector: str) -> list[str]:
        return [pod.metadata.name for pod in core.list_namespaced_pod(ns, **selector).items]

    assert names(field_selector="status.phase=Running") == [first]
    assert names(field_selector="spec.nodeName!=,status.phase!=Succeeded") == [first]
    assert names(field_selector=f"metadata.name={second},metadata.namespace={ns}") == [second]
    assert names(field_selector="spec.restartPolicy=Never") == sorted([first, second])
    assert [j.metadata.name for j in batch.list_namespaced_job(ns, field_selector="status.successful=0").items] == [
        "selected"
    ]
    for unsupported, list_ in (
        ("spec.subdomain", core.list_namespaced_pod),
        ("metadata.labels", core.list_namespaced_pod),
        ("status.phase", batch.list_namespaced_job),
    ):
        with pytest.raises(ApiException) as refused:
            list_(ns, field_selector=f"{unsupported}=x")
        assert refused.value.status == 400
        assert status_of(refused)["message"] == f"field label not supported: {unsupported}"
    with pytest.raises(ApiException) as refused_watch:
        watch_until(core.list_namespaced_pod, ns, field_selector="spec.hostname=x", until=lambda events: True)
    assert refused_watch.value.status == 400


def test_the_job_controller_works_after_the_post_has_answered():
    with KubeStandIn(job_controller_delay=3600) as slow, slow.api_client() as api:
        client.BatchV1Api(api).create_namespaced_job("default", job_manifest("later", completions=1))
        assert client.CoreV1Api(api).list_namespaced_pod("default").items == []
        assert client.BatchV1Api(api).read_namespaced_job("later", "default").status.active is None
