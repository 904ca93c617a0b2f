"""Secrets of a spec: masked in every view, encrypted at rest, revealed only at launch.

The values of ``spec.env`` (and of ``spec.template.env`` of a TuningJob, which
its trials inherit) may be credentials, as may the workers' tracking token
(:data:`SECRET_VARIABLES`). mlrt never prints or returns them: validation
plans, resolved and submitted specs, ``--set`` overrides, launch requests and
Kubernetes manifests show :data:`HIDDEN` instead (the ``mask_*`` functions).

At rest, the resolved spec keeps each value as an ``enc:`` token, encrypted
with Fernet (AES-128-CBC with HMAC-SHA256) under the operator key
(:func:`seal_env`); the submitted spec text is stored masked. The values are
decrypted only where the workers are launched (:func:`reveal_env`, called by
:func:`mlrt.submission.launch_context`) and where the tuning controller builds
a trial from its template (:func:`reveal_resolved`; the trial is sealed again
when it is submitted).

The operator key, in this order:

- ``MLRT_SECRET_KEY``: one or more Fernet keys separated by commas;
- ``MLRT_SECRET_KEY_FILE``: a file holding one or more keys, one a line;
- otherwise ``$MLRT_HOME/secret.key``, created (mode 0600) on first use. This
  suits one machine only: every controller replica and every machine that
  launches runs of the same database must share the key, so ``mlrt controller``
  on a database other than SQLite refuses to start without one of the two
  variables (:func:`check_operator_key`).

Key rotation: put the new key first and keep the old ones after it. New
values are encrypted with the first key; any listed key decrypts. A value
encrypted under a key no longer listed cannot be read: its attempt fails with
one line saying so, and the run's other data stay readable.

Generate a key with ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import yaml
    from cryptography.fernet import MultiFernet

HIDDEN = "<not shown>"
"""What every view shows instead of a secret value."""

SECRET_VARIABLES = ("MLRT_TRACKING_TOKEN",)
"""Variables mlrt itself gives the workers whose values are credentials."""

SEALED_PREFIX = "enc:"
"""How an encrypted value starts in the stored resolved spec."""

KEY_VARIABLE = "MLRT_SECRET_KEY"
KEY_FILE_VARIABLE = "MLRT_SECRET_KEY_FILE"
KEY_FILE_NAME = "secret.key"
"""The key file the embedded (one machine) mode creates under ``$MLRT_HOME``."""

# The paths of a resolved (or submitted) document whose mapping values are secrets.
_ENV_PATHS = (("spec", "env"), ("spec", "template", "env"))


class SecretError(RuntimeError):
    """The operator key is missing, malformed, or does not decrypt a stored value (one line)."""


# -- the operator key ----------------------------------------------------------


def _parse_keys(text: str, source: str) -> list[bytes]:
    keys = [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]
    if not keys:
        raise SecretError(f"{source}: holds no key; generate one with Fernet.generate_key() (see mlrt.secrets)")
    for index, key in enumerate(keys):
        try:
            _fernet(key.encode())
        except ValueError:
            raise SecretError(
                f"{source}: key {index + 1} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return [key.encode() for key in keys]


def _fernet(key: bytes):
    from cryptography.fernet import Fernet

    return Fernet(key)


def configured_keys() -> list[bytes] | None:
    """The operator's keys from ``MLRT_SECRET_KEY`` or ``MLRT_SECRET_KEY_FILE``, newest first;
    None when neither is set."""
    if os.environ.get(KEY_VARIABLE, "").strip():
        return _parse_keys(os.environ[KEY_VARIABLE], KEY_VARIABLE)
    path = os.environ.get(KEY_FILE_VARIABLE, "").strip()
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{KEY_FILE_VARIABLE}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return _parse_keys(text, f"{KEY_FILE_VARIABLE} ({path})")


def home_key_file() -> Path:
    """The embedded mode's key file, ``$MLRT_HOME/secret.key``, created (0600, a new
    Fernet key) by the first process that needs it."""
    from cryptography.fernet import Fernet

    from mlrt.store import mlrt_home

    path = mlrt_home() / KEY_FILE_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting at once, one writes the key and the other reads it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    except OSError as exc:
        raise SecretError(f"{KEY_VARIABLE}: not set, and cannot create {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(Fernet.generate_key() + b"\n")
    return path


def _home_key() -> list[bytes]:
    path = home_key_file()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{KEY_VARIABLE}: not set, and cannot read {path}: {exc}") from None
    return _parse_keys(text, str(path))


def cipher() -> MultiFernet:
    """The operator key(s) as one MultiFernet: encrypts with the first, decrypts with any."""
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(key) for key in configured_keys() or _home_key()])


def check_operator_key(database_url: str) -> None:
    """Check, at the controller service's start, that values can be encrypted and decrypted
    (SecretError, one line, otherwise).

    A database other than SQLite may be used by several controller replicas
    and machines, which must all decrypt the same values: a key generated in
    one machine's ``$MLRT_HOME`` would leave the others unable to launch, so
    there the key must be configured (``MLRT_SECRET_KEY`` or ``MLRT_SECRET_KEY_FILE``)."""
    if configured_keys() is None and not database_url.startswith("sqlite"):
        raise SecretError(
            f"{KEY_VARIABLE}: the controller service on a shared database needs the operator key: set"
            f" {KEY_VARIABLE} (or {KEY_FILE_VARIABLE}) to a Fernet key, the same for every replica"
        )
    cipher()


# -- encryption of spec.env values ---------------------------------------------


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is a stored ``enc:`` token."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def reveal(value: str, *, field: str = "spec.env", using: MultiFernet | None = None) -> str:
    """The clear value of an ``enc:`` token (SecretError when no configured key opens it).

    A value without the prefix comes from a database written before values
    were encrypted and is returned as stored. ``using`` is the :func:`cipher` to use
    (read once for many values)."""
    if not is_sealed(value):
        return value
    from cryptography.fernet import InvalidToken

    try:
        return (using or cipher()).decrypt(value.removeprefix(SEALED_PREFIX).encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise SecretError(
            f"{field}: the stored value cannot be decrypted with the configured {KEY_VARIABLE}"
            " (was the key changed? list the old key after the new one)"
        ) from None


def seal_env(env: Mapping[str, Any], *, keep_sealed: bool = False) -> dict[str, str]:
    """``env`` with every value encrypted. ``keep_sealed`` keeps values that are
    already tokens (sealing rows of which some values are); otherwise every value
    is encrypted, even one a user wrote starting with ``enc:``."""
    if not env:
        return dict(env)
    fernet = cipher()

    def one(value: Any) -> str:
        if keep_sealed and is_sealed(value):
            return value
        return SEALED_PREFIX + fernet.encrypt(str(value).encode("utf-8")).decode("ascii")

    return {name: one(value) for name, value in env.items()}


def reveal_env(env: Mapping[str, Any] | None, *, field: str = "spec.env") -> dict[str, str]:
    """``env`` with every ``enc:`` token decrypted, for the workers (SecretError on a wrong key)."""
    if not any(is_sealed(value) for value in (env or {}).values()):
        return dict(env or {})
    fernet = cipher()
    return {name: reveal(value, field=f"{field}.{name}", using=fernet) for name, value in (env or {}).items()}


def _env_maps(document: Any) -> Iterable[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(parent mapping, key, env mapping) of each secret-holding mapping of a spec document."""
    for path in _ENV_PATHS:
        parent = document
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), dict):
            yield parent, path[-1], parent[path[-1]]


def seal_resolved(resolved: dict[str, Any], *, keep_sealed: bool = False) -> dict[str, Any]:
    """A copy of a resolved spec (TrainingJob or TuningJob) as the database keeps it:
    ``spec.env`` and ``spec.template.env`` values encrypted (see :func:`seal_env`)."""
    stored = copy.deepcopy(resolved)
    for parent, key, env in _env_maps(stored):
        parent[key] = seal_env(env, keep_sealed=keep_sealed)
    return stored


def reveal_resolved(resolved: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored resolved spec with its env values decrypted (SecretError on a wrong
    key): what the tuning controller builds a trial from, so the trial is checked against the
    spec's limits with the user's values, not the longer tokens, and sealed again at submit."""
    clear = copy.deepcopy(resolved)
    for parent, key, env in _env_maps(clear):
        field = "spec.template.env" if parent is not clear.get("spec") else "spec.env"
        parent[key] = reveal_env(env, field=field)
    return clear


def holds_clear_values(resolved: dict[str, Any]) -> bool:
    """Whether a stored resolved spec still holds an env value in clear (a row written
    before mlrt encrypted them; see :meth:`mlrt.store.Store.seal_clear_secrets`)."""
    return any(not is_sealed(value) for _, _, env in _env_maps(resolved) for value in env.values())


def mask_env(env: Mapping[str, Any] | None) -> dict[str, str]:
    """``env`` with its names only: every value is :data:`HIDDEN`."""
    return dict.fromkeys(env or {}, HIDDEN)


def mask_resolved(resolved: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved spec with ``spec.env`` and ``spec.template.env`` values hidden."""
    shown = copy.deepcopy(resolved)
    for parent, key, env in _env_maps(shown):
        parent[key] = mask_env(env)
    return shown


def secret_names(spec: Mapping[str, Any]) -> set[str]:
    """The variables of a run whose values are hidden: ``spec.env``'s and :data:`SECRET_VARIABLES`."""
    return set(spec.get("env") or {}) | set(SECRET_VARIABLES)


# -- submitted text and --set overrides ------------------------------------------


def mask_overrides(overrides: Iterable[str]) -> list[str]:
    """``--set`` assignments with the value hidden where they set (part of) an env mapping:
    ``spec.env.TOKEN=x``, ``spec.env={...}``, ``spec={...}`` and the template's."""
    shown = []
    for assignment in overrides:
        key, sep, _ = assignment.partition("=")
        parts = tuple(part.strip() for part in key.strip().split("."))
        touches = any(parts[: len(path)] == path or path[: len(parts)] == parts for path in _ENV_PATHS)
        shown.append(f"{key}={HIDDEN}" if sep and touches else assignment)
    return shown


def mask_submitted(text: str) -> str:
    """The submitted spec text with each ``spec.env`` / ``spec.template.env`` value replaced by
    ``"<not shown>"`` in place: layout and comments are kept. A text whose env values
    cannot be replaced in place (anchors shared oddly, tags) is re-serialized instead."""
    import yaml  # here, not at the top: reading commands import this module and never mask YAML text

    try:
        mappings = [node for node in _env_nodes(yaml.compose(text, Loader=_loader())) if node.value]
    except yaml.YAMLError:
        return HIDDEN
    if not mappings:
        return text
    masked = _mask_in_place(text, mappings)
    if masked is not None:
        return masked
    document = yaml.load(text, Loader=_loader())  # noqa: S506 (a safe loader: C or Python)
    return yaml.safe_dump(mask_resolved(document), sort_keys=False, allow_unicode=True)


def _loader() -> type:
    """libyaml's safe loader when PyYAML has it (masking a large submitted text stays well under
    a second), else PyYAML's own."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _mask_in_place(text: str, mappings: list[yaml.MappingNode]) -> str | None:
    """``text`` with the env values' scalars replaced, or None when that does not give
    the document with exactly those values hidden."""
    import yaml

    spans: dict[int, int] = {}
    for mapping in mappings:
        for value in _mapping_values(mapping, set()):
            if not isinstance(value, yaml.ScalarNode):
                return None
            spans[value.start_mark.index] = value.end_mark.index
    masked = text
    for start in sorted(spans, reverse=True):
        # Keep an anchor (and drop a tag) written before the value, so aliases of it still resolve.
        anchor = re.match(r"(?:(&\S+)\s+|!\S*\s+)*", masked[start : spans[start]])
        kept = f"{anchor.group(1)} " if anchor and anchor.group(1) else ""
        masked = f'{masked[:start]}{kept}"{HIDDEN}"{masked[spans[start] :]}'
    try:
        document = yaml.load(masked, Loader=_loader())  # noqa: S506 (a safe loader: C or Python)
    except yaml.YAMLError:
        return None
    maps = list(_env_maps(document))
    if not maps or any(set(env.values()) - {HIDDEN} for _, _, env in maps):
        return None
    return masked


def _env_nodes(root: yaml.Node | None) -> Iterable[yaml.MappingNode]:
    import yaml

    for path in _ENV_PATHS:
        node = root
        for part in path:
            node = _child(node, part)
        if isinstance(node, yaml.MappingNode):
            yield node


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return None
    found = None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = value_node  # the last one wins, as when the document is loaded
    return found


def _mapping_values(node: yaml.MappingNode, seen: set[int]) -> Iterable[yaml.Node]:
    """The value nodes of a mapping, following ``<<`` merge keys (each mapping once)."""
    import yaml

    if id(node) in seen:
        return
    seen.add(id(node))
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in merged:
                if isinstance(source, yaml.MappingNode):
                    yield from _mapping_values(source, seen)
        else:
            yield value_node


# -- launch requests and manifests -----------------------------------------------


def mask_request(request: dict[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A launch request (plain data) with the secret variables' values hidden, in place and
    returned: each worker's env, and the env of every container of the Kubernetes
    manifests in ``details``. ``spec`` is the run's resolved ``spec``."""
    names = secret_names(spec)
    for worker in request.get("workers", []):
        worker["env"] = hide_values(worker.get("env") or {}, names)
    for manifest in (request.get("details") or {}).get("manifests") or []:
        mask_manifest(manifest, names)
    return request


def hide_values(env: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """A copy of ``env`` with the values of the variables in ``names`` hidden."""
    names = set(names)
    return {k: HIDDEN if k in names else v for k, v in env.items()}


def mask_manifest(manifest: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A Kubernetes object with the plain ``value`` of each env entry named in ``names``
    hidden in every container and init container of its pod template, in place."""
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or manifest.get("spec") or {}
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        for entry in container.get("env") or []:
            if entry.get("name") in names and "value" in entry:
                entry["value"] = HIDDEN
    return manifest
