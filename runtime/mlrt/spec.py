"""The training job spec: its schema, loading, ``--set`` overrides and validation.

A spec is YAML with a Kubernetes-style envelope (``apiVersion: mlrt/v1``,
``kind: TrainingJob``, ``metadata``, ``spec``). :func:`load_spec` reads one,
applies overrides, and checks everything a user can get wrong before anything
launches: structure and types (pydantic), then what only the installed
plugins know (algorithm names, hyperparameters, backends, data URIs, report
names). Every problem is reported at once, one line each, prefixed with its
field path. The returned :class:`LoadedSpec` carries the spec as submitted and
as resolved (defaults filled in, relative paths made absolute).

Every spec is read and parsed within the bounds of :mod:`mlrt.limits` (its
docstring is the reference table): size, encoding, YAML aliases and nesting,
finite numbers, and the maxima of durations, quantities, counts and lengths.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlrt import limits
from mlrt.names import env_name_problem, image_problem
from mlrt.units import parse_cpu, parse_duration, parse_memory

API_VERSION = "mlrt/v1"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

RunDuration = Annotated[float, BeforeValidator(functools.partial(parse_duration, maximum=limits.MAX_RUN_DURATION))]
"""A run's or a search's time limit, or how long finished pods are kept: at most 365d."""
WaitDuration = Annotated[float, BeforeValidator(functools.partial(parse_duration, maximum=limits.MAX_WAIT_DURATION))]
"""A grace period or a timeout: at most 7d."""
Backoff = Annotated[float, BeforeValidator(functools.partial(parse_duration, maximum=limits.MAX_BACKOFF))]
Cpu = Annotated[float, BeforeValidator(functools.partial(parse_cpu, maximum=limits.MAX_CPU))]


def _check_memory(value: object) -> str:
    parse_memory(value, maximum=limits.MAX_MEMORY)
    return str(value)


Memory = Annotated[str, BeforeValidator(_check_memory)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Metadata(_Model):
    """``metadata``: the job's name (lowercase letters, digits and dashes) and labels."""

    name: str
    labels: dict[str, str] = Field({}, max_length=limits.MAX_LABELS)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            )
        return value


class Channel(_Model):
    """One data channel: where it is, its table format and which columns are label and id."""

    uri: str
    format: Literal["csv", "parquet"] | None = None
    label: str | None = None
    id: str | None = None


def _channel_shorthand(value: object) -> object:
    return {"uri": value} if isinstance(value, str) else value


class SecretKey(_Model):
    """One key of a Kubernetes Secret, used as an environment variable's value."""

    secret: str
    key: str


class Toleration(_Model):
    """A Kubernetes toleration (``key``, ``operator``, ``value``, ``effect``, ``toleration_seconds``)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0, le=limits.MAX_COUNT)


class Volume(_Model):
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

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63")
        return value

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


def managed_namespaces() -> list[str]:
    """``MLRT_KUBE_NAMESPACES`` (comma-separated), else ``["default"]``."""
    return [n.strip() for n in os.environ.get("MLRT_KUBE_NAMESPACES", "").split(",") if n.strip()] or ["default"]


def _posix_names(variables: dict[str, Any]) -> dict[str, Any]:
    """``variables`` when every key is a POSIX environment variable name (see :mod:`mlrt.names`)."""
    for name in variables:
        problem = env_name_problem(name)
        if problem:
            raise ValueError(f"{name[:80]!r}: {problem}")
    return variables


class Kubernetes(_Model):
    """``spec.compute.kubernetes``: how the workers run as pods (``backend: kubernetes``).

    ``secret_env`` maps an environment variable to a Secret key (values never
    appear in the manifest); ``env_from_secrets`` exposes every key of the named
    Secrets. ``queue`` names a Kueue LocalQueue: the Job is created suspended and
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

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63")
        return value

    _env_names = field_validator("secret_env")(_posix_names)


class Compute(_Model):
    """``spec.compute``: where and on how much hardware the workers run.

    ``warm`` (local backend) forks each Python worker from a pre-started
    interpreter that already imported mlrt and the algorithm, instead of
    starting a fresh one: milliseconds instead of a second for short runs.
    Tuning trials use it unless their template says ``warm: false``.
    ``kubernetes`` holds the pod settings of the kubernetes backend.

    ``cpu``, ``memory`` and ``gpus`` are per worker. ``memory`` (``512Mi``,
    ``2Gi``) is a limit on every backend, and a worker that uses more fails
    with exit code 137: a pod is OOMKilled (``resources.limits``), a container
    is killed by the kernel at its ``--memory``, and a local worker whose
    process tree holds more is killed by the launcher (see
    :mod:`mlrt_local.memory`); the local and container backends' reasons
    start ``out of memory:``."""

    backend: str = "local"
    workers: int = Field(1, ge=1, le=limits.MAX_WORKERS)
    cpu: Cpu | None = None
    memory: Memory | None = None
    gpus: int = Field(0, ge=0, le=limits.MAX_GPUS)
    rendezvous_timeout: WaitDuration = 300.0
    warm: bool = False
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)


class Output(_Model):
    """``spec.output``: where artifacts and checkpoints go: a ``file://`` path or
    ``s3://bucket/prefix`` (each run gets ``<path>/<run id>``); default:
    ``MLRT_DEFAULT_OUTPUT``, else under MLRT_HOME."""

    path: str | None = None


class Stopping(_Model):
    """``spec.stopping``: when a run is stopped even though it has not finished.

    ``max_runtime`` stops the run (SIGTERM, then SIGKILL after
    ``grace_period``) as TIMED_OUT. Iterative algorithms also honour
    ``max_epochs`` and plateau stopping: no improvement of ``metric``
    (default ``validation_loss``) by at least ``min_delta`` for ``patience``
    epochs; ``mode`` says whether lower or higher is better (default: lower
    for names with loss, error, rmse or mae, higher otherwise)."""

    max_runtime: RunDuration | None = None
    max_epochs: int | None = Field(None, ge=1, le=limits.MAX_COUNT)
    patience: int | None = Field(None, ge=1, le=limits.MAX_COUNT)
    min_delta: float = Field(0.0, ge=0)
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    grace_period: WaitDuration = 30.0


class Retries(_Model):
    """``spec.retries``: how many times a failed attempt is retried, with exponential backoff."""

    max: int = Field(0, ge=0, le=limits.MAX_RETRIES)
    backoff: Backoff = 1.0


class MetricPattern(_Model):
    """A metric read from the worker log: ``regex`` captures the value in its first group
    (or a group named ``value``); an optional group named ``step`` gives the step.

    The controller runs ``regex`` over every log line, so it is at most 1,000
    characters and may not nest an unbounded repeat in a repeat (see
    :func:`mlrt.limits.regex_problem`)."""

    name: str
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        problem = limits.regex_problem(value)
        if problem:
            raise ValueError(problem)
        if re.compile(value).groups < 1:
            raise ValueError("needs a capturing group around the value, e.g. 'loss=([0-9.]+)'")
        return value


class Checkpoint(_Model):
    """``spec.checkpoint``: how often iterative algorithms save a checkpoint.

    Every epoch by default; ``every: N`` also saves every N optimizer steps."""

    every: int | None = Field(None, ge=1, le=limits.MAX_COUNT)


class InitFrom(_Model):
    """``spec.init_from``: start from another run's model or a weights file.

    ``freeze`` lists parameter-name prefixes to keep fixed, or ``all_but_head``."""

    run: str | None = None
    path: str | None = None
    freeze: list[str] = []

    @model_validator(mode="after")
    def _one_source(self) -> InitFrom:
        if bool(self.run) == bool(self.path):
            raise ValueError("set exactly one of run (a run id) or path (a weights file)")
        return self


class BusinessMetric(_Model):
    """A metric the project is judged on, evaluated per channel (see :mod:`mlrt.business`)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    cost_matrix: dict[str, dict[str, float]] | None = None
    weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _one_definition(self) -> BusinessMetric:
        if (self.cost_matrix is None) == (self.weights is None):
            raise ValueError(
                "set exactly one of cost_matrix ({actual: {predicted: cost}}) or weights ({metric: weight})"
            )
        return self


class Baseline(_Model):
    """The level a model is judged against, e.g. human-level performance.

    ``metric``/``value`` name a metric the run records (``validation_accuracy:
    0.99``); ``bias_variance`` turns it into an error (1 - value for scores
    such as accuracy, the value itself for errors and losses). ``source``
    says where the number comes from (``human-level``, ``literature``,
    ``old system``)."""

    metric: str
    value: float
    source: str | None = None


class SliceColumn(_Model):
    """One ``spec.slices`` entry: a feature column to break metrics down by.

    Numbers are binned: ``bins`` is a count of quantile bins or a list of edges."""

    column: str
    bins: int | list[float] | None = None

    @field_validator("bins")
    @classmethod
    def _bin_count(cls, value: int | list[float] | None) -> int | list[float] | None:
        if isinstance(value, int) and not 1 <= value <= limits.MAX_COUNT:
            raise ValueError(f"a count of bins is 1 .. {limits.MAX_COUNT}, got {value}")
        return value


def _slice_shorthand(value: Any) -> Any:
    return {"column": value} if isinstance(value, str) else value


class TagRule(_Model):
    """A rule that tags an example (``error_categories``); set one test.

    ``contains``/``regex`` test the text of ``column``; ``equals`` its value;
    ``min``/``max`` bound a number (inclusive); ``function`` is
    ``module:callable`` taking the report frame and returning a boolean per row."""

    column: str | None = None
    contains: str | None = None
    regex: str | None = None
    equals: str | float | int | bool | None = None
    min: float | None = None
    max: float | None = None
    function: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> TagRule:
        tests = [self.contains, self.regex, self.equals, self.function]
        ranged = self.min is not None or self.max is not None
        if sum(t is not None for t in tests) + ranged != 1:
            raise ValueError("set exactly one of contains, regex, equals, min/max or function")
        if self.function is None and not self.column:
            raise ValueError("set column (the feature the rule looks at)")
        if self.function is not None and ":" not in self.function:
            raise ValueError("function must be module:callable")
        return self


class Tags(_Model):
    """``spec.tags``: categories of examples for ``error_categories`` (not mutually exclusive).

    ``rules`` tag by rule; ``column`` names a column that already holds tags
    (``separator``-separated); ``files`` are reviewed CSVs (``id`` and
    ``tags`` columns), such as the sample ``error_categories`` writes, read
    back after a person tagged them."""

    rules: dict[str, TagRule] = {}
    column: str | None = None
    separator: str = ","
    files: list[str] = []


class Gate(_Model):
    """One ``spec.gates`` entry: a condition the run must meet to succeed.

    Either bound a report number, ``{metric: slices.worst_accuracy, min: 0.9}``
    or ``{metric: fairness.max_equalized_odds_difference, max: 0.1}`` (see
    ``mlrt report RUN --json`` for each report's ``gate_values``), or compare
    with an earlier run: ``{compare_to: RUN, max_regression: 0.02}`` fails when
    any slice, class or group metric is worse by more than that."""

    metric: str | None = None
    min: float | None = None
    max: float | None = None
    compare_to: str | None = None
    max_regression: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        if self.metric is not None:
            if self.compare_to is not None or self.max_regression is not None:
                raise ValueError("a metric gate takes min and/or max, not compare_to")
            if self.min is None and self.max is None:
                raise ValueError("set min and/or max for the metric")
            if "." not in self.metric:
                raise ValueError("metric must be <report>.<value>, e.g. slices.worst_accuracy")
        elif self.compare_to is None or self.max_regression is None:
            raise ValueError("set metric with min/max, or compare_to with max_regression")
        return self


class TrainingJobSpec(_Model):
    """``spec`` of a TrainingJob: what to run, on what data, with which settings.

    ``priority`` orders the controller's queue: a higher priority is launched
    first, first come first served within one priority (default 0). A tuning
    job's trials take the priority of its ``template``."""

    algorithm: str | None = None
    image: str | None = None
    command: list[str] | None = None
    working_dir: str | None = None
    env: dict[str, str] = Field({}, max_length=limits.MAX_ENV)
    data: dict[str, Annotated[Channel, BeforeValidator(_channel_shorthand)]] = Field({}, max_length=limits.MAX_CHANNELS)
    hyperparameters: dict[str, Any] = Field({}, max_length=limits.MAX_HYPERPARAMETERS)
    compute: Compute = Compute()
    output: Output = Output()
    stopping: Stopping = Stopping()
    checkpoint: Checkpoint = Checkpoint()
    init_from: InitFrom | None = None
    retries: Retries = Retries()
    metrics: list[MetricPattern] = Field([], max_length=limits.MAX_METRICS)
    business_metrics: list[BusinessMetric] = []
    reports: list[str] = []
    report_options: dict[str, dict[str, Any]] = {}
    baseline: Baseline | None = None
    slices: list[Annotated[SliceColumn, BeforeValidator(_slice_shorthand)]] = []
    protected: list[str] = []
    tags: Tags | None = None
    gates: list[Gate] = []
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    priority: int = Field(0, ge=-limits.MAX_PRIORITY, le=limits.MAX_PRIORITY)

    @model_validator(mode="after")
    def _one_entry_point(self) -> TrainingJobSpec:
        if self.algorithm and self.command:
            raise ValueError("set either algorithm or command, not both")
        if not self.algorithm and not self.command and not self.image:
            raise ValueError("set algorithm (a registered algorithm) or command (a program to run)")
        return self

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must name a program, e.g. [python, train.py]")
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        problem = image_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    _env_names = field_validator("env")(_posix_names)


class TrainingJob(_Model):
    """A whole TrainingJob document."""

    api_version: Literal["mlrt/v1"] = Field(alias="apiVersion")
    kind: Literal["TrainingJob"]
    metadata: Metadata
    spec: TrainingJobSpec


class SpecError(Exception):
    """The spec cannot run; ``problems`` has one line per problem, field path first."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class SpecTooLarge(SpecError):
    """The spec's text is over the size limit (:func:`mlrt.limits.max_spec_bytes`); the API answers 413."""


@dataclasses.dataclass
class LoadedSpec:
    """A validated spec with what mlrt needs to launch and record it."""

    job: TrainingJob
    source_text: str
    source_path: Path | None
    base_dir: Path
    overrides: list[str]
    hyperparameters: dict[str, Any]

    @property
    def name(self) -> str:
        return self.job.metadata.name

    def resolved(self) -> dict[str, Any]:
        """The spec as it will run: defaults filled in, paths absolute, hyperparameters complete."""
        data = self.job.model_dump(mode="json", by_alias=True)
        data["spec"]["hyperparameters"] = self.hyperparameters
        return data


def apply_override(document: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.path=value`` override (value parsed as YAML within :mod:`mlrt.limits`) to ``document``."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError([f"--set {limits.cut(assignment)}: expected KEY=VALUE, e.g. spec.hyperparameters.C=0.5"])
    parts = key.strip().split(".")
    if len(parts) > limits.MAX_DEPTH or any(len(part) > limits.MAX_KEY_CHARS for part in parts):
        raise SpecError(
            [f"--set {limits.cut(key)}: at most {limits.MAX_DEPTH} keys of at most {limits.MAX_KEY_CHARS} characters"]
        )
    try:
        value = limits.load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, f"--set {limits.cut(key)}")]) from None
    target: Any = document
    for index, part in enumerate(parts[:-1]):
        nxt = parts[index + 1]
        if isinstance(target, list):
            if not part.isdecimal() or int(part) >= len(target):
                raise SpecError([f"--set {limits.cut(key)}: {'.'.join(parts[: index + 1])} is not an index of the list"])
            target = target[int(part)]
            if not isinstance(target, (dict, list)):
                raise SpecError([f"--set {limits.cut(key)}: {'.'.join(parts[: index + 1])} holds no fields"])
            continue
        if not isinstance(target.get(part), (dict, list)):
            target[part] = [] if nxt.isdecimal() and part == "command" else {}
        target = target[part]
    last = parts[-1]
    if isinstance(target, list):
        if not last.isdecimal() or int(last) > len(target):
            raise SpecError([f"--set {limits.cut(key)}: {limits.cut(last)} is not an index of the list"])
        if int(last) == len(target):
            target.append(value)
        else:
            target[int(last)] = value
    else:
        target[last] = value


def _field_names(model: type[BaseModel]) -> list[str]:
    return sorted(info.alias or name for name, info in model.model_fields.items())


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional and step into dict/list values to reach a model."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _unwrap(args[0])
    if origin in (dict, list):
        return (_unwrap(args[-1]),)  # a container: its items' type, wrapped in a tuple
    if origin in (typing.Union, types.UnionType):
        return next((_unwrap(a) for a in args if a is not type(None)), None)
    return annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose field is at ``loc`` (for 'allowed fields' hints)."""
    node: Any = TrainingJob
    for part in loc:
        if isinstance(node, tuple):  # inside a dict or list: ``part`` is a key or index
            node = node[0]
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return None
        fields = {info.alias or name: info for name, info in node.model_fields.items()}
        if part not in fields:
            return None
        node = _unwrap(fields[part].annotation)
    if isinstance(node, tuple):
        node = node[0]
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "literal_error": "must be {expected}",
    "finite_number": "must be a finite number",
    "too_long": "must have at most {max_length} entries",
    "string_too_long": "must be at most {max_length} characters",
}



def _describe_error(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc) or "(document)"
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        hint = f" (allowed: {', '.join(_field_names(owner))})" if owner else ""
        return f"{path}: unknown field{hint}"
    if kind == "missing":
        return f"{path}: required field is missing"
    context = error.get("ctx") or {}
    template = _MESSAGES.get(kind)
    message = template.format(**context) if template else str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    shown = error.get("input")
    if kind != "value_error" and shown is not None and not isinstance(shown, (dict, list)):
        message += f", got {limits.shown(shown)}"
    return f"{path}: {message}"


def _semantic_problems(document: dict[str, Any], base_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """Checks only the installed plugins can answer; also resolves hyperparameters."""
    from mlrt import plugins
    from mlrt.algorithms import resolve_hyperparameters
    from mlrt.data import uri_scheme

    problems: list[str] = []
    spec = document.get("spec") if isinstance(document.get("spec"), dict) else {}
    resolved_hp: dict[str, Any] = {}

    name = spec.get("algorithm")
    hyperparameters = spec.get("hyperparameters", {})
    if isinstance(name, str) and name:
        registry = plugins.algorithms()
        algorithm = registry.get(name)
        if algorithm is None:
            known = ", ".join(sorted(registry)) or "none installed"
            problems.append(f"spec.algorithm: unknown algorithm {name!r} (registered: {known})")
        elif isinstance(hyperparameters, dict) and len(hyperparameters) <= limits.MAX_HYPERPARAMETERS:
            resolved_hp, bad = resolve_hyperparameters(algorithm, hyperparameters)
            problems += [f"spec.hyperparameters.{key}: {text}" for key, text in bad.items()]
    elif isinstance(hyperparameters, dict):
        resolved_hp = dict(hyperparameters)

    compute = spec.get("compute") if isinstance(spec.get("compute"), dict) else {}
    backend = compute.get("backend", "local")
    launcher = plugins.launchers().get(backend) if isinstance(backend, str) else None
    if isinstance(backend, str) and launcher is None:
        known = ", ".join(sorted(plugins.launchers())) or "none installed"
        problems.append(f"spec.compute.backend: unknown backend {backend!r} (registered: {known})")
    if launcher is not None and spec.get("image") and not launcher.runs_images:
        problems.append(
            f"spec.image: the {backend} backend runs programs on this machine, not images;"
            " remove image or choose a backend that runs containers"
        )

    output = spec.get("output") if isinstance(spec.get("output"), dict) else {}
    out_path = output.get("path")
    if isinstance(out_path, str) and "://" in out_path and not out_path.startswith(("file://", "s3://")):
        problems.append(f"spec.output.path: use a file:// path or an s3://bucket/prefix, got {out_path!r}")
    elif isinstance(out_path, str) and out_path.startswith("s3://") and not out_path[5:].split("/", 1)[0]:
        problems.append(f"spec.output.path: {out_path!r} names no bucket; write s3://bucket/prefix")

    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    if len(data) > limits.MAX_CHANNELS:
        data = {}  # refused by the schema; resolving each channel would only make the refusal slow
    schemes = plugins.data_schemes()
    for channel, value in data.items():
        uri = value.get("uri") if isinstance(value, dict) else value
        if not isinstance(uri, str):
            continue
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", str(channel)):
            problems.append(f"spec.data.{channel}: channel names are letters, digits and '_'")
        scheme = schemes.get(uri_scheme(uri))
        if scheme is None:
            known = ", ".join(f"{s}://" for s in sorted(schemes)) or "none installed"
            problems.append(f"spec.data.{channel}: unsupported URI scheme in {uri!r} (supported: {known})")
            continue
        resolved = scheme.resolve(uri, base_dir)
        entry = value if isinstance(value, dict) else {}
        entry["uri"] = resolved
        if entry.get("label") is None:
            entry["label"] = scheme.default_label(resolved)
        data[channel] = entry
        problem = scheme.check(resolved)
        if problem:
            problems.append(f"spec.data.{channel}: {problem}")

    reports = spec.get("reports")
    if isinstance(reports, list):
        known_reports = plugins.reports()
        for index, report in enumerate(reports):
            if isinstance(report, str) and report not in known_reports:
                known = ", ".join(sorted(known_reports)) or "none installed"
                problems.append(f"spec.reports.{index}: unknown report {report!r} (registered: {known})")
    options = spec.get("report_options")
    if isinstance(options, dict):
        from mlrt.algorithms import resolve_values

        known_reports = plugins.reports()
        for name, given in options.items():
            if name not in known_reports:
                known = ", ".join(sorted(known_reports)) or "none installed"
                problems.append(f"spec.report_options.{name}: unknown report (registered: {known})")
            elif isinstance(given, dict):
                _, option_problems = resolve_values(known_reports[name].options, given, name, noun="option")
                problems += [f"spec.report_options.{name}.{key}: {why}" for key, why in option_problems.items()]
    return problems, resolved_hp


def _absolute(path_text: str, base_dir: Path) -> str:
    path = Path(path_text).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def parse_document(
    document: Any, *, source_text: str, source_path: Path | None, base_dir: Path, overrides: list[str]
) -> LoadedSpec:
    """Validate an already-parsed spec document (see :func:`load_spec`).

    A TuningJob document gives a :class:`mlrt.tuning_spec.LoadedTuning`."""
    if not isinstance(document, dict):
        raise SpecError(["(document): expected a mapping with apiVersion, kind, metadata and spec"])
    if len(overrides) > limits.MAX_OVERRIDES:
        raise SpecError([f"--set: at most {limits.MAX_OVERRIDES} overrides, got {len(overrides)}"])
    for assignment in overrides:
        apply_override(document, assignment)
    out_of_bounds = limits.document_problems(document)
    if out_of_bounds:
        raise SpecError(out_of_bounds)
    if document.get("kind") == "TuningJob":
        from mlrt.tuning_spec import parse_tuning

        return parse_tuning(
            document, source_text=source_text, source_path=source_path, base_dir=base_dir, overrides=overrides
        )
    if document.get("kind") != "TrainingJob":
        raise SpecError([f"kind: must be TrainingJob or TuningJob, got {document.get('kind')!r}"])
    problems, hyperparameters = _semantic_problems(document, base_dir)
    job = None
    try:
        job = TrainingJob.model_validate(document)
    except ValidationError as exc:
        problems = [_describe_error(e) for e in exc.errors()] + problems
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    assert job is not None
    spec = job.spec
    if spec.output.path:
        out = spec.output.path
        if out.startswith("file://"):
            spec.output.path = "file://" + _absolute(out.removeprefix("file://"), base_dir)
        elif "://" not in out:
            spec.output.path = "file://" + _absolute(out, base_dir)
    spec.working_dir = _absolute(spec.working_dir or ".", base_dir)
    if spec.init_from and spec.init_from.path:
        spec.init_from.path = _absolute(spec.init_from.path.removeprefix("file://"), base_dir)
    return LoadedSpec(
        job=job,
        source_text=source_text,
        source_path=source_path,
        base_dir=base_dir,
        overrides=list(overrides),
        hyperparameters=hyperparameters,
    )


def _size_limit() -> int:
    try:
        return limits.max_spec_bytes()
    except ValueError as exc:
        raise SpecError([str(exc)]) from None


def _too_large(name: str, limit: int) -> SpecTooLarge:
    return SpecTooLarge([f"{name}: the spec is larger than the limit of {limit} bytes (MLRT_MAX_SPEC_BYTES)"])


def read_spec_text(path: str | Path) -> str:
    """The text of the spec file at ``path``: at most the size limit read, UTF-8 checked; raises SpecError."""
    limit = _size_limit()
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)  # one byte over says "too large" without reading a huge file
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file ({exc.strerror})"]) from None
    if len(data) > limit:
        raise _too_large(str(path), limit)
    try:
        return limits.check_text(data)
    except ValueError as exc:
        raise SpecError([f"{path}: {exc}"]) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSpec:
    """Read, override and validate the spec file at ``path``; raise SpecError on any problem."""
    text = read_spec_text(path)
    return parse_text(text, str(path), Path(path).resolve(), overrides)


def _yaml_problem(exc: yaml.YAMLError, name: str) -> str:
    """One problem line for a YAML error in ``name``: where it is and what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{name}: not valid YAML (character #x{exc.character:04x} at offset {exc.position} is not allowed)"
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    problem = " ".join(f"{context}, {problem}".split() if context else problem.split())
    if isinstance(exc, limits.LimitError):
        return f"{name}:{where}: {problem}"
    if "maximum nesting depth" in problem:  # libyaml's own cap (1,000), met while it looks ahead past ours
        return f"{name}:{where}: nested deeper than {limits.MAX_DEPTH} levels"
    return f"{name}:{where}: not valid YAML ({problem})"


def _check_size(text: str, name: str) -> None:
    """Refuse text over the size limit or that is not UTF-8 (the API hands over decoded JSON strings)."""
    limit = _size_limit()
    if len(text) > limit:  # a character is at least one byte: no need to encode a huge text
        raise _too_large(name, limit)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SpecError(
            [f"{name}: not UTF-8 text: character U+{ord(text[exc.start]):04X} at offset {exc.start} cannot be encoded"]
        ) from None
    if size > limit:
        raise _too_large(name, limit)
    if "\x00" in text:
        raise SpecError([f"{name}: a binary file (it holds NUL bytes), not a YAML spec"])


def parse_text(text: str, name: str, source_path: Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSpec:
    """Validate spec ``text``; ``name`` is how problems refer to it, and relative
    paths in it are taken against ``source_path``'s folder.

    Everything is bounded (see :mod:`mlrt.limits`): text over the size limit
    raises :class:`SpecTooLarge`; aliases, nesting, numbers, strings and
    collections beyond their limits raise :class:`SpecError`."""
    _check_size(text, name)
    _check_size("\n".join(overrides), "--set")
    try:
        document = limits.load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, name)]) from None
    return parse_document(
        document,
        source_text=text,
        source_path=source_path,
        base_dir=source_path.parent,
        overrides=list(overrides),
    )
