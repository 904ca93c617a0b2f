"""RBAC: the stand-in's authorizer is Kubernetes', and the Helm chart's Role is exactly what the backend needs.

The kubernetes backend runs, in process, as the chart's ServiceAccount against the API stand-in, which authorizes
every request by the Role and RoleBinding the chart renders (:mod:`kube_rbac`, following Kubernetes' rbac.go).
One short scenario (launch an attempt whose spec has ``env`` values, copy a line of its pod's log, cancel it, clean
up, look for it again as a restarted controller) must ask for every permission of the Role and be refused none;
then, for each verb of the Role in turn, the same scenario with that verb removed must be refused exactly that,
in the operation :data:`NEEDED_BY` names. The end-to-end tests (``test_kubernetes_backend.py``,
``test_kubernetes_outputs.py``) run the whole controller under the same Role and fail on any refusal.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
from pathlib import Path

import pytest

from conftest import import_or_missing, wait_for

client = import_or_missing("kubernetes.client", "kubernetes", "the kubernetes backend needs the kubernetes client")
from chart_render import permissions  # noqa: E402
from kube_cluster import CONTROLLER_NAMESPACE, chart_rbac, the_role  # noqa: E402
from kube_rbac import service_account_user  # noqa: E402
from kube_standin import KubeStandIn  # noqa: E402

NAMESPACE = "ml"
SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: rbac-check}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  env: {GREETING: hello}
  compute: {backend: kubernetes, workers: 2, kubernetes: {namespace: ml}}
  stopping: {grace_period: 1s}
"""

# Which step of the scenario fails, refused, when the Role lacks the permission; None where only a background
# thread of the backend asks for it (the watches, which then fall back to reading the API directly).
NEEDED_BY: dict[tuple[str, str, str], str | None] = {
    ("", "secrets", "create"): "launch",  # the attempt's Secret of spec.env values
    ("", "secrets", "patch"): "launch",  # the Job made the Secret's owner
    ("", "services", "create"): "launch",  # the headless rendezvous Service (of several workers)
    ("", "services", "patch"): "launch",  # the Job made the Service's owner
    ("batch", "jobs", "create"): "launch",
    ("batch", "jobs", "watch"): None,
    ("", "pods", "watch"): None,
    ("", "pods", "list"): "poll",  # without the pods' watch cache, poll lists them
    ("", "pods", "get"): None,  # a log copy whose stream ended asks whether the worker still runs
    ("", "pods/log", "get"): "copy the log",
    ("batch", "jobs", "delete"): "cancel",
    ("batch", "jobs", "get"): "cancel",  # the Job's state, read fresh before it is deleted
    ("batch", "jobs", "list"): "adopt",  # a restarted controller finds the attempt's Job by its labels
}


def role_without(role: dict, removed: tuple[str, str, str]) -> dict:
    """A copy of ``role`` that grants everything it did except ``removed`` (apiGroup, resource, verb)."""
    rules = [
        {
            **rule,
            "apiGroups": [group],
            "resources": [resource],
            "verbs": [v for v in rule["verbs"] if (group, resource, v) != removed],
        }
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    ]
    return {**copy.deepcopy(role), "rules": [rule for rule in rules if rule["verbs"]]}


def account() -> str:
    """The user name of the chart's ServiceAccount."""
    _, name = chart_rbac((NAMESPACE,))
    return service_account_user(CONTROLLER_NAMESPACE, name).name


def run_scenario(kube: KubeStandIn, tmp_path: Path, write_spec) -> str | None:
    """One attempt through the real backend, as the chart's ServiceAccount; the first step refused (403), if any."""
    from mlrt.spec import load_spec
    from mlrt.submission import launch_context
    from mlrt_kubernetes.launcher import KubernetesLauncher

    resolved = load_spec(write_spec(SPEC, name="rbac-check.yaml")).resolved()
    resolved["spec"]["seed"] = 7
    ctx = launch_context(resolved, "rbac-check-x1", 1, f"sqlite:///{tmp_path}/db", {}, {})
    launcher = KubernetesLauncher()
    request = launcher.plan(ctx)
    log = Path(request.workers[0].log_path)

    def refused(step, *args):
        try:
            return step(*args), None
        except Exception as error:
            forbidden = getattr(error, "status", None) == 403 or "is forbidden" in str(error)
            if not forbidden:
                raise
            return None, error

    handle, error = refused(launcher.launch, request)
    if error:
        return "launch"
    pods = wait_for(lambda: len(found := kube.pods(NAMESPACE)) == 2 and found, timeout=30)
    for pod in pods:
        kube.start_pod(pod["metadata"]["name"], namespace=NAMESPACE)
        kube.append_log(pod["metadata"]["name"], "hello from the pod\n", namespace=NAMESPACE)

    def copied_or_refused():
        _, error = refused(launcher.poll, handle)
        if error:
            return "poll"
        if log.exists() and "hello from the pod" in log.read_text():
            return "copied"
        return "copy the log" if any(d.resource == "pods/log" for d in kube.denials) else None

    outcome = wait_for(copied_or_refused, timeout=30)
    if outcome != "copied":
        return outcome

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # cancel: delete the Job, wait for its pods to go
        stopping = pool.submit(refused, launcher.stop, handle, 1.0)

        def stopped():
            for terminating in kube.terminating_pods(NAMESPACE):  # as the kubelet: the worker exits on SIGTERM
                with contextlib.suppress(KeyError, ValueError):  # gone or ended meanwhile
                    kube.finish_termination(terminating["metadata"]["name"], namespace=NAMESPACE)
            return stopping.done()

        wait_for(stopped, timeout=60)
    if stopping.result()[1]:
        return "cancel"
    if refused(launcher.cleanup, handle)[1]:
        return "clean up"
    if refused(KubernetesLauncher().adopt, request, None)[1]:
        return "adopt"
    return None


@pytest.fixture
def standin():
    with KubeStandIn() as kube:
        yield kube


def serve_chart_role(kube: KubeStandIn, tmp_path: Path, monkeypatch, role: dict) -> None:
    """The chart's RBAC for :data:`NAMESPACE` with ``role`` in place of its Role; KUBECONFIG as its ServiceAccount."""
    objects, name = chart_rbac((NAMESPACE,))
    kube.apply_rbac([role if obj["kind"] == "Role" else obj for obj in objects])
    kubeconfig = kube.serviceaccount_kubeconfig(tmp_path / "kubeconfig", CONTROLLER_NAMESPACE, name)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def test_the_backend_asks_for_every_permission_of_the_chart_role_and_is_refused_none(
    standin, tmp_path, monkeypatch, write_spec
):
    role = the_role(NAMESPACE)
    serve_chart_role(standin, tmp_path, monkeypatch, role)
    assert run_scenario(standin, tmp_path, write_spec) is None
    assert [d.message for d in standin.denials] == []
    granted = permissions(role)
    assert standin.asked(account()) == granted, "the Role grants what the backend never asks for, or the reverse"
    assert set(NEEDED_BY) == granted, "say in NEEDED_BY which step needs each permission of the Role"


@pytest.mark.parametrize("removed", sorted(NEEDED_BY), ids=lambda p: f"{p[0] or 'core'}-{p[1]}-{p[2]}")
def test_without_any_one_verb_of_the_chart_role_the_backend_is_refused_it(
    standin, tmp_path, monkeypatch, write_spec, removed
):
    serve_chart_role(standin, tmp_path, monkeypatch, role_without(the_role(NAMESPACE), removed))
    failed = run_scenario(standin, tmp_path, write_spec)
    if NEEDED_BY[removed] is None:  # a background watch: it is refused, and the scenario still completes
        wait_for(lambda: standin.denials, timeout=30)
    denied = {(d.api_group, d.resource, d.verb) for d in standin.denials}
    assert denied == {removed}
    assert failed == NEEDED_BY[removed]
    group, resource, verb = removed
    message = standin.denials[0].message
    assert f'User "{account()}" cannot {verb} resource "{resource}" in API group "{group}"' in message
    assert message.endswith(f'in the namespace "{NAMESPACE}"')


# -- the authorizer itself, through the official client ------------------------------------------------------------


def test_requests_are_authorized_as_kubernetes_rbac_does_it(standin, tmp_path):
    binding = {"apiGroup": "rbac.authorization.k8s.io"}
    subject = {"kind": "ServiceAccount", "name": "trainer", "namespace": "ops"}
    standin.apply_rbac(
        [
            {
                "kind": "Role",
                "metadata": {"name": "reader", "namespace": "a"},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"], "resourceNames": ["mine"]},
                    {"apiGroups": ["batch"], "resources": ["*"], "verbs": ["list"]},
                    {"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]},
                ],
            },
            {
                "kind": "RoleBinding",
                "metadata": {"name": "reader", "namespace": "a"},
                "subjects": [subject],
                "roleRef": {**binding, "kind": "Role", "name": "reader"},
            },
            {
                "kind": "ClusterRole",
                "metadata": {"name": "service-watcher"},
                "rules": [{"apiGroups": ["*"], "resources": ["services"], "verbs": ["watch"]}],
            },
            # A ClusterRole bound by a RoleBinding grants its rules in that namespace only.
            {
                "kind": "RoleBinding",
                "metadata": {"name": "watcher", "namespace": "b"},
                "subjects": [subject],
                "roleRef": {**binding, "kind": "ClusterRole", "name": "service-watcher"},
            },
            {
                "kind": "RoleBinding",
                "metadata": {"name": "dangling", "namespace": "c"},
                "subjects": [subject],
                "roleRef": {**binding, "kind": "Role", "name": "ghost"},
            },
        ]
    )
    from kubernetes import config

    api = config.new_client_from_config(str(standin.serviceaccount_kubeconfig(tmp_path / "sa", "ops", "trainer")))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    user = "system:serviceaccount:ops:trainer"

    def status(call, *args, **kwargs):
        try:
            call(*args, **kwargs)
        except client.exceptions.ApiException as error:
            return error.status, json.loads(error.body)
        return 200, None

    code, body = status(core.read_namespaced_pod, "theirs", "a")
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        f'pods "theirs" is forbidden: User "{user}" cannot get resource "pods" in API group "" in the namespace "a"'
    )
    assert body["details"] == {"name": "theirs", "group": "", "kind": "pods"}
    assert status(core.read_namespaced_pod, "mine", "a")[0] == 404, "authorized first, then not found"
    code, body = status(core.list_namespaced_pod, "a")
    assert code == 403 and body["message"].startswith(f'pods is forbidden: User "{user}" cannot list resource')
    assert status(core.list_namespaced_pod, "a", field_selector="metadata.name=mine")[0] == 200, "a named list"
    assert status(core.read_namespaced_pod_log, "theirs", "a")[0] == 404, "*/log matches pods/log"
    assert status(batch.list_namespaced_job, "a")[0] == 200
    code, body = status(batch.list_namespaced_job, "b")
    assert body["message"] == (
        f'jobs.batch is forbidden: User "{user}" cannot list resource "jobs" in API group "batch" in the namespace "b"'
    )
    assert status(core.list_namespaced_service, "b")[0] == 403, "watch does not grant list"
    watch = core.list_namespaced_service("b", watch=True, timeout_seconds=1, _preload_content=False)
    assert watch.status == 200
    watch.release_conn()
    code, body = status(core.delete_collection_namespaced_pod, "a")
    assert code == 403 and f'User "{user}" cannot deletecollection resource "pods"' in body["message"]
    code, body = status(batch.list_namespaced_job, "c")
    assert body["message"].endswith(': RBAC: role.rbac.authorization.k8s.io "ghost" not found')
    assert client.VersionApi(api).get_code().git_version, "every authenticated user may read discovery"
    assert {(d.verb, d.resource, d.namespace) for d in standin.denials} == {
        ("get", "pods", "a"),
        ("list", "pods", "a"),
        ("list", "jobs", "b"),
        ("list", "services", "b"),
        ("deletecollection", "pods", "a"),
        ("list", "jobs", "c"),
    }

    admin = client.CoreV1Api(standin.api_client())
    assert admin.list_namespaced_pod("a").items == [], "the admin (system:masters) may do anything"
    unknown = client.CoreV1Api(config.new_client_from_config_dict(standin.kubeconfig("no-such-token")))
    assert status(unknown.list_namespaced_pod, "a")[0] == 401
