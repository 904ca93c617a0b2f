"""The training job spec: its schema, loading, ``--set`` overrides and validation.

A spec is YAML with a Kubernetes-style envelope (``apiVersion: mlrt/v1``,
``kind: TrainingJob``, ``metadata``, ``spec``). :func:`load_spec` reads one,
applies overrides, and checks everything a user can get wrong before anything
launches: structure and types (pydantic), then what only the installed
plugins know (algorithm names, hyperparameters, backends and their settings
blocks, data URIs, report names, gates). Every problem is reported at once,
one line each, prefixed with its field path. The returned :class:`LoadedSpec`
carries the spec as submitted and as resolved (defaults filled in, relative
paths made absolute).

Every spec is read and parsed within the bounds of :mod:`mlrt.limits` (its
docstring is the reference table): size, encoding, YAML aliases and nesting,
finite numbers, and the maxima of durations, quantities, counts and lengths.

The package's modules: :mod:`mlrt.spec.schema` (the models),
:mod:`mlrt.spec.errors` (one line per problem), :mod:`mlrt.spec.checks` (what
needs the installed plugins) and :mod:`mlrt.spec.loading` (text, YAML,
overrides, the whole validation). Import from ``mlrt.spec``.
"""

from mlrt.spec.errors import SpecError, SpecTooLarge, describe_error, field_names, yaml_problem
from mlrt.spec.loading import LoadedSpec, apply_override, load_spec, parse_document, parse_text, read_spec_text
from mlrt.spec.schema import (
    API_VERSION,
    Backoff,
    Baseline,
    BusinessMetric,
    Channel,
    Checkpoint,
    Compute,
    Cpu,
    Gate,
    InitFrom,
    Memory,
    Metadata,
    MetricPattern,
    Output,
    Retries,
    RunDuration,
    SliceColumn,
    Stopping,
    TagRule,
    Tags,
    TrainingJob,
    TrainingJobSpec,
    WaitDuration,
    _Model,
    gate_target,
)

__all__ = [
    "API_VERSION",
    "Backoff",
    "Baseline",
    "BusinessMetric",
    "Channel",
    "Checkpoint",
    "Compute",
    "Cpu",
    "Gate",
    "InitFrom",
    "LoadedSpec",
    "Memory",
    "Metadata",
    "MetricPattern",
    "Output",
    "Retries",
    "RunDuration",
    "SliceColumn",
    "SpecError",
    "SpecTooLarge",
    "Stopping",
    "TagRule",
    "Tags",
    "TrainingJob",
    "TrainingJobSpec",
    "WaitDuration",
    "_Model",
    "apply_override",
    "describe_error",
    "field_names",
    "gate_target",
    "load_spec",
    "parse_document",
    "parse_text",
    "read_spec_text",
    "yaml_problem",
]
