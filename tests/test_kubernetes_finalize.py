"""Kubernetes runs build their reports in a finalizing pod, never in the controller's process.

Once a kubernetes run's workers have succeeded and its spec wants reports (or a gate reads one), the
controller creates the attempt's finalizing Job (``python -m mlrt.report_pod``, see
:mod:`mlrt_kubernetes.manifests`), takes the results from the last line of its pod's log, stores them and
checks the gates. A detached controller drives each run against the in-process API stand-in, under the Helm
chart's RBAC: the first test with :class:`kube_cluster.LocalKubelet` running the pods (the workers and the
finalizing pod share a PersistentVolumeClaim at ``/mlrt/run``, where the controller cannot look), the others
with the test playing the pod.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from conftest import import_or_missing, run_ended, submit_detached, wait_for
from mlrt.store import Store

client = import_or_missing("kubernetes.client", "kubernetes", "the kubernetes backend needs the kubernetes client")
kubernetes_validate = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")
from kube_cluster import LocalKubelet, controller_standin  # noqa: E402

pytestmark = pytest.mark.standin_only  # the tests play the kubelet (or run it on this machine)

# The worker writes its predictions (3 of 4 right) where the run's output is, on the claim.
WORKER = textwrap.dedent(
    """\
    import os, pandas as pd
    out = os.environ["MLRT_OUTPUT_DIR"]
    os.makedirs(out, exist_ok=True)
    rows = {"id": ["a", "b", "c", "d"], "split": ["validation"] * 4, "label": [0, 1, 1, 0], "prediction": [0, 1, 0, 0]}
    pd.DataFrame(rows).to_parquet(os.path.join(out, "predictions.parquet"))
    print("predictions written", flush=True)
    """
)

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  image: registry.example.com/acme/train:1.0
  command: {command}
  compute:
    backend: kubernetes
    kubernetes:
      namespace: ml
      volumes: [{{name: run, claim: runs, mount_path: /mlrt/run}}]
  reports: {reports}
  gates: [{{metric: confusion.accuracy, min: 0.9}}]
  stopping: {{grace_period: 1s}}
{more}"""


def submit(cli, write_spec, name, command, reports=("confusion",), more=""):
    text = SPEC.format(name=name, command=json.dumps(command), reports=json.dumps(list(reports)), more=more)
    return submit_detached(cli, write_spec(text, name=f"{name}.yaml"))


def finished(run_id, timeout=60):
    return run_ended(run_id, timeout)


def finalize_jobs(kube):
    return [j for j in kube.jobs("ml") if j["metadata"]["labels"].get("mlrt.dev/role") == "finalize"]


def test_reports_and_gates_come_from_the_finalizing_pod(cli, write_spec, tmp_path, monkeypatch):
    # A feature of the validation channel, which the finalizing pod's init container fetches as the workers' does.
    channel = tmp_path / "validation.csv"
    channel.write_text("id,label,color\na,0,red\nb,1,red\nc,1,blue\nd,0,blue\n")
    more = f"  data: {{validation: {{uri: 'file://{channel}', id: id}}}}\n  slices: [{{column: color}}]\n"
    with controller_standin(tmp_path, monkeypatch) as kube, LocalKubelet(kube, "ml", tmp_path):
        run_id = submit(cli, write_spec, "kube-finalize", ["python", "-c", WORKER], ("confusion", "slices"), more)
        run = finished(run_id)
        (job,) = finalize_jobs(kube)
        (pod,) = kube.pods("ml", job=job["metadata"]["name"])
        core = client.CoreV1Api(kube.api_client())
        pod_log = core.read_namespaced_pod_log(pod["metadata"]["name"], "ml", container="finalize")
    assert run.state == "FAILED_GATE", run.reason
    assert "failed 1 gate(s): confusion.accuracy = 0.75 is below the gate's min 0.9" in run.reason
    # The pod built the report: its log ends with the results, and the controller kept that log.
    assert pod_log.splitlines()[-1].startswith("##mlrt-reports ")
    store = Store()
    log_dir = Path(store.latest_attempt(run_id).log_dir)
    assert (log_dir / "finalize.log").read_text() == pod_log
    # The predictions were only on the claim: the controller's own output folder never had them.
    output = Path(run.output_uri.removeprefix("file://")) / "output"
    assert not (output / "predictions.parquet").exists()
    assert (tmp_path / "claims" / "runs" / "output" / "predictions.parquet").exists()
    from mlrt import report_runner

    results = report_runner.load_results(store, run_id)
    assert results["confusion"]["accuracy"] == 0.75
    by_color = {row["value"]: row["errors"] for row in results["slices"]["listed"]["color"]}
    assert by_color == {"blue": 1, "red": 0}, "the pod joined the predictions with the fetched channel"
    assert (output / "reports" / "report.html").is_file()
    assert any(a.path == "reports/confusion.json" for a in store.artifacts(run_id))
    events = [e.reason for e in store.events(run_id)]
    assert f"building the reports in Job {job['metadata']['name']} (created; log: {log_dir / 'finalize.log'})" in events
    assert "reports built: confusion, slices" in events
    assert job["metadata"]["ownerReferences"][0]["name"] == store.latest_attempt(run_id).handle["job"]
    # No database credentials and none of the attempt's Secrets in the finalizing pod.
    (container,) = job["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    assert "MLRT_TRACKING_URI" not in names and "MLRT_TRACKING_TOKEN" not in names
    planned = store.latest_attempt(run_id).request["details"]["finalize"]  # as planned, before the API's defaults
    kubernetes_validate.validate(planned, "1.33.0", strict=True)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with controller_standin(tmp_path, monkeypatch) as standin:  # the test plays the kubelet
        yield standin


def workers_succeed(kube):
    """Play the workers' pod to success; return the finalizing pod once its Job has made it."""
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    (job,) = wait_for(lambda: finalize_jobs(kube), timeout=30)
    (finalizing,) = kube.wait_for_pods(job["metadata"]["name"], 1, namespace="ml")
    return finalizing


def test_cancel_while_finalizing_deletes_the_finalizing_job(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-finalize-cancel", ["python", "train.py"])
    pod = workers_succeed(kube)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    assert Store().get_run(run_id).state == "FINALIZING"
    assert cli("cancel", run_id).exit_code == 0
    run = finished(run_id)
    assert run.state == "CANCELLED" and run.reason == "cancelled by user while finalizing"
    wait_for(lambda: not finalize_jobs(kube), timeout=30)  # its pod gets its 1 s grace period
    job = pod["metadata"]["labels"]["job-name"]
    assert [m for m, path in kube.requests if path.endswith(f"/jobs/{job}") and m == "DELETE"] == ["DELETE"]


def test_a_restarted_controller_takes_over_the_finalizing_job(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-finalize-adopt", ["python", "train.py"])
    pod = workers_succeed(kube)
    store = Store()
    first = store.get_run(run_id).owner
    os.kill(int(first.split(":")[1]), signal.SIGKILL)
    wait_for(lambda: cli("status", run_id) and store.get_run(run_id).owner != first, timeout=30)
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    results = {"confusion": {"report": "confusion", "accuracy": 0.95, "top_confusions": []}}
    kube.append_log(pod["metadata"]["name"], "##mlrt-reports " + json.dumps(results) + "\n", namespace="ml")
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    assert len(finalize_jobs(kube)) == 1 and len(kube.pods("ml", job=finalize_jobs(kube)[0]["metadata"]["name"])) == 1
    assert float(store.params(run_id)["gate_violation"]) == 0.0
    taken = [e.reason for e in store.events(run_id) if e.reason.startswith("building the reports in Job")]
    assert len(taken) == 2 and "(created; " in taken[0] and "(taken over; " in taken[1]


def test_a_failed_finalizing_pod_fails_the_gate_with_its_reason(cli, write_spec, kube):
    run_id = submit(cli, write_spec, "kube-finalize-fail", ["python", "train.py"])
    pod = workers_succeed(kube)
    name = pod["metadata"]["name"]
    kube.unschedulable(name, namespace="ml", message="0/3 nodes are available: 3 Insufficient memory.")
    store = Store()
    wait_for(lambda: any("finalizing pod: pending" in e.reason for e in store.events(run_id)), timeout=20)
    assert Store().get_run(run_id).state == "FINALIZING"
    kube.start_pod(name, namespace="ml")
    kube.append_log(name, "error: run x has no predictions.parquet\n", namespace="ml")
    kube.fail_pod(name, exit_code=1, namespace="ml")
    run = finished(run_id)
    assert run.state == "FAILED_GATE"
    assert (
        f"reports not built: the finalizing pod exited with code 1 in pod {name}: "
        "error: run x has no predictions.parquet" in run.reason
    )


def test_the_pod_reads_an_s3_output_and_uploads_its_reports_there(tmp_path, monkeypatch, capsys, s3_endpoint):
    """``python -m mlrt.report_pod OUTPUT --from s3://...``, as a finalizing pod runs it for an ``s3://`` output:
    the predictions the workers' sidecar uploaded come down, the reports folder goes up, the results are the
    last line; a run without predictions is one ``error:`` line and exit code 1."""
    import pandas as pd

    from mlrt import report_pod, s3

    uri = "s3://mlrt-test/finalize/run-1"
    rows = {"id": ["a", "b"], "split": ["validation"] * 2, "label": [0, 1], "prediction": [0, 1]}
    pd.DataFrame(rows).to_parquet(tmp_path / "predictions.parquet")
    s3.upload_tree(tmp_path, f"{uri}/output")
    monkeypatch.setenv("MLRT_RUN_ID", "run-1")
    monkeypatch.setenv("MLRT_SPEC", json.dumps({"reports": ["confusion"], "data": {}}))
    monkeypatch.setenv("MLRT_METRICS", "{}")
    assert report_pod.main([str(tmp_path / "pod"), "--from", uri]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert report_pod.result_line(last)["confusion"]["accuracy"] == 1.0
    uploaded = {o.relative for o in s3.list_objects(f"{uri}/output/reports/")}
    assert {"confusion.json", "report.html"} <= uploaded

    assert report_pod.main([str(tmp_path / "other"), "--from", "s3://mlrt-test/finalize/run-2"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "error: s3://mlrt-test/finalize/run-2/output/predictions.parquet does not exist:"
        " the workers wrote no predictions.parquet"
    )
