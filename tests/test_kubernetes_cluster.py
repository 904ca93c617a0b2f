"""The kubernetes backend end to end on a cluster that runs the pods itself: the stand-in or a real one.

These tests do not play the kubelet: the ``cluster`` fixture (:func:`kube_cluster.cluster_fixture`) gives the API stand-in under the
Helm chart's RBAC with a kubelet that runs each worker's command on this machine, or, with
``MLRT_TEST_KUBECONFIG`` set, a real cluster (``MLRT_TEST_IMAGE``, ``MLRT_TEST_NAMESPACE``), so an operator proves
the backend on theirs with the same assertions (``docs/kubernetes.md``). A detached controller launches two
workers whose command prints lines and metrics (through the log, ``MLRT_TRACKING_URI=log:``) and exits.
"""

from __future__ import annotations

import json

import pytest

from conftest import import_or_missing, run_ended, submit_detached

import_or_missing("kubernetes", "kubernetes", "the kubernetes backend needs the kubernetes client")
from kube_cluster import cluster_fixture  # noqa: E402, F401  (the cluster fixture)

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  image: {image}
  command:
    - python
    - -c
    - |
      import json, os, sys, time
      rank = int(os.environ["RANK"])
      print(f"worker {{rank}} of {{os.environ['WORLD_SIZE']}} starts", flush=True)
      if rank == 0:
          for step in range(3):
              point = ["loss", step, 1.0 / (step + 1), time.time()]
              print("##mlrt " + json.dumps({{"metrics": [point]}}), flush=True)
      print("{last_line}", flush=True)
      sys.exit({exit_code} if rank == 1 else 0)
  compute:
    backend: kubernetes
    workers: 2
    kubernetes: {{namespace: {namespace}}}
"""

# A real cluster pulls the image and schedules the pods first.
RUN_TIMEOUT = 300


def submit(cli, write_spec, cluster, name, exit_code=0, last_line="done"):
    text = SPEC.format(
        name=name, image=cluster.image, namespace=cluster.namespace, exit_code=exit_code, last_line=last_line
    )
    return submit_detached(cli, write_spec(text, name=f"{name}.yaml"))


def finished(run_id):
    return run_ended(run_id, RUN_TIMEOUT)


def test_two_workers_run_to_success_with_their_logs_and_metrics(cli, write_spec, cluster):
    run_id = submit(cli, write_spec, cluster, "kube-e2e-ok")
    run = finished(run_id)
    assert run.state == "SUCCEEDED", run.reason
    points = json.loads(cli("metrics", run_id, "--key", "loss", "--json").stdout)
    assert [(p["step"], p["value"]) for p in points] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    logs = cli("logs", run_id).stdout
    assert "[worker 0] worker 0 of 2 starts" in logs and "[worker 1] worker 1 of 2 starts" in logs
    assert "[worker 0] done" in logs and "##mlrt" not in logs


def test_a_worker_that_exits_with_an_error_fails_the_run_with_its_code_and_last_line(cli, write_spec, cluster):
    run_id = submit(cli, write_spec, cluster, "kube-e2e-fail", exit_code=3, last_line="ValueError: bad shard 7")
    run = finished(run_id)
    assert run.state == "FAILED"
    assert "exited with code 3" in run.reason and "ValueError: bad shard 7" in run.reason
