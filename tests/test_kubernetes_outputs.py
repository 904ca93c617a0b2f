"""Kubernetes runs never lose their ``s3://`` output in silence.

Pods upload their own output: a native sidecar (``python -m mlrt.s3sync
watch``) sends it after the worker exits and then writes a completion marker,
which the controller requires before the run can end SUCCEEDED (a sidecar's
exit code does not fail its pod). A detached controller drives the run against
the in-process API stand-in; the test plays the pod by running the real
sidecar command on a folder of its own against the moto S3 server (or a
closed port), then lets the pod succeed.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import import_or_missing, run_ended, submit_detached, wait_for
from mlrt.store import Store

import_or_missing("kubernetes", "kubernetes", "the kubernetes backend needs the kubernetes client")
kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")
from kube_cluster import controller_standin  # noqa: E402

pytestmark = pytest.mark.standin_only  # the tests play the kubelet

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  output: {{path: "s3://mlrt-test/kube-outputs"}}
  compute:
    backend: kubernetes
    workers: {workers}
    kubernetes: {{namespace: ml}}
"""
MODEL = b"weights " * 1000


@pytest.fixture
def kube(tmp_path, monkeypatch, s3_endpoint):
    # Quick retries: the controller's and the sidecars' (they get these settings through the pod).
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "0.1,0.2")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with controller_standin(tmp_path, monkeypatch) as standin:  # mlrt as the chart's ServiceAccount
        yield standin


def submit(cli, write_spec, name, workers=1):
    return submit_detached(cli, write_spec(SPEC.format(name=name, workers=workers), name=f"{name}.yaml"))


def finished(run_id, timeout=60):
    return run_ended(run_id, timeout)


def pod_folder(root: Path) -> Path:
    """A pod's /mlrt/run after its worker exited: an output file and a checkpoint."""
    (root / "output").mkdir(parents=True)
    (root / "output" / "model.bin").write_bytes(MODEL)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "step-10.pt").write_bytes(b"state")
    return root


def closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def sidecar(pod: dict, root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pod's upload sidecar as the kubelet would: its command (``$(RANK)`` expanded),
    its env values, SIGTERM once the worker has exited; return how it ended."""
    upload = next(c for c in pod["spec"]["initContainers"] if c["name"] == "upload-output")
    rank = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
    values = {e["name"]: e["value"] for e in upload["env"] if "value" in e}
    argv = [sys.executable if a == "python" else a.replace("$(RANK)", rank) for a in upload["command"]]
    run_dir = pod_folder(root / f"pod-{rank}")
    argv[argv.index("/mlrt/run")] = str(run_dir)
    process = subprocess.Popen(
        [*argv, "--every", "0.2"],
        # PYTHONFAULTHANDLER: a SIGABRT prints every thread's stack, should the sidecar hang.
        env={**os.environ, **values, **(env or {}), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first checkpoint round says the sidecar is up and has its SIGTERM handler.
    first = process.stdout.readline()
    assert first.startswith("[mlrt s3sync] "), first + process.stderr.read()
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        out, err = process.communicate(timeout=30)
        faulthandler.dump_traceback()  # this process's threads too: the moto server answers from one of them
        pytest.fail(f"the sidecar did not exit within 60 s of SIGTERM; its output:\n{first}{out}{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, first + out, err)


def sidecar_ended(kube, pod: dict, ended: subprocess.CompletedProcess[str]) -> None:
    """Record the sidecar's end in its pod's status as the kubelet does: its exit code and, as it
    exited with an error (``FallbackToLogsOnError``), the end of its log as termination message.
    The stand-in plays only the pod's regular containers, so this writes to its store directly."""
    from kube_standin import PODS

    terminated = {"exitCode": ended.returncode, "reason": "Error", "message": (ended.stdout + ended.stderr)[-2048:]}
    status = {"name": "upload-output", "image": "", "imageID": "", "ready": False, "restartCount": 0}
    with kube._store.cond:
        live = kube._store.get(PODS, "ml", pod["metadata"]["name"])
        live["status"]["initContainerStatuses"] = [{**status, "state": {"terminated": terminated}}]
        kube._store.update(PODS, live)


def test_a_pod_that_uploaded_its_output_succeeds_with_artifacts_and_no_marker_artifact(cli, write_spec, kube, tmp_path):
    run_id = submit(cli, write_spec, "kube-s3-ok")
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    ended = sidecar(pod, tmp_path)
    assert ended.returncode == 0, ended.stderr
    uri = Store().get_run(run_id).output_uri
    assert f"final upload: 1 file(s) -> {uri}; completion marker {uri}/.mlrt/attempt-1/worker-0.json" in ended.stdout
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")

    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    (model,) = json.loads(cli("artifacts", "list", run_id, "--json").stdout)
    assert model["path"] == "model.bin" and model["uri"] == f"{uri}/output/model.bin"
    assert model["size"] == len(MODEL)

    from mlrt import s3

    marker = json.loads(b"".join(s3.open_object(f"{uri}/.mlrt/attempt-1/worker-0.json")))
    assert marker["attempt"] == 1 and marker["worker"] == 0 and marker["skipped"] == []
    files = {f["path"]: f["sha256"] for f in marker["files"]}
    assert files == {"output/model.bin": model["sha256"], "checkpoints/step-10.pt": files["checkpoints/step-10.pt"]}


def test_a_sidecar_that_cannot_reach_s3_fails_the_run_without_promising_a_push(cli, write_spec, kube, tmp_path):
    run_id = submit(cli, write_spec, "kube-s3-down")
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    ended = sidecar(pod, tmp_path, env={"MLRT_S3_ENDPOINT_URL": closed_port_endpoint()})
    assert ended.returncode == 1
    assert "Traceback" not in ended.stdout + ended.stderr
    uri = Store().get_run(run_id).output_uri
    (line,) = ended.stderr.splitlines()
    assert (
        line.startswith(f"error: output not uploaded to {uri}: EndpointConnectionError") and "(after 3 tries)" in line
    )
    assert "final upload try 2 failed" in ended.stdout, "retried with the pod's MLRT_S3_UPLOAD_BACKOFF"
    sidecar_ended(kube, pod, ended)
    time.sleep(2)  # the controller sees the sidecar's exit before the pod's end: that fails nothing by itself
    assert Store().get_run(run_id).state == "RUNNING"
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")  # a native sidecar's exit code does not fail the pod

    run = finished(run_id)
    assert run.state == "FAILED"
    assert run.reason.startswith(
        f"output not uploaded by the pod: no completion marker from worker 0 under {uri}/.mlrt/attempt-1/ "
        f"(its upload said: {line})"
    )
    assert "the files were in the pod and went with it" in run.reason and "push" not in run.reason
    assert run.reason.endswith("(the workers had finished: all 1 workers exited with code 0)")
    assert json.loads(cli("artifacts", "list", run_id, "--json").stdout) == []


def test_every_worker_of_the_attempt_must_have_uploaded(cli, write_spec, kube, tmp_path):
    run_id = submit(cli, write_spec, "kube-s3-two", workers=2)
    pods = wait_for(lambda: len(p := kube.pods("ml")) == 2 and p, timeout=30)
    ranks = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    for pod in pods:
        kube.start_pod(pod["metadata"]["name"], namespace="ml")
    assert sidecar(ranks["0"], tmp_path).returncode == 0
    assert sidecar(ranks["1"], tmp_path, env={"MLRT_S3_ENDPOINT_URL": closed_port_endpoint()}).returncode == 1
    for pod in pods:
        kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED" and "no completion marker from worker 1 under" in run.reason


def test_restore_that_cannot_reach_s3_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", closed_port_endpoint())
    env = {**os.environ, "MLRT_S3_UPLOAD_BACKOFF": "0", "AWS_MAX_ATTEMPTS": "1", "AWS_ACCESS_KEY_ID": "x"}
    env["AWS_SECRET_ACCESS_KEY"] = "x"
    command = [sys.executable, "-m", "mlrt.s3sync", "restore", str(tmp_path), "s3://mlrt-test/gone/run-1"]
    ended = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert ended.returncode == 1 and "Traceback" not in ended.stdout + ended.stderr
    (line,) = ended.stderr.splitlines()
    assert line.startswith("error: checkpoints not restored from s3://mlrt-test/gone/run-1/checkpoints: ")
    assert "restore try 1 failed" in ended.stdout and line.endswith("(after 2 tries)")


def test_pods_get_the_retry_settings_and_time_for_the_final_upload(cli, write_spec, monkeypatch):
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", "http://minio.storage:9000")
    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "5,10")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    spec = write_spec(SPEC.format(name="kube-s3-plan", workers=2), name="plan.yaml")
    result = cli("validate", str(spec), "--manifests")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    for document in documents:
        kubernetes_validate.validate(document, "1.33.0", strict=True)
    pod = documents[-1]["spec"]["template"]["spec"]
    restore, upload = pod["initContainers"]
    settings = [
        {"name": "MLRT_S3_ENDPOINT_URL", "value": "http://minio.storage:9000"},
        {"name": "MLRT_S3_UPLOAD_BACKOFF", "value": "5,10"},
        {"name": "AWS_MAX_ATTEMPTS", "value": "3"},
    ]
    assert restore["env"] == settings
    rank = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert upload["env"] == [*settings, {"name": "RANK", "valueFrom": rank}]
    assert upload["command"][-4:] == ["--attempt", "1", "--worker", "$(RANK)"]
    # The worker's 30 s (stopping.grace_period), then for the upload: 3 tries and a checkpoint round's 2
    # requests, of up to 3 attempts each (0.05 + 0.1 s of botocore pauses, 2 s per attempt), 15 s of pauses,
    # 30 s to send.
    assert pod["terminationGracePeriodSeconds"] == 30 + 76

    monkeypatch.setenv("MLRT_S3_UPLOAD_BACKOFF", "soon")
    refused = cli("validate", str(spec), "--manifests")
    assert refused.exit_code != 0 and "MLRT_S3_UPLOAD_BACKOFF must be" in refused.output
    assert "Traceback" not in refused.output


def test_a_pod_replacing_a_disrupted_one_is_not_done_on_its_predecessors_marker(cli, write_spec, kube, tmp_path):
    from mlrt import s3

    run_id = submit(cli, write_spec, "kube-s3-stale")
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    uri = Store().get_run(run_id).output_uri
    bucket, key = s3.parse_uri(f"{uri}/.mlrt/attempt-1/worker-0.json")
    s3.client().put_object(Bucket=bucket, Key=key, Body=b'{"attempt": 1, "worker": 0, "files": [], "skipped": []}')
    # This pod's uploads fail (a setting no retry can fix) after it removed the old marker.
    ended = sidecar(pod, tmp_path, env={"MLRT_S3_MULTIPART_MB": "1"})
    assert ended.returncode == 1 and "Traceback" not in ended.stdout + ended.stderr
    assert ended.stderr.splitlines() == [
        f"error: output not uploaded to {uri}: MLRT_S3_MULTIPART_MB must be a whole number of MiB from 5 to 5120, got '1'"
    ]
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED" and run.reason.startswith("output not uploaded by the pod: no completion marker")


def test_a_controller_that_cannot_read_the_markers_does_not_call_the_run_succeeded(
    cli, write_spec, kube, tmp_path, monkeypatch, s3_endpoint
):
    monkeypatch.setenv("MLRT_S3_ENDPOINT_URL", closed_port_endpoint())  # the detached controller's S3
    run_id = submit(cli, write_spec, "kube-s3-blind")
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    assert sidecar(pod, tmp_path, env={"MLRT_S3_ENDPOINT_URL": s3_endpoint}).returncode == 0, "the pod reaches S3"
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED"
    assert run.reason.startswith("output not checked: the controller could not read the completion markers: ")
    assert "EndpointConnectionError" in run.reason and "push" not in run.reason
