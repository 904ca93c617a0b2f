"""The plugin manager: discovery, allow-listing, and the registries built from hooks.

Plugins are found once per process through the ``mlrt`` entry-point group,
built-ins included. Two environment variables control discovery:

``MLRT_LOAD_PLUGINS``
    Comma-separated entry-point names to load; all others are skipped. An
    empty value loads none (useful in tests that register their own).
``MLRT_DISABLE_PLUGINS``
    Comma-separated entry-point names never to load.

Worker processes inherit both, so a job sees the same plugins as the
controller that launched it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pluggy

from mlrt import hookspecs

ENTRY_POINT_GROUP = "mlrt"
_KINDS = {
    "algorithms": "mlrt_algorithms",
    "launchers": "mlrt_launchers",
    "data_schemes": "mlrt_data_schemes",
    "reports": "mlrt_reports",
    "tuners": "mlrt_tuners",
    "early_stoppers": "mlrt_early_stoppers",
}
# How each kind names its items: most by ``name``, data schemes by ``scheme``.
_KEY_ATTR = {"data_schemes": "scheme"}
# entry-point name -> (distribution, version), filled as plugins load
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded once."""
    pm = pluggy.PluginManager("mlrt")
    pm.add_hookspecs(hookspecs)
    allowed = _names("MLRT_LOAD_PLUGINS")
    disabled = _names("MLRT_DISABLE_PLUGINS") or set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or ep.name in disabled:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        # A broken plugin stops every command with one line naming it, rather
        # than a traceback or a silently missing algorithm.
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        _DISTRIBUTIONS[ep.name] = (ep.dist.name, ep.dist.version) if ep.dist else ("", "")
    try:
        pm.check_pending()  # a misspelled hook name is an error, not a silent no-op
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin)
        raise PluginError(f"plugin {name!r} implements a hook mlrt does not have: {exc}") from exc
    return pm


def _collect(kind: str) -> dict[str, tuple[Any, str]]:
    """Call one registration hook plugin by plugin; map item name -> (item, plugin)."""
    pm = get_plugin_manager()
    attr = _KEY_ATTR.get(kind, "name")
    found: dict[str, tuple[Any, str]] = {}
    caller = getattr(pm.hook, _KINDS[kind])
    # Call order: tryfirst plugins first, trylast (built-in fallbacks) last.
    for impl in reversed(caller.get_hookimpls()):
        try:
            items = list(impl.function() or [])
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {_KINDS[kind]}(): {exc}") from exc
        for item in items:
            key = getattr(item, attr, None)
            if not isinstance(key, str) or not key:
                raise PluginError(f"plugin {impl.plugin_name!r} registered a {kind[:-1]} without a {attr}")
            if key in found:
                if impl.trylast:  # a fallback yields to the plugin that registered the name first
                    continue
                raise PluginError(
                    f"{kind[:-1]} {key!r} is registered by both {found[key][1]!r} and {impl.plugin_name!r}"
                )
            found[key] = (item, impl.plugin_name)
    return found


@functools.lru_cache(maxsize=None)
def _registry(kind: str) -> dict[str, tuple[Any, str]]:
    return _collect(kind)


def algorithms() -> dict[str, Any]:
    """Registered algorithms by name."""
    return {k: v[0] for k, v in _registry("algorithms").items()}


def launchers() -> dict[str, Any]:
    """Registered launch backends by name."""
    return {k: v[0] for k, v in _registry("launchers").items()}


def data_schemes() -> dict[str, Any]:
    """Registered data-channel URI schemes by scheme."""
    return {k: v[0] for k, v in _registry("data_schemes").items()}


def reports() -> dict[str, Any]:
    """Registered error-analysis reports by name."""
    return {k: v[0] for k, v in _registry("reports").items()}


def tuners() -> dict[str, Any]:
    """Registered tuners by name."""
    return {k: v[0] for k, v in _registry("tuners").items()}


def early_stoppers() -> dict[str, Any]:
    """Registered early-stopping rules by name."""
    return {k: v[0] for k, v in _registry("early_stoppers").items()}


def refresh() -> None:
    """Forget the registries so they are rebuilt from the plugins registered now."""
    _registry.cache_clear()


@contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[None]:
    """Register ``plugin`` for the duration of a ``with`` block (for tests)."""
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    refresh()
    try:
        yield
    finally:
        pm.unregister(plugin)
        refresh()


def describe() -> list[dict[str, Any]]:
    """Every loaded plugin with its distribution, version, hooks and what it registers."""
    pm = get_plugin_manager()
    provided: dict[str, dict[str, list[str]]] = {}
    for kind in _KINDS:
        for key, (_, plugin_name) in _registry(kind).items():
            provided.setdefault(plugin_name, {}).setdefault(kind, []).append(key)
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist, version = _DISTRIBUTIONS.get(name, ("", ""))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "distribution": dist,
                "version": version,
                "hooks": hooks,
                "provides": {k: sorted(v) for k, v in sorted(provided.get(name, {}).items())},
            }
        )
    return sorted(rows, key=lambda row: row["name"])
