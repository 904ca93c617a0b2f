"""The ``kubernetes`` launch backend (``compute.backend: kubernetes``).

Each attempt of a run becomes a ``batch/v1`` Indexed Job with one pod per
worker and a headless Service for the torch rendezvous; pod settings come
from ``spec.compute.kubernetes``. See :mod:`mlrt_kubernetes.manifests` for
what is planned and :mod:`mlrt_kubernetes.launcher` for how it is run and
watched.
"""

from __future__ import annotations

from mlrt import hookimpl
from mlrt.launchers import Launcher
from mlrt_kubernetes.launcher import KubernetesLauncher


@hookimpl
def mlrt_launchers() -> list[Launcher]:
    return [KubernetesLauncher()]
