"""The checks of a spec that need the installed plugins.

The schema (:mod:`mlrt.spec.schema`) knows the spec's shape; only the plugins
know whether an algorithm, backend, report or data scheme of that name exists,
which hyperparameters and report options it takes, and what a gate can read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlrt import limits
from mlrt.launchers import Launcher


def plugin_problems(document: dict[str, Any], base_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """Every problem of ``document`` that only the installed plugins can see, one line each,
    and the resolved hyperparameters (the algorithm's defaults filled in).

    Runs on the raw document, whether or not it passed the schema, so one answer lists
    every problem; data channels are resolved in place (their URIs made absolute against
    ``base_dir``, their default label filled in)."""
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
            problems.append(f"spec.algorithm: {plugins.unknown('algorithms', name)}")
        elif isinstance(hyperparameters, dict) and len(hyperparameters) <= limits.MAX_HYPERPARAMETERS:
            resolved_hp, bad = resolve_hyperparameters(algorithm, hyperparameters)
            problems += [f"spec.hyperparameters.{key}: {text}" for key, text in bad.items()]
    elif isinstance(hyperparameters, dict):
        resolved_hp = dict(hyperparameters)

    compute = spec.get("compute") if isinstance(spec.get("compute"), dict) else {}
    backend = compute.get("backend", "local")
    launcher = plugins.launchers().get(backend) if isinstance(backend, str) else None
    if isinstance(backend, str) and launcher is None:
        problems.append(f"spec.compute.backend: {plugins.unknown('launchers', backend)}")
    if launcher is not None and spec.get("image") and not launcher.runs_images:
        problems.append(
            f"spec.image: the {backend} backend runs programs on this machine, not images;"
            " remove image or choose a backend that runs containers"
        )
    contract = spec.get("contract", "mlrt")
    if launcher is not None and isinstance(contract, str):
        problem = launcher.contract_problem(contract, compute)
        if problem:
            problems.append(f"spec.contract: {problem}")
    if isinstance(spec.get("compute"), dict):
        problems += backend_settings_problems(compute, backend if launcher is not None else None)

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
        bad: list[str] = []  # the URI's query parameters against the scheme's settings
        try:  # a scheme that raises is its plugin's failure, named in one line
            with plugins.blame("data_schemes", uri_scheme(uri)):
                resolved = scheme.resolve(uri, base_dir)
                entry = value if isinstance(value, dict) else {}
                entry["uri"] = resolved
                if entry.get("label") is None:
                    entry["label"] = scheme.default_label(resolved)
                data[channel] = entry
                bad = scheme.settings_of(resolved)[1] if scheme.settings else []
                problem = None if bad else scheme.check(resolved)
        except plugins.PluginFailure as failure:
            problem = str(failure)
        problems += [f"spec.data.{channel}: {line}" for line in bad]
        if problem:
            problems.append(f"spec.data.{channel}: {problem}")

    reports = spec.get("reports")
    if isinstance(reports, list):
        known_reports = plugins.reports()
        for index, report in enumerate(reports):
            if isinstance(report, str) and report not in known_reports:
                problems.append(f"spec.reports.{index}: {plugins.unknown('reports', report)}")
    options = spec.get("report_options")
    if isinstance(options, dict):
        from mlrt.algorithms import resolve_values
        from mlrt.reports import option_schema

        known_reports = plugins.reports()
        for name, given in options.items():
            if name not in known_reports:
                known = ", ".join(sorted(known_reports)) or "none installed"
                problems.append(f"spec.report_options.{name}: unknown report (registered: {known})")
            elif isinstance(given, dict):
                schema = option_schema(known_reports[name])
                _, option_problems = resolve_values(schema, given, name, noun="option")
                problems += [f"spec.report_options.{name}.{key}: {why}" for key, why in option_problems.items()]
    if isinstance(spec.get("gates"), list):
        problems += gate_problems(spec["gates"])
    algorithm = plugins.algorithms().get(name) if isinstance(name, str) else None
    problems += threshold_problems(spec, algorithm)
    problems += weight_problems(data, algorithm)
    return problems, resolved_hp


def threshold_problems(spec: dict[str, Any], algorithm: Any) -> list[str]:
    """What stops ``spec.evaluation.threshold`` (raw ``spec``) from being chosen: a channel the
    spec lacks, a ``min_cost`` without its cost matrix, an algorithm that is no classifier."""
    evaluation = spec.get("evaluation") if isinstance(spec.get("evaluation"), dict) else {}
    threshold = evaluation.get("threshold")
    if not isinstance(threshold, dict):
        return []
    where = "spec.evaluation.threshold"
    problems = []
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    channel = threshold.get("channel", "validation")
    if isinstance(channel, str) and channel not in data:
        problems.append(
            f"{where}.channel: no data channel {channel!r} to choose the threshold on"
            f" (channels: {', '.join(map(str, data)) or 'none'}); add it or set channel"
        )
    if threshold.get("optimize") == "min_cost":
        metrics = spec.get("business_metrics") if isinstance(spec.get("business_metrics"), list) else []
        costs = [m.get("name") for m in metrics if isinstance(m, dict) and m.get("cost_matrix") is not None]
        wanted = threshold.get("metric")
        if wanted is None and len(costs) != 1:
            hint = f"name one with metric ({', '.join(map(str, costs))})" if costs else "add one to business_metrics"
            problems.append(f"{where}.optimize: min_cost needs a cost_matrix business metric; {hint}")
        elif wanted is not None and wanted not in costs:
            problems.append(
                f"{where}.metric: {wanted!r} is not a cost_matrix business metric (have: {', '.join(costs) or 'none'})"
            )
    if algorithm is not None and algorithm.task != "classification":
        problems.append(f"{where}: {algorithm.name} is a {algorithm.task} algorithm; thresholds are for classifiers")
    if not spec.get("algorithm"):
        problems.append(f"{where}: only algorithm jobs choose a threshold; a command job's program applies its own")
    return problems


def weight_problems(data: dict[str, Any], algorithm: Any) -> list[str]:
    """A ``weight`` column on a channel of an algorithm that does not train with weights
    (:attr:`mlrt.algorithms.Algorithm.takes_weights`)."""
    if algorithm is None or getattr(algorithm, "takes_weights", False):
        return []
    return [
        f"spec.data.{name}.weight: {algorithm.name} does not train with per-example weights; remove weight"
        for name, entry in data.items()
        if isinstance(entry, dict) and entry.get("weight") is not None and name == "train"
    ]


def gate_problems(gates: list[Any]) -> list[str]:
    """One line per ``spec.gates`` entry whose report is not registered, or whose value the
    report does not give (checked when the report declares
    :attr:`~mlrt.reports.Report.gate_value_names`). Entries the schema refuses are skipped."""
    from mlrt import plugins
    from mlrt.spec.schema import gate_target

    problems = []
    known = plugins.reports()
    for index, gate in enumerate(gates):
        target = gate_target(gate) if isinstance(gate, dict) else None
        if target is None or not all(target):
            continue
        report, value = target
        short = gate.get("report") is None
        if report not in known:
            problems.append(
                f"spec.gates.{index}.{'metric' if short else 'report'}: {plugins.unknown('reports', report)}"
            )
            continue
        names = getattr(known[report], "gate_value_names", None)
        if names is not None and value not in names:
            problems.append(
                f"spec.gates.{index}.{'metric' if short else 'value'}: report {report!r} gives no value {value!r}"
                f" (it gives: {', '.join(sorted(names)) or 'none'})"
            )
    return problems


def backend_settings_problems(compute: dict[str, Any], backend: str | None) -> list[str]:
    """Check each backend's settings block in ``compute`` (a raw ``spec.compute``) with that
    backend's :meth:`~mlrt.launchers.Launcher.settings_model`, one line per problem.

    Each block that passes is replaced by its model's plain form, every default filled in;
    the block of ``backend`` (the job's own) is added when the spec leaves it out. A key
    that is neither a field of ``spec.compute`` nor the name of a backend with settings is
    an unknown field."""
    from pydantic import ValidationError

    from mlrt import plugins
    from mlrt.spec.errors import describe_error, field_names
    from mlrt.spec.schema import Compute

    launchers = plugins.launchers()
    core = field_names(Compute)
    blocks = [key for key in compute if key not in core]
    if backend is not None and backend not in compute and _takes_settings(launchers[backend]):
        blocks.append(backend)
    problems = []
    for key in blocks:
        launcher = launchers.get(key) if isinstance(key, str) else None
        if launcher is None or not _takes_settings(launcher):
            with_blocks = [name for name, item in launchers.items() if _takes_settings(item)]
            problems.append(
                f"spec.compute.{key}: unknown field (allowed: {', '.join(core)}, and the settings block of a"
                f" backend that takes one: {', '.join(sorted(with_blocks)) or 'none installed'})"
            )
            continue
        given = compute.get(key)
        try:  # a model that raises anything but a validation error is its plugin's failure
            with plugins.blame("launchers", key):
                model = launcher.settings_model()
                try:
                    settings = model.model_validate({} if given is None else given)
                except ValidationError as exc:
                    problems += [describe_error(error, model, ("spec", "compute", key)) for error in exc.errors()]
                    continue
                compute[key] = settings.model_dump(mode="json")
        except plugins.PluginFailure as failure:
            problems.append(f"spec.compute.{key}: {failure}")
    return problems


def _takes_settings(launcher: Launcher) -> bool:
    """Whether ``launcher`` declares a settings block (overrides ``settings_model``), without calling it."""
    return type(launcher).settings_model is not Launcher.settings_model
