"""How the API shows rows: plain JSON with every secret replaced by ``<not shown>``.

Secrets a spec may carry are the values of ``spec.env`` (plain variables
the user chose to pass) and the workers' tracking tokens. The API never
returns them: not in the resolved spec, not in the submitted text, not in
an attempt's launch request. Backend handles are internal and left out.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlrt.controller import HIDDEN, hide_secrets
from mlrt.store.models import Attempt, Job


def submitted_text(text: str) -> str:
    """The submitted spec with ``spec.env`` values hidden (re-serialized when it sets any)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return HIDDEN
    env = (document.get("spec") or {}).get("env") if isinstance(document, dict) else None
    if not env:
        return text
    document["spec"]["env"] = dict.fromkeys(env, HIDDEN)
    return yaml.safe_dump(document, sort_keys=False)


def job_view(job: Job) -> dict[str, Any]:
    """A job row without secrets."""
    data = job.model_dump(mode="json")
    resolved = data["spec_resolved"]
    spec = resolved.get("spec") or {}
    if spec.get("env"):
        resolved["spec"] = {**spec, "env": dict.fromkeys(spec["env"], HIDDEN)}
    data["spec_submitted"] = submitted_text(job.spec_submitted)
    return data


def attempt_view(attempt: Attempt, spec: dict[str, Any]) -> dict[str, Any]:
    """An attempt row without its backend handle and with secret variables hidden."""
    data = attempt.model_dump(mode="json", exclude={"handle"})
    hide_secrets(data["request"], spec)
    return data
