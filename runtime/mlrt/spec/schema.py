"""The spec's schema: the pydantic models of a TrainingJob document and its field types.

These models check structure, types and ranges only; what needs the installed
plugins (algorithm, backend, report and data-scheme names, a backend's own
settings block) is checked in :mod:`mlrt.spec.checks`, and pydantic's errors
become one line each in :mod:`mlrt.spec.errors`. Every model refuses unknown
fields and non-finite numbers. Bounds come from :mod:`mlrt.limits`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from mlrt import limits
from mlrt.names import DNS_LABEL, env_name_problem, image_problem
from mlrt.units import parse_cpu, parse_duration, parse_memory

API_VERSION = "mlrt/v1"

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
        if not DNS_LABEL.fullmatch(value):
            raise ValueError(
                "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            )
        return value


class Channel(_Model):
    """One data channel: where it is, its table format and the role of its columns.

    ``label`` and ``id`` name those columns. Every other column is a model feature
    unless a role says otherwise (see :mod:`mlrt.columns`): ``features`` lists the
    only columns the model sees, or ``exclude`` the ones it does not; ``weight``
    names a per-example weight (scikit-learn's ``sample_weight``, the torch loss);
    ``analysis`` lists columns read for reports only. A channel that sets none of
    these four takes the ``train`` channel's."""

    uri: str
    format: Literal["csv", "parquet"] | None = None
    label: str | None = None
    id: str | None = None
    features: list[str] | None = Field(None, min_length=1, max_length=limits.MAX_ITEMS)
    exclude: list[str] = Field([], max_length=limits.MAX_ITEMS)
    weight: str | None = None
    analysis: list[str] = Field([], max_length=limits.MAX_ITEMS)

    @model_validator(mode="after")
    def _one_role_each(self) -> Channel:
        if self.features is not None and self.exclude:
            raise ValueError("set features (the columns the model sees) or exclude (those it does not), not both")
        named = [("label", self.label), ("id", self.id), ("weight", self.weight)]
        named += [("features", c) for c in self.features or []] + [("analysis", c) for c in self.analysis]
        seen: dict[str, str] = {}
        for role, column in named:
            if column is None:
                continue
            if column in seen and seen[column] != role:
                raise ValueError(f"column {column!r} is both {seen[column]} and {role}; give each column one role")
            seen[column] = role
        return self


def _channel_shorthand(value: object) -> object:
    return {"uri": value} if isinstance(value, str) else value


def _posix_names(variables: dict[str, Any]) -> dict[str, Any]:
    """``variables`` when every key is a POSIX environment variable name (see :mod:`mlrt.names`)."""
    for name in variables:
        problem = env_name_problem(name)
        if problem:
            raise ValueError(f"{name[:80]!r}: {problem}")
    return variables


class Compute(_Model):
    """``spec.compute``: where and on how much hardware the workers run.

    ``warm`` (local backend) forks each Python worker from a pre-started
    interpreter that already imported mlrt and the algorithm, instead of
    starting a fresh one: milliseconds instead of a second for short runs.
    Tuning trials use it unless their template says ``warm: false``.

    A backend's own settings go in a block named after it
    (``compute.kubernetes``), checked by that backend's
    :meth:`~mlrt.launchers.Launcher.settings_model` (:mod:`mlrt.spec.checks`):
    the schema lets such keys through, and the checks refuse any that names
    no backend with settings.

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

    model_config = ConfigDict(extra="allow")


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
    """``spec.retries``: how many times a failed attempt is retried, with exponential backoff,
    and which failures are (``on``, see :mod:`mlrt.failures`): ``infrastructure`` (signals,
    out of memory, eviction, a lost node or worker, an unreachable rendezvous, a launch the
    backend may retry) or ``any`` (code bugs too)."""

    max: int = Field(0, ge=0, le=limits.MAX_RETRIES)
    backoff: Backoff = 1.0
    on: Literal["infrastructure", "any"] = "infrastructure"


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


class Threshold(_Model):
    """``spec.evaluation.threshold``: how a binary classifier's decision threshold is chosen
    on ``channel`` (default ``validation``); see :mod:`mlrt.thresholds`.

    ``optimize`` is ``min_cost`` (the lowest mean cost of the cost-matrix business metric
    ``metric``, by default the only one), ``f_beta`` (the highest F-beta, ``beta`` default
    1), ``precision`` (the highest recall whose precision is at least ``target``) or
    ``recall`` (the highest precision whose recall is at least ``target``)."""

    optimize: Literal["min_cost", "f_beta", "precision", "recall"]
    beta: float = Field(1.0, gt=0, le=100)
    target: float | None = Field(None, gt=0, le=1)
    metric: str | None = None
    channel: str = "validation"

    @model_validator(mode="after")
    def _settings_fit(self) -> Threshold:
        if self.optimize in ("precision", "recall") and self.target is None:
            raise ValueError(f"optimize: {self.optimize} needs a target, e.g. target: 0.9")
        if self.optimize not in ("precision", "recall") and self.target is not None:
            raise ValueError(f"target is for optimize: precision or recall, not {self.optimize}")
        if self.optimize != "f_beta" and "beta" in self.model_fields_set:
            raise ValueError(f"beta is for optimize: f_beta, not {self.optimize}")
        if self.optimize != "min_cost" and self.metric is not None:
            raise ValueError(f"metric (a cost-matrix business metric) is for optimize: min_cost, not {self.optimize}")
        return self


class Evaluation(_Model):
    """``spec.evaluation``: how the trained model is turned into decisions (``threshold``)."""

    threshold: Threshold | None = None


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


def gate_target(gate: Mapping[str, Any]) -> tuple[str, str] | None:
    """The report and the value a ``spec.gates`` entry bounds, or None for a ``compare_to`` gate.

    ``{report: acme.calibration, value: ece}`` names them apart; the short form
    ``{metric: slices.worst_accuracy}`` is the report up to the last dot and the value after it."""
    if isinstance(gate.get("report"), str):
        return gate["report"], str(gate.get("value") or "")
    if isinstance(gate.get("metric"), str):
        report, _, value = gate["metric"].rpartition(".")
        return report, value
    return None


class Gate(_Model):
    """One ``spec.gates`` entry: a condition the run must meet to succeed.

    Either bound a number a report gives (its ``gate_values``; ``mlrt report
    RUN --json`` shows them) with ``min`` and/or ``max``: name the report and
    the value apart, ``{report: acme.calibration, value: ece, max: 0.05}``,
    which works for every name, or in short ``{metric: slices.worst_accuracy,
    min: 0.9}``, the report up to the last dot. Or compare with an earlier
    run: ``{compare_to: RUN, max_regression: 0.02}`` fails when any slice,
    class or group metric is worse by more than that. ``mlrt validate`` checks
    that the report exists and, when the report declares its value names
    (:attr:`mlrt.reports.Report.gate_value_names`), that it gives the value."""

    metric: str | None = None
    report: str | None = None
    value: str | None = None
    min: float | None = None
    max: float | None = None
    compare_to: str | None = None
    max_regression: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        if self.metric is not None or self.report is not None or self.value is not None:
            if self.compare_to is not None or self.max_regression is not None:
                raise ValueError("a gate on a report value takes min and/or max, not compare_to")
            if self.metric is not None and (self.report is not None or self.value is not None):
                raise ValueError("set metric (REPORT.VALUE) or report and value, not both")
            if self.metric is None and not (self.report and self.value):
                raise ValueError("set both report and value, e.g. {report: acme.calibration, value: ece, max: 0.05}")
            report, _, value = (self.metric or "").rpartition(".")
            if self.metric is not None and not (report and value):
                raise ValueError(
                    "metric must be REPORT.VALUE, e.g. slices.worst_accuracy"
                    " (or name them apart: {report: acme.calibration, value: ece})"
                )
            if self.min is None and self.max is None:
                raise ValueError("set min and/or max for the value")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min:g}) is above max ({self.max:g}): no value can pass")
        elif self.compare_to is None or self.max_regression is None:
            raise ValueError("set report and value (or metric) with min/max, or compare_to with max_regression")
        return self


class TrainingJobSpec(_Model):
    """``spec`` of a TrainingJob: what to run, on what data, with which settings.

    ``priority`` orders the controller's queue: a higher priority is launched
    first, first come first served within one priority (default 0). A tuning
    job's trials take the priority of its ``template``.

    ``contract`` is what the workers are given: ``mlrt`` (the ``MLRT_*`` variables) or
    ``sagemaker``, SageMaker's training layout and ``SM_*`` variables as well, the
    hyperparameters also passed as ``--name value`` arguments (:mod:`mlrt.sagemaker_contract`)."""

    algorithm: str | None = None
    image: str | None = None
    command: list[str] | None = None
    working_dir: str | None = None
    source: str | None = None
    """The folder of the job's code, packed into a source bundle for a ``command:`` job
    (:mod:`mlrt.bundles`); default: the spec's folder."""
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
    evaluation: Evaluation = Evaluation()
    reports: list[str] = []
    report_options: dict[str, dict[str, Any]] = {}
    baseline: Baseline | None = None
    slices: list[Annotated[SliceColumn, BeforeValidator(_slice_shorthand)]] = []
    protected: list[str] = []
    tags: Tags | None = None
    gates: list[Gate] = []
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    priority: int = Field(0, ge=-limits.MAX_PRIORITY, le=limits.MAX_PRIORITY)
    contract: Literal["mlrt", "sagemaker"] = "mlrt"

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
