"""The controller service's routes, one :class:`fastapi.APIRouter` per noun.

:func:`mlrt.service.api.create_app` includes them in this order:
:mod:`~mlrt.service.routes.health` (``/healthz``, ``/readyz``, ``/metrics``),
:mod:`~mlrt.service.routes.identity` (``whoami``),
:mod:`~mlrt.service.routes.plugins`, :mod:`~mlrt.service.routes.jobs` (submit, validate),
:mod:`~mlrt.service.routes.runs`, :mod:`~mlrt.service.routes.metrics`,
:mod:`~mlrt.service.routes.logs`, :mod:`~mlrt.service.routes.artifacts`,
:mod:`~mlrt.service.routes.models` (the model registry),
:mod:`~mlrt.service.routes.reports`, :mod:`~mlrt.service.routes.sources` (source bundles) and
:mod:`~mlrt.service.routes.tracking` (worker tokens).
What they share (the store, who asks, a run the asker may see) is in
:mod:`~mlrt.service.routes.common`.
"""

from mlrt.service.routes import (
    artifacts,
    health,
    identity,
    jobs,
    logs,
    metrics,
    models,
    plugins,
    reports,
    runs,
    sources,
    tracking,
)

ROUTERS = (
    health.router,
    identity.router,
    plugins.router,
    jobs.router,
    runs.router,
    metrics.router,
    logs.router,
    artifacts.router,
    models.router,
    reports.router,
    sources.router,
    tracking.router,
)
"""Every router of the API, in the order they are included."""
