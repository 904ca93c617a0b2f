"""``spec.compute.container``: the container backend's settings block, and its defaults.

:class:`ContainerSettings` is the backend's
:meth:`~mlrt.launchers.Launcher.settings_model`: ``mlrt validate`` checks the
block with it (``spec.compute.container.shm_size: ...``), and the resolved
spec holds it with its defaults filled in. Which engine runs the containers,
and the machine's extra ``run`` arguments, are settings of the machine, not of
a job (see :mod:`mlrt_container.engine`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mlrt.spec import Memory


class ContainerSettings(BaseModel):
    """``spec.compute.container``: what each worker's container gets besides the compute request.

    ``shm_size`` (``512Mi``, ``2Gi``) sizes the container's ``/dev/shm``
    (``--shm-size``), which the engines otherwise make 64 MiB: too small for a
    torch ``DataLoader`` with worker processes, which pass batches through it.
    Its pages count against ``compute.memory``. Default: the engine's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shm_size: Memory | None = None
