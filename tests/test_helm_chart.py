"""The controller's Helm chart (``helm/mlrt``): rendered by Helm itself, every manifest valid, least privilege.

The chart is rendered by Helm's own template engine, never by a look-alike:
``helm-python-sdk`` (PyPI, import name ``helm_python``) binds Helm's Go SDK
through a bundled shared library, so the Go templates, Sprig functions,
``required``/``fail`` and values coalescing are exactly ``helm template``'s.
Where it is not installed, a ``helm`` binary on ``PATH`` renders instead
(``MLRT_HELM=/path/to/helm`` picks a binary over the SDK); with neither, the
rendering tests skip and say so. Every rendered document is checked against
the Kubernetes 1.33 schemas with ``kubernetes-validate``, and the Role is
compared with the API calls the kubernetes backend's source actually makes.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import import_or_missing, missing

kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mlrt"
CONTAINERFILE = ROOT / "containers" / "controller.Containerfile"
KUBERNETES_VERSION = "1.33.0"
RELEASE, NAMESPACE = "mlrt", "ml-platform"

# A platform team's install: every optional feature on, everything named.
FULL: dict[str, Any] = {
    "replicaCount": 3,
    "image": {"repository": "registry.acme.dev/mlrt-controller", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "database": {"existingSecret": "mlrt-postgres", "secretKey": "dsn"},
    "defaultOutput": "s3://acme-ml/mlrt",
    "trainingImage": "registry.acme.dev/mlrt-train:0.1.0",
    "s3": {"existingSecret": "mlrt-s3", "endpointUrl": "http://minio.storage.svc:9000", "region": "eu-west-1"},
    "managedNamespaces": ["research", "vision"],
    "allowedBackends": ["kubernetes", "container"],
    "extraConfig": {"TZ": "UTC"},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/mlrt"}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        "hosts": [{"host": "mlrt.acme.dev", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "mlrt-tls", "hosts": ["mlrt.acme.dev"]}],
    },
    "podAnnotations": {"team": "platform"},
    "podLabels": {"cost-center": "ml"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "mlrt"}},
                    },
                }
            ]
        }
    },
    "priorityClassName": "platform",
    "mlrtHome": {"sizeLimit": "10Gi"},
    "podDisruptionBudget": {"minAvailable": 2},
}

SECRET_VARIABLES = {"MLRT_DB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


class RenderError(Exception):
    """Helm refused to render the chart (a ``required`` or ``fail`` in a template)."""


class _SDK:
    """Helm's Go SDK through helm-python-sdk."""

    def __init__(self, module: Any):
        self.helm = module

    def render(self, values: dict[str, Any] | None) -> dict[str, str]:
        try:
            with self.helm.Chart.load(str(CHART)) as chart:
                return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except self.helm.HelmError as exc:
            raise RenderError(str(exc)) from None

    def lint(self, values: dict[str, Any] | None) -> list[str]:
        report = self.helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
        # Severity 1 is INFO ("icon is recommended"); warnings and errors fail ``helm lint --strict``.
        return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]


class _CLI:
    """A ``helm`` binary: ``helm template`` and ``helm lint --strict``."""

    def __init__(self, binary: str, home: Path):
        self.binary = binary
        self.env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
        self.home = home

    def _run(self, *args: str, values: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
        extra = []
        if values:
            path = self.home / "values.json"  # JSON is YAML
            path.write_text(json.dumps(values))
            extra = ["--values", str(path)]
        return subprocess.run([self.binary, *args, *extra], capture_output=True, text=True, env=self.env)

    def render(self, values: dict[str, Any] | None) -> dict[str, str]:
        done = self._run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
        if done.returncode:
            raise RenderError(done.stderr)
        return {"helm-template-output.yaml": done.stdout}

    def lint(self, values: dict[str, Any] | None) -> list[str]:
        done = self._run("lint", "--strict", str(CHART), "-n", NAMESPACE, "--kube-version", "1.33.0", values=values)
        return [] if done.returncode == 0 else [done.stdout + done.stderr]


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> _SDK | _CLI:
    binary = os.environ.get("MLRT_HELM")  # a helm binary to render with, even where the SDK is installed
    if not binary:
        try:
            import helm_python
        except ImportError:
            binary = shutil.which("helm")
            if not binary:
                missing("helm", "no Helm renderer: pip install helm-python-sdk (or put helm on PATH)")
        else:
            return _SDK(helm_python)
    return _CLI(binary, tmp_path_factory.mktemp("helm-home"))


def documents(renderer: _SDK | _CLI, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` over its defaults (NOTES.txt is not a manifest)."""
    rendered = renderer.render(values)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def controller(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["controller"]
    return containers[0]


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """A Role's permissions as (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def launcher_permissions() -> set[tuple[str, str, str]]:
    """The (apiGroup, resource, verb) of every API call the kubernetes backend makes, read from its source."""
    from mlrt_kubernetes import launcher

    resources = {
        "job": ("batch", "jobs"),
        "pod": ("", "pods"),
        "pod_log": ("", "pods/log"),
        "service": ("", "services"),
        "secret": ("", "secrets"),
    }
    verbs = {"read": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete"}
    pattern = r"\b(create|read|list|patch|replace|delete|deletecollection)_namespaced_([a-z_]+)\b"
    calls = set(re.findall(pattern, inspect.getsource(launcher)))
    # The watches stream the list functions that _Watch._list_function hands them.
    watched = set(re.findall(r"\blist_namespaced_([a-z_]+)\b", inspect.getsource(launcher._Watch._list_function)))
    assert "Watch().stream(" in inspect.getsource(launcher._Watch._run)
    unknown = {f"{verb}_namespaced_{kind}" for verb, kind in calls if kind not in resources or verb not in verbs}
    assert not unknown, f"the launcher makes calls this test cannot map to RBAC (extend it and the Role): {unknown}"
    permissions = {(*resources[kind], verbs[verb]) for verb, kind in calls}
    return permissions | {(*resources[kind], "watch") for kind in watched}


# -- rendering and validity ------------------------------------------------------


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_helm_lint_is_clean(renderer, values):
    assert renderer.lint(values) == []


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_every_manifest_passes_kubernetes_validate(renderer, values):
    docs = documents(renderer, values)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {error.message} at {list(error.path)}")


def test_default_objects(renderer):
    docs = documents(renderer)
    kinds = sorted((d["kind"], d["metadata"]["namespace"]) for d in docs)
    expected = "ServiceAccount ConfigMap Deployment Service PodDisruptionBudget Role RoleBinding".split()
    assert kinds == sorted((kind, NAMESPACE) for kind in expected)
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    # Not mlrt's own managed-by label: the launcher watches pods labelled managed-by=mlrt.
    assert pod_labels["app.kubernetes.io/managed-by"] != "mlrt"

    service = only(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == selector

    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector

    container = controller(docs)
    assert container["image"] == "localhost/mlrt-controller:0.1.0"  # the chart's appVersion
    assert container["args"] == ["controller", "--host", "0.0.0.0", "--port", "8080"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert "command" not in container  # the image's ENTRYPOINT is mlrt


def test_probes(renderer):
    container = controller(documents(renderer))
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert probes == {
        "startup": {"path": "/healthz", "port": "http"},
        "liveness": {"path": "/healthz", "port": "http"},
        "readiness": {"path": "/readyz", "port": "http"},
    }


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_pod_security(renderer, values):
    docs = documents(renderer, values)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    container = controller(docs)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in context and "add" not in context["capabilities"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    # The writable places on a read-only root: MLRT_HOME and /tmp, both emptyDirs.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/var/lib/mlrt", "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert only(docs, "ConfigMap")["data"]["MLRT_HOME"] == "/var/lib/mlrt"


# -- secrets only by reference -------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "secret", "key"),
    [(None, "mlrt-database", "url"), (FULL, "mlrt-postgres", "dsn")],
    ids=["defaults", "full"],
)
def test_database_url_only_from_a_secret(renderer, values, secret, key):
    docs = documents(renderer, values)
    container = controller(docs)
    database = [e for e in container["env"] if e["name"] == "MLRT_DB"]
    assert database == [{"name": "MLRT_DB", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]
    assert "MLRT_DB" not in only(docs, "ConfigMap")["data"]
    assert not [d for d in docs if d["kind"] == "Secret"]  # the chart never holds a secret's value


@pytest.mark.parametrize(
    ("values", "secret", "key"),
    [
        (None, "mlrt-encryption-key", "key"),
        ({"encryption": {"existingSecret": "ops-keys", "secretKey": "fernet"}}, "ops-keys", "fernet"),
    ],
    ids=["defaults", "named"],
)
def test_the_operator_key_for_spec_env_values_only_from_a_secret(renderer, values, secret, key):
    docs = documents(renderer, values)
    key_env = [e for e in controller(docs)["env"] if e["name"] == "MLRT_SECRET_KEY"]
    assert key_env == [{"name": "MLRT_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]
    assert "MLRT_SECRET_KEY" not in only(docs, "ConfigMap")["data"]
    with pytest.raises(RenderError, match="encryption.existingSecret is required"):
        renderer.render({"encryption": {"existingSecret": ""}})


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full"])
def test_configmap_holds_no_secrets(renderer, values):
    docs = documents(renderer, values)
    data = only(docs, "ConfigMap")["data"]
    assert not SECRET_VARIABLES & set(data)
    assert not [value for value in data.values() if re.search(r"://[^/\s]*@", value)], "credentials in a URL"
    container = controller(docs)
    literal = {e["name"] for e in container["env"] if "value" in e}
    assert not SECRET_VARIABLES & literal
    config_map = only(docs, "ConfigMap")["metadata"]["name"]
    assert {"configMapRef": {"name": config_map}} in container["envFrom"]


def test_default_settings(renderer):
    data = only(documents(renderer), "ConfigMap")["data"]
    assert data == {
        "MLRT_HOME": "/var/lib/mlrt",
        "MLRT_ADVERTISE_URL": f"http://{RELEASE}.{NAMESPACE}.svc:8080",
        "MLRT_KUBE_NAMESPACES": NAMESPACE,
        "MLRT_ALLOWED_BACKENDS": "kubernetes",
    }


def test_full_settings_and_s3_credentials_by_reference(renderer):
    docs = documents(renderer, FULL)
    assert only(docs, "ConfigMap")["data"] == {
        "MLRT_HOME": "/var/lib/mlrt",
        "MLRT_ADVERTISE_URL": f"http://{RELEASE}.{NAMESPACE}.svc:8080",
        "MLRT_KUBE_NAMESPACES": "research,vision",
        "MLRT_ALLOWED_BACKENDS": "kubernetes,container",
        "MLRT_DEFAULT_OUTPUT": "s3://acme-ml/mlrt",
        "MLRT_TRAINING_IMAGE": "registry.acme.dev/mlrt-train:0.1.0",
        "MLRT_S3_ENDPOINT_URL": "http://minio.storage.svc:9000",
        "AWS_REGION": "eu-west-1",
        "TZ": "UTC",
    }
    container = controller(docs)
    assert {"secretRef": {"name": "mlrt-s3"}} in container["envFrom"]
    assert container["image"] == "registry.acme.dev/mlrt-controller:0.1.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    assert only(docs, "ServiceAccount")["metadata"]["annotations"] == FULL["serviceAccount"]["annotations"]
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == FULL["nodeSelector"]
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["affinity"] == FULL["affinity"]
    assert pod["priorityClassName"] == "platform"
    assert {v["name"]: v for v in pod["volumes"]}["mlrt-home"]["emptyDir"] == {"sizeLimit": "10Gi"}
    metadata = deployment["spec"]["template"]["metadata"]
    assert metadata["annotations"]["team"] == "platform"
    assert metadata["labels"]["cost-center"] == "ml"
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_default_pods_have_no_s3_secret(renderer):
    container = controller(documents(renderer))
    assert [ref for ref in container["envFrom"] if "secretRef" in ref] == []


def test_advertise_url_override(renderer):
    docs = documents(renderer, {"advertiseUrl": "https://mlrt.acme.dev"})
    assert only(docs, "ConfigMap")["data"]["MLRT_ADVERTISE_URL"] == "https://mlrt.acme.dev"


def test_every_backend_can_be_allowed(renderer):
    assert "MLRT_ALLOWED_BACKENDS" not in only(documents(renderer, {"allowedBackends": []}), "ConfigMap")["data"]


def test_a_settings_change_rolls_the_pods(renderer):
    def checksum(values):
        return only(documents(renderer, values), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(None) != checksum({"defaultOutput": "s3://acme-ml/mlrt"})


def test_the_database_secret_is_required(renderer):
    with pytest.raises(RenderError, match="database.existingSecret is required"):
        renderer.render({"database": {"existingSecret": ""}})


@pytest.mark.parametrize("variable", sorted(SECRET_VARIABLES))
def test_extra_config_refuses_secrets(renderer, variable):
    with pytest.raises(RenderError, match="secrets do not belong in the ConfigMap"):
        renderer.render({"extraConfig": {variable: "hunter2"}})


# -- RBAC ---------------------------------------------------------------------------------


def test_the_launcher_permissions_are_what_this_test_expects():
    # If this fails, the launcher's API calls changed: update the Role in templates/rbac.yaml too.
    assert launcher_permissions() == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("", "services", "create"),
        ("", "services", "patch"),
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
    }


@pytest.mark.parametrize(
    ("values", "namespaces"), [(None, [NAMESPACE]), (FULL, ["research", "vision"])], ids=["defaults", "full"]
)
def test_rbac_is_exactly_what_the_launcher_uses(renderer, values, namespaces):
    docs = documents(renderer, values)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == sorted(namespaces)
    account = only(docs, "ServiceAccount")["metadata"]
    needed = launcher_permissions()
    for namespace, role in roles.items():
        granted = rules(role)
        assert granted == needed, f"{namespace}: extra {granted - needed}, missing {needed - granted}"
        assert not {r for _, r, _ in granted} & {"leases", "configmaps"}
        assert {v for _, r, v in granted if r == "secrets"} == {"create", "patch"}, "Secrets are never read"
        assert not any("*" in triple for triple in granted)
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


def test_owner_references_permission_enforcement_adds_only_its_two_permissions(renderer):
    docs = documents(renderer, {"rbac": {"ownerReferencesPermissionEnforcement": True}})
    granted = rules(only(docs, "Role"))
    assert granted - launcher_permissions() == {("", "services", "delete"), ("batch", "jobs/finalizers", "update")}
    assert launcher_permissions() <= granted


def test_rbac_and_service_account_can_be_left_to_the_platform(renderer):
    docs = documents(renderer, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mlrt-ops"}})
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ServiceAccount")]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mlrt-ops"


# -- ingress, metrics, disruption budget ----------------------------------------------------------


def test_ingress(renderer):
    assert not [d for d in documents(renderer) if d["kind"] == "Ingress"]
    ingress = only(documents(renderer, FULL), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "mlrt-tls", "hosts": ["mlrt.acme.dev"]}]
    assert ingress["metadata"]["annotations"] == FULL["ingress"]["annotations"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "mlrt.acme.dev"
    assert rule["http"]["paths"] == [
        {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": RELEASE, "port": {"name": "http"}}},
        }
    ]


def test_prometheus_annotations(renderer):
    def annotations(values):
        return only(documents(renderer, values), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    assert {k: v for k, v in annotations(None).items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert not [k for k in annotations({"prometheus": {"scrape": False}}) if k.startswith("prometheus.io/")]


def test_a_single_replica_has_no_disruption_budget(renderer):
    assert not [d for d in documents(renderer, {"replicaCount": 1}) if d["kind"] == "PodDisruptionBudget"]


def test_names_follow_the_release(renderer):
    docs = documents(renderer, {"fullnameOverride": "ml-controller"})
    assert {d["metadata"]["name"] for d in docs} == {"ml-controller", "ml-controller-launcher"}
    assert only(docs, "ConfigMap")["data"]["MLRT_ADVERTISE_URL"] == f"http://ml-controller.{NAMESPACE}.svc:8080"


# -- the controller image -------------------------------------------------------------------------


def test_controller_containerfile_matches_the_chart():
    text = CONTAINERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0].startswith("FROM python:3.12-slim")
    assert 'pip install -c constraints.txt ".[postgres]"' in text
    assert 'ENTRYPOINT ["mlrt"]' in lines
    assert 'CMD ["controller", "--host", "0.0.0.0", "--port", "8080"]' in lines
    assert "EXPOSE 8080" in lines
    # A numeric, non-root user, so that the kubelet can check runAsNonRoot; the chart's runAsUser matches it.
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert "MLRT_HOME=/var/lib/mlrt" in text
