"""Which of the controller's own environment variables a local worker inherits.

A worker always gets the contract's variables (``MLRT_*``, the torch
variables, the thread caps) and the spec's ``env``. What it inherits besides
depends on whose machine it runs on:

- ``mlrt submit`` on one's own machine: the whole environment of the shell
  that started mlrt, as ``python train.py`` would (``CUDA_VISIBLE_DEVICES``,
  ``HF_HOME``, a token the user exported): the worker is the user's own
  process, so there is nothing to keep from it.
- Once ``MLRT_WORKER_ENV_ALLOW`` is set (the controller service always sets
  it, see :mod:`mlrt.service.policy`), only the variables it names:
  comma-separated names and globs such as ``LC_*``. The controller's
  database URL, cloud and S3 credentials never reach user code.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping

ALLOW_VARIABLE = "MLRT_WORKER_ENV_ALLOW"
NEVER_INHERITED = ("MLRT_SECRET_KEY", "MLRT_SECRET_KEY_FILE")
"""The operator key of :mod:`mlrt.secrets`: never a worker's, whatever the allow-list's globs match."""


def allow_list(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The names and globs of ``MLRT_WORKER_ENV_ALLOW``; None when it is unset (inherit everything)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ALLOW_VARIABLE)
    if value is None:
        return None
    return [pattern.strip() for pattern in value.split(",") if pattern.strip()]


def inherited(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (default: this process's) that workers inherit."""
    environ = os.environ if environ is None else environ
    patterns = allow_list(environ)
    return {
        k: v
        for k, v in environ.items()
        if k not in NEVER_INHERITED and (patterns is None or any(fnmatch.fnmatchcase(k, p) for p in patterns))
    }
