"""``example.nice``: the local backend with a settings block, the key ``example.nice`` of ``spec.compute``.

::

    compute:
      backend: example.nice
      example.nice: {niceness: 5}

The block is checked by mlrt against :class:`NiceSettings` (one line per
problem, ``spec.compute.example.nice.niceness: ...``), and the resolved spec
holds it with its defaults, even when the job leaves it out; :meth:`plan`
reads it back typed. Workers run under ``nice -n NICENESS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mlrt_local import LocalLauncher

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mlrt.launchers import LaunchContext, LaunchRequest


class NiceLauncher(LocalLauncher):
    """Worker processes on this machine at a lower CPU priority."""

    name: ClassVar[str] = "example.nice"
    description: ClassVar[str] = "worker processes on this machine, at a lower CPU priority (nice)"

    def settings_model(self) -> type[BaseModel]:
        from pydantic import BaseModel, ConfigDict, Field

        class NiceSettings(BaseModel):
            """The ``example.nice`` block of ``spec.compute``."""

            model_config = ConfigDict(extra="forbid")
            niceness: int = Field(10, ge=0, le=19, description="How much lower the workers' priority is (nice -n).")

        return NiceSettings

    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        settings = self.settings_model().model_validate(ctx.compute.get(self.name) or {})
        request = super().plan(ctx)
        for worker in request.workers:
            worker.argv = ["nice", "-n", str(settings.niceness), *worker.argv]
        request.details.update(warm=False, niceness=settings.niceness)  # a warm worker forks without exec: no nice
        return request
