"""The TuningJob spec: a trial template, a search space, an objective and when to stop.

```yaml
apiVersion: mlrt/v1
kind: TuningJob
metadata: {name: cancer-tune}
spec:
  template:                  # the spec of a TrainingJob: every trial starts from it
    algorithm: sklearn.hist_gradient_boosting
    data: {train: ..., validation: ...}
  objective: {metric: validation_roc_auc, goal: maximize}
  # or several, searched at once for their Pareto front (tuner nsga2 or random):
  # objectives: [{metric: validation_roc_auc, goal: maximize}, {metric: train_seconds, goal: minimize}]
  parameters:                # name -> range; the value goes to hyperparameters.<name>
    learning_rate: {type: float, min: 0.01, max: 0.3, scale: log}
    max_depth: {type: int, min: 2, max: 10}
    algorithm: {type: categorical, values: [sklearn.random_forest, sklearn.svm]}
  tuner: tpe                 # or with settings: {algorithm: NAME, setting: value, ...}
  max_trials: 30
  parallel_trials: 2
  max_failed_trials: 3
  early_stopping: {algorithm: asha, min_resource: 1, reduction_factor: 3}
  completion: {target: 0.995, no_improvement_trials: 10, max_runtime: 1h}
```

A parameter named ``algorithm`` chooses the trial's algorithm, so several
algorithms compete in one job; ``algorithms: [...]`` limits a parameter to
trials of those algorithms; ``path`` puts the value elsewhere in the trial's
spec. Validation builds the trial spec at the ends of every range, for every
algorithm, so a range the algorithm rejects is reported before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlrt import limits
from mlrt.spec import (
    LoadedSpec,
    Metadata,
    RunDuration,
    SpecError,
    _Model,
    describe_error,
    parse_document,
)
from mlrt.tuning import Parameter


class ParameterSpec(_Model):
    """One searched parameter (see the module docstring)."""

    type: Literal["float", "int", "categorical"]
    min: float | None = Field(None, ge=-limits.MAX_PARAMETER_BOUND, le=limits.MAX_PARAMETER_BOUND)
    max: float | None = Field(None, ge=-limits.MAX_PARAMETER_BOUND, le=limits.MAX_PARAMETER_BOUND)
    scale: Literal["linear", "log"] = "linear"
    step: float | None = Field(None, gt=0, le=limits.MAX_PARAMETER_BOUND)
    values: list[Any] | None = Field(None, max_length=limits.MAX_VALUES)
    path: str | None = None
    algorithms: list[str] | None = Field(None, max_length=limits.MAX_ALGORITHM_CHOICES)

    @model_validator(mode="after")
    def _range(self) -> ParameterSpec:
        if self.type == "categorical":
            if not self.values:
                raise ValueError("a categorical parameter needs a non-empty list of values")
            if self.min is not None or self.max is not None:
                raise ValueError("a categorical parameter has values, not min/max")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"a {self.type} parameter needs min and max")
        if self.values is not None:
            raise ValueError(f"a {self.type} parameter has min/max, not values")
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not be above max ({self.max:g})")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"a log scale needs min > 0, got {self.min:g}")
        if self.type == "int" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ValueError("an int parameter needs whole-number min and max")
        return self


class Objective(_Model):
    """What the search optimizes: a metric the trials log, and its direction."""

    metric: str
    goal: Literal["minimize", "maximize"]


class TunerSpec(BaseModel):
    """``algorithm`` names a tuner plugin; the other keys are its settings (its ``settings`` schema)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    algorithm: str


class EarlyStoppingSpec(BaseModel):
    """``algorithm`` names an early-stopping plugin; the other keys are its settings."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    algorithm: str


class Completion(_Model):
    """When the search ends before ``max_trials``: an objective value reached, no
    improvement of the best for N finished trials, or a time limit."""

    target: float | None = None
    no_improvement_trials: int | None = Field(None, ge=1, le=limits.MAX_TRIALS)
    max_runtime: RunDuration | None = None


MAX_OBJECTIVES = 4
"""A multi-objective search's objectives, at most (NSGA-II's fronts thin out beyond a few)."""


class TuningJobSpec(_Model):
    """``spec`` of a TuningJob.

    ``objective`` (one) or ``objectives`` (2 to :data:`MAX_OBJECTIVES`, searched for their
    Pareto front by a ``multi_objective`` tuner); with ``objectives``, ``objective`` is
    resolved to the first of them, which orders tables."""

    template: dict[str, Any]
    objective: Objective | None = None
    objectives: list[Objective] | None = Field(None, min_length=2, max_length=MAX_OBJECTIVES)
    parameters: dict[str, ParameterSpec] = Field(min_length=1, max_length=limits.MAX_PARAMETERS)
    tuner: str | TunerSpec = "tpe"
    max_trials: int = Field(20, ge=1, le=limits.MAX_TRIALS)
    parallel_trials: int = Field(1, ge=1, le=limits.MAX_PARALLEL_TRIALS)
    max_failed_trials: int = Field(3, ge=0, le=limits.MAX_TRIALS)
    early_stopping: EarlyStoppingSpec | None = None
    completion: Completion = Completion()
    warm_start: list[str] = Field([], max_length=limits.MAX_WARM_START)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @field_validator("parameters")
    @classmethod
    def _few_algorithms(cls, value: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        # Validation builds a trial for every algorithm choice: keep that quick.
        choices = value.get("algorithm")
        if choices is not None and len(choices.values or ()) > limits.MAX_ALGORITHM_CHOICES:
            raise ValueError(f"the algorithm parameter chooses among at most {limits.MAX_ALGORITHM_CHOICES} algorithms")
        return value

    @model_validator(mode="after")
    def _objectives(self) -> TuningJobSpec:
        if (self.objective is None) == (self.objectives is None):
            raise ValueError("give objective: {metric, goal}, or objectives: a list of 2 or more of them (not both)")
        if self.objectives is None:
            return self
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: each metric once, got {', '.join(metrics)}")
        if self.early_stopping is not None:
            raise ValueError("early_stopping judges one objective: remove it, or search one objective")
        if self.completion.target is not None or self.completion.no_improvement_trials is not None:
            raise ValueError("completion.target and no_improvement_trials need one objective: use max_runtime")
        self.objective = self.objectives[0]
        return self


class TuningJob(_Model):
    """A whole TuningJob document."""

    api_version: Literal["mlrt/v1"] = Field(alias="apiVersion")
    kind: Literal["TuningJob"]
    metadata: Metadata
    spec: TuningJobSpec


@dataclasses.dataclass
class LoadedTuning:
    """A validated TuningJob with its source, like :class:`mlrt.spec.LoadedSpec`."""

    job: TuningJob
    source_text: str
    source_path: Path | None
    base_dir: Path
    overrides: list[str]

    @property
    def name(self) -> str:
        return self.job.metadata.name

    def resolved(self) -> dict[str, Any]:
        data = self.job.model_dump(mode="json", by_alias=True)
        data["base_dir"] = str(self.base_dir)
        return data


def tuner_choice(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The tuner a resolved TuningJob spec names, and the settings it gives it (as written)."""
    tuner = spec["tuner"]
    if isinstance(tuner, str):
        return tuner, {}
    return tuner["algorithm"], {k: v for k, v in tuner.items() if k != "algorithm"}


def tuner_settings(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The tuner's settings checked against its schema and completed with defaults, and one
    line per problem (``spec.tuner.step: must be <= 1, got 5``)."""
    from mlrt import plugins
    from mlrt.algorithms import resolve_values

    name, given = tuner_choice(spec)
    tuner = plugins.tuners()[name]
    settings, bad = resolve_values(tuner.settings, given, name, noun="setting")
    return settings, [f"spec.tuner.{key}: {text}" for key, text in bad.items()]


def search_space(spec: dict[str, Any]) -> list[Parameter]:
    """The tuner's view of ``spec.parameters`` (a resolved TuningJob spec)."""
    space = []
    for name, p in spec["parameters"].items():
        path = p.get("path") or ("algorithm" if name == "algorithm" else f"hyperparameters.{name}")
        space.append(
            Parameter(
                name=name,
                type=p["type"],
                path=path,
                min=p.get("min"),
                max=p.get("max"),
                scale=p.get("scale", "linear"),
                step=p.get("step"),
                values=tuple(p.get("values") or ()),
            )
        )
    return space


def applicable(spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` minus those limited to other algorithms than the trial's."""
    algorithm = params.get("algorithm", spec["template"].get("algorithm"))
    limits = {name: p.get("algorithms") for name, p in spec["parameters"].items()}
    return {k: v for k, v in params.items() if not limits.get(k) or algorithm in limits[k]}


def trial_document(resolved: dict[str, Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The TrainingJob document of one trial: the template with ``params`` applied."""
    spec = resolved["spec"]
    template = copy.deepcopy(spec["template"])
    paths = {p.name: p.path for p in search_space(spec)}
    for key, value in applicable(spec, params).items():
        target = template
        *parents, last = paths[key].split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    if "seed" not in template and spec.get("seed") is not None:
        template["seed"] = spec["seed"]
    compute = template.setdefault("compute", {})
    if isinstance(compute, dict):
        compute.setdefault("warm", True)
    labels = dict(resolved["metadata"].get("labels") or {})
    return {
        "apiVersion": "mlrt/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": labels},
        "spec": template,
    }


def load_trial(resolved: dict[str, Any], name: str, params: dict[str, Any]) -> LoadedSpec:
    """Validate and resolve one trial's TrainingJob (raises SpecError)."""
    document = trial_document(resolved, name, params)
    return parse_document(document, source_text="", source_path=None, base_dir=Path(resolved["base_dir"]), overrides=[])


def _corners(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter sets at the ends of every range, for every algorithm choice."""
    algorithms = spec["parameters"].get("algorithm", {}).get("values") or [None]
    sets = []
    for end in (0, -1):
        for algorithm in algorithms:
            params = {}
            for name, p in spec["parameters"].items():
                if name == "algorithm":
                    params[name] = algorithm
                elif p["type"] == "categorical":
                    params[name] = p["values"][end]
                else:
                    value = p["min"] if end == 0 else p["max"]
                    params[name] = int(value) if p["type"] == "int" else float(value)
            sets.append(params)
    return sets


def first_trial_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """The parameters the job's tuner suggests first for a fresh search (what ``mlrt validate``
    shows as the first trial), with the spec's seed (0 when it has none: ``mlrt submit`` then
    draws one). A tuner that raises is a SpecError naming it; one with nothing to suggest gives
    the low end of every range."""
    from mlrt import plugins

    name, _ = tuner_choice(spec)
    tuner = copy.deepcopy(plugins.tuners()[name])
    try:
        with plugins.blame("tuners", name):
            tuner.configure(tuner_settings(spec)[0])
            seed, parallel = spec.get("seed") or 0, spec["parallel_trials"]
            goals = (
                tuple(o["goal"] for o in spec["objectives"]) if spec.get("objectives") else spec["objective"]["goal"]
            )
            tuner.start(search_space(spec), goals, seed, parallel, [])
            params = tuner.suggest(1)
    except plugins.PluginFailure as failure:
        raise SpecError([f"spec.tuner: {failure}"]) from None
    if not isinstance(params, dict):
        params = _corners(spec)[0]
    return applicable(spec, params)


def _semantic_problems(loaded: LoadedTuning) -> list[str]:
    from mlrt import plugins
    from mlrt.algorithms import resolve_values

    problems: list[str] = []
    resolved = loaded.resolved()
    spec = resolved["spec"]
    tuner_name, _ = tuner_choice(spec)
    tuner = plugins.tuners().get(tuner_name)
    field = "spec.tuner" if isinstance(spec["tuner"], str) else "spec.tuner.algorithm"
    if tuner is None:
        problems.append(f"{field}: {plugins.unknown('tuners', tuner_name)}")
    elif spec.get("objectives") and not tuner.multi_objective:
        able = ", ".join(sorted(name for name, t in plugins.tuners().items() if t.multi_objective))
        problems.append(f"{field}: {tuner_name} searches one objective; with objectives use one of: {able}")
    else:
        problems += tuner_settings(spec)[1]
        try:
            with plugins.blame("tuners", tuner_name):
                problem = tuner.check(search_space(spec))
        except plugins.PluginFailure as failure:
            problem = str(failure)
        if problem:
            problems.append(f"spec.parameters: {problem}")
    stopping = spec.get("early_stopping")
    if stopping:
        stopper = plugins.early_stoppers().get(stopping["algorithm"])
        if stopper is None:
            problems.append(
                f"spec.early_stopping.algorithm: {plugins.unknown('early_stoppers', stopping['algorithm'])}"
            )
        else:
            settings = {k: v for k, v in stopping.items() if k != "algorithm"}
            _, bad = resolve_values(stopper.settings, settings, stopping["algorithm"], noun="setting")
            problems += [f"spec.early_stopping.{key}: {text}" for key, text in bad.items()]
    tuned = set(spec["parameters"])
    for params in _corners(spec):
        try:
            load_trial(resolved, f"{loaded.name}-check", params)
        except SpecError as exc:
            for line in exc.problems:
                field, _, text = line.partition(": ")
                parts = field.split(".")
                if field.startswith("spec.hyperparameters.") and parts[2] in tuned:
                    problems.append(f"spec.parameters.{parts[2]}: {text}")
                elif field == "spec.algorithm" and "algorithm" in tuned:
                    problems.append(f"spec.parameters.algorithm: {text}")
                elif field.startswith("spec."):
                    problems.append(f"spec.template.{field[5:]}: {text}")
                else:
                    problems.append(f"spec.template: {line}")
    return list(dict.fromkeys(problems))


def parse_tuning(
    document: dict[str, Any], *, source_text: str, source_path: Path | None, base_dir: Path, overrides: list[str]
) -> LoadedTuning:
    """Validate a TuningJob document (overrides already applied); raise SpecError."""
    try:
        job = TuningJob.model_validate(document)
    except ValidationError as exc:
        raise SpecError([describe_error(e, TuningJob) for e in exc.errors()]) from None
    loaded = LoadedTuning(job, source_text, source_path, base_dir, overrides)
    problems = _semantic_problems(loaded)
    if problems:
        raise SpecError(problems)
    return loaded
