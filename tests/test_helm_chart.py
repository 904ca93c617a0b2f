"""The controller's Helm chart (``helm/mlrt``): rendered by Helm itself, every manifest valid, least privilege.

The chart is rendered by Helm's own template engine (:mod:`chart_render`), never by a look-alike, and every
rendered document is checked against the Kubernetes 1.33 schemas with ``kubernetes-validate``. The Role's shape
is checked here; that it is exactly what the kubernetes backend needs is proven against the API stand-in's RBAC
in ``test_kubernetes_rbac.py`` (every permission used, nothing refused).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from chart_render import (
    CHART,
    NAMESPACE,
    RELEASE,
    HelmCLI,
    HelmSDK,
    RenderError,
    chart_renderer,
    documents,
    permissions,
)
from conftest import import_or_missing

kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")

CONTAINERFILE = CHART.parent.parent / "containers" / "controller.Containerfile"
KUBERNETES_VERSION = "1.33.0"

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


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> HelmSDK | HelmCLI:
    return chart_renderer(tmp_path_factory.mktemp("helm-home"))


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def controller(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["controller"]
    return containers[0]


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


def test_service_processes_per_pod(renderer):
    assert only(documents(renderer, {"processes": 3}), "ConfigMap")["data"]["MLRT_CONTROLLER_PROCESSES"] == "3"


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


@pytest.mark.parametrize(
    ("values", "namespaces"), [(None, [NAMESPACE]), (FULL, ["research", "vision"])], ids=["defaults", "full"]
)
def test_rbac_is_one_role_per_managed_namespace_bound_to_the_controller_account(renderer, values, namespaces):
    docs = documents(renderer, values)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == sorted(namespaces)
    account = only(docs, "ServiceAccount")["metadata"]
    first = permissions(roles[namespaces[0]])
    for namespace, role in roles.items():
        granted = permissions(role)
        assert granted == first, "every managed namespace gets the same Role"
        assert not {r for _, r, _ in granted} & {"leases", "configmaps"}
        assert {v for _, r, v in granted if r == "secrets"} == {"create", "patch"}, "Secrets are never read"
        assert not any("*" in triple for triple in granted)
        assert not [rule for rule in role["rules"] if rule.get("resourceNames") or rule.get("nonResourceURLs")]
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


def test_owner_references_permission_enforcement_adds_only_what_that_admission_plugin_checks(renderer):
    # plugin/pkg/admission/gc/gc_admission.go: changing an object's ownerReferences needs delete on that object
    # (the launcher sets them on its Service and its Secrets), and blockOwnerDeletion needs update on the owner's
    # finalizers subresource (the Job's).
    plain = permissions(only(documents(renderer), "Role"))
    enforced = permissions(only(documents(renderer, {"rbac": {"ownerReferencesPermissionEnforcement": True}}), "Role"))
    assert enforced - plain == {
        ("", "services", "delete"),
        ("", "secrets", "delete"),
        ("batch", "jobs/finalizers", "update"),
    }
    assert plain <= enforced


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
