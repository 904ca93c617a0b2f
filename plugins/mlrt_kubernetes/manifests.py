"""The Kubernetes objects of one attempt, planned without touching a cluster.

An attempt is a ``batch/v1`` Indexed Job (``completions = parallelism =
workers``) and, for several workers, a headless Service named like the Job.
Each pod's hostname is ``JOB-INDEX`` under the Service's subdomain, so every
worker resolves rank 0 as ``JOB-0.JOB`` (``MASTER_ADDR``) as soon as the
Service exists; the Service publishes not-ready addresses, so the name
resolves before rank 0 is ready. ``RANK`` comes from the pod's completion
index. A single worker is its own rank 0 (``MASTER_ADDR=127.0.0.1``, as
``torchrun --standalone``), so its attempt has no Service: one object for
the API server to store and the launch to create instead of two (and the
Service's EndpointSlice).

Paths of the container contract live under ``/mlrt`` in the pod: data
channels are fetched into an ``emptyDir`` by an init container of mlrt's
training image (:mod:`mlrt.fetch`), output and checkpoints go to
``/mlrt/run`` (an ``emptyDir`` unless the spec mounts a volume there; for an
``s3://`` output, an init container restores earlier attempts' checkpoints
there and a native sidecar uploads it, within a termination grace period
that leaves time for its retries, see :mod:`mlrt.s3sync`), and a
worker's failure reason goes to the container's termination message, which
the cluster keeps with the pod. Metrics travel in the worker's log
(``MLRT_TRACKING_URI=log:``), unless the controller service gives its
workers an HTTP tracking endpoint the pods can reach: then the pods get that
URI, and their run-scoped token through a Secret of the attempt
(:func:`tracking_secret`), never as a plain value in the Job. The values of
``spec.env`` travel the same way, in the attempt's ``-env`` Secret
(:func:`env_secret`), so the Job (which anyone who can read Jobs sees) and the
plan mlrt stores with the attempt hold none of them.

Retries: an attempt's Job has ``backoffLimit: 0`` and a pod failure policy
that ignores disruptions (preemption, eviction, node drain: the pod is
recreated without counting a failure) and fails the Job at the first real
failure, so every failure is reported with its pod's reason and log. mlrt
then retries with a new attempt (``spec.retries``, exponential backoff),
which resumes from the checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from typing import TYPE_CHECKING, Any

from mlrt.launchers import LaunchContext, channel_env, is_loopback, training_image
from mlrt.sdk import LOG_TRACKING_URI
from mlrt_kubernetes import sagemaker

if TYPE_CHECKING:  # pragma: no cover
    from mlrt_kubernetes.settings import KubernetesSettings, Toleration, Volume

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "mlrt.dev/run-id"
RUN_ANNOTATION = "mlrt.dev/run-id"
"""The whole run id (a label value may be cut to 63 characters), on the Job and its pods."""
ATTEMPT_LABEL = "mlrt.dev/attempt"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MASTER_PORT = 29500
DATA_DIR = "/mlrt/data"
RUN_DIR = "/mlrt/run"
TERMINATION_LOG = "/dev/termination-log"
# Pod names add "-INDEX-xxxxx" to the Job's name and must stay within 63 characters.
_MAX_JOB_NAME = 50


def object_name(run_id: str, attempt: int) -> str:
    """The Job's (and Service's) name: ``mlrt-RUN-ATTEMPT``, shortened with a hash when too long."""
    return _short_name(f"mlrt-{run_id}-{attempt}")


def _short_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", text.lower())
    if len(name) > _MAX_JOB_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_JOB_NAME - 9].rstrip('-')}-{digest}"
    return name


def selector(run_id: str, attempt: int) -> str:
    """The label selector of an attempt's objects."""
    return f"{MANAGED_BY}=mlrt,{RUN_LABEL}={_label_value(run_id)},{ATTEMPT_LABEL}={attempt}"


def _label_value(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return value.strip("-._")


def _cpu(cores: float) -> str:
    return f"{cores:g}" if float(cores).is_integer() else f"{round(cores * 1000)}m"


TOKEN_VARIABLE = "MLRT_TRACKING_TOKEN"


def pod_settings(compute: dict[str, Any]) -> KubernetesSettings:
    """The ``kubernetes`` block of ``compute`` (a resolved ``spec.compute``) as
    :class:`~mlrt_kubernetes.settings.KubernetesSettings`, every field it leaves out at its default."""
    from mlrt_kubernetes.settings import KubernetesSettings  # pydantic: only once something is planned

    return KubernetesSettings.model_validate(compute.get("kubernetes") or {})


def remote_tracking(ctx: LaunchContext) -> bool:
    """Whether the workers report to an HTTP tracking endpoint a pod can reach (not loopback)."""
    uri = ctx.env.get("MLRT_TRACKING_URI", "")
    return uri.startswith(("http://", "https://")) and not is_loopback(uri)


def tracking_secret(ctx: LaunchContext) -> dict[str, Any] | None:
    """The attempt's Secret holding the workers' tracking token (the value is set at
    launch; a plan shows ``<set at launch>``), or None with log tracking."""
    if not remote_tracking(ctx) or TOKEN_VARIABLE not in ctx.env:
        return None
    name = object_name(ctx.run_id, ctx.attempt)
    namespace = pod_settings(ctx.compute).namespace
    labels = {MANAGED_BY: "mlrt", RUN_LABEL: _label_value(ctx.run_id), ATTEMPT_LABEL: str(ctx.attempt)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-tracking", "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"token": "<set at launch>"},
    }


# Variables the backend sets itself; a spec.env entry of the same name is replaced, not secret.
_CONTRACT_NAMES = frozenset(
    ("PYTHONUNBUFFERED", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
)


def spec_env_names(ctx: LaunchContext) -> list[str]:
    """The variables of ``ctx.env`` that come from ``spec.env`` (every one outside the
    ``MLRT_`` contract and the torch variables), less those ``secret_env`` takes from a
    Secret of the user's: their values go into the attempt's :func:`env_secret`."""
    taken = set(pod_settings(ctx.compute).secret_env) | _CONTRACT_NAMES
    return sorted(k for k in ctx.env if not k.startswith("MLRT_") and k not in taken)


def env_secret(ctx: LaunchContext) -> dict[str, Any] | None:
    """The attempt's Secret holding the ``spec.env`` values (set at launch; a plan shows
    ``<set at launch>``), or None when the spec sets none."""
    names = spec_env_names(ctx)
    if not names:
        return None
    labels = {MANAGED_BY: "mlrt", RUN_LABEL: _label_value(ctx.run_id), ATTEMPT_LABEL: str(ctx.attempt)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{object_name(ctx.run_id, ctx.attempt)}-env",
            "namespace": pod_settings(ctx.compute).namespace,
            "labels": labels,
        },
        "type": "Opaque",
        "stringData": dict.fromkeys(names, "<set at launch>"),
    }


def plan_manifests(ctx: LaunchContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Job and the headless Service of ``ctx``'s attempt, as plain manifests (no Service
    for a single worker: see the module docstring)."""
    kube = pod_settings(ctx.compute)
    workers = int(ctx.compute.get("workers", 1))
    name = object_name(ctx.run_id, ctx.attempt)
    namespace = kube.namespace
    labels = {
        **kube.labels,
        MANAGED_BY: "mlrt",
        RUN_LABEL: _label_value(ctx.run_id),
        ATTEMPT_LABEL: str(ctx.attempt),
    }
    if kube.queue:
        labels[KUEUE_QUEUE_LABEL] = kube.queue
    annotations = {**kube.annotations, RUN_ANNOTATION: ctx.run_id}
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}

    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": workers,
        "parallelism": workers,
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "NotIn", "values": [0]}},
            ]
        },
        "ttlSecondsAfterFinished": int(kube.ttl_after_finished),
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": _pod_spec(ctx, name)},
    }
    stopping = ctx.stopping
    if stopping.get("max_runtime"):
        # The cluster's backstop; mlrt stops the run gracefully first.
        job_spec["activeDeadlineSeconds"] = int(stopping["max_runtime"] + stopping.get("grace_period", 30) + 60)
    if kube.suspend or kube.queue:
        job_spec["suspend"] = True
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
    if workers == 1:
        return job, None
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {MANAGED_BY: "mlrt", RUN_LABEL: labels[RUN_LABEL], ATTEMPT_LABEL: str(ctx.attempt)},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }
    return job, service


FINALIZE_CONTAINER = "finalize"
"""The finalizing pod's container (:func:`finalize_job`)."""
ROLE_LABEL = "mlrt.dev/role"
"""``finalize`` on the finalizing Job and its pod (the workers' objects have no role label)."""
# The workers' variables the finalizing pod does without: where to report metrics (it reports to nobody), the
# rendezvous, and the rank.
_NOT_FINALIZING = frozenset(
    (
        "MLRT_TRACKING_URI",
        TOKEN_VARIABLE,
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
    )
)


def finalize_name(run_id: str, attempt: int) -> str:
    """The finalizing Job's name: ``mlrt-RUN-ATTEMPT-finalize``, shortened with a hash when too long."""
    return _short_name(f"mlrt-{run_id}-{attempt}-finalize")


def needs_reports(ctx: LaunchContext) -> bool:
    """Whether the run builds reports (``spec.reports``, or a gate that reads one) once its workers succeed."""
    import json

    from mlrt.report_runner import needed_reports

    return bool(needed_reports(json.loads(ctx.env.get("MLRT_SPEC") or "{}")))


def finalize_job(ctx: LaunchContext, job: dict[str, Any]) -> dict[str, Any]:
    """The Job that builds the reports of ``ctx``'s run once the attempt's workers (``job``) have succeeded:
    one pod (``python -m mlrt.report_pod``, see :mod:`mlrt.report_pod`) with the workers' volumes, data fetch,
    scheduling and pull settings and, unless ``compute.kubernetes.finalize`` says otherwise, one worker's
    resources. It gets none of the attempt's Secrets (no tracking token, no ``spec.env`` values): it hands its
    results back in its log. Its output folder is the workers' ``/mlrt/run/output``: a volume mounted there
    holds their predictions; for an ``s3://`` output the pod downloads them. The run's latest metrics are added
    (``MLRT_METRICS``) when the Job is created."""
    kube = pod_settings(ctx.compute)
    settings = kube.finalize
    name = finalize_name(ctx.run_id, ctx.attempt)
    metadata = copy.deepcopy(job["metadata"])
    metadata["name"] = name
    metadata["labels"][ROLE_LABEL] = "finalize"
    template = copy.deepcopy(job["spec"]["template"])
    template["metadata"]["labels"][ROLE_LABEL] = "finalize"
    pod = template["spec"]
    (worker,) = pod.pop("containers")
    for key in ("subdomain", "initContainers"):
        pod.pop(key, None)
    pod["terminationGracePeriodSeconds"] = math.ceil(float(ctx.stopping.get("grace_period", 30)))
    attempt_secrets = {f"{job['metadata']['name']}-env", f"{job['metadata']['name']}-tracking"}
    env = [
        e
        for e in worker["env"]
        if e["name"] not in _NOT_FINALIZING
        and ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") not in attempt_secrets
    ]
    argv = ["python", "-m", "mlrt.report_pod", f"{RUN_DIR}/output"]
    if ctx.output_uri.startswith("s3://"):
        import os

        argv += ["--from", ctx.output_uri]
        env += [{"name": key, "value": os.environ[key]} for key in _S3_SETTINGS if os.environ.get(key)]
    image = settings.image or (ctx.container_image() if ctx.algorithm else training_image())
    container: dict[str, Any] = {
        "name": FINALIZE_CONTAINER,
        "image": image,
        "command": argv,
        "env": env,
        "volumeMounts": [m for m in worker["volumeMounts"] if m["name"] != "mlrt-source"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "mlrt-source"]
    own = {
        "cpu": settings.cpu if settings.cpu is not None else ctx.compute.get("cpu"),
        "memory": settings.memory if settings.memory is not None else ctx.compute.get("memory"),
        "gpus": settings.gpus if settings.gpus is not None else ctx.compute.get("gpus"),
    }
    resources = _resources(own)
    if resources:
        container["resources"] = resources
    for key in ("envFrom", "imagePullPolicy"):
        if key in worker:
            container[key] = worker[key]
    pod["containers"] = [container]
    fetch = [c for c in job["spec"]["template"]["spec"].get("initContainers") or [] if c["name"] == FETCH_CONTAINER]
    if fetch:
        pod["initContainers"] = copy.deepcopy(fetch)
        if "--sanity-seed" in fetch[0]["command"]:  # reports read the whole channels, as on the other backends
            at = fetch[0]["command"].index("--sanity-seed")
            del pod["initContainers"][0]["command"][at : at + 2]
    spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": FINALIZE_CONTAINER, "operator": "NotIn", "values": [0]},
                },
            ]
        },
        "ttlSecondsAfterFinished": job["spec"]["ttlSecondsAfterFinished"],
        "template": template,
    }
    if job["spec"].get("suspend"):
        spec["suspend"] = True  # admitted like the workers' Job (Kueue, or whoever admits those)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _pod_spec(ctx: LaunchContext, name: str) -> dict[str, Any]:
    kube = pod_settings(ctx.compute)
    image = ctx.container_image()
    volumes: list[dict[str, Any]] = [{"name": "mlrt-data", "emptyDir": {}}]
    mounts = [{"name": "mlrt-data", "mountPath": DATA_DIR}]
    if not any(v.mount_path == RUN_DIR for v in kube.volumes):
        volumes.append({"name": "mlrt-run", "emptyDir": {}})
        mounts.append({"name": "mlrt-run", "mountPath": RUN_DIR})
    for volume in kube.volumes:
        volumes.append({"name": volume.name, **_volume_source(volume)})
        mount = {"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only}
        if volume.sub_path:
            mount["subPath"] = volume.sub_path
        mounts.append(mount)

    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "env": _env(ctx, name),
        "volumeMounts": mounts,
        "ports": [{"name": "rendezvous", "containerPort": MASTER_PORT}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    argv = ctx.container_argv()
    if argv:
        container["command"] = argv  # run in the image's working directory: the spec's is on another machine
    elif ctx.image_args():
        container["args"] = ctx.image_args()  # the image's own entry point, with these arguments
    if fetches_source(ctx):  # ... unless the run's code comes along: then in that
        volumes.append({"name": "mlrt-source", "emptyDir": {}})
        mounts.append({"name": "mlrt-source", "mountPath": SOURCE_DIR})
        container["workingDir"] = SOURCE_DIR
    resources = _resources(ctx.compute)
    if resources:
        container["resources"] = resources
    if kube.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": secret}} for secret in kube.env_from_secrets]
    if kube.image_pull_policy:
        container["imagePullPolicy"] = kube.image_pull_policy

    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **({"subdomain": name} if int(ctx.compute.get("workers", 1)) > 1 else {}),  # the Service's
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": termination_grace_seconds(ctx),
    }
    if ctx.channels:
        channels = [f"{channel}={uri}" for channel, uri in sorted(ctx.channels.items())]
        fetch = {
            "name": FETCH_CONTAINER,
            "image": training_image() if not ctx.algorithm else image,
            "command": ["python", "-m", "mlrt.fetch", *_sanity_args(ctx), DATA_DIR, *channels],
            "volumeMounts": [{"name": "mlrt-data", "mountPath": DATA_DIR}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        if kube.image_pull_policy:
            fetch["imagePullPolicy"] = kube.image_pull_policy
        spec["initContainers"] = [fetch]
    if fetches_source(ctx):
        spec["initContainers"] = [_source_fetch(ctx, name, kube.image_pull_policy), *spec.get("initContainers", [])]
    if ctx.output_uri.startswith("s3://"):
        run_mount = next(m for m in mounts if m["mountPath"] == RUN_DIR)
        spec["initContainers"] = spec.get("initContainers", []) + _s3_sync(ctx, image, run_mount)
    if ctx.contract == "sagemaker":
        sagemaker.add_to_pod(ctx, spec, container, next(m for m in mounts if m["mountPath"] == RUN_DIR))
    if kube.service_account:
        spec["serviceAccountName"] = kube.service_account
    if kube.node_selector:
        spec["nodeSelector"] = dict(kube.node_selector)
    if kube.tolerations:
        spec["tolerations"] = [_toleration(t) for t in kube.tolerations]
    if kube.priority_class:
        spec["priorityClassName"] = kube.priority_class
    if kube.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in kube.image_pull_secrets]
    return spec


def _sanity_args(ctx: LaunchContext) -> list[str]:
    """A sanity run of a ``command:`` job reads subsamples of its channels (:mod:`mlrt.sanity`)."""
    if ctx.env.get("MLRT_SANITY") == "1" and not ctx.algorithm:
        return ["--sanity-seed", ctx.env["MLRT_SEED"]]
    return []


def fetches_source(ctx: LaunchContext) -> bool:
    """Whether the pods fetch the run's source bundle into :data:`SOURCE_DIR`, the worker's working
    directory: a ``command:`` job with a bundle, on a controller whose tracking endpoint pods can
    reach (the fetch shows the run's own token). Otherwise the command runs in the image's working
    directory, as the spec's folder is on another machine."""
    return bool(ctx.source and not ctx.algorithm and ctx.container_argv() and tracking_secret(ctx) is not None)


def _source_fetch(ctx: LaunchContext, name: str, pull_policy: str | None) -> dict[str, Any]:
    """The init container that fetches and unpacks the run's source bundle (:mod:`mlrt.source_fetch`)."""
    wanted = ("MLRT_RUN_ID", "MLRT_TRACKING_URI", TOKEN_VARIABLE)
    fetch = {
        "name": SOURCE_CONTAINER,
        "image": training_image(),
        "command": ["python", "-m", "mlrt.source_fetch", SOURCE_DIR],
        "env": [
            *(e for e in _env(ctx, name) if e["name"] in wanted),
            {"name": "MLRT_SOURCE_DIGEST", "value": ctx.source},
        ],
        "volumeMounts": [{"name": "mlrt-source", "mountPath": SOURCE_DIR}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if pull_policy:
        fetch["imagePullPolicy"] = pull_policy
    return fetch


def termination_grace_seconds(ctx: LaunchContext) -> int:
    """The pod's ``terminationGracePeriodSeconds``: ``stopping.grace_period`` (whole seconds, rounded up) for the
    worker to save a checkpoint after SIGTERM, plus :func:`upload_grace_seconds` for an ``s3://`` output, as the
    upload sidecar is stopped only once the worker has exited, within the same grace period (docs: "Sidecar
    containers"). Every deletion of the pod gives it this time: mlrt's own stop, and the garbage collector's
    when the Job goes, which deletes pods without a grace period of its own."""
    seconds = math.ceil(float(ctx.stopping.get("grace_period", 30)))
    if ctx.output_uri.startswith("s3://"):
        seconds += upload_grace_seconds()
    return seconds


UPLOAD_CONTAINER = "upload-output"
"""The native sidecar that uploads an ``s3://`` output (:mod:`mlrt.s3sync` ``watch``)."""
RESTORE_CONTAINER = "restore-checkpoints"
"""The init container that restores earlier attempts' checkpoints of an ``s3://`` output (:mod:`mlrt.s3sync`)."""
FETCH_CONTAINER = "fetch-data"
"""The init container that fetches the data channels (:mod:`mlrt.fetch`)."""
SOURCE_CONTAINER = "fetch-source"
"""The init container that fetches the run's source bundle from the controller (:mod:`mlrt.source_fetch`)."""
SOURCE_DIR = "/mlrt/source"
"""Where a ``command:`` job's source bundle is unpacked in the pod: the worker's working directory."""
# Settings of the controller's S3 client that pods need too (credentials come from the pod itself).
_S3_SETTINGS = (
    "MLRT_S3_ENDPOINT_URL",
    "MLRT_S3_MULTIPART_MB",
    "MLRT_S3_UPLOAD_BACKOFF",
    "AWS_MAX_ATTEMPTS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
# What one try of the final upload may take per request attempt beyond botocore's pauses
# (connecting, a small object), and what the upload itself takes when S3 answers.
_SECONDS_PER_REQUEST = 2
_UPLOAD_SECONDS = 30
_ROUND_REQUESTS = 2  # a checkpoint round: removing an old marker, then the first checkpoint request
_BOTOCORE_MAX_PAUSE = 20  # botocore.retries.standard: no pause between a request's attempts is longer
_GRACE_MAX = 3600
_DEFAULT_ATTEMPTS = 11  # mlrt.s3's clients: 10 retries per request unless AWS_MAX_ATTEMPTS says otherwise


def upload_grace_seconds() -> int:
    """The pod's ``terminationGracePeriodSeconds`` for an ``s3://`` output: time for the
    sidecar's final upload with every retry after the worker has exited.

    With S3 unreachable, one request may spend botocore's longest pauses between its
    ``AWS_MAX_ATTEMPTS`` attempts (default 11) for a connection error plus
    :data:`_SECONDS_PER_REQUEST` per attempt. The time covers one such request for each try
    ``MLRT_S3_UPLOAD_BACKOFF`` allows (default 4) and two more for the checkpoint round that
    SIGTERM may find under way, the backoff's pauses and :data:`_UPLOAD_SECONDS` for the
    transfer (at most :data:`_GRACE_MAX`). A pod whose upload ends sooner ends sooner. Raises :class:`mlrt.settings.SettingError` naming a bad setting."""
    import os

    from mlrt import s3
    from mlrt.settings import SettingError

    try:
        pauses = s3.upload_backoff()
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    raw = os.environ.get(s3.MAX_ATTEMPTS_ENV) or str(_DEFAULT_ATTEMPTS)
    if not raw.isdecimal() or not 1 <= int(raw) <= 100:
        raise SettingError(f"{s3.MAX_ATTEMPTS_ENV} must be a whole number of attempts from 1 to 100, got {raw!r}")
    attempts = int(raw)
    # botocore's standard mode: rand(0, 1) * min(0.05 * 2**i, 20) seconds before attempt i + 1.
    sleeps = sum(min(0.05 * 2**i, _BOTOCORE_MAX_PAUSE) for i in range(attempts - 1))
    per_try = sleeps + _SECONDS_PER_REQUEST * attempts
    requests = len(pauses) + 1 + _ROUND_REQUESTS
    return min(_GRACE_MAX, math.ceil(requests * per_try + sum(pauses) + _UPLOAD_SECONDS))


def _s3_sync(ctx: LaunchContext, image: str, run_mount: dict[str, Any]) -> list[dict[str, Any]]:
    """For an ``s3://`` output: an init container that restores the checkpoints of earlier
    attempts, and a native sidecar that uploads checkpoints while the worker runs and the
    output when it has exited, then its worker's completion marker (:mod:`mlrt.s3sync`).
    Both retry with the controller's ``MLRT_S3_UPLOAD_BACKOFF`` and ``AWS_MAX_ATTEMPTS``."""
    import os

    kube = pod_settings(ctx.compute)
    base: dict[str, Any] = {
        "image": image if ctx.algorithm else training_image(),
        "volumeMounts": [{"name": run_mount["name"], "mountPath": RUN_DIR}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    settings = [{"name": key, "value": os.environ[key]} for key in _S3_SETTINGS if os.environ.get(key)]
    if settings:
        base["env"] = settings
    if kube.env_from_secrets:
        base["envFrom"] = [{"secretRef": {"name": secret}} for secret in kube.env_from_secrets]
    if kube.image_pull_policy:
        base["imagePullPolicy"] = kube.image_pull_policy
    sync = ["python", "-m", "mlrt.s3sync"]
    restore = {"name": RESTORE_CONTAINER, **base, "command": [*sync, "restore", RUN_DIR, ctx.output_uri]}
    rank = {"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_LABEL}']"}}}
    marker = ["--attempt", str(ctx.attempt), "--worker", "$(RANK)"]  # the kubelet expands $(RANK)
    upload = {
        "name": UPLOAD_CONTAINER,
        **base,
        "env": [*settings, rank],
        "restartPolicy": "Always",
        "command": [*sync, "watch", RUN_DIR, ctx.output_uri, *marker],
    }
    return [restore, upload]


def _env(ctx: LaunchContext, name: str) -> list[dict[str, Any]]:
    """The contract's environment with pod paths, the torch variables and secret references."""
    workers = int(ctx.compute.get("workers", 1))
    values = dict(ctx.env)
    for channel in ctx.channels:
        values[channel_env(channel)] = f"{DATA_DIR}/{channel}"
    values.pop(TOKEN_VARIABLE, None)
    values.update(
        MLRT_TRACKING_URI=values["MLRT_TRACKING_URI"] if remote_tracking(ctx) else LOG_TRACKING_URI,
        MLRT_OUTPUT_DIR=f"{RUN_DIR}/output",
        MLRT_CHECKPOINT_DIR=f"{RUN_DIR}/checkpoints",
        MLRT_FAILURE_FILE=TERMINATION_LOG,
        PYTHONUNBUFFERED="1",
        MASTER_ADDR=f"{name}-0.{name}" if workers > 1 else "127.0.0.1",
        MASTER_PORT=str(MASTER_PORT),
        WORLD_SIZE=str(workers),
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    for dropped in ("MLRT_INIT_FROM", "MLRT_RESUME_FROM"):  # paths of the controller's machine
        values.pop(dropped, None)
    if ctx.contract == "sagemaker":
        values.update(sagemaker.worker_env(ctx))
    if ctx.compute.get("cpu"):
        threads = str(max(1, int(ctx.compute["cpu"])))
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            values.setdefault(variable, threads)
    secret_env = pod_settings(ctx.compute).secret_env
    from_spec = set(spec_env_names(ctx))
    env = [
        {"name": key, "value": value}
        for key, value in sorted(values.items())
        if key not in secret_env and key not in from_spec
    ]
    for key in sorted(from_spec):
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": f"{name}-env", "key": key}}})
    env.append({"name": "RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_LABEL}']"}}})
    for key, ref in sorted(secret_env.items()):
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}})
    secret = tracking_secret(ctx)
    if secret is not None:
        reference = {"name": secret["metadata"]["name"], "key": "token"}
        env.append({"name": TOKEN_VARIABLE, "valueFrom": {"secretKeyRef": reference}})
    return env


def _resources(compute: dict[str, Any]) -> dict[str, Any]:
    amounts: dict[str, Any] = {}
    if compute.get("cpu"):
        amounts["cpu"] = _cpu(float(compute["cpu"]))
    if compute.get("memory"):
        amounts["memory"] = str(compute["memory"]).strip()
    resources: dict[str, Any] = {}
    if amounts:
        resources = {"requests": dict(amounts), "limits": dict(amounts)}
    if compute.get("gpus"):
        resources.setdefault("limits", {})["nvidia.com/gpu"] = str(int(compute["gpus"]))
    return resources


def _volume_source(volume: Volume) -> dict[str, Any]:
    if volume.claim:
        return {"persistentVolumeClaim": {"claimName": volume.claim, "readOnly": volume.read_only}}
    if volume.secret:
        return {"secret": {"secretName": volume.secret}}
    if volume.config_map:
        return {"configMap": {"name": volume.config_map}}
    return {"emptyDir": {}}


def _toleration(toleration: Toleration) -> dict[str, Any]:
    names = {"key": "key", "operator": "operator", "value": "value", "effect": "effect"}
    names["toleration_seconds"] = "tolerationSeconds"
    given = toleration.model_dump(exclude_none=True)
    return {k8s: given[ours] for ours, k8s in names.items() if ours in given}
