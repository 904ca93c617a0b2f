"""The kubernetes backend's plan: golden manifests, schema validity and the details users rely on.

``mlrt validate --manifests`` prints the objects an attempt creates; each is
compared with a reviewed file under ``tests/golden/kubernetes`` (rewrite them
with ``MLRT_UPDATE_GOLDEN=1`` after an intended change, and review the diff)
and checked against the Kubernetes schemas with ``kubernetes-validate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import import_or_missing

kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")

GOLDEN = Path(__file__).parent / "golden" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"

BASE = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  working_dir: /work
  {what}
  data:
    train: builtin://sklearn/digits?split=train
    validation: builtin://sklearn/digits?split=validation
  seed: 7
  compute:
    backend: kubernetes
{compute}
"""

CASES = {
    "single-worker": ("algorithm: sklearn.logistic_regression", "    cpu: 1\n    memory: 2Gi\n"),
    "multi-worker": (
        "algorithm: torch.mlp",
        "    workers: 4\n    cpu: 2\n    kubernetes: {namespace: research, labels: {team: vision}}\n",
    ),
    "gpu": (
        "image: registry.example.com/acme/train:1.2\n  command: [python, train.py, --amp]",
        "    workers: 2\n    gpus: 1\n    memory: 16Gi\n    kubernetes:\n"
        "      node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}\n"
        "      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n"
        "      priority_class: training-high\n      queue: team-a\n",
    ),
    "secrets": (
        "image: registry.example.com/acme/train:1.2\n  command: [python, train.py]",
        "    kubernetes:\n      service_account: trainer\n      image_pull_secrets: [regcred]\n"
        "      env_from_secrets: [wandb-credentials]\n"
        "      secret_env: {HF_TOKEN: {secret: huggingface, key: token}}\n",
    ),
    "volumes": (
        "algorithm: torch.mlp",
        "    kubernetes:\n      volumes:\n"
        "        - {name: datasets, mount_path: /datasets, claim: shared-datasets, read_only: true}\n"
        "        - {name: run, mount_path: /mlrt/run, claim: mlrt-runs, sub_path: volumes-job}\n"
        "        - {name: settings, mount_path: /etc/train, config_map: train-settings}\n"
        "        - {name: scratch, mount_path: /scratch, empty_dir: true}\n",
    ),
    "reports": (  # the finalizing Job builds them, on the claim that holds the run's output
        "algorithm: sklearn.logistic_regression\n  reports: [confusion, slices]",
        "    kubernetes:\n      volumes: [{name: run, mount_path: /mlrt/run, claim: mlrt-runs}]\n",
    ),
}


def manifests(cli, write_spec, case: str) -> list[dict]:
    what, compute = CASES[case]
    spec = write_spec(BASE.format(name=case, what=what, compute=compute), name=f"{case}.yaml")
    result = cli("validate", str(spec), "--manifests")
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_the_reviewed_golden_files_and_the_kubernetes_schemas(cli, write_spec, case):
    documents = manifests(cli, write_spec, case)
    several, reports = "workers:" in CASES[case][1], "reports:" in CASES[case][0]
    assert [d["kind"] for d in documents] == ["Service"] * several + ["Job"] + ["Job"] * reports
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    golden = GOLDEN / f"{case}.yaml"
    text = yaml.safe_dump_all(documents, sort_keys=False, width=120)
    if os.environ.get("MLRT_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "the plan changed; review it and run with MLRT_UPDATE_GOLDEN=1"


def _worker(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _worker(job)["env"]}


def test_multi_worker_job_is_indexed_with_a_headless_service_for_the_rendezvous(cli, write_spec):
    service, job = manifests(cli, write_spec, "multi-worker")
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    env = _env(job)
    assert env["MASTER_ADDR"] == f"{name}-0.{name}"
    assert env["WORLD_SIZE"] == "4"
    assert "job-completion-index" in env["RANK"]["fieldRef"]["fieldPath"]
    assert job["metadata"]["namespace"] == "research" and job["metadata"]["labels"]["team"] == "vision"
    assert _worker(job)["command"] == ["python", "-m", "mlrt.worker"]


def test_a_single_worker_is_its_own_rendezvous_without_a_service(cli, write_spec):
    """No Service for one worker: nothing resolves its name, and rank 0 is the worker itself."""
    (job,) = manifests(cli, write_spec, "single-worker")
    assert "subdomain" not in job["spec"]["template"]["spec"]
    env = _env(job)
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["WORLD_SIZE"] == "1"


def test_data_channels_are_fetched_by_an_init_container_into_the_contract_paths(cli, write_spec):
    *_, job = manifests(cli, write_spec, "single-worker")
    pod = job["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"][:4] == ["python", "-m", "mlrt.fetch", "/mlrt/data"]
    assert "train=builtin://sklearn/digits?split=train" in fetch["command"]
    env = _env(job)
    assert env["MLRT_CHANNEL_TRAIN"] == "/mlrt/data/train"
    assert env["MLRT_TRACKING_URI"] == "log:", "metrics travel in the pod log when the pods cannot reach the store"
    assert env["MLRT_FAILURE_FILE"] == _worker(job)["terminationMessagePath"]
    assert _worker(job)["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }


def test_an_s3_output_is_restored_and_uploaded_by_containers_of_the_pod(cli, write_spec, monkeypatch):
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", "http://minio.storage:9000")
    what, compute = CASES["secrets"]
    text = BASE.format(name="to-s3", what=what + "\n  output: {path: s3://team-bucket/runs}", compute=compute)
    result = cli("validate", str(write_spec(text, name="to-s3.yaml")), "--manifests")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    pod = documents[-1]["spec"]["template"]["spec"]
    fetch, restore, upload = pod["initContainers"]
    uri = restore["command"][-1]
    assert uri.startswith("s3://team-bucket/runs/to-s3-")
    assert restore["command"] == ["python", "-m", "mlrt.s3sync", "restore", "/mlrt/run", uri]
    marker = ["--attempt", "1", "--worker", "$(RANK)"]  # more in tests/test_kubernetes_outputs.py
    assert upload["command"] == ["python", "-m", "mlrt.s3sync", "watch", "/mlrt/run", uri, *marker]
    assert upload["restartPolicy"] == "Always", "a native sidecar: runs beside the worker, stopped after it"
    assert "restartPolicy" not in restore and fetch["name"] == "fetch-data"
    for container in (restore, upload):
        assert container["volumeMounts"] == [{"name": "mlrt-run", "mountPath": "/mlrt/run"}]
        assert container["env"][0] == {"name": "MLRT_S3_ENDPOINT_URL", "value": "http://minio.storage:9000"}
        assert container["envFrom"] == [{"secretRef": {"name": "wandb-credentials"}}]
    assert pod["serviceAccountName"] == "trainer", "S3 credentials come from the pod's own identity"


def test_gpu_requests_and_kueue_queue_suspend_the_job_for_admission(cli, write_spec):
    *_, job = manifests(cli, write_spec, "gpu")
    assert _worker(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert _worker(job)["image"] == "registry.example.com/acme/train:1.2"
    assert _worker(job)["command"] == ["python", "train.py", "--amp"]


def test_secret_values_never_appear_only_references(cli, write_spec):
    *_, job = manifests(cli, write_spec, "secrets")
    env = _env(job)
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "huggingface", "key": "token"}}
    assert _worker(job)["envFrom"] == [{"secretRef": {"name": "wandb-credentials"}}]
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "trainer"


def test_retries_map_to_a_pod_failure_policy_and_max_runtime_to_a_deadline(cli, write_spec):
    what, compute = CASES["single-worker"]
    text = (
        BASE.format(name="deadline", what=what, compute=compute) + "  stopping: {max_runtime: 10m, grace_period: 20s}\n"
    )
    result = cli("validate", str(write_spec(text)), "--manifests", "--json")
    (job,) = json.loads(result.stdout)
    assert job["spec"]["backoffLimit"] == 0
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob"
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 20 + 60
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_invalid_kubernetes_settings_are_one_line_errors(cli, write_spec):
    what, _ = CASES["single-worker"]
    bad = "    kubernetes:\n      volumes: [{name: data, mount_path: relative, claim: x, secret: y}]\n"
    result = cli("validate", str(write_spec(BASE.format(name="bad", what=what, compute=bad))))
    assert result.exit_code == 2
    assert "spec.compute.kubernetes.volumes.0.mount_path" in result.output
    assert "Traceback" not in result.output


def test_the_local_backend_has_no_manifests(cli, write_spec):
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: local}\nspec:\n  command: [python, -V]\n"
    )
    result = cli("validate", str(spec), "--manifests")
    assert result.exit_code == 2 and "creates no manifests" in result.output
