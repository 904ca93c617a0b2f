"""``spec.compute.kubernetes``: the kubernetes backend's settings block, and its defaults.

:class:`KubernetesSettings` is the backend's
:attr:`~mlrt.launchers.Launcher.settings_model`: ``mlrt validate`` checks the
block with it (problems read ``spec.compute.kubernetes.tolerations.0.effect:
...``) and the resolved spec holds the block with every default filled in.
The manifests read it back with :func:`mlrt_kubernetes.manifests.pod_settings`,
so each default is stated here and nowhere else. Names follow the spec's snake_case; the
manifests translate them (``mount_path`` -> ``mountPath``).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlrt import limits
from mlrt.names import DNS_LABEL, env_name_problem, image_problem
from mlrt.spec import RunDuration, WaitDuration
from mlrt.spec.schema import Cpu, Memory


def managed_namespaces() -> list[str]:
    """``MLRT_KUBE_NAMESPACES`` (comma-separated), else ``["default"]``: where pods may go,
    the first being the default (the controller service refuses the others, see
    :mod:`mlrt.service.policy`)."""
    return [n.strip() for n in os.environ.get("MLRT_KUBE_NAMESPACES", "").split(",") if n.strip()] or ["default"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _dns_label(value: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63")
    return value


class SecretKey(_Settings):
    """One key of a Kubernetes Secret, used as an environment variable's value."""

    secret: str
    key: str


class Toleration(_Settings):
    """A Kubernetes toleration (``key``, ``operator``, ``value``, ``effect``, ``toleration_seconds``)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0, le=limits.MAX_COUNT)


class Volume(_Settings):
    """A volume mounted into every worker pod at ``mount_path``: exactly one of
    ``claim`` (a PersistentVolumeClaim), ``secret``, ``config_map`` or ``empty_dir``."""

    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str | None = None
    claim: str | None = None
    secret: str | None = None
    config_map: str | None = None
    empty_dir: bool = False

    _name = field_validator("name")(_dns_label)

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path inside the container, e.g. /data")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = [n for n in ("claim", "secret", "config_map") if getattr(self, n)] + (["empty_dir"] * self.empty_dir)
        if len(sources) != 1:
            raise ValueError("set exactly one of claim, secret, config_map or empty_dir: true")
        return self


class Finalize(_Settings):
    """``finalize``: the pod that builds a run's reports once its workers have succeeded (see
    :mod:`mlrt.report_pod`). ``image`` must have mlrt and the report plugins installed; by default
    it is the workers' image for an ``algorithm:`` job and mlrt's training image otherwise
    (:func:`mlrt.launchers.training_image`). ``cpu``, ``memory`` and ``gpus`` default to one
    worker's (``spec.compute``): a learning curve retrains the model there."""

    image: str | None = None
    cpu: Cpu | None = None
    memory: Memory | None = None
    gpus: int | None = Field(None, ge=0, le=limits.MAX_GPUS)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        problem = image_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class KubernetesSettings(_Settings):
    """``spec.compute.kubernetes``: how the workers run as pods (``backend: kubernetes``).

    ``secret_env`` maps an environment variable to a Secret key (values never
    appear in the manifest); ``env_from_secrets`` exposes every key of the named
    Secrets. ``finalize`` sets the pod that builds the run's reports (:class:`Finalize`).
    ``queue`` names a Kueue LocalQueue: the Job is created suspended and
    labelled for Kueue, which admits it; ``suspend: true`` alone leaves
    admission to another controller. ``ttl_after_finished`` is how long the
    finished Job and its pods stay for inspection before the cluster deletes
    them (mlrt has kept the reason and the logs by then). ``schedule_timeout``
    fails an attempt whose pods stay unschedulable that long. ``namespace``
    defaults to the first of ``MLRT_KUBE_NAMESPACES`` (the namespaces a
    controller service may launch in), else ``default``."""

    namespace: str = Field(default_factory=lambda: managed_namespaces()[0])
    service_account: str | None = None
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    priority_class: str | None = None
    image_pull_secrets: list[str] = []
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    env_from_secrets: list[str] = []
    secret_env: dict[str, SecretKey] = {}
    volumes: list[Volume] = []
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    queue: str | None = None
    suspend: bool = False
    ttl_after_finished: RunDuration = 3600.0
    schedule_timeout: WaitDuration = 900.0
    finalize: Finalize = Finalize()

    _namespace = field_validator("namespace")(_dns_label)

    @field_validator("secret_env")
    @classmethod
    def _env_names(cls, value: dict[str, SecretKey]) -> dict[str, SecretKey]:
        for name in value:
            problem = env_name_problem(name)
            if problem:
                raise ValueError(f"{name[:80]!r}: {problem}")
        return value
