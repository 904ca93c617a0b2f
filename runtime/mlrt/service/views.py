"""How the API shows rows: plain JSON with every secret replaced by ``<not shown>``.

Secrets a spec may carry are the values of ``spec.env`` (plain variables
the user chose to pass, also ``spec.template.env`` of a tuning job) and the
workers' tracking tokens. The API never returns them: not in the resolved
spec, not in the submitted text, not in an attempt's launch request or
manifests (see :mod:`mlrt.secrets`). Backend handles are internal and left out.
"""

from __future__ import annotations

from typing import Any

from mlrt.secrets import HIDDEN, mask_request, mask_resolved, mask_submitted
from mlrt.store.models import Attempt, Job

__all__ = ["HIDDEN", "attempt_view", "job_view"]


def job_view(job: Job) -> dict[str, Any]:
    """A job row without secrets (rows stored before values were masked included)."""
    data = job.model_dump(mode="json")
    data["spec_resolved"] = mask_resolved(data["spec_resolved"])
    data["spec_submitted"] = mask_submitted(job.spec_submitted)
    return data


def attempt_view(attempt: Attempt, spec: dict[str, Any]) -> dict[str, Any]:
    """An attempt row without its backend handle and with secret variables hidden."""
    data = attempt.model_dump(mode="json", exclude={"handle"})
    mask_request(data["request"], spec)
    return data
