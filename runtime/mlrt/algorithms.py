"""What an algorithm plugin implements, and how mlrt checks its hyperparameters.

An algorithm is a named recipe that turns data channels and hyperparameters
into a fitted model. mlrt owns everything around it: validating the
hyperparameters against the declared schema, loading the channels, evaluating
the model on every channel, saving it and writing the predictions file that
reports read. A minimal plugin::

    from mlrt import hookimpl
    from mlrt.algorithms import Algorithm, Hyperparameter

    class Stump(Algorithm):
        name = "acme.stump"
        task = "classification"
        description = "A depth-1 decision tree."
        hyperparameters = {"criterion": Hyperparameter(str, "gini", choices=("gini", "entropy"))}

        def train(self, ctx):
            from sklearn.tree import DecisionTreeClassifier
            train = ctx.channels["train"]
            model = DecisionTreeClassifier(max_depth=1, random_state=ctx.seed, **ctx.hyperparameters)
            return model.fit(train.features, train.labels)

    @hookimpl
    def mlrt_algorithms():
        return [Stump()]
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One entry of an algorithm's hyperparameter schema.

    ``type`` is one of ``float``, ``int``, ``str`` or ``bool``; ``default`` is
    used when the job does not set it (``None`` means the parameter is
    optional and left unset). ``min``/``max`` bound numbers (inclusive),
    ``choices`` restricts values, ``log`` hints that a tuner should search the
    range on a log scale, and ``nullable`` allows an explicit ``null``.
    """

    type: type
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False
    nullable: bool = False
    help: str = ""

    def describe(self) -> str:
        """A short human description such as ``float in [1e-06, 1000000.0]``."""
        text = self.type.__name__
        if self.choices is not None:
            text += " one of " + ", ".join(map(str, self.choices))
        elif self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else self.min
            hi = "inf" if self.max is None else self.max
            text += f" in [{lo}, {hi}]"
        return text

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Return ``(coerced value, None)`` or ``(None, problem)`` for ``value``."""
        if value is None:
            return (None, None) if self.nullable else (None, f"must be a {self.describe()}, not null")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is bool or isinstance(value, bool):
            ok = isinstance(value, bool) and self.type is bool
        else:
            ok = isinstance(value, self.type)
        if not ok:
            from mlrt.limits import shown

            return None, f"must be a {self.describe()}, got {shown(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"must be a finite {self.describe()}, got {value}"
        if self.choices is not None and value not in self.choices:
            from mlrt.limits import shown

            return None, f"must be one of {', '.join(map(str, self.choices))}, got {shown(value)}"
        if self.min is not None and value < self.min:
            return None, f"must be >= {self.min}, got {value!r}"
        if self.max is not None and value > self.max:
            return None, f"must be <= {self.max}, got {value!r}"
        return value, None


@dataclasses.dataclass
class Dataset:
    """One loaded data channel: feature columns, labels (if any) and row ids.

    ``features`` holds only the columns the model may see (the channel's ``features``
    or all but its ``exclude``, ``weight`` and analysis columns; see :mod:`mlrt.columns`).
    ``weights`` is the per-example weight column when the channel names one: an
    algorithm that sets :attr:`Algorithm.takes_weights` passes it to its fit or loss.
    ``analysis`` holds the columns read for reports only (protected attributes, slice
    and tag columns that are not features), row-aligned; reports see them, the model does not."""

    name: str
    features: pd.DataFrame
    labels: pd.Series | None
    ids: pd.Series
    weights: pd.Series | None = None
    analysis: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.features)


@dataclasses.dataclass
class TrainContext:
    """Everything ``Algorithm.train`` receives.

    ``hyperparameters`` are already validated and completed with defaults;
    ``channels`` maps channel names (``train``, ``validation``, ...) to loaded
    datasets; ``log_metric(key, value, step)`` records a metric (use it for
    per-epoch curves; mlrt then computes each channel's final metrics, except
    those whose key the algorithm logged itself, so a series is never repeated);
    ``stopping`` is the job's ``spec.stopping`` as a dict; ``rank`` and
    ``world_size`` describe the distributed job (0 and 1 for one worker).

    Iterative algorithms also get: ``checkpoint_every`` (save every N steps as
    well as every epoch; None: epochs only), ``resume_from`` (another run's
    checkpoint folder to start from when ``checkpoint_dir`` holds none of this
    run's own), ``init_from`` (a weights file or a run's output folder to
    initialize from) with ``freeze`` (parameter-name prefixes, or
    ``"all_but_head"``), ``rendezvous_timeout`` (seconds to wait for the other
    workers) and ``gpus`` (GPUs requested per worker).
    """

    hyperparameters: dict[str, Any]
    channels: dict[str, Dataset]
    output_dir: Path
    checkpoint_dir: Path
    seed: int
    stopping: dict[str, Any]
    log_metric: Callable[[str, float, int], None]
    rank: int = 0
    world_size: int = 1
    checkpoint_every: int | None = None
    resume_from: Path | None = None
    init_from: Path | None = None
    freeze: list[str] = dataclasses.field(default_factory=list)
    rendezvous_timeout: float = 300.0
    gpus: int = 0


class Algorithm(abc.ABC):
    """Base class for algorithm plugins; see the module docstring for an example."""

    name: ClassVar[str]
    task: ClassVar[str]
    description: ClassVar[str] = ""
    hyperparameters: ClassVar[Mapping[str, Hyperparameter]] = {}
    takes_weights: ClassVar[bool] = False
    """Whether :meth:`train` honours ``ctx.channels["train"].weights``; ``mlrt validate``
    refuses a ``weight`` column for an algorithm that would ignore it."""

    @abc.abstractmethod
    def train(self, ctx: TrainContext) -> Any:
        """Fit on ``ctx.channels["train"]`` and return the fitted model.

        The model must offer ``predict(features)``; classifiers should also
        offer ``predict_proba(features)`` and ``classes_`` so mlrt can compute
        ROC AUC and log loss and write class scores to the predictions file.
        """

    def save(self, model: Any, directory: Path) -> list[Path]:
        """Write ``model`` into ``directory`` and return the files written.

        The default pickles it with joblib as ``model.joblib``.
        """
        import joblib

        path = directory / "model.joblib"
        joblib.dump(model, path)
        return [path]


def resolve_values(
    schema: Mapping[str, Hyperparameter], values: Mapping[str, Any], owner: str, noun: str = "hyperparameter"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check ``values`` against ``schema`` (what ``owner`` accepts).

    Returns ``(resolved, problems)``: ``resolved`` holds every declared entry
    (given values coerced, defaults filled in); ``problems`` maps a name to
    what is wrong with it.
    """
    resolved: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, value in values.items():
        if key not in schema:
            allowed = ", ".join(sorted(schema)) or "none"
            problems[key] = f"unknown {noun} for {owner} (allowed: {allowed})"
            continue
        coerced, problem = schema[key].check(value)
        if problem:
            problems[key] = problem
        else:
            resolved[key] = coerced
    for key, hp in schema.items():
        if key not in values and hp.default is not None:
            resolved[key] = hp.default
    return resolved, problems


def resolve_hyperparameters(algorithm: Algorithm, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check ``values`` against ``algorithm``'s hyperparameter schema (see :func:`resolve_values`)."""
    return resolve_values(algorithm.hyperparameters, values, algorithm.name)
