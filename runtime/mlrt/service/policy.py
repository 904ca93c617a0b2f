"""What a spec submitted to the controller service may ask of the controller's machine.

The service runs the specs of many projects on a machine none of their
users own. These settings of the operator decide what such a spec may use:

``MLRT_ALLOWED_BACKENDS``
    Comma-separated backends whose jobs are accepted; default
    ``container,kubernetes``. Listing ``local`` opts in to the local backend,
    which **runs user code as the controller's user**, with its files and
    network: only for a controller whose users may do that anyway.
``MLRT_ALLOWED_PATHS``
    Colon-separated folders of the controller's machine that specs may name
    (shared datasets, a team's output folder). Default: none.
``MLRT_KUBE_NAMESPACES``
    When set, the only namespaces Kubernetes jobs may name (comma-separated;
    the first is the default, see :mod:`mlrt_kubernetes.settings`).
``MLRT_WORKER_ENV_ALLOW``
    Comma-separated names and globs (``LC_*``) of the controller's own
    environment variables that local workers inherit; default
    :data:`DEFAULT_WORKER_ENV`. Workers of every backend get the contract's
    variables and the spec's ``env``; container and Kubernetes workers
    inherit nothing of the controller's environment.
``MLRT_ALLOWED_TAG_FUNCTIONS``
    Comma-separated modules (or packages) whose callables ``spec.tags.rules.*.function``
    may name. The ``error_categories`` report imports and calls them inside the
    controller, so by default a spec may name none.

Every field that becomes a path of the controller's machine (read by the
controller, written by it, or bind-mounted into a worker's container) must
lie in an allowed folder or in the submission's own folder
(``MLRT_HOME/submissions/<hex>``, where the API resolves relative paths):
``spec.working_dir``, ``file://`` and bare-path data channels
(``spec.data.<name>``), a ``file://`` ``spec.output.path``,
``spec.init_from.path`` and ``spec.tags.files``. In a TuningJob the same
fields of ``spec.template`` are checked, and so is every value that a search
parameter with a ``path`` writes into the trial's spec. Paths are resolved
(``~``, ``..``, symbolic links) before the check, so a link inside an allowed
folder cannot lead out of it, and a refused spec's answer never says whether
a file outside them exists (:func:`conceal`).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BACKENDS_VARIABLE = "MLRT_ALLOWED_BACKENDS"
DEFAULT_BACKENDS = ("container", "kubernetes")
PATHS_VARIABLE = "MLRT_ALLOWED_PATHS"
WORKER_ENV_VARIABLE = "MLRT_WORKER_ENV_ALLOW"
FUNCTIONS_VARIABLE = "MLRT_ALLOWED_TAG_FUNCTIONS"
DEFAULT_WORKER_ENV = "PATH,HOME,LANG,LANGUAGE,LC_*,TZ,TMPDIR,USER,LOGNAME,MLRT_LOAD_PLUGINS,MLRT_DISABLE_PLUGINS"
"""Enough for ``python`` to be found, for locale and temporary files to work, and for a
worker to load the plugins the controller validated its spec with."""


# How the file data scheme (mlrt_data.file) reports a missing or unreadable path.
_FILE_PROBLEM = re.compile(r"(?P<field>[\w.-]+): file not (?:found|readable): (?P<path>/.*)")


class PolicyError(ValueError):
    """The spec asks for what this controller does not allow; ``problems`` holds one
    ``field.path: problem`` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def allowed_backends() -> list[str]:
    """The backends whose jobs the service accepts (``MLRT_ALLOWED_BACKENDS``, else container and kubernetes)."""
    configured = [b.strip() for b in os.environ.get(BACKENDS_VARIABLE, "").split(",") if b.strip()]
    return configured or list(DEFAULT_BACKENDS)


def isolate_workers() -> None:
    """Make local workers of this process inherit only ``MLRT_WORKER_ENV_ALLOW``'s variables
    (default :data:`DEFAULT_WORKER_ENV`), never the service's own settings and credentials."""
    os.environ.setdefault(WORKER_ENV_VARIABLE, DEFAULT_WORKER_ENV)


def allowed_folders(submission: Path) -> list[Path]:
    """The submission's folder and the operator's ``MLRT_ALLOWED_PATHS``, resolved."""
    configured = [p for p in os.environ.get(PATHS_VARIABLE, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.realpath(submission))] + [Path(os.path.realpath(Path(p).expanduser())) for p in configured]


def check(document: dict[str, Any], submission: Path) -> None:
    """Raise :class:`PolicyError` when the resolved ``document`` (a TrainingJob's or a
    TuningJob's ``LoadedSpec.resolved()``) uses a backend, a path or a Kubernetes namespace
    (``MLRT_KUBE_NAMESPACES``) this controller does not allow."""
    spec = document["spec"]
    problems = []
    if document.get("kind") == "TuningJob":
        base_dir = Path(document["base_dir"])
        trials = [("spec.template", spec["template"])] + [
            (f"spec.parameters.{name}", trial) for name, trial in _parameter_variants(document)
        ]
    else:
        base_dir = submission
        trials = [("spec", spec)]
    backends = allowed_backends()
    folders = allowed_folders(submission)
    for prefix, trial in trials:
        compute = trial.get("compute") if isinstance(trial.get("compute"), dict) else {}
        backend = compute.get("backend", "local")
        if backend not in backends:
            problems.append(
                f"{prefix}.compute.backend: this controller runs {', '.join(backends)} jobs, not {backend}"
                + (f" (the operator opts in to local with {BACKENDS_VARIABLE})" if backend == "local" else "")
            )
        kubernetes = compute.get("kubernetes") if isinstance(compute.get("kubernetes"), dict) else {}
        namespace = kubernetes.get("namespace")  # None: the first managed namespace
        managed = [n.strip() for n in os.environ.get("MLRT_KUBE_NAMESPACES", "").split(",") if n.strip()]
        if backend == "kubernetes" and managed and namespace is not None and namespace not in managed:
            problems.append(f"{prefix}.compute.kubernetes.namespace: this controller launches in {', '.join(managed)}")
        for field, path in host_paths(trial, base_dir):
            if not _inside(path, folders):
                problems.append(_outside(f"{prefix}.{field}", path))
        for field, target in tag_functions(trial):
            if not _function_allowed(target):
                problems.append(
                    f"{prefix}.{field}: this controller does not import code named by specs (the report"
                    f" runs in the controller); the operator allows modules with {FUNCTIONS_VARIABLE}"
                )
    if problems:
        raise PolicyError(list(dict.fromkeys(problems)))


def conceal(problems: list[str], submission: Path) -> list[str]:
    """``problems`` (of a spec that failed validation) with every line that says whether a file
    outside the allowed folders exists or can be read replaced by the policy's refusal: an answer
    must not tell a user which files the controller's machine has."""
    folders = allowed_folders(submission)
    concealed = []
    for line in problems:
        found = _FILE_PROBLEM.fullmatch(line)
        if found and not _inside(found["path"], folders):
            line = _outside(found["field"], found["path"])
        concealed.append(line)
    return list(dict.fromkeys(concealed))


def _inside(path: str, folders: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == folder or folder in real.parents for folder in folders)


def _outside(field: str, path: str) -> str:
    return (
        f"{field}: {path} is a path of the controller's machine outside the folders it allows"
        f" ({PATHS_VARIABLE}); use a relative path, an s3:// URI or an allowed folder"
    )


def host_paths(spec: dict[str, Any], base_dir: Path) -> Iterator[tuple[str, str]]:
    """``(field, absolute path)`` for every path of this machine that a TrainingJob's
    ``spec`` names, relative ones taken against ``base_dir`` as validation does."""
    from mlrt.data import uri_scheme

    def absolute(text: str, against: Path) -> str:
        path = Path(text.removeprefix("file://")).expanduser()
        return os.path.normpath(path if path.is_absolute() else against / path)

    working_dir = spec.get("working_dir")
    working = absolute(working_dir, base_dir) if isinstance(working_dir, str) else str(base_dir)
    yield "working_dir", working
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    for name, channel in data.items():
        uri = channel.get("uri") if isinstance(channel, dict) else channel
        if isinstance(uri, str) and uri_scheme(uri) == "file":
            yield f"data.{name}", absolute(uri, base_dir)
    output = (spec.get("output") or {}).get("path") if isinstance(spec.get("output"), dict) else None
    if isinstance(output, str) and (output.startswith("file://") or "://" not in output):
        yield "output.path", absolute(output, base_dir)
    init_path = (spec.get("init_from") or {}).get("path") if isinstance(spec.get("init_from"), dict) else None
    if isinstance(init_path, str):
        yield "init_from.path", absolute(init_path, base_dir)
    files = (spec.get("tags") or {}).get("files") if isinstance(spec.get("tags"), dict) else None
    for index, name in enumerate(files if isinstance(files, list) else []):
        if isinstance(name, str):
            yield f"tags.files.{index}", absolute(name, Path(working))  # the report reads them from there


def tag_functions(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(field, module:callable)`` for every ``spec.tags.rules.*.function``: code the
    ``error_categories`` report imports and calls where reports are built (the controller)."""
    tags = spec.get("tags") if isinstance(spec.get("tags"), dict) else {}
    rules = tags.get("rules") if isinstance(tags.get("rules"), dict) else {}
    for name, rule in rules.items():
        if isinstance(rule, dict) and isinstance(rule.get("function"), str):
            yield f"tags.rules.{name}.function", rule["function"]


def _function_allowed(target: str) -> bool:
    """Whether ``module:callable``'s module is one of ``MLRT_ALLOWED_TAG_FUNCTIONS`` (comma-separated
    modules or packages; default none) or inside one of them."""
    module = target.split(":", 1)[0]
    allowed = [m.strip() for m in os.environ.get(FUNCTIONS_VARIABLE, "").split(",") if m.strip()]
    return any(module == m or module.startswith(m + ".") for m in allowed)


def _parameter_variants(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """For each search parameter that writes outside ``hyperparameters`` (its ``path``),
    the trial template with each of its values there."""
    spec = document["spec"]
    for name, parameter in (spec.get("parameters") or {}).items():
        path = parameter.get("path")
        if not path or path.startswith("hyperparameters."):
            continue
        values = parameter.get("values") or [parameter.get("min"), parameter.get("max")]
        for value in values:
            trial = copy.deepcopy(spec["template"])
            *parents, last = path.split(".")
            target = trial
            for part in parents:
                child = target.get(part) if isinstance(target, dict) else None
                if not isinstance(child, dict):
                    child = target[part] = {}
                target = child
            target[last] = value
            yield name, trial
