"""The controller's Helm chart (``helm/mlrt``) rendered by Helm itself, never by a look-alike.

``helm-python-sdk`` (PyPI, import name ``helm_python``) binds Helm's Go SDK through a bundled shared library, so
the Go templates, Sprig functions, ``required``/``fail`` and values coalescing are exactly ``helm template``'s.
Where it is not installed, a ``helm`` binary on ``PATH`` renders instead (``MLRT_HELM=/path/to/helm`` picks a
binary over the SDK); with neither, :func:`chart_renderer` skips the calling test and says so (or fails it when
``MLRT_REQUIRE`` names ``helm``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from conftest import missing

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mlrt"
RELEASE, NAMESPACE = "mlrt", "ml-platform"
"""The release name and namespace the chart is rendered for, unless a caller names others."""


class RenderError(Exception):
    """Helm refused to render the chart (a ``required`` or ``fail`` in a template)."""


class HelmSDK:
    """Helm's Go SDK through helm-python-sdk."""

    def __init__(self, module: Any):
        self.helm = module

    def render(self, values: dict[str, Any] | None, namespace: str = NAMESPACE) -> dict[str, str]:
        try:
            with self.helm.Chart.load(str(CHART)) as chart:
                return chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
        except self.helm.HelmError as exc:
            raise RenderError(str(exc)) from None

    def lint(self, values: dict[str, Any] | None) -> list[str]:
        report = self.helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
        # Severity 1 is INFO ("icon is recommended"); warnings and errors fail ``helm lint --strict``.
        return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]


class HelmCLI:
    """A ``helm`` binary: ``helm template`` and ``helm lint --strict``."""

    def __init__(self, binary: str, home: Path):
        self.binary = binary
        self.env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
        self.home = home

    def _run(self, *args: str, values: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
        extra = []
        if values:
            path = self.home / "values.json"  # JSON is YAML
            path.write_text(json.dumps(values))
            extra = ["--values", str(path)]
        return subprocess.run([self.binary, *args, *extra], capture_output=True, text=True, env=self.env)

    def render(self, values: dict[str, Any] | None, namespace: str = NAMESPACE) -> dict[str, str]:
        done = self._run("template", RELEASE, str(CHART), "--namespace", namespace, values=values)
        if done.returncode:
            raise RenderError(done.stderr)
        return {"helm-template-output.yaml": done.stdout}

    def lint(self, values: dict[str, Any] | None) -> list[str]:
        done = self._run("lint", "--strict", str(CHART), "-n", NAMESPACE, "--kube-version", "1.33.0", values=values)
        return [] if done.returncode == 0 else [done.stdout + done.stderr]


def chart_renderer(home: Path) -> HelmSDK | HelmCLI:
    """The SDK, else (or with ``MLRT_HELM``) a ``helm`` binary using ``home`` for its own files."""
    binary = os.environ.get("MLRT_HELM")  # a helm binary to render with, even where the SDK is installed
    if not binary:
        try:
            import helm_python
        except ImportError:
            binary = shutil.which("helm")
            if not binary:
                missing("helm", "no Helm renderer: pip install helm-python-sdk (or put helm on PATH)")
        else:
            return HelmSDK(helm_python)
    return HelmCLI(binary, home)


def documents(
    renderer: HelmSDK | HelmCLI, values: dict[str, Any] | None = None, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` over its defaults (NOTES.txt is not a manifest)."""
    rendered = renderer.render(values, namespace)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def permissions(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """A Role's permissions as (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
