"""The cluster the kubernetes backend's end-to-end tests run mlrt against: the API stand-in, or a real one.

By default it is the in-process API stand-in (:mod:`kube_standin`) with the Helm chart's own Roles and RoleBindings
applied (:func:`chart_rbac`), and mlrt (the code under test, through ``KUBECONFIG``) authenticates as the chart's
ServiceAccount: every call the backend makes is authorized by the chart's RBAC as on a real cluster, and
:func:`controller_standin` ends by checking that RBAC refused nothing. The test itself plays scheduler and kubelet
through the stand-in's methods, as the cluster admin.

``MLRT_TEST_KUBECONFIG=PATH`` points the end-to-end tests that do not need to play kubelet (those that take the
``cluster`` fixture (:func:`cluster_fixture`)) at the real cluster of that kubeconfig, whose identity should be the chart's ServiceAccount
(see ``docs/kubernetes.md``), with pods of ``MLRT_TEST_IMAGE`` (default ``python:3.12-slim``) in
``MLRT_TEST_NAMESPACE`` (default ``default``). Tests that play kubelet are marked ``standin_only`` and skip, saying
why, when the variable is set; without it nothing is skipped and the stand-in serves every test.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart_render import chart_renderer, documents
from kube_rbac import RBAC_KINDS, service_account_user
from kube_standin import INDEX_KEY, KubeStandIn

JSON = dict[str, Any]

CONTROLLER_NAMESPACE = "mlrt-system"
"""The namespace the chart is installed in (the controller's ServiceAccount lives there)."""

REAL_CLUSTER_ENV = "MLRT_TEST_KUBECONFIG"
IMAGE_ENV = "MLRT_TEST_IMAGE"
NAMESPACE_ENV = "MLRT_TEST_NAMESPACE"
DEFAULT_IMAGE = "python:3.12-slim"

STANDIN_ONLY = (
    "plays the kubelet on the API stand-in; MLRT_TEST_KUBECONFIG runs only the tests that do not (docs/kubernetes.md)"
)


@functools.cache
def chart_rbac(namespaces: tuple[str, ...]) -> tuple[list[JSON], str]:
    """The chart's RBAC objects when it manages ``namespaces`` (installed in :data:`CONTROLLER_NAMESPACE`), and the
    name of its ServiceAccount; rendered once per set of namespaces by Helm itself (:mod:`chart_render`)."""
    docs = documents(
        chart_renderer(Path(tempfile.mkdtemp(prefix="mlrt-helm-"))),
        {"managedNamespaces": list(namespaces)},
        CONTROLLER_NAMESPACE,
    )
    (account,) = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount"]
    return [doc for doc in docs if doc["kind"] in RBAC_KINDS], account


def the_role(namespace: str) -> JSON:
    """The chart's Role for ``namespace`` (as :func:`chart_rbac` renders it for that namespace alone)."""
    objects, _ = chart_rbac((namespace,))
    (role,) = [obj for obj in objects if obj["kind"] == "Role"]
    return role


@contextmanager
def controller_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespaces: tuple[str, ...] = ("ml",)
) -> Iterator[KubeStandIn]:
    """A started stand-in with the chart's RBAC for ``namespaces``, and ``KUBECONFIG`` (what mlrt uses) set to a
    kubeconfig of the chart's ServiceAccount. On a clean exit, fails if RBAC refused that account anything (the
    chart's Role is not enough). Skips when :data:`REAL_CLUSTER_ENV` is set: its tests play kubelet."""
    if os.environ.get(REAL_CLUSTER_ENV):
        pytest.skip(STANDIN_ONLY)
    objects, account = chart_rbac(tuple(namespaces))
    with KubeStandIn() as standin:
        standin.apply_rbac(objects)
        kubeconfig = standin.serviceaccount_kubeconfig(tmp_path / "kubeconfig", CONTROLLER_NAMESPACE, account)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield standin
        user = service_account_user(CONTROLLER_NAMESPACE, account).name  # a test may refuse another on purpose
        refused = [denial.message for denial in standin.denials if denial.user == user]
        assert not refused, f"the chart's Role does not grant what mlrt asked for: {refused}"


# --- the cluster fixture: tests that run unchanged on the stand-in and on a real cluster -----------------------


@dataclass
class Cluster:
    """Where a test's training pods run: ``namespace``, ``image``, and the stand-in (None on a real cluster)."""

    namespace: str
    image: str
    standin: KubeStandIn | None


@pytest.fixture(name="cluster")
def cluster_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The cluster for tests that do not play kubelet: with :data:`REAL_CLUSTER_ENV` the real one (``KUBECONFIG``
    set to it), else the stand-in with the chart's RBAC and a :class:`LocalKubelet` that runs each pod's worker
    command on this machine."""
    real = os.environ.get(REAL_CLUSTER_ENV)
    if real:
        monkeypatch.setenv("KUBECONFIG", real)
        yield Cluster(os.environ.get(NAMESPACE_ENV) or "default", os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE, None)
        return
    with controller_standin(tmp_path, monkeypatch, ("ml",)) as standin, LocalKubelet(standin, "ml", tmp_path):
        yield Cluster("ml", DEFAULT_IMAGE, standin)


class LocalKubelet:
    """Plays kubelet for the stand-in by running each new pod's containers on this machine.

    A pod that appears runs its init containers that are not sidecars, one after the other, each to completion
    before the next starts, the pod failing at the first that fails (docs: "Init containers > Understanding init
    containers"); then it is started and its ``worker`` (or a finalizing pod's ``finalize``) container's command
    runs (``python`` is this interpreter; the environment is the container's literal ``env`` values, plus its
    completion index, and ``HOME`` is the pod's folder), every line it prints goes to the pod's log as it comes,
    and its exit code ends the pod (Succeeded on 0, else Failed). Volumes are folders on this machine, seen by a
    container at their ``mountPath`` (``subPath`` below it): an ``emptyDir`` is the pod's own and shared by its
    containers (docs: "Volumes > emptyDir"), a ``persistentVolumeClaim`` is one folder per claim, shared by every
    pod that mounts it (docs: "Persistent Volumes > Claims As Volumes"); a command's arguments and the env values
    that name a path under a mount are rewritten to that folder. The image is not pulled and there is no
    isolation: it runs commands of the tests' own specs and mlrt's own (``python -m mlrt...``) only.
    """

    CONTAINERS = ("worker", "finalize")

    def __init__(self, standin: KubeStandIn, namespace: str, workdir: Path) -> None:
        self._standin, self._namespace, self._workdir = standin, namespace, workdir
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watcher = threading.Thread(target=self._watch, name="local-kubelet", daemon=True)

    def __enter__(self) -> LocalKubelet:
        self._watcher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._watcher.join()
        for thread in self._threads:
            thread.join()

    def _watch(self) -> None:
        seen: set[str] = set()
        while not self._stopped.wait(0.05):
            for pod in self._standin.pods(self._namespace):
                uid = pod["metadata"]["uid"]
                if uid not in seen and pod["status"].get("phase") == "Pending":
                    seen.add(uid)
                    thread = threading.Thread(target=self._run, args=(pod,), name=f"local-kubelet-{uid}", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _run(self, pod: JSON) -> None:
        name = pod["metadata"]["name"]
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] in self.CONTAINERS]
        folder = self._workdir / "pods" / name
        folder.mkdir(parents=True)
        volumes = self._volumes(pod, folder)
        for init in pod["spec"].get("initContainers", []):
            if init.get("restartPolicy") == "Always":
                continue  # a sidecar: not played (test_kubernetes_outputs runs the upload sidecar itself)
            ended = subprocess.run(
                self._argv(init, volumes),
                cwd=folder,
                env=self._env(pod, init, volumes, folder),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if ended.returncode:
                message = ended.stdout[-2048:]  # FallbackToLogsOnError: the end of its log
                self._standin.fail_init_container(name, init["name"], ended.returncode, message, self._namespace)
                return
        self._standin.start_pod(name, self._namespace)
        with subprocess.Popen(
            self._argv(container, volumes),
            cwd=folder,
            env=self._env(pod, container, volumes, folder),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                self._standin.append_log(name, line, self._namespace)
            code = process.wait()
        if code == 0:
            self._standin.succeed_pod(name, self._namespace)
        else:
            self._standin.fail_pod(name, exit_code=code, namespace=self._namespace)

    def _volumes(self, pod: JSON, folder: Path) -> dict[str, Path]:
        """Each of the pod's volumes, by name, as a folder of this machine (see the class docstring)."""
        found = {}
        for volume in pod["spec"].get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            path = self._workdir / "claims" / claim if claim else folder / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            found[volume["name"]] = path
        return found

    @staticmethod
    def _local(value: str, container: JSON, volumes: dict[str, Path]) -> str:
        """``value`` with a path under one of the container's mounts rewritten to the volume's folder."""
        for mount in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            root = mount["mountPath"].rstrip("/")
            if value == root or value.startswith(root + "/"):
                local = volumes[mount["name"]] / mount.get("subPath", "")
                local.mkdir(parents=True, exist_ok=True)
                return str(local) + value[len(root) :]
        return value

    def _argv(self, container: JSON, volumes: dict[str, Path]) -> list[str]:
        argv = [self._local(a, container, volumes) for a in [*container.get("command", []), *container.get("args", [])]]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        return argv

    def _env(self, pod: JSON, container: JSON, volumes: dict[str, Path], folder: Path) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder)}
        index = pod["metadata"].get("labels", {}).get(INDEX_KEY)
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = index
        for variable in container.get("env", []):
            value = variable.get("value", _field_value(pod, variable.get("valueFrom", {}).get("fieldRef")))
            if value is not None:
                env[variable["name"]] = self._local(value, container, volumes)
        return env


def _field_value(pod: JSON, reference: JSON | None) -> str | None:
    """The downward API value of a ``fieldRef`` to one of the pod's labels or annotations (``RANK`` is one), else
    None (Secret references and other fields are left out)."""
    path = (reference or {}).get("fieldPath", "")
    for field in ("labels", "annotations"):
        prefix = f"metadata.{field}['"
        if path.startswith(prefix) and path.endswith("']"):
            return pod["metadata"].get(field, {}).get(path[len(prefix) : -2])
    return None
