"""``spec.contract: sagemaker`` in a pod: SageMaker's ``/opt/ml`` (:mod:`mlrt.sagemaker_contract`)
for the attempt's one worker, host ``algo-1``.

- ``/opt/ml/input/config``: an ``emptyDir`` into which the init container ``sagemaker-config``
  (mlrt's training image, ``python -m mlrt.sagemaker_contract``) writes the three config files;
  read-only for the worker.
- ``/opt/ml/input/data``: the volume the ``fetch-data`` init container fills, one folder per
  channel (:mod:`mlrt.fetch`), read-only.
- ``/opt/ml/model``, ``/opt/ml/output/data``, ``/opt/ml/checkpoints``: ``output/model``,
  ``output/data`` and ``checkpoints`` of the run volume (``subPath``), so they are uploaded with
  the output, and a retry's checkpoints restored, like mlrt's own (:mod:`mlrt.s3sync`).
- ``/opt/ml/output/failure``: the worker container's termination message path, which the cluster
  keeps with the pod and mlrt shows as the failure reason; ``MLRT_FAILURE_FILE`` names it too.

A job of several workers is refused (:func:`contract_problem`): the pods of an Indexed Job share
one template, and nothing in a pod's spec turns its completion index ``i`` into the host name
``algo-<i+1>`` (the downward API gives the index as it is; ``$(VAR)`` expansion cannot add).
"""

from __future__ import annotations

import json
from typing import Any

from mlrt import sagemaker_contract
from mlrt.launchers import LaunchContext, training_image

CONFIG_CONTAINER = "sagemaker-config"
"""The init container that writes ``/opt/ml/input/config``."""
VOLUME = "mlrt-sagemaker"
FAILURE_FILE = f"{sagemaker_contract.CONTAINER_ROOT}/output/failure"


def contract_problem(workers: Any) -> str | None:
    """Why the kubernetes backend cannot give ``workers`` workers the SageMaker contract, or None."""
    if isinstance(workers, int) and workers > 1:
        return (
            "the kubernetes backend gives the sagemaker contract to one worker (host algo-1);"
            " set spec.compute.workers: 1, or use the container backend for several hosts"
        )
    return None


def worker_env(ctx: LaunchContext) -> dict[str, str]:
    """The ``SM_*`` variables of the pod's worker (host ``algo-1``, paths under ``/opt/ml``)."""
    # The spec's folder is on another machine: SM_MODULE_DIR is SageMaker's own default.
    code = f"{sagemaker_contract.CONTAINER_ROOT}/code"
    return {**sagemaker_contract.worker_env(ctx, 0, local=False, module_dir=code), "MLRT_FAILURE_FILE": FAILURE_FILE}


def add_to_pod(ctx: LaunchContext, pod: dict[str, Any], worker: dict[str, Any], run_mount: dict[str, Any]) -> None:
    """Give the pod spec ``pod`` and its worker container ``worker`` the ``/opt/ml`` layout;
    ``run_mount`` is the worker's mount of the run folder (``/mlrt/run``)."""
    root = sagemaker_contract.CONTAINER_ROOT
    config = f"{root}/input/config"
    pod["volumes"].append({"name": VOLUME, "emptyDir": {}})
    base = run_mount.get("subPath", "")

    def run_folder(sub_path: str, mount_path: str) -> dict[str, Any]:
        return {"name": run_mount["name"], "mountPath": mount_path, "subPath": f"{base}/{sub_path}".lstrip("/")}

    worker["volumeMounts"] += [
        {"name": VOLUME, "mountPath": config, "readOnly": True},
        {"name": "mlrt-data", "mountPath": f"{root}/input/data", "readOnly": True},
        run_folder("output/model", f"{root}/model"),
        run_folder("output/data", f"{root}/output/data"),
        run_folder("checkpoints", f"{root}/checkpoints"),
    ]
    worker["terminationMessagePath"] = FAILURE_FILE
    files = sagemaker_contract.config_files(ctx, 0)
    writer: dict[str, Any] = {
        "name": CONFIG_CONTAINER,
        "image": training_image() if not ctx.algorithm else worker["image"],
        "command": ["python", "-m", "mlrt.sagemaker_contract", config],
        "env": [{"name": sagemaker_contract.FILES_VARIABLE, "value": json.dumps(files, sort_keys=True)}],
        "volumeMounts": [{"name": VOLUME, "mountPath": config}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if worker.get("imagePullPolicy"):
        writer["imagePullPolicy"] = worker["imagePullPolicy"]
    pod["initContainers"] = [writer, *pod.get("initContainers", [])]
