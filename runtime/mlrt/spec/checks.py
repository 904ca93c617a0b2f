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
    return problems, resolved_hp
