"""The plugin manager: discovery, allow-listing, the registries built from hooks, and blame.

Plugins are found once per process through the ``mlrt`` entry-point group,
built-ins included. Environment variables control discovery:

``MLRT_LOAD_PLUGINS``
    Comma-separated entry-point names to load; all others are skipped (and
    listed as "not loaded" by ``mlrt plugins``). An empty value loads none
    (useful in tests that register their own).
``MLRT_DISABLE_PLUGINS``
    Comma-separated entry-point names never to load.
``MLRT_TRACE_HOOKS``
    ``1`` prints every hook call, its arguments and its result to stderr
    (pluggy's tracing).

A name in either list that no installed plugin has is a one-line warning on
stderr. Worker processes inherit these variables, so a job sees the same
plugins as the controller that launched it.

Every hook is called through pluggy's hook caller, so hook wrappers and
tracing apply; registration hooks are called one plugin at a time (a subset
caller that keeps wrappers) so that each item is known by the plugin that
registered it. Each registered item is checked as it is collected
(:mod:`mlrt.plugin_checks`): an item with a malformed schema is left out of
its registry, and :func:`problems` (``mlrt plugins --check``) says why.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pluggy

from mlrt import hookspecs

if TYPE_CHECKING:  # pragma: no cover
    from mlrt.algorithms import Algorithm
    from mlrt.data import DataScheme
    from mlrt.launchers import Launcher
    from mlrt.reports import Report
    from mlrt.tuning import EarlyStopper, Tuner

ENTRY_POINT_GROUP = "mlrt"
_KINDS = {
    "algorithms": "mlrt_algorithms",
    "launchers": "mlrt_launchers",
    "data_schemes": "mlrt_data_schemes",
    "reports": "mlrt_reports",
    "tuners": "mlrt_tuners",
    "early_stoppers": "mlrt_early_stoppers",
}
NOUNS = {
    "algorithms": "algorithm",
    "launchers": "backend",
    "data_schemes": "data scheme",
    "reports": "report",
    "tuners": "tuner",
    "early_stoppers": "early stopper",
}
"""What a user calls one item of each registry (in messages)."""
# How each kind names its items: most by ``name``, data schemes by ``scheme``.
_KEY_ATTR = {"data_schemes": "scheme"}
# entry-point name -> its entry point, filled as plugins load; the distribution's name and
# version are read from it only when a message or listing needs them (:func:`_distribution`)
_LOADED: dict[str, importlib.metadata.EntryPoint] = {}
# entry-point name -> (distribution, version), read from ``_LOADED`` the first time it is asked for
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}
# entry-point name -> (distribution, version, why it was not loaded)
_NOT_LOADED: dict[str, tuple[str, str, str]] = {}


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class PluginFailure(RuntimeError):
    """A plugin's code raised while mlrt called it.

    ``str(failure)`` is one line naming the item, its distribution and the
    exception (``tuner 'acme.hillclimb' (mlrt-acme 0.1.0) raised KeyError:
    'x'``); ``details`` is the traceback, for an event or an artifact."""

    def __init__(self, line: str, details: str):
        super().__init__(line)
        self.line = line
        self.details = details


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _dist(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist else ("", "")


def _distribution(plugin_name: str) -> tuple[str, str]:
    """``(distribution, version)`` of a plugin loaded from an entry point, ``("", "")`` for one
    registered in-process. Read on demand, once per plugin: parsing every plugin's metadata at
    start-up would cost each command the time, and most never print a plugin's origin."""
    if plugin_name not in _DISTRIBUTIONS and plugin_name in _LOADED:
        _DISTRIBUTIONS[plugin_name] = _dist(_LOADED[plugin_name])
    return _DISTRIBUTIONS.get(plugin_name, ("", ""))


def _warn_unknown(variable: str, names: set[str] | None, installed: set[str]) -> None:
    unknown = sorted((names or set()) - installed)
    if unknown:
        known = ", ".join(sorted(installed)) or "none"
        print(
            f"warning: {variable} names no installed plugin: {', '.join(unknown)} (installed: {known})",
            file=sys.stderr,
        )


@functools.cache
def installed_entry_points() -> tuple[importlib.metadata.EntryPoint, ...]:
    """The ``mlrt`` entry points of the installed distributions, read once per process (reading
    means opening every distribution's metadata). The resident process (:mod:`mlrt.resident`)
    reads them before it forks commands, and steps down when a distribution changes."""
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded once."""
    pm = pluggy.PluginManager("mlrt")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("MLRT_TRACE_HOOKS", "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    allowed = _names("MLRT_LOAD_PLUGINS")
    disabled = _names("MLRT_DISABLE_PLUGINS") or set()
    entry_points = list(installed_entry_points())
    installed = {ep.name for ep in entry_points}
    _warn_unknown("MLRT_LOAD_PLUGINS", allowed, installed)
    _warn_unknown("MLRT_DISABLE_PLUGINS", disabled, installed)
    for ep in entry_points:
        if ep.name in disabled:
            _NOT_LOADED[ep.name] = (*_dist(ep), "named in MLRT_DISABLE_PLUGINS")
            continue
        if allowed is not None and ep.name not in allowed:
            _NOT_LOADED[ep.name] = (*_dist(ep), "not named in MLRT_LOAD_PLUGINS")
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        # A broken plugin stops every command with one line naming it, rather
        # than a traceback or a silently missing algorithm.
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        _LOADED[ep.name] = ep
    try:
        pm.check_pending()  # a misspelled hook name is an error, not a silent no-op
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin)
        raise PluginError(f"plugin {name!r} implements a hook mlrt does not have: {exc}") from exc
    return pm


def _one_by_one(hook: str) -> Iterator[tuple[str, bool, pluggy.HookCaller]]:
    """``(plugin name, trylast, caller)`` for each plugin implementing ``hook``, in call order
    (tryfirst plugins first, trylast fallbacks last). Each caller calls that one plugin's
    implementation through pluggy, with every hook wrapper and tracing still applied."""
    pm = get_plugin_manager()
    answering = [impl for impl in getattr(pm.hook, hook).get_hookimpls() if not (impl.hookwrapper or impl.wrapper)]
    for impl in reversed(answering):
        others = [other.plugin for other in answering if other.plugin is not impl.plugin]
        yield impl.plugin_name, impl.trylast, pm.subset_hook_caller(hook, remove_plugins=others)


@dataclasses.dataclass
class _Registry:
    """One kind's usable items (name -> (item, plugin name)) and the items left out for
    their problems (name -> one line per problem)."""

    items: dict[str, tuple[Any, str]]
    unusable: dict[str, list[str]]


def _collect(kind: str) -> _Registry:
    """Call one registration hook plugin by plugin; check every item it registers."""
    from mlrt.plugin_checks import item_problems

    attr = _KEY_ATTR.get(kind, "name")
    found: dict[str, tuple[Any, str]] = {}
    unusable: dict[str, list[str]] = {}
    for plugin_name, trylast, caller in _one_by_one(_KINDS[kind]):
        try:
            items = [item for answer in caller() for item in (answer or [])]
        except Exception as exc:
            raise PluginError(f"plugin {plugin_name!r} failed in {_KINDS[kind]}(): {exc}") from exc
        for item in items:
            key = getattr(item, attr, None)
            if not isinstance(key, str) or not key:
                raise PluginError(f"plugin {plugin_name!r} registered a {kind[:-1]} without a {attr}")
            if key in found or key in unusable:
                if trylast:  # a fallback yields to the plugin that registered the name first
                    continue
                first = found[key][1] if key in found else "another plugin"
                raise PluginError(f"{kind[:-1]} {key!r} is registered by both {first!r} and {plugin_name!r}")
            bad = item_problems(kind, item)
            if bad:
                owner = f"{_plugin_label(plugin_name)}: {NOUNS[kind]} {key!r}"
                unusable[key] = [f"{owner}{where}: {why}" for where, why in bad]
            else:
                found[key] = (item, plugin_name)
    return _Registry(found, unusable)


@functools.lru_cache(maxsize=None)
def _registry(kind: str) -> _Registry:
    return _collect(kind)


def _items(kind: str) -> dict[str, Any]:
    return {k: v[0] for k, v in _registry(kind).items.items()}


def algorithms() -> dict[str, Algorithm]:
    """Registered algorithms by name: ``{name: Algorithm instance}``."""
    return _items("algorithms")


def launchers() -> dict[str, Launcher]:
    """Registered launch backends by name: ``{name: Launcher instance}``."""
    return _items("launchers")


def data_schemes() -> dict[str, DataScheme]:
    """Registered data-channel URI schemes by scheme: ``{scheme: DataScheme instance}``."""
    return _items("data_schemes")


def reports() -> dict[str, Report]:
    """Registered error-analysis reports by name: ``{name: Report instance}``."""
    return _items("reports")


def tuners() -> dict[str, Tuner]:
    """Registered tuners by name: ``{name: Tuner instance}`` (mlrt deep-copies one per search)."""
    return _items("tuners")


def early_stoppers() -> dict[str, EarlyStopper]:
    """Registered early-stopping rules by name: ``{name: EarlyStopper instance}``."""
    return _items("early_stoppers")


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


# -- who registered what ---------------------------------------------------------


def _plugin_label(plugin_name: str) -> str:
    """``plugin acme (mlrt-acme 0.1.0)``, or ``plugin acme`` for one registered in-process."""
    dist, version = _distribution(plugin_name)
    return f"plugin {plugin_name}" + (f" ({dist} {version})" if dist else "")


def label(kind: str, name: str) -> str:
    """``tuner 'acme.hillclimb' (mlrt-acme 0.1.0)``: an item with the distribution it comes from
    (``(plugin acme)`` for a plugin registered in-process)."""
    plugin_name = _registry(kind).items.get(name, (None, ""))[1]
    dist, version = _distribution(plugin_name)
    origin = f"{dist} {version}" if dist else f"plugin {plugin_name}"
    return f"{NOUNS[kind]} {name!r} ({origin})"


@contextmanager
def blame(kind: str, name: str) -> Iterator[None]:
    """Turn any exception raised inside the block into a :class:`PluginFailure` naming
    ``kind``'s item ``name`` and its distribution, with the traceback kept."""
    try:
        yield
    except PluginFailure:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        raise PluginFailure(f"{label(kind, name)} raised {text}", traceback.format_exc()) from exc


def notify(hook: str, **kwargs: Any) -> list[PluginFailure]:
    """Call a notification hook (``mlrt_run_started``, ``mlrt_run_finished``) plugin by plugin;
    return one :class:`PluginFailure` per plugin that raised (the others are still called)."""
    failures = []
    for plugin_name, _, caller in _one_by_one(hook):
        try:
            caller(**kwargs)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            line = f"{hook} hook of {_plugin_label(plugin_name)} raised {text}"
            failures.append(PluginFailure(line, traceback.format_exc()))
    return failures


def listens(hook: str) -> bool:
    """Whether any plugin implements ``hook``."""
    return bool(getattr(get_plugin_manager().hook, hook).get_hookimpls())


def unknown(kind: str, name: str) -> str:
    """Why no usable item ``name`` is registered, for an error line: its problems when a plugin
    registered it malformed, else the names registered and the plugins not loaded (with how to
    load them)."""
    registry = _registry(kind)
    noun = NOUNS[kind]
    if name in registry.unusable:
        return f"{noun} {name!r} is unusable: " + "; ".join(registry.unusable[name]) + " (mlrt plugins --check)"
    # A built-in backend is its plugin's name (local); other items start with it (sklearn.svm).
    likely = name if name in _NOT_LOADED else name.split(".", 1)[0]
    if likely in _NOT_LOADED:
        dist, version, why = _NOT_LOADED[likely]
        fix = "add it to MLRT_LOAD_PLUGINS" if "LOAD" in why else "remove it from MLRT_DISABLE_PLUGINS"
        return f"{noun} {name!r} is not registered: its plugin {likely} ({dist} {version}) is not loaded ({why}); {fix}"
    none = "none loaded" if _NOT_LOADED else "none installed"
    text = f"unknown {noun} {name!r} (registered: {', '.join(sorted(registry.items)) or none})"
    if _NOT_LOADED:
        text += (
            f"; plugins not loaded: {', '.join(sorted(_NOT_LOADED))}"
            " (load one by adding its name to MLRT_LOAD_PLUGINS, or removing it from MLRT_DISABLE_PLUGINS)"
        )
    return text


def problems() -> list[str]:
    """Every problem with the installed plugins, one line each (``mlrt plugins --check``):
    ``plugin NAME (dist VERSION): object: problem``."""
    try:
        get_plugin_manager()
    except PluginError as exc:
        return [str(exc)]
    lines = []
    for kind in _KINDS:
        try:
            registry = _registry(kind)
        except PluginError as exc:
            lines.append(str(exc))
            continue
        lines += [line for name in sorted(registry.unusable) for line in registry.unusable[name]]
    return lines


def describe() -> list[dict[str, Any]]:
    """Every loaded plugin with its distribution, version, hooks and what it registers."""
    pm = get_plugin_manager()
    provided: dict[str, dict[str, list[str]]] = {}
    for kind in _KINDS:
        for key, (_, plugin_name) in _registry(kind).items.items():
            provided.setdefault(plugin_name, {}).setdefault(kind, []).append(key)
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist, version = _distribution(name)
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


def not_loaded() -> list[dict[str, str]]:
    """Installed plugins left out by ``MLRT_LOAD_PLUGINS`` or ``MLRT_DISABLE_PLUGINS``:
    name, distribution, version and why."""
    get_plugin_manager()
    return [
        {"name": name, "distribution": dist, "version": version, "why": why}
        for name, (dist, version, why) in sorted(_NOT_LOADED.items())
    ]
