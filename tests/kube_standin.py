"""An in-process stand-in for the Kubernetes API server, for tests and benchmarks.

:class:`KubeStandIn` serves enough of the Kubernetes REST protocol (plain HTTP on 127.0.0.1, an ephemeral port) for
the official ``kubernetes`` Python client to create, read, list, watch, patch and delete batch/v1 Jobs, v1 Pods and
v1 Services, and to read (and follow) pod logs. There is no cluster behind it: a simulated Job controller creates the
pods of a Job and keeps its status the way the real controller does, and the test plays scheduler and kubelet by
calling methods such as :meth:`KubeStandIn.start_pod`, :meth:`KubeStandIn.append_log` and
:meth:`KubeStandIn.fail_pod`::

    with KubeStandIn() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        ...  # code under test: kubernetes.config.load_kube_config(config_file=kubeconfig), BatchV1Api(), ...
        for pod in kube.pods("default", job="train"):
            kube.start_pod(pod["metadata"]["name"])
            kube.succeed_pod(pod["metadata"]["name"])

Deliberate simplifications:

- A delete without a propagation policy uses ``Background`` for every kind. (The real API defaults batch/v1 Jobs to
  ``Orphan`` for legacy reasons, which leaves their pods running; code under test should always pass a policy.)
- Pods are deleted gracefully (``deletionTimestamp``, ``deletionGracePeriodSeconds``, the test plays the kubelet
  with :meth:`KubeStandIn.finish_termination`, a timer kills them when the grace period ends); no other kind is,
  and the only finalizer is the garbage collector's ``foregroundDeletion``. The garbage collector works inside
  the DELETE that starts it, not on its own thread. Pods never restart in place (restartPolicy Never, as Jobs
  use); only sidecars do, through :meth:`KubeStandIn.fail_sidecar`.
- Strategic merge patches merge the lists named in ``_MERGE_KEYS`` by their patch merge key (by field name, not by
  the Go types' tags) and ``finalizers`` as a set; other lists are replaced, directives (``$patch``...) are refused
  with 400, JSON patches (a list of operations) with 415. A patch carrying ``metadata.resourceVersion`` is a
  precondition: 409 Conflict when it is not the current one. There is no PUT.
- Field selectors accept only the fields the real API supports for each kind (``_SELECTABLE_FIELDS``).
- Watches filter events by the object's state in each event: an object that stops matching a selector produces no
  DELETED event. The watch history is one window for all kinds (102,400 events by default), not a watch cache per
  resource; a list ignores ``resourceVersion``/``resourceVersionMatch`` and ``limit`` (always the current state,
  never 410). Bookmarks come at a fixed interval, not also just before a watch times out.
- 429 Too Many Requests comes only when a test asks for it (:meth:`KubeStandIn.throttle`), for any request, with
  the flow-control filters' plain-text body; there is no real concurrency limit.
- Pod logs honour ``follow``, ``tailLines``, ``timestamps``, ``sinceTime`` and ``sinceSeconds``, not ``limitBytes``,
  ``previous`` or ``stream``; stdout and stderr are one stream.
- Job controller: it runs on its own thread, ``job_controller_delay`` behind each change, one change at a time
  (the real one syncs several Jobs in parallel). No ``FailIndex``/``backoffLimitPerIndex``, no ``successPolicy``,
  no pod-tracking finalizers (a pod is accounted for once, by uid). A pod deleted before it finished counts as
  failed (at once with ``podReplacementPolicy: TerminatingOrFailed``, once it has failed with ``Failed``). A
  Job gets its ``Failed`` or ``Complete`` condition right after the interim one, not once its terminating pods
  are gone (Kubernetes 1.31+ waits for them).

Identities (:mod:`kube_rbac`): the admin :data:`TOKEN` of :meth:`KubeStandIn.write_kubeconfig` may do anything (the
test playing cluster admin); a ServiceAccount's kubeconfig (:meth:`KubeStandIn.serviceaccount_kubeconfig`) is
authorized by RBAC from the Roles and bindings given to :meth:`KubeStandIn.apply_rbac`, so a request they do not
grant is 403 Forbidden with the API server's message, as on a real cluster.
"""

from __future__ import annotations

import bisect
import collections
import copy
import hashlib
import itertools
import json
import math
import os
import random
import re
import select
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import kubernetes
import kubernetes_validate
import yaml

from kube_rbac import Access, Denial, RequestRefused

JSON = dict[str, Any]

SERVER_VERSION = "1.33.0"
"""The Kubernetes version the stand-in reports on ``/version`` and validates created objects against."""

TOKEN = "standin-token"
"""The bearer token every request must carry (the kubeconfig of :meth:`KubeStandIn.kubeconfig` has it)."""

CONTEXT = "standin"
"""Name of the cluster, user and context in the kubeconfig."""

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
"""Label and annotation carrying an Indexed Job pod's completion index."""

_TICK = 0.2  # seconds an open stream waits for news before checking whether it should end
_NODE_NAME = "standin-node"
_NODE_IP = "10.0.0.10"
_MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_SERVER_MANAGED_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation")
_PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")

LATENCY_ENV = "MLRT_STANDIN_LATENCY_MS"
"""Environment variable: milliseconds every request waits before it is served (default 0), see :class:`KubeStandIn`."""


# --- resource kinds and API errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceKind:
    """A REST resource type the stand-in serves."""

    kind: str
    api_version: str
    plural: str

    @property
    def group(self) -> str:
        """The API group: ``batch`` for Jobs, ``""`` for the core group."""
        return self.api_version.rpartition("/")[0]

    @property
    def prefix(self) -> str:
        """URL path prefix of the group version: ``/api/v1`` or ``/apis/batch/v1``."""
        return f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"

    @property
    def resource(self) -> str:
        """The resource qualified by its group, as API messages name it: ``jobs.batch``, ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """The kind qualified by its group, as validation messages name it: ``Job.batch``, ``Pod``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


JOBS = ResourceKind("Job", "batch/v1", "jobs")
PODS = ResourceKind("Pod", "v1", "pods")
SERVICES = ResourceKind("Service", "v1", "services")
SECRETS = ResourceKind("Secret", "v1", "secrets")
KINDS = (JOBS, PODS, SERVICES, SECRETS)


def resolve_kind(name: str) -> ResourceKind:
    """The kind called ``name``: its kind (``Job``) or plural (``jobs``), in any case."""
    for kind in KINDS:
        if name.lower() in (kind.kind.lower(), kind.plural):
            return kind
    raise KeyError(f"the stand-in serves no kind {name!r}")


class _StreamCut(Exception):
    """Raised inside a watch or log stream that a test cut with an error: the connection is dropped mid-stream."""


class ApiError(Exception):
    """An error answer, sent as a ``kind: Status`` object with HTTP status ``code``."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        """The ``Status`` object the API answers with."""
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        status.update(message=self.message, reason=self.reason, code=self.code)
        if self.details is not None:
            status["details"] = self.details
        return status

    @classmethod
    def not_found(cls, kind: ResourceKind, name: str) -> ApiError:
        details = {"name": name, "group": kind.group, "kind": kind.plural}
        return cls(404, "NotFound", f'{kind.resource} "{name}" not found', details)

    @classmethod
    def already_exists(cls, kind: ResourceKind, name: str) -> ApiError:
        details = {"name": name, "group": kind.group, "kind": kind.plural}
        return cls(409, "AlreadyExists", f'{kind.resource} "{name}" already exists', details)

    @classmethod
    def invalid(cls, kind: ResourceKind, name: str, errors: list[str]) -> ApiError:
        listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
        details = {"name": name, "group": kind.group, "kind": kind.kind}
        return cls(422, "Invalid", f'{kind.qualified_kind} "{name}" is invalid: {listed}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)


# --- small pure helpers ----------------------------------------------------------------------------------------


def _now() -> str:
    """The current time in the API's timestamp format."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(seconds: float) -> str:
    """A ``time.time()`` value in the API's timestamp format."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_SELECTOR_TERMS = re.compile(r",(?![^()]*\))")  # commas outside parentheses
_LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_TERM = re.compile(rf"^({_LABEL_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EQUALITY_TERM = re.compile(rf"^({_LABEL_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)$")
_EXISTS_TERM = re.compile(rf"^(!?)\s*({_LABEL_KEY})$")
_FIELD_TERM = re.compile(r"^([A-Za-z][A-Za-z.]*)\s*(==|=|!=)\s*(.*)$")


def label_selector(text: str) -> Callable[[JSON], bool]:
    """Compile a label selector into a predicate on objects.

    Terms are comma-joined (all must hold): ``k=v`` (or ``k==v``), ``k!=v``, ``k`` (has the label), ``!k`` (has not),
    ``k in (a,b)``, ``k notin (a,b)``. Raises a 400 :class:`ApiError` for a term it cannot parse.
    """
    requirements = [_label_requirement(term.strip()) for term in _SELECTOR_TERMS.split(text) if term.strip()]
    return lambda obj: all(holds(obj["metadata"].get("labels") or {}) for holds in requirements)


def _label_requirement(term: str) -> Callable[[dict[str, str]], bool]:
    if match := _SET_TERM.match(term):
        key, operator, listed = match.groups()
        values = {value.strip() for value in listed.split(",")}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY_TERM.match(term):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_TERM.match(term):
        negated, key = match.groups()
        return lambda labels: (key in labels) != bool(negated)
    raise ApiError.bad_request(f"unable to parse requirement: {term!r}")


# The fields each kind can be selected by, as the API server's ``*ToSelectableFields`` functions list them
# (pkg/registry/core/pod/strategy.go ToSelectableFields, pkg/registry/batch/job/strategy.go JobToSelectableFields,
# pkg/registry/core/secret/strategy.go SelectableFields); every kind has metadata.name and metadata.namespace
# (generic.AddObjectMetaFieldsSet). Each maps to the dotted path it reads and how an absent value reads.
_SELECTABLE_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "Pod": {
        "spec.nodeName": ("spec.nodeName", ""),
        "spec.restartPolicy": ("spec.restartPolicy", ""),
        "spec.schedulerName": ("spec.schedulerName", ""),
        "spec.serviceAccountName": ("spec.serviceAccountName", ""),
        "spec.hostNetwork": ("spec.hostNetwork", "false"),
        "status.phase": ("status.phase", ""),
        "status.podIP": ("status.podIP", ""),
        "status.nominatedNodeName": ("status.nominatedNodeName", ""),
    },
    "Job": {"status.successful": ("status.succeeded", "0")},
    "Secret": {"type": ("type", "")},
    "Service": {},
}


def field_selector(text: str, kind: str) -> Callable[[JSON], bool]:
    """Compile a field selector (``metadata.name=x``, ``status.phase!=Running``, comma-joined) into a predicate.

    Only the fields the real API lets ``kind`` be selected by are accepted (:data:`_SELECTABLE_FIELDS`); any other
    is a 400 ``field label not supported: X``, as the API server's field label conversion answers.
    """
    selectable = {"metadata.name": ("metadata.name", ""), "metadata.namespace": ("metadata.namespace", "")}
    selectable.update(_SELECTABLE_FIELDS[kind])
    requirements = []
    for term in filter(None, (term.strip() for term in text.split(","))):
        match = _FIELD_TERM.match(term)
        if match is None:
            raise ApiError.bad_request(f"invalid field selector: {term!r}")
        label, operator, value = match.groups()
        if label not in selectable:
            raise ApiError.bad_request(f"field label not supported: {label}")
        path, absent = selectable[label]
        requirements.append((path.split("."), absent, operator == "!=", value))
    return lambda obj: all(
        ((_field(obj, path) or absent) == value) != negated for path, absent, negated, value in requirements
    )


def _field(obj: Any, path: list[str]) -> str:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386) to ``target``, returning a new value: ``null`` deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


# The lists a strategic merge patch merges by key, by field name, as the patchMergeKey tags of the Kubernetes
# types the stand-in serves say (staging/src/k8s.io/api/core/v1/types.go, apimachinery's ObjectMeta); a list of
# any other name is replaced whole, as an atomic list is. ``ports`` is keyed by ``containerPort`` in a container
# and by ``port`` in a Service's spec.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
}
_MERGED_PRIMITIVE_LISTS = ("finalizers",)  # patchStrategy merge on a list of strings: a union


def strategic_merge_patch(target: Any, patch: Any, field: str = "", parent: str = "") -> Any:
    """Apply a strategic merge patch to ``target``, returning a new value.

    Maps merge as in a JSON merge patch (``null`` deletes a key); the lists of :data:`_MERGE_KEYS` merge item by
    item on their key (an item of the patch replaces the fields it names in the item with the same key, a new
    key is appended), ``finalizers`` is a union, and every other list is replaced. Directives (``$patch``,
    ``$retainKeys``, ``$setElementOrder``, ``$deleteFromPrimitiveList``) are refused with 400: the stand-in
    does not model them.
    """
    if isinstance(patch, dict):
        directives = sorted(key for key in patch if key.startswith("$"))
        if directives:
            raise ApiError.bad_request(f"the stand-in does not model strategic merge directives: {directives[0]}")
        merged = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge_patch(merged.get(key), value, key, field)
        return merged
    if isinstance(patch, list) and isinstance(target, list):
        if field in _MERGED_PRIMITIVE_LISTS:
            return [*target, *(item for item in patch if item not in target)]
        key = _MERGE_KEYS.get(field) or ({"spec": "port"}.get(parent, "containerPort") if field == "ports" else None)
        if key is not None and all(isinstance(item, dict) and key in item for item in [*target, *patch]):
            merged_items = [copy.deepcopy(item) for item in target]
            for item in patch:
                position = next((i for i, old in enumerate(merged_items) if old[key] == item[key]), None)
                if position is None:
                    merged_items.append(strategic_merge_patch({}, item))
                else:
                    merged_items[position] = strategic_merge_patch(merged_items[position], item)
            return merged_items
    return copy.deepcopy(patch)


def _check_resource_version(kind: ResourceKind, obj: JSON, body: Any) -> None:
    """Optimistic concurrency: a write that carries ``metadata.resourceVersion`` applies only to that version of
    the object, else 409 Conflict with the API server's message (docs: "API Concepts > Resource versions";
    apiserver storage ``GuaranteedUpdate``)."""
    wanted = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
    if wanted is not None and str(wanted) != obj["metadata"]["resourceVersion"]:
        name = obj["metadata"]["name"]
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; please apply '
            "your changes to the latest version and try again",
            {"name": name, "group": kind.group, "kind": kind.plural},
        )


def _format_indexes(indexes: set[int]) -> str:
    """Completed indexes the way Job status writes them: ``"0-2,5"``."""
    ranges: list[list[int]] = []
    for index in sorted(indexes):
        if ranges and ranges[-1][1] == index - 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def _parse_indexes(text: str) -> set[int]:
    """The inverse of :func:`_format_indexes`."""
    indexes: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        indexes.update(range(int(low), int(high or low) + 1))
    return indexes


def _put_condition(conditions: list[JSON], type_: str, status: str, reason: str = "", message: str = "") -> None:
    """Set the condition of type ``type_``, in place or appended; its transition time moves only if it changed."""
    condition = {"type": type_, "status": status, "lastProbeTime": _now(), "lastTransitionTime": _now()}
    if reason:
        condition.update(reason=reason, message=message)
    for position, existing in enumerate(conditions):
        if existing["type"] == type_:
            if (existing["status"], existing.get("reason", "")) != (status, reason):
                conditions[position] = condition
            return
    conditions.append(condition)


def _has_condition(obj: JSON, type_: str) -> bool:
    """Whether the object's status has condition ``type_`` with status True."""
    return any(c["type"] == type_ and c["status"] == "True" for c in obj["status"].get("conditions", []))


def _job_finished(job: JSON) -> bool:
    return _has_condition(job, "Complete") or _has_condition(job, "Failed")


def _pod_finished(pod: JSON) -> bool:
    return pod["status"].get("phase") in ("Succeeded", "Failed")


def _pod_index(pod: JSON) -> int:
    return int(pod["metadata"]["annotations"][INDEX_KEY])


def _owner_reference(obj: JSON) -> JSON:
    """A controller ownerReference to ``obj``, as the Job controller puts on its pods."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --- storage, resource versions, watch history and garbage collection -----------------------------------------


@dataclass(frozen=True)
class Event:
    """An entry of the watch history: an object's state right after a change. Never mutated."""

    resource_version: int
    kind: ResourceKind
    type: str
    object: JSON


class Store:
    """The objects by (kind, namespace, name), the global resourceVersion counter and the watch history.

    ``cond`` is the stand-in's one lock (re-entrant); every method expects the caller to hold it. Open watch and
    log streams wait on it, and every change notifies them.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.closed = False
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._recorded: dict[tuple[str, str, str], JSON] = {}  # each object's state in its latest event
        # Indexes, so that a list or a Job's sync costs what it returns, not the whole store (the real server's
        # watch cache and the Job controller's informer are indexed too): objects by (plural, namespace), and the
        # keys of the objects whose ownerReferences name each uid.
        self._collections: dict[tuple[str, str], dict[str, JSON]] = {}
        self._owned: dict[str, set[tuple[str, str, str]]] = {}
        self._owners_of: dict[tuple[str, str, str], set[str]] = {}
        # The watch history is a window of the latest events, like the watch cache's ring buffer
        # (staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go): ``history_limit`` events at most, and
        # :meth:`compact` drops all of it. Positions (cursors) count every event ever recorded; ``_dropped`` of
        # them have left the window, and ``_compacted`` is the newest resourceVersion among those.
        self._history: list[Event] = []
        self.history_limit = 100 * 1024  # the watch cache's upper bound (watch_cache.go defaultUpperBoundCapacity)
        self._dropped = 0
        self._compacted = 0
        self._version = 0
        self.bookmark_interval = 60.0  # seconds between BOOKMARK events (the cacher sends one about every minute)
        self._cuts = {"watch": 0, "log": 0}  # how often each kind of stream was cut (:meth:`cut_streams`)
        self.cut_with_error = False
        # Decides a pod's deletion (the kubelet's part of it): True when the pod now terminates gracefully and stays
        # until the kubelet removes it with :meth:`remove`, False when it is to be removed at once.
        self.terminate_gracefully: Callable[[JSON, int | None], bool] = lambda pod, grace: False

    @property
    def resource_version(self) -> str:
        return str(self._version)

    def get(self, kind: ResourceKind, namespace: str, name: str) -> JSON | None:
        """The live stored object, or None."""
        return self._objects.get((kind.plural, namespace, name))

    def list(self, kind: ResourceKind, namespace: str) -> list[JSON]:
        """The live stored objects of a kind in a namespace, by name."""
        found = self._collections.get((kind.plural, namespace), {})
        return [found[name] for name in sorted(found)]

    def owned_by(self, uid: str) -> list[tuple[ResourceKind, JSON]]:
        """The live objects whose ``ownerReferences`` name ``uid``, by kind and name."""
        kinds = {kind.plural: kind for kind in KINDS}
        return [(kinds[key[0]], self._objects[key]) for key in sorted(self._owned.get(uid, ()))]

    def _put(self, key: tuple[str, str, str], obj: JSON) -> None:
        self._objects[key] = obj
        self._collections.setdefault(key[:2], {})[key[2]] = obj
        owners = {ref["uid"] for ref in obj["metadata"].get("ownerReferences", [])}
        for gone in self._owners_of.get(key, set()) - owners:
            self._owned[gone].discard(key)
        for uid in owners:
            self._owned.setdefault(uid, set()).add(key)
        self._owners_of[key] = owners

    def _take_out(self, key: tuple[str, str, str]) -> None:
        del self._objects[key], self._recorded[key]
        del self._collections[key[:2]][key[2]]
        for uid in self._owners_of.pop(key, set()):
            self._owned[uid].discard(key)
            if not self._owned[uid]:
                del self._owned[uid]

    def create(
        self, kind: ResourceKind, namespace: str, obj: JSON, prepare: Callable[[JSON], None] | None = None
    ) -> JSON:
        """Store a new object: name it (``generateName``), fill in the server-managed metadata, record ADDED.

        ``prepare`` runs after the metadata is filled in and before the object is stored (API defaulting that needs
        the uid, for instance).
        """
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or self._generate_name(kind, namespace, meta.get("generateName", ""))
        if (kind.plural, namespace, name) in self._objects:
            raise ApiError.already_exists(kind, name)
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        if prepare is not None:
            prepare(obj)
        self._put((kind.plural, namespace, name), obj)
        self._record(kind, "ADDED", obj)
        return obj

    def update(self, kind: ResourceKind, obj: JSON) -> None:
        """Store the object's new state and record MODIFIED; an update that changes nothing is a no-op."""
        key = (kind.plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._put(key, obj)
        if obj != self._recorded[key]:
            self._record(kind, "MODIFIED", obj)

    def delete(self, kind: ResourceKind, obj: JSON, propagation: str, grace: int | None = None) -> None:
        """Delete the object and garbage-collect its dependents as ``propagation`` says.

        A pod is deleted gracefully unless :attr:`terminate_gracefully` says otherwise (``grace``: the
        DeleteOptions' ``gracePeriodSeconds``, None for the pod's own ``terminationGracePeriodSeconds``): it gets a
        ``deletionTimestamp`` and stays until the kubelet has stopped it. Dependents are the objects of any kind
        whose ``ownerReferences`` name the object's uid; the garbage collector deletes them with no grace period
        of its own (pkg/controller/garbagecollector/operations.go ``deleteObject`` sends only a UID precondition
        and the propagation policy), so a dependent pod gets its ``terminationGracePeriodSeconds``.
        ``Background`` deletes the owner, then its dependents; ``Foreground`` marks the owner as being deleted
        (``deletionTimestamp`` and the ``foregroundDeletion`` finalizer), deletes its dependents and removes the
        owner once no dependent with ``blockOwnerDeletion`` is left (docs: "Garbage Collection > Foreground
        cascading deletion"); ``Orphan`` deletes the owner and removes the reference from its dependents.
        """
        meta = obj["metadata"]
        key = (kind.plural, meta["namespace"], meta["name"])
        if self._objects.get(key) is not obj:
            return  # already collected through another owner
        if kind is PODS and self.terminate_gracefully(obj, grace):
            return
        dependents = self._dependents(meta["namespace"], meta["uid"])
        if propagation == "Foreground":
            if "foregroundDeletion" not in meta.get("finalizers", []):
                meta.update(deletionTimestamp=_now(), finalizers=[*meta.get("finalizers", []), "foregroundDeletion"])
                self.update(kind, obj)
            for dependent_kind, dependent in dependents:
                self.delete(dependent_kind, dependent, "Foreground")
            if self._blocking_dependents(meta["namespace"], meta["uid"]):
                return  # removed by :meth:`remove` once its last blocking dependent is gone
        self.remove(kind, obj)
        if propagation == "Background":
            for dependent_kind, dependent in dependents:
                self.delete(dependent_kind, dependent, "Background")
        elif propagation == "Orphan":
            for dependent_kind, dependent in dependents:
                references = [ref for ref in dependent["metadata"]["ownerReferences"] if ref["uid"] != meta["uid"]]
                dependent["metadata"]["ownerReferences"] = references
                self.update(dependent_kind, dependent)

    def remove(self, kind: ResourceKind, obj: JSON) -> None:
        """Take the object out of the store (record DELETED); then remove every owner in foreground deletion
        that no dependent blocks any more, as the garbage collector does when it removes their finalizer."""
        meta = obj["metadata"]
        key = (kind.plural, meta["namespace"], meta["name"])
        if self._objects.get(key) is not obj:
            return
        self._take_out(key)
        self._record(kind, "DELETED", obj)
        for ref in meta.get("ownerReferences", []):
            for owner_kind in KINDS:
                owner = self.get(owner_kind, meta["namespace"], ref["name"])
                if (
                    owner is not None
                    and owner["metadata"]["uid"] == ref["uid"]
                    and "foregroundDeletion" in owner["metadata"].get("finalizers", [])
                    and not self._blocking_dependents(meta["namespace"], ref["uid"])
                ):
                    self.remove(owner_kind, owner)

    def _blocking_dependents(self, namespace: str, uid: str) -> list[JSON]:
        return [
            dependent
            for _, dependent in self._dependents(namespace, uid)
            if any(
                ref["uid"] == uid and ref.get("blockOwnerDeletion") for ref in dependent["metadata"]["ownerReferences"]
            )
        ]

    def cursor_after(self, resource_version: int) -> int:
        """The history position of the first event newer than ``resource_version``.

        Raises 410 ``Expired`` when events newer than it have left the window, with the watch cache's message
        (watch_cache.go ``getAllEventsSinceLocked``: ``too old resource version: RV (OLDEST-1)``).
        """
        if resource_version < self._compacted:
            raise ApiError(410, "Expired", f"too old resource version: {resource_version} ({self._compacted})")
        found = bisect.bisect_right(self._history, resource_version, key=lambda event: event.resource_version)
        return self._dropped + found

    @property
    def cursor(self) -> int:
        """The history position the next event will take."""
        return self._dropped + len(self._history)

    def events_from(self, cursor: int, timeout: float) -> tuple[list[Event], int] | None:
        """The events from history position ``cursor`` on, waiting up to ``timeout`` seconds if there are none;
        None when some of them have left the window (the watcher fell behind)."""
        if cursor == self.cursor and not self.closed:
            self.cond.wait(timeout)
        if cursor < self._dropped:
            return None
        return self._history[cursor - self._dropped :], self.cursor

    def compact(self) -> None:
        """Drop the whole watch history, as a compaction of etcd and a watch cache that has moved on do: a watch
        from any resourceVersion before now gets 410 Gone."""
        self._trim(len(self._history))

    def cut(self, streams: str | None, error: bool) -> None:
        """End the open ``"watch"`` or ``"log"`` streams (None: both); ``error``: by dropping the connection."""
        for kind in [streams] if streams else list(self._cuts):
            self._cuts[kind] += 1
        self.cut_with_error = error
        self.cond.notify_all()

    def cuts(self, streams: str) -> int:
        """How often the ``"watch"`` or ``"log"`` streams were cut so far: a stream ends when this changes."""
        return self._cuts[streams]

    def _trim(self, count: int) -> None:
        if count > 0:
            self._compacted = self._history[count - 1].resource_version
            self._dropped += count
            del self._history[:count]

    def close(self) -> None:
        """Mark the store closed and wake every stream waiting on it, so that they end."""
        self.closed = True
        self.cond.notify_all()

    def _dependents(self, namespace: str, uid: str) -> list[tuple[ResourceKind, JSON]]:
        order = {kind.plural: index for index, kind in enumerate(KINDS)}
        found = [(kind, obj) for kind, obj in self.owned_by(uid) if obj["metadata"]["namespace"] == namespace]
        return sorted(found, key=lambda item: order[item[0].plural])  # by kind, then name, as before

    def _generate_name(self, kind: ResourceKind, namespace: str, prefix: str) -> str:
        if not prefix:
            raise ApiError.invalid(kind, "", ["metadata.name: Required value: name or generateName is required"])
        while True:
            name = prefix + "".join(random.choices(string.ascii_lowercase, k=5))
            if (kind.plural, namespace, name) not in self._objects:
                return name

    def _record(self, kind: ResourceKind, type_: str, obj: JSON) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        snapshot = copy.deepcopy(obj)
        self._history.append(Event(self._version, kind, type_, snapshot))
        self._trim(len(self._history) - self.history_limit)
        if type_ != "DELETED":
            self._recorded[(kind.plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = snapshot
        self.cond.notify_all()


# --- the simulated Job controller -------------------------------------------------------------------------------


class JobController:
    """Simulates the batch/v1 Job controller: creates the pods of Jobs and keeps their status.

    Like the real one (pkg/controller/job/job_controller.go: informer events put the Job's key on a work queue
    that ``syncJob`` drains), it runs on its own thread, ``delay`` seconds behind the change that woke it: a
    POSTed Job has no pods yet when the POST answers. Callers hold the store's lock and tell it of changes with
    :meth:`sync` (a Job was created or changed), :meth:`pod_updated`, :meth:`pod_terminating`,
    :meth:`pod_finished` and :meth:`pod_deleted`; each queues the work, done in order. A pod is accounted for
    (succeeded or failed) once, by uid, as the real controller's pod-tracking finalizers ensure.
    """

    def __init__(self, store: Store, delay: float) -> None:
        self._store = store
        self._delay = delay
        self._queue: collections.deque[tuple[float, Callable[[], None]]] = collections.deque()
        self._busy = False
        self._accounted: set[str] = set()  # uids of pods already counted as succeeded or failed
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-standin-job-controller", daemon=True)

    def start(self) -> None:
        """Start the controller's thread; it ends when the store closes."""
        self._thread.start()

    def wait_idle(self, timeout: float) -> None:
        """Wait (the caller holds the lock) until the queue is empty; raise what a sync raised, if one did."""
        if not self._store.cond.wait_for(lambda: not (self._queue or self._busy) or self.error, timeout):
            raise TimeoutError(f"the Job controller still had work after {timeout:g}s")
        if self.error is not None:
            raise RuntimeError("the stand-in's Job controller failed") from self.error

    def sync(self, job: JSON) -> None:
        """Queue a sync of the Job: its pods and status brought in line with its spec."""
        self._later(lambda: self._sync(job))

    def pod_updated(self, pod: JSON) -> None:
        """A pod changed without finishing (started, became unschedulable...): queue a refresh of its Job."""
        self._later(lambda: self._pod_updated(pod))

    def pod_terminating(self, pod: JSON) -> None:
        """A pod got a ``deletionTimestamp``. With ``podReplacementPolicy: TerminatingOrFailed`` it counts as failed
        (and is replaced) at once; with ``Failed`` only once it has reached phase Failed (job_controller.go
        ``isPodFailed``)."""
        self._later(lambda: self._pod_terminating(pod))

    def pod_finished(self, pod: JSON) -> None:
        """Queue the accounting of a pod that has just reached phase Succeeded or Failed."""
        succeeded = pod["status"]["phase"] == "Succeeded"
        self._later(lambda: self._account(pod, succeeded))

    def pod_deleted(self, pod: JSON) -> None:
        """Queue the accounting of a pod removed through the API: one removed before it finished counts as failed."""
        if not _pod_finished(pod):
            self._later(lambda: self._account(pod, succeeded=False))

    def _later(self, work: Callable[[], None]) -> None:
        self._queue.append((time.monotonic() + self._delay, work))
        self._store.cond.notify_all()

    def _run(self) -> None:
        cond = self._store.cond
        with cond:
            while not self._store.closed:
                if not self._queue:
                    cond.wait()
                    continue
                due, work = self._queue[0]
                if due > time.monotonic():
                    cond.wait(due - time.monotonic())
                    continue
                self._queue.popleft()
                self._busy = True
                try:
                    work()
                except BaseException as error:  # a stand-in bug: keep it for wait_idle to raise
                    self.error = error
                finally:
                    self._busy = False
                    cond.notify_all()

    def _pod_updated(self, pod: JSON) -> None:
        job = self._job_of(pod)
        if job is not None:
            self._sync(job)

    def _pod_terminating(self, pod: JSON) -> None:
        job = self._job_of(pod)
        if job is None:
            return
        if job["spec"].get("podReplacementPolicy") != "Failed" and pod["status"].get("phase") != "Succeeded":
            self._account(pod, succeeded=False)
        else:
            self._sync(job)

    def _sync(self, job: JSON) -> None:
        """Bring the Job's pods and status in line with its spec (the controller's reconcile loop)."""
        if (
            _job_finished(job)
            or job["metadata"].get("deletionTimestamp")
            or self._store.get(JOBS, job["metadata"]["namespace"], job["metadata"]["name"]) is not job
        ):
            return
        status = job["status"]
        conditions = status.setdefault("conditions", [])
        unfinished = [pod for pod in self._pods(job) if not _pod_finished(pod)]
        # Terminating pods are not active; with podReplacementPolicy Failed they still hold their place until
        # they have failed (job_controller.go: manageJob, ``onlyReplaceFailedPods``).
        active = [pod for pod in unfinished if not pod["metadata"].get("deletionTimestamp")]
        terminating = [pod for pod in unfinished if pod["metadata"].get("deletionTimestamp")]
        holding = active + terminating if job["spec"].get("podReplacementPolicy") == "Failed" else active
        if job["spec"]["suspend"]:
            for pod in active:
                self._store.delete(PODS, pod, "Background")
            active = []
            _put_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended")
        else:
            if any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
                _put_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed")
                status["startTime"] = _now()
            status.setdefault("startTime", _now())
            if self._succeeded(job, active):
                self._finish(
                    job,
                    "SuccessCriteriaMet",
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
                return
            active += [self._create_pod(job, index) for index in self._missing(job, holding)]
        if not conditions:
            del status["conditions"]
        self._count(status, "active", len(active))
        self._count(status, "terminating", len(terminating))
        status["ready"] = sum(_has_condition(pod, "Ready") for pod in active)
        self._store.update(JOBS, job)

    def expire_deadline(self, job: JSON) -> None:
        """Fail the Job as if its ``activeDeadlineSeconds`` had passed."""
        if not _job_finished(job):
            self._finish(
                job, "FailureTarget", "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
            )

    def finish_ttl(self, namespace: str) -> None:
        """Delete (Background) every finished Job with ``ttlSecondsAfterFinished`` set, as if its TTL had passed."""
        for job in self._store.list(JOBS, namespace):
            if _job_finished(job) and job["spec"].get("ttlSecondsAfterFinished") is not None:
                self._store.delete(JOBS, job, "Background")

    def _account(self, pod: JSON, succeeded: bool) -> None:
        job = self._job_of(pod)
        if job is None or _job_finished(job) or job["metadata"].get("deletionTimestamp"):
            return
        if pod["metadata"]["uid"] in self._accounted:
            self._sync(job)
            return
        self._accounted.add(pod["metadata"]["uid"])
        status = job["status"]
        if succeeded:
            if job["spec"]["completionMode"] == "Indexed":
                done = _parse_indexes(status.get("completedIndexes", "")) | {_pod_index(pod)}
                status["completedIndexes"] = _format_indexes(done)
                status["succeeded"] = len(done)
            else:
                self._count(status, "succeeded", status.get("succeeded", 0) + 1)
        else:
            action, message = self._failure_action(job, pod)
            if action == "FailJob":
                self._finish(job, "FailureTarget", "Failed", "PodFailurePolicy", message)
                return
            if action != "Ignore":
                self._count(status, "failed", status.get("failed", 0) + 1)
                if status["failed"] > job["spec"]["backoffLimit"]:
                    self._finish(
                        job,
                        "FailureTarget",
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    )
                    return
        self._sync(job)

    def _failure_action(self, job: JSON, pod: JSON) -> tuple[str, str]:
        """The action of the first ``podFailurePolicy`` rule the failed pod matches (``Count`` if none) and why."""
        for position, rule in enumerate(job["spec"].get("podFailurePolicy", {}).get("rules", [])):
            reason = _rule_match(rule, pod)
            if reason is not None:
                return rule["action"], f"{reason} matching {rule['action']} rule at index {position}"
        return "Count", ""

    def _succeeded(self, job: JSON, active: list[JSON]) -> bool:
        """Whether the Job has enough successes: ``completions`` of them, or (without completions) one, all done."""
        succeeded, completions = job["status"].get("succeeded", 0), job["spec"].get("completions")
        if completions is None:
            return succeeded > 0 and not active
        return succeeded >= completions

    def _missing(self, job: JSON, active: list[JSON]) -> list[int | None]:
        """The pods to create now, as completion indexes (None for a NonIndexed Job), within ``parallelism``."""
        spec = job["spec"]
        room = spec["parallelism"] - len(active)
        # A pod that has succeeded counts before its accounting (queued behind this sync) has run: the real
        # controller reads successes from the pods as well as from the status (indexed_job_utils.go
        # calculateSucceededIndexes; job_controller.go uncountedTerminatedPods), so it never replaces one.
        done = [pod for pod in self._pods(job) if pod["status"].get("phase") == "Succeeded"]
        if spec["completionMode"] == "Indexed":
            taken = {_pod_index(pod) for pod in [*active, *done]}
            taken |= _parse_indexes(job["status"].get("completedIndexes", ""))
            return [index for index in range(spec["completions"]) if index not in taken][: max(room, 0)]
        uncounted = [pod for pod in done if pod["metadata"]["uid"] not in self._accounted]
        succeeded = job["status"].get("succeeded", 0) + len(uncounted)
        if spec.get("completions") is None:
            wanted = 0 if succeeded else room
        else:
            wanted = min(room, spec["completions"] - succeeded - len(active))
        return [None] * max(wanted, 0)

    def _create_pod(self, job: JSON, index: int | None) -> JSON:
        """Create a pod from the Job's template: ``{job}-{index}-xxxxx`` (Indexed) or ``{job}-xxxxx``."""
        name = job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["template"])
        meta, spec = template.get("metadata", {}), template["spec"]
        labels, annotations = dict(meta.get("labels", {})), dict(meta.get("annotations", {}))
        prefix = f"{name}-"
        if index is not None:
            prefix = f"{name}-{index}-"
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            spec["hostname"] = f"{name}-{index}"
            index_env = {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{INDEX_KEY}']"}},
            }
            for container in spec["containers"]:
                container["env"] = [*container.get("env", []), index_env]
        pod_meta = {"generateName": prefix, "labels": labels, "ownerReferences": [_owner_reference(job)]}
        if annotations:
            pod_meta["annotations"] = annotations
        pod = {"metadata": pod_meta, "spec": spec, "status": {"phase": "Pending"}}
        return self._store.create(PODS, job["metadata"]["namespace"], pod)

    def _finish(self, job: JSON, interim: str, final: str, reason: str, message: str) -> None:
        """End the Job the way the real controller does: the interim condition, its active pods deleted, the final.

        ``SuccessCriteriaMet`` then ``Complete`` (with ``completionTime``), or ``FailureTarget`` then ``Failed``.
        Finished pods are kept until the Job itself is deleted.
        """
        status = job["status"]
        conditions = status.setdefault("conditions", [])
        _put_condition(conditions, interim, "True", reason, message)
        self._store.update(JOBS, job)
        for pod in self._pods(job):
            if not _pod_finished(pod):
                self._store.delete(PODS, pod, "Background")
        _put_condition(conditions, final, "True", reason, message)
        if final == "Complete":
            status["completionTime"] = _now()
        self._count(status, "active", 0)
        self._count(status, "terminating", sum(not _pod_finished(pod) for pod in self._pods(job)))
        status["ready"] = 0
        self._store.update(JOBS, job)

    def _pods(self, job: JSON) -> list[JSON]:
        uid, namespace = job["metadata"]["uid"], job["metadata"]["namespace"]
        return [
            pod
            for kind, pod in self._store.owned_by(uid)
            if kind is PODS
            and pod["metadata"]["namespace"] == namespace
            and any(ref["uid"] == uid and ref.get("controller") for ref in pod["metadata"]["ownerReferences"])
        ]

    def _job_of(self, pod: JSON) -> JSON | None:
        for ref in pod["metadata"].get("ownerReferences", []):
            if ref["kind"] == "Job" and ref.get("controller"):
                job = self._store.get(JOBS, pod["metadata"]["namespace"], ref["name"])
                return job if job is not None and job["metadata"]["uid"] == ref["uid"] else None
        return None

    @staticmethod
    def _count(status: JSON, field: str, value: int) -> None:
        """Set a count field of Job status; like the real API, a zero count is left out."""
        if value:
            status[field] = value
        else:
            status.pop(field, None)


def _rule_match(rule: JSON, pod: JSON) -> str | None:
    """Why a failed pod matches a ``podFailurePolicy`` rule (the start of the Job's message), or None.

    ``onExitCodes`` looks at containers that terminated with a non-zero code (optionally only ``containerName``);
    ``onPodConditions`` at the pod's conditions (``status`` defaults to True).
    """
    pod_name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    if "onExitCodes" in rule:
        requirement = rule["onExitCodes"]
        # Regular containers first, then init containers (pkg/controller/job/pod_failure_policy.go).
        statuses = [*pod["status"].get("containerStatuses", []), *pod["status"].get("initContainerStatuses", [])]
        for container in statuses:
            code = container["state"].get("terminated", {}).get("exitCode", 0)
            if code == 0 or requirement.get("containerName", container["name"]) != container["name"]:
                continue
            if (code in requirement["values"]) == (requirement["operator"] == "In"):
                return f"Container {container['name']} for pod {pod_name} failed with exit code {code}"
        return None
    for requirement in rule.get("onPodConditions", []):
        wanted = (requirement["type"], requirement.get("status", "True"))
        if any((c["type"], c["status"]) == wanted for c in pod["status"].get("conditions", [])):
            return f"Pod {pod_name} has condition {requirement['type']}"
    return None


# --- the simulated scheduler and kubelet ------------------------------------------------------------------------


class Kubelet:
    """Plays scheduler and kubelet for the test: moves pods through their lifecycle and keeps their logs.

    Callers hold the store's lock. Methods raise KeyError for an unknown pod and ValueError for a pod that has
    already finished. Each change is one MODIFIED event, after which the Job controller reacts.
    """

    def __init__(self, store: Store, controller: JobController) -> None:
        self._store = store
        self._controller = controller
        self._logs: dict[str, list[LogEntry]] = {}  # by pod uid
        self._addresses = itertools.count()
        self._deletion_requested: dict[str, float] = {}  # pod uid -> time.time() of its first graceful delete
        self._kill_at: dict[str, float] = {}  # pod uid -> time.time() its grace period ends
        self._timers: list[threading.Timer] = []
        store.terminate_gracefully = self.terminate_gracefully

    def terminate_gracefully(self, pod: JSON, grace: int | None) -> bool:
        """Begin the pod's graceful deletion, as the API server does; False when it is to be removed at once.

        The grace period is the DeleteOptions' ``gracePeriodSeconds``, else the pod's
        ``spec.terminationGracePeriodSeconds``; a pod not yet scheduled or already finished is removed at once, and
        so is one deleted with 0 (pkg/registry/core/pod/strategy.go ``CheckGracefulDelete``). The pod gets
        ``metadata.deletionTimestamp`` (when it will be killed) and ``deletionGracePeriodSeconds``. A second
        delete may shorten the grace period, never lengthen it (staging/src/k8s.io/apiserver/pkg/registry/rest/
        delete.go ``BeforeDelete``). The test stops it with :meth:`finish_termination`; when the grace period
        runs out first, the kubelet kills its containers (exit code 137) (docs: "Pod Lifecycle > Termination of
        Pods").
        """
        meta = pod["metadata"]
        period = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else max(grace, 0)
        if not pod["spec"].get("nodeName") or _pod_finished(pod):
            period = 0
        if meta.get("deletionTimestamp") and period >= meta["deletionGracePeriodSeconds"]:
            return True  # already terminating, at least as soon
        if period == 0:
            return False
        requested = self._deletion_requested.setdefault(meta["uid"], time.time())
        self._kill_at[meta["uid"]] = kill_at = requested + period
        meta["deletionTimestamp"] = _timestamp(kill_at)
        meta["deletionGracePeriodSeconds"] = period
        self._store.update(PODS, pod)
        if not any("running" in status["state"] for status in pod["status"].get("containerStatuses", [])):
            # No container runs (they wait for an image, say): the kubelet has nothing to stop and confirms the
            # deletion at once; the pod fails, its containers still waiting.
            pod["status"]["phase"] = "Failed"
            self._store.update(PODS, pod)
            self._controller.pod_finished(pod)
            self._deletion_requested.pop(meta["uid"], None)
            self._kill_at.pop(meta["uid"], None)
            self._store.remove(PODS, pod)
            return True
        timer = threading.Timer(
            max(0.0, kill_at - time.time()), self._grace_expired, args=(meta["namespace"], meta["name"], kill_at)
        )
        timer.daemon = True
        timer.start()
        self._timers.append(timer)
        self._controller.pod_terminating(pod)
        return True

    def finish_termination(self, namespace: str, name: str, exit_code: int) -> None:
        """The terminating pod's regular containers exit with ``exit_code`` (its sidecars after them, with 0): the pod
        reaches its terminal phase, then is removed. Since Kubernetes 1.27 the kubelet moves a deleted pod to
        Failed or Succeeded, by its containers' exit codes, before it is removed (docs: "Pod Lifecycle > Pod
        phase")."""
        pod = self._pod(namespace, name, unfinished=True)
        if not pod["metadata"].get("deletionTimestamp"):
            raise ValueError(f"pod {namespace}/{name} is not terminating: delete it first")
        self._stop_containers(pod, exit_code, "Completed" if exit_code == 0 else "Error")

    def cancel_timers(self) -> None:
        """Stop the grace-period timers (the stand-in is stopping)."""
        for timer in self._timers:
            timer.cancel()

    def _grace_expired(self, namespace: str, name: str, kill_at: float) -> None:
        with self._store.cond:
            pod = self._store.get(PODS, namespace, name)
            if pod is None or self._store.closed or _pod_finished(pod):
                return  # finished in time
            if self._kill_at.get(pod["metadata"]["uid"]) != kill_at:
                return  # another pod of that name, or its grace period was shortened (another timer)
            self._stop_containers(pod, 137, "Error")  # SIGKILL

    def _stop_containers(self, pod: JSON, exit_code: int, reason: str) -> None:
        names = [container["name"] for container in pod["spec"]["containers"]]
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self._terminate(pod, phase, {name: (exit_code, reason, "") for name in names})

    def start_pod(self, namespace: str, name: str) -> None:
        """Schedule the pod on the node and start its containers: phase Running, all conditions True, a podIP."""
        pod = self._pod(namespace, name, unfinished=True)
        now, address = _now(), next(self._addresses)
        ip = f"10.244.{address // 250}.{address % 250 + 2}"
        pod["spec"]["nodeName"] = _NODE_NAME
        status = pod["status"]
        status.update(phase="Running", hostIP=_NODE_IP, hostIPs=[{"ip": _NODE_IP}], podIP=ip, podIPs=[{"ip": ip}])
        status.setdefault("startTime", now)
        conditions = status.setdefault("conditions", [])
        for type_ in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
            _put_condition(conditions, type_, "True")
        status["containerStatuses"] = [
            _container_status(pod, container, {"running": {"startedAt": now}})
            for container in pod["spec"]["containers"]
        ]
        # Init containers ran to completion in order; sidecars (init containers with restartPolicy Always) started
        # and keep running beside the regular containers (docs: "Init containers", "Sidecar containers").
        inits = pod["spec"].get("initContainers", [])
        if inits:
            done = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
            status["initContainerStatuses"] = [
                _container_status(
                    pod, init, {"running": {"startedAt": now}} if _sidecar(init) else {"terminated": done}
                )
                for init in inits
            ]
        self._store.update(PODS, pod)
        self._controller.pod_updated(pod)

    def fail_init_container(
        self, namespace: str, name: str, container: str | None, exit_code: int, message: str
    ) -> None:
        """The pod's init container ``container`` (default: the first that is not a sidecar) exits with
        ``exit_code``: the ones before it completed, the later ones and the regular containers never start
        (waiting, PodInitializing), condition Initialized is False and, as the pod's restartPolicy is Never, the
        pod fails (docs: "Init containers > Detailed behavior")."""
        pod = self._pod(namespace, name, unfinished=True)
        inits = pod["spec"].get("initContainers", [])
        failed = container or next((init["name"] for init in inits if not _sidecar(init)), None)
        names = [init["name"] for init in inits]
        if failed not in names or _sidecar(inits[names.index(failed)]):
            raise KeyError(f"pod {namespace}/{name} has no init container {failed!r} (sidecars: fail_sidecar)")
        if pod["spec"].get("restartPolicy") != "Never":
            raise ValueError("the stand-in models failed init containers only for pods with restartPolicy Never")
        now, position, status = _now(), names.index(failed), pod["status"]
        pod["spec"]["nodeName"] = _NODE_NAME
        waiting = {"waiting": {"reason": "PodInitializing"}}
        done = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
        broken = {"exitCode": exit_code, "reason": "Error", "startedAt": now, "finishedAt": now}
        if message:
            broken["message"] = message
        statuses = []
        for place, init in enumerate(inits):
            state = (
                {"terminated": broken} if place == position else {"terminated": done} if place < position else waiting
            )
            statuses.append(_container_status(pod, init, state))
        status.update(
            phase="Failed",
            initContainerStatuses=statuses,
            containerStatuses=[_container_status(pod, c, waiting) for c in pod["spec"]["containers"]],
        )
        conditions = status.setdefault("conditions", [])
        _put_condition(conditions, "PodScheduled", "True")
        unready = f"containers with incomplete status: [{' '.join(names[position:])}]"
        _put_condition(conditions, "Initialized", "False", "ContainersNotInitialized", unready)
        for type_ in ("Ready", "ContainersReady"):
            _put_condition(conditions, type_, "False", "PodFailed")
        self._store.update(PODS, pod)
        self._controller.pod_finished(pod)

    def fail_sidecar(self, namespace: str, name: str, container: str, exit_code: int, message: str) -> None:
        """The running pod's sidecar ``container`` exits with ``exit_code``: as its restartPolicy is Always, the
        kubelet restarts it after a back-off, so it waits in CrashLoopBackOff with the exit in ``lastState`` and
        ``restartCount`` one higher; the pod keeps running, not Ready (docs: "Sidecar containers")."""
        pod = self._pod(namespace, name, unfinished=True)
        statuses = {status["name"]: status for status in pod["status"].get("initContainerStatuses", [])}
        sidecar = statuses.get(container)
        if sidecar is None or "running" not in sidecar["state"]:
            raise KeyError(f"pod {namespace}/{name} has no running sidecar {container!r}: start the pod first")
        exited = {"exitCode": exit_code, "reason": "Error", "finishedAt": _now()}
        exited["startedAt"] = sidecar["state"]["running"]["startedAt"]
        if message:
            exited["message"] = message
        uid = pod["metadata"]["uid"]
        backoff = f"back-off 10s restarting failed container={container} pod={name}_{namespace}({uid})"
        sidecar.update(
            state={"waiting": {"reason": "CrashLoopBackOff", "message": backoff}},
            lastState={"terminated": exited},
            ready=False,
            started=False,
            restartCount=sidecar["restartCount"] + 1,
        )
        unready = f"containers with unready status: [{container}]"
        for type_ in ("Ready", "ContainersReady"):
            _put_condition(pod["status"]["conditions"], type_, "False", "ContainersNotReady", unready)
        self._store.update(PODS, pod)
        self._controller.pod_updated(pod)

    def succeed_pod(self, namespace: str, name: str) -> None:
        """Terminate every container with exit code 0 (reason Completed): phase Succeeded."""
        pod = self._pod(namespace, name, unfinished=True)
        self._terminate(pod, "Succeeded", {})

    def fail_pod(
        self,
        namespace: str,
        name: str,
        exit_code: int,
        reason: str,
        message: str,
        container: str | None,
        disruption: str | None,
    ) -> None:
        """Terminate ``container`` (default: the first) with ``exit_code``/``reason``, the others with 0: phase Failed.

        ``disruption`` (e.g. ``PreemptionByScheduler``) first gives the pod a DisruptionTarget condition with that
        reason, as preemption and eviction do.
        """
        pod = self._pod(namespace, name, unfinished=True)
        names = [spec["name"] for spec in pod["spec"]["containers"]]
        failed = container or names[0]
        if failed not in names:
            raise KeyError(f"pod {namespace}/{name} has no container {failed!r}")
        if disruption:
            conditions = pod["status"].setdefault("conditions", [])
            _put_condition(conditions, "DisruptionTarget", "True", disruption, "The pod was disrupted")
        self._terminate(pod, "Failed", {failed: (exit_code, reason, message)})

    def unschedulable(self, namespace: str, name: str, message: str) -> None:
        """Leave the pod Pending with condition PodScheduled False, reason Unschedulable."""
        pod = self._pod(namespace, name, unfinished=True)
        pod["status"]["phase"] = "Pending"
        _put_condition(pod["status"].setdefault("conditions", []), "PodScheduled", "False", "Unschedulable", message)
        self._store.update(PODS, pod)
        self._controller.pod_updated(pod)

    def image_pull_backoff(self, namespace: str, name: str, message: str | None) -> None:
        """Schedule the pod but leave its containers waiting with reason ImagePullBackOff: phase Pending."""
        pod = self._pod(namespace, name, unfinished=True)
        pod["spec"]["nodeName"] = _NODE_NAME
        status = pod["status"]
        status["phase"] = "Pending"
        _put_condition(status.setdefault("conditions", []), "PodScheduled", "True")

        def waiting(container: JSON) -> JSON:
            why = message or f'Back-off pulling image "{container["image"]}"'
            return _container_status(pod, container, {"waiting": {"reason": "ImagePullBackOff", "message": why}})

        status["containerStatuses"] = [waiting(container) for container in pod["spec"]["containers"]]
        self._store.update(PODS, pod)
        self._controller.pod_updated(pod)

    def append_log(self, namespace: str, name: str, text: str) -> None:
        """Add ``text`` to the pod's log; followers receive it.

        Each line is one entry of the container runtime's log file, stamped with the time it was written; the lines
        of one call share their timestamp (a runtime stamps what it reads at once alike), and a last line without
        its newline is a partial entry that the next call continues (CRI logs' ``P`` tag).
        """
        uid = self._pod(namespace, name, unfinished=False)["metadata"]["uid"]
        entries = self._logs.setdefault(uid, [])
        stamp = max(time.time_ns(), entries[-1].stamp if entries else 0)
        entries.extend(LogEntry(stamp, line) for line in text.splitlines(keepends=True))
        self._store.cond.notify_all()

    def log(self, uid: str) -> str:
        """The log so far of the pod with this uid."""
        return "".join(entry.text for entry in self._logs.get(uid, []))

    def log_entries(self, uid: str) -> list[LogEntry]:
        """The entries of the pod's log so far, oldest first."""
        return list(self._logs.get(uid, []))

    def _pod(self, namespace: str, name: str, unfinished: bool) -> JSON:
        """The live pod; KeyError if there is none, ValueError if ``unfinished`` is asked for and it has finished."""
        pod = self._store.get(PODS, namespace, name)
        if pod is None:
            raise KeyError(f"no pod {namespace}/{name}")
        if unfinished and _pod_finished(pod):
            raise ValueError(f"pod {namespace}/{name} has already finished ({pod['status']['phase']})")
        return pod

    def _terminate(self, pod: JSON, phase: str, failures: dict[str, tuple[int, str, str]]) -> None:
        """Terminate every container, with exit code 0 unless ``failures`` names it; set the phase."""
        now, status = _now(), pod["status"]
        started = {
            s["name"]: s["state"].get("running", {}).get("startedAt") for s in status.get("containerStatuses", [])
        }
        statuses = []
        for container in pod["spec"]["containers"]:
            code, reason, message = failures.get(container["name"], (0, "Completed", ""))
            terminated = {"exitCode": code, "reason": reason, "finishedAt": now}
            if message:
                terminated["message"] = message
            if started.get(container["name"]):
                terminated["startedAt"] = started[container["name"]]
            statuses.append(_container_status(pod, container, {"terminated": terminated}))
        status.update(phase=phase, containerStatuses=statuses)
        for init in status.get("initContainerStatuses", []):
            running = init["state"].get("running")
            if running is not None:  # a sidecar: stopped after the regular containers (docs: "Sidecar containers")
                stopped = {"exitCode": 0, "reason": "Completed", "startedAt": running["startedAt"], "finishedAt": now}
                init.update(state={"terminated": stopped}, ready=False, started=False)
        conditions = status.setdefault("conditions", [])
        for type_ in ("Ready", "ContainersReady"):
            _put_condition(conditions, type_, "False", "PodCompleted" if phase == "Succeeded" else "PodFailed")
        self._store.update(PODS, pod)
        self._controller.pod_finished(pod)
        if pod["metadata"].get("deletionTimestamp"):  # deleted: the kubelet's final delete removes it now
            self._deletion_requested.pop(pod["metadata"]["uid"], None)
            self._kill_at.pop(pod["metadata"]["uid"], None)
            self._store.remove(PODS, pod)


def _sidecar(init_container: JSON) -> bool:
    """Whether an init container is a sidecar: ``restartPolicy: Always`` (docs: "Sidecar containers")."""
    return init_container.get("restartPolicy") == "Always"


def _container_status(pod: JSON, container: JSON, state: JSON) -> JSON:
    """A containerStatuses entry with the fields the client's model requires."""
    image = container.get("image", "")
    status = {
        "name": container["name"],
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
        "lastState": {},
    }
    if "waiting" not in state:
        digest = hashlib.sha256(f"{pod['metadata']['uid']}/{container['name']}".encode()).hexdigest()
        status.update(
            imageID=f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}", containerID=f"containerd://{digest}"
        )
    return status


# --- the REST verbs ---------------------------------------------------------------------------------------------


class RestApi:
    """The REST verbs on parsed requests: validation, defaulting, selectors, deletion options, watch and log streams.

    Each verb takes the store's lock itself and answers deep copies (or, for streams, an iterator that takes the
    lock only while it looks for news). Errors are raised as :class:`ApiError`.
    """

    def __init__(self, store: Store, controller: JobController, kubelet: Kubelet) -> None:
        self._store = store
        self._controller = controller
        self._kubelet = kubelet
        self._cluster_ips = itertools.count()

    def create(self, kind: ResourceKind, namespace: str, body: Any) -> JSON:
        """POST: validate the body against the schema, default it, store it; Jobs get their pods."""
        obj = _validated(kind, namespace, body)
        with self._store.cond:
            prepare = {
                JOBS: _default_job,
                PODS: _default_pod,
                SERVICES: self._default_service,
                SECRETS: _fold_string_data,
            }[kind]
            obj = self._store.create(kind, namespace, obj, prepare)
            if kind is JOBS:
                self._controller.sync(obj)
            return copy.deepcopy(obj)

    def read(self, kind: ResourceKind, namespace: str, name: str) -> JSON:
        """GET one object."""
        with self._store.cond:
            return copy.deepcopy(self._require(kind, namespace, name))

    def list(self, kind: ResourceKind, namespace: str, query: dict[str, str]) -> JSON:
        """GET the collection, filtered by ``labelSelector`` and ``fieldSelector``."""
        matches = _selector(kind, query)
        with self._store.cond:
            items = [copy.deepcopy(obj) for obj in self._store.list(kind, namespace) if matches(obj)]
            return {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": self._store.resource_version},
                "items": items,
            }

    def patch(self, kind: ResourceKind, namespace: str, name: str, body: Any, content_type: str) -> JSON:
        """PATCH with a (strategic) merge patch; status and server-managed metadata are not patchable."""
        if content_type not in _MERGE_PATCH_TYPES:
            raise ApiError(
                415, "UnsupportedMediaType", f"the stand-in accepts only {', '.join(_MERGE_PATCH_TYPES)} patches"
            )
        if not isinstance(body, dict):
            raise ApiError.bad_request("a merge patch must be a JSON object")
        with self._store.cond:
            obj = self._require(kind, namespace, name)
            _check_resource_version(kind, obj, body)
            if content_type == "application/strategic-merge-patch+json":
                patched = strategic_merge_patch(copy.deepcopy(obj), body)
            else:
                patched = merge_patch(copy.deepcopy(obj), body)
            patched.setdefault("metadata", {}).update(
                {key: obj["metadata"][key] for key in _SERVER_MANAGED_METADATA if key in obj["metadata"]}
            )
            if "status" in obj:
                patched["status"] = obj["status"]
            if kind is SECRETS:
                _fold_string_data(patched)
            unchecked = {key: value for key, value in patched.items() if key != "status"}
            _validated(kind, namespace, unchecked)
            if "generation" in obj["metadata"] and patched.get("spec") != obj.get("spec"):
                patched["metadata"]["generation"] += 1
            self._store.update(kind, patched)
            if kind is JOBS:
                self._controller.sync(patched)
            return copy.deepcopy(patched)

    def delete(self, kind: ResourceKind, namespace: str, name: str, query: dict[str, str], body: Any) -> JSON:
        """DELETE with the ``propagationPolicy`` of the DeleteOptions body or the query (default Background).

        Answers a ``Status`` for Jobs and the deleted object for pods and services, as the real API does.
        """
        options = body if isinstance(body, dict) else {}
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = _int_param(query, "gracePeriodSeconds")
        policy = options.get("propagationPolicy") or query.get("propagationPolicy") or "Background"
        if policy not in _PROPAGATION_POLICIES:
            raise ApiError.bad_request(
                f"unsupported propagationPolicy {policy!r}: use one of {', '.join(_PROPAGATION_POLICIES)}"
            )
        with self._store.cond:
            obj = self._require(kind, namespace, name)
            # Jobs, Services and Secrets have no graceful deletion (their strategies do not implement
            # RESTGracefulDeleteStrategy): a grace period applies to pods only.
            self._store.delete(kind, obj, policy, grace if kind is PODS else None)
            if kind is PODS and self._store.get(PODS, namespace, name) is not obj:
                self._controller.pod_deleted(obj)
            if kind is not JOBS:
                return copy.deepcopy(obj)
            details = {"name": name, "group": kind.group, "kind": kind.plural, "uid": obj["metadata"]["uid"]}
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def watch(
        self, kind: ResourceKind, namespace: str, query: dict[str, str], cancelled: Callable[[], bool]
    ) -> Iterator[JSON]:
        """GET ``?watch=true``: the watch events, as ``{"type", "object"}`` dicts.

        With ``resourceVersion`` (other than ``"0"``), the events after it are replayed from the history; without,
        the stream starts with an ADDED event for each matching object, like the real API. A ``resourceVersion``
        older than the history window is answered as the watch cache does (cacher.go ``Watch`` returns
        ``newErrWatcher``): HTTP 200 and a single ERROR event whose object is a 410 ``Expired`` Status. With
        ``allowWatchBookmarks=true`` a BOOKMARK event carrying only ``metadata.resourceVersion`` comes every
        :attr:`Store.bookmark_interval` seconds (docs: "API concepts > Watch bookmarks"). The iterator ends after
        ``timeoutSeconds``, when ``cancelled()`` turns true, when the stand-in stops, when :meth:`Store.cut` cuts
        watches, or when the events it has still to send leave the window (the watch cache closes a watcher that
        cannot keep up, cache_watcher.go); a client resuming from its last resourceVersion then gets the 410.
        """
        matches = _selector(kind, query)
        timeout = _int_param(query, "timeoutSeconds")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        since = _int_param(query, "resourceVersion") or 0
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        with self._store.cond:
            if since:
                try:
                    initial, cursor = [], self._store.cursor_after(since)
                except ApiError as error:
                    return iter([{"type": "ERROR", "object": error.status()}])
            else:
                objects = [obj for obj in self._store.list(kind, namespace) if matches(obj)]
                initial, cursor = (
                    [{"type": "ADDED", "object": copy.deepcopy(obj)} for obj in objects],
                    self._store.cursor,
                )
        # The stream's cut count is read now, before its headers go out: a cut that comes after the
        # client has its response must end this stream, however late the generator first runs.
        cuts = self._store.cuts("watch")
        return self._events(kind, namespace, matches, initial, cursor, deadline, cancelled, bookmarks, cuts)

    def pod_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        """GET ``pods/{name}/log``: the log so far, as :func:`_render_log` selects and formats it."""
        with self._store.cond:
            entries = self._kubelet.log_entries(self._loggable_pod(namespace, name, query)["metadata"]["uid"])
        return _render_log(entries, _tail_start(entries, query), _LogOptions.of(query))

    def follow_log(
        self, namespace: str, name: str, query: dict[str, str], cancelled: Callable[[], bool]
    ) -> Iterator[str]:
        """GET ``pods/{name}/log?follow=true``: the log so far, then new text as it is appended.

        The iterator ends once the pod has finished or is deleted, when ``cancelled()`` turns true, when the
        stand-in stops or when :meth:`Store.cut` cuts logs.
        """
        with self._store.cond:
            pod = self._loggable_pod(namespace, name, query)
            start = _tail_start(self._kubelet.log_entries(pod["metadata"]["uid"]), query)
        cuts = self._store.cuts("log")  # read now, as for a watch (see :meth:`watch`)
        return self._log_chunks(pod["metadata"]["uid"], namespace, name, start, _LogOptions.of(query), cancelled, cuts)

    def _events(
        self,
        kind: ResourceKind,
        namespace: str,
        matches: Callable[[JSON], bool],
        initial: list[JSON],
        cursor: int,
        deadline: float,
        cancelled: Callable[[], bool],
        bookmarks: bool,
        cuts: int,
    ) -> Iterator[JSON]:
        yield from initial
        with self._store.cond:
            interval = self._store.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while not (self._store.closed or cancelled()) and time.monotonic() < deadline:
            with self._store.cond:
                wait = max(0.0, min(_TICK, deadline - time.monotonic(), next_bookmark - time.monotonic()))
                news = self._store.events_from(cursor, wait)
                version = self._store.resource_version
                if self._store.cuts("watch") != cuts:
                    if self._store.cut_with_error:
                        raise _StreamCut
                    return
            if news is None:
                return  # fell behind the window: the cacher closes such a watcher
            events, cursor = news
            for event in events:
                if event.kind is kind and event.object["metadata"]["namespace"] == namespace and matches(event.object):
                    yield {"type": event.type, "object": event.object}
            if bookmarks and time.monotonic() >= next_bookmark:
                # Only the resourceVersion up to which every event was sent (cacher.go ``getBookmarkObject``).
                meta = {"resourceVersion": version}
                yield {
                    "type": "BOOKMARK",
                    "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta},
                }
                next_bookmark = time.monotonic() + interval

    def _log_chunks(
        self,
        uid: str,
        namespace: str,
        name: str,
        start: int,
        options: _LogOptions,
        cancelled: Callable[[], bool],
        cuts: int,
    ) -> Iterator[str]:
        def following() -> bool:
            pod = self._store.get(PODS, namespace, name)
            return (
                pod is not None and pod["metadata"]["uid"] == uid and not _pod_finished(pod) and not self._store.closed
            )

        def news() -> bool:
            return len(self._kubelet.log_entries(uid)) > start or not following() or self._store.cuts("log") != cuts

        while True:
            with self._store.cond:
                self._store.cond.wait_for(news, _TICK)
                entries, more = self._kubelet.log_entries(uid), following()
                if self._store.cuts("log") != cuts:
                    if self._store.cut_with_error:
                        raise _StreamCut
                    return
            if len(entries) > start:
                text = _render_log(entries, start, options)
                start = len(entries)
                if text:
                    yield text
            if not more or cancelled():
                return

    def _loggable_pod(self, namespace: str, name: str, query: dict[str, str]) -> JSON:
        """The pod whose log is asked for; 400 if the container is not named right or has not started yet."""
        pod = self._require(PODS, namespace, name)
        containers = [container["name"] for container in pod["spec"]["containers"]]
        container = query.get("container")
        if container is None and len(containers) > 1:
            raise ApiError.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            )
        container = container or containers[0]
        if container not in containers:
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        if pod["status"].get("phase") == "Pending":
            raise ApiError.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {_waiting(pod, container)}'
            )
        return pod

    def _require(self, kind: ResourceKind, namespace: str, name: str) -> JSON:
        obj = self._store.get(kind, namespace, name)
        if obj is None:
            raise ApiError.not_found(kind, name)
        return obj

    def _default_service(self, service: JSON) -> None:
        """Service defaulting: type ClusterIP and an allocated cluster IP unless headless."""
        spec = service.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if "clusterIP" not in spec:
            address = next(self._cluster_ips)
            spec["clusterIP"] = f"10.96.{address // 250}.{address % 250 + 10}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        service["status"] = {"loadBalancer": {}}


def _validated(kind: ResourceKind, namespace: str, body: Any) -> JSON:
    """A copy of a posted object, checked against the JSON schema of :data:`SERVER_VERSION` and (Jobs) the rules the
    schema cannot express; raises 400 for a wrong kind or namespace and 422 ``Invalid`` for a schema violation."""
    if not isinstance(body, dict):
        raise ApiError.bad_request(f"the body of a {kind.kind} must be a JSON object")
    obj = copy.deepcopy(body)
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    if (obj["apiVersion"], obj["kind"]) != (kind.api_version, kind.kind):
        raise ApiError.bad_request(f"expected {kind.api_version} {kind.kind}, got {obj['apiVersion']} {obj['kind']}")
    meta = obj.get("metadata") or {}
    if meta.get("namespace", namespace) != namespace:
        raise ApiError.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    name = meta.get("name") or meta.get("generateName", "")
    try:
        kubernetes_validate.validate(obj, SERVER_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise ApiError.invalid(kind, name, [f"{_field_path(error.path)}: {error.message}"]) from None
    if kind is JOBS:
        errors = _job_errors(obj)
        if errors:
            raise ApiError.invalid(kind, name, errors)
    return obj


def _field_path(path: Any) -> str:
    """A JSON path (``["spec", "containers", 0]``) as API messages write it: ``spec.containers[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def _job_errors(job: JSON) -> list[str]:
    """Job rules the JSON schema cannot express, with the real API's messages."""
    if "spec" not in job:
        return ["spec: Required value"]
    spec = job["spec"]
    restart_policy = spec["template"].get("spec", {}).get("restartPolicy")
    errors = []
    if restart_policy not in ("Never", "OnFailure"):
        errors.append(
            f'spec.template.spec.restartPolicy: Unsupported value: "{restart_policy}": supported values: "OnFailure", "Never"'
        )
    elif "podFailurePolicy" in spec and restart_policy != "Never":
        errors.append(
            'spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified'
        )
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        errors.append("spec.completions: Required value: when completion mode is Indexed")
    return errors


def _default_job(job: JSON) -> None:
    """Job defaulting, as the API server does it on create (it needs the uid for the selector)."""
    spec, meta = job["spec"], job["metadata"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if "podFailurePolicy" in spec else "TerminatingOrFailed")
    job_labels = {
        "batch.kubernetes.io/controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": meta["uid"],
        "job-name": meta["name"],
    }
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})
    template_meta = spec["template"].setdefault("metadata", {})
    template_meta["labels"] = {**template_meta.get("labels", {}), **job_labels}
    spec["template"].setdefault("spec", {}).setdefault("terminationGracePeriodSeconds", 30)  # SetDefaults_PodSpec
    meta["generation"] = 1
    job["status"] = {}


def _fold_string_data(secret: JSON) -> None:
    """What the API server does with a Secret's write-only ``stringData``: base64 into ``data``."""
    import base64

    for key, value in secret.pop("stringData", {}).items():
        secret.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()


def _default_pod(pod: JSON) -> None:
    """Pod defaulting for pods created through the API: restartPolicy Always, a 30 s termination grace period
    (pkg/apis/core/v1/defaults.go ``SetDefaults_PodSpec``), phase Pending."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    pod["status"] = {"phase": "Pending"}


def _selector(kind: ResourceKind, query: dict[str, str]) -> Callable[[JSON], bool]:
    """The predicate of a request's ``labelSelector`` and ``fieldSelector`` on objects of ``kind``."""
    labels = label_selector(query.get("labelSelector", ""))
    fields = field_selector(query.get("fieldSelector", ""), kind.kind)
    return lambda obj: labels(obj) and fields(obj)


def _int_param(query: dict[str, str], key: str) -> int | None:
    """An integer query parameter; None if absent or empty, 400 if not an integer."""
    if not query.get(key):
        return None
    try:
        return int(query[key])
    except ValueError:
        raise ApiError.bad_request(f"{key} must be an integer, not {query[key]!r}") from None


@dataclass(frozen=True)
class LogEntry:
    """One entry of a container's log: the time the runtime wrote it (ns since the epoch) and its text, a line
    with its newline or, for a partial entry, the start of one."""

    stamp: int
    text: str


@dataclass(frozen=True)
class _LogOptions:
    """The PodLogOptions the stand-in honours besides ``follow`` and ``tailLines``."""

    timestamps: bool
    since: int  # ns since the epoch: entries stamped earlier are left out

    @classmethod
    def of(cls, query: dict[str, str]) -> _LogOptions:
        """``timestamps``, and ``sinceTime`` or ``sinceSeconds``, as the kubelet receives them. The API server
        forwards ``sinceTime`` to the kubelet formatted as RFC 3339 with whole seconds (pkg/registry/core/pod/
        strategy.go ``LogLocation``), so a fraction of a second is dropped."""
        if query.get("sinceTime") and query.get("sinceSeconds"):
            raise ApiError.bad_request("at most one of sinceTime or sinceSeconds may be specified")
        since = 0
        if query.get("sinceTime"):
            try:
                moment = datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
            except ValueError:
                raise ApiError.bad_request(f"sinceTime must be an RFC 3339 time, not {query['sinceTime']!r}") from None
            since = math.floor(moment.timestamp()) * 10**9
        elif (seconds := _int_param(query, "sinceSeconds")) is not None:
            since = time.time_ns() - seconds * 10**9
        return cls(query.get("timestamps") in ("true", "1"), since)


def _render_log(entries: list[LogEntry], start: int, options: _LogOptions) -> str:
    """The text of ``entries[start:]`` as the kubelet writes it (pkg/kubelet/kuberuntime/logs/logs.go
    ``logWriter.write``): entries stamped before ``since`` are skipped (the bound is inclusive), and with
    ``timestamps`` each line starts with its RFC3339Nano timestamp and a space; the continuation of a partial
    entry gets no timestamp of its own."""
    parts = []
    for position in range(start, len(entries)):
        entry = entries[position]
        if entry.stamp < options.since:
            continue
        new_line = position == 0 or entries[position - 1].text.endswith("\n")
        if options.timestamps and new_line:
            parts.append(_rfc3339nano(entry.stamp) + " ")
        parts.append(entry.text)
    return "".join(parts)


def _rfc3339nano(stamp: int) -> str:
    """A time (ns since the epoch) in Go's ``time.RFC3339Nano`` layout, UTC: trailing zeros of the fraction cut."""
    seconds, nanos = divmod(stamp, 10**9)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def _tail_start(entries: list[LogEntry], query: dict[str, str]) -> int:
    """The entry where the last ``tailLines`` lines start (0 without ``tailLines``); a line may span entries."""
    tail = _int_param(query, "tailLines")
    if tail is None:
        return 0
    if tail <= 0:
        return len(entries)
    starts = [i for i in range(len(entries)) if i == 0 or entries[i - 1].text.endswith("\n")]
    return starts[-tail] if tail <= len(starts) else 0


def _waiting(pod: JSON, container: str) -> str:
    """Why a Pending pod's container has not started, in the words of the log endpoint."""
    for status in pod["status"].get("containerStatuses", []):
        reason = status["name"] == container and status["state"].get("waiting", {}).get("reason")
        if reason in ("ImagePullBackOff", "ErrImagePull"):
            return "trying and failing to pull image"
        if reason:
            return reason
    return "ContainerCreating"


# --- HTTP ---------------------------------------------------------------------------------------------------------


_RESOURCE_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/batch/v1)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?P<log>/log)?)?/?$"
)


def _route(path: str) -> tuple[ResourceKind, str, str | None, bool]:
    """(kind, namespace, name or None, whether it is the log subresource) of a resource URL; 404 otherwise."""
    match = _RESOURCE_PATH.match(path)
    for kind in KINDS:
        if (
            match
            and (match["prefix"], match["plural"]) == (kind.prefix, kind.plural)
            and (kind is PODS or not match["log"])
        ):
            return kind, match["namespace"], match["name"], bool(match["log"])
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`RestApi` calls and their answers into JSON, text or chunked streams."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: do not let them wait for an ACK
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet: :attr:`KubeStandIn.requests` records the requests."""

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.record(method, url.path)
        if self.server.latency:  # a real API server's round trip; waited in this connection's thread, no lock held
            time.sleep(self.server.latency)
        retry_after = self.server.throttled()
        if retry_after is not None:
            return self._too_many_requests(retry_after)
        if self.server.dropped(method):  # read, never answered: the client sees the connection closed
            self.close_connection = True
            return None
        try:
            query = dict(parse_qsl(url.query))
            self.server.access.check(self.headers.get("Authorization"), method, url.path, query)  # 401, 403
            self._dispatch(method, url.path, query, raw_body)
        except (ApiError, RequestRefused) as error:
            self._send_json(error.code, error.status())
        except Exception as error:  # a stand-in bug: answer 500 so the client fails at once, and show the traceback
            self._send_json(500, ApiError(500, "InternalError", f"stand-in error: {error!r}").status())
            raise

    def _dispatch(self, method: str, path: str, query: dict[str, str], raw_body: bytes) -> None:
        api = self.server.api
        if method == "GET" and path.rstrip("/") in ("/version", "/api", "/apis"):
            return self._send_json(200, self._discovery(path.rstrip("/")))
        kind, namespace, name, log = _route(path)
        if log and method == "GET":
            if query.get("follow") in ("true", "1"):
                return self._stream(api.follow_log(namespace, name, query, self._client_gone), str.encode, "text/plain")
            return self._send(200, api.pod_log(namespace, name, query).encode(), "text/plain")
        if name is None and method == "GET":
            if query.get("watch") in ("true", "1"):
                events = api.watch(kind, namespace, query, self._client_gone)
                return self._stream(events, _event_line, "application/json")
            return self._send_json(200, api.list(kind, namespace, query))
        if name is None and method == "POST":
            return self._send_json(201, api.create(kind, namespace, _json(raw_body)))
        if name is not None and not log and method == "GET":
            return self._send_json(200, api.read(kind, namespace, name))
        if name is not None and not log and method == "PATCH":
            content_type = self.headers.get("Content-Type", "").partition(";")[0].strip()
            return self._send_json(200, api.patch(kind, namespace, name, _json(raw_body), content_type))
        if name is not None and not log and method == "DELETE":
            options = _json(raw_body) if raw_body else None
            return self._send_json(200, api.delete(kind, namespace, name, query, options))
        raise ApiError(405, "MethodNotAllowed", f"the stand-in does not allow {method} on {path}")

    def _discovery(self, path: str) -> JSON:
        """The minimal discovery documents: ``/version``, ``/api`` and ``/apis``."""
        if path == "/version":
            major, minor, _ = SERVER_VERSION.split(".")
            return {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{SERVER_VERSION}",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-04-23T00:00:00Z",
                "goVersion": "go1.24.2",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            host, port = self.server.server_address[:2]
            addresses = [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host}:{port}"}]
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addresses}
        batch = {"groupVersion": "batch/v1", "version": "v1"}
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": "batch", "versions": [batch], "preferredVersion": batch}],
        }

    def _send_json(self, code: int, obj: JSON) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, items: Iterator[Any], encode: Callable[[Any], bytes], content_type: str) -> None:
        """Send each item as one HTTP chunk, as it comes; end with the last chunk when the iterator ends.

        A stream cut with an error (:class:`_StreamCut`) ends without its last chunk: the connection is dropped,
        as when an API server restarts or a proxy resets it.
        """
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for item in items:
                data = encode(item)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        except _StreamCut:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client has gone away
            self.close_connection = True

    def _too_many_requests(self, retry_after: int) -> None:
        """Answer 429 as the API server's max-in-flight and priority-and-fairness filters do
        (staging/src/k8s.io/apiserver/pkg/server/filters/maxinflight.go ``tooManyRequests``): a ``Retry-After``
        header and ``http.Error``'s plain-text body, before the request is authorized or served."""
        data = b"Too many requests, please try again later.\n"
        self.send_response(429)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """Whether the client has closed the connection: it is readable, with nothing to read."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True


def _json(raw_body: bytes) -> Any:
    try:
        return json.loads(raw_body or b"null")
    except ValueError as error:
        raise ApiError.bad_request(f"the request body is not JSON: {error}") from None


def _event_line(event: JSON) -> bytes:
    return json.dumps(event).encode() + b"\n"


class _Server(ThreadingHTTPServer):
    """The HTTP server: one daemon thread per connection, each connection tracked so that stopping can end it."""

    daemon_threads = True
    access: Access  # authentication and RBAC, set by :class:`KubeStandIn`

    def __init__(
        self, api: RestApi, requests: list[tuple[str, str]], lock: threading.Condition, latency: float = 0.0
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self.latency = latency
        self._throttle = (0, 1)  # (how many requests are still to answer 429, their Retry-After in seconds)
        self._requests = requests
        self._lock = lock
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        self._closing = False
        self._drop: tuple[int, str | None] = (0, None)

    def throttle(self, requests: int, retry_after: int) -> None:
        with self._lock:
            self._throttle = (requests, retry_after)

    def drop(self, requests: int, method: str | None) -> None:
        with self._lock:
            self._drop = (requests, method)

    def dropped(self, method: str) -> bool:
        """Whether this request is one of those :meth:`KubeStandIn.drop_connections` asked to go unanswered."""
        with self._lock:
            left, only = self._drop
            if left <= 0 or only not in (None, method):
                return False
            self._drop = (left - 1, only)
            return True

    def throttled(self) -> int | None:
        """The Retry-After to answer this request with when it is one of the throttled ones, else None."""
        with self._lock:
            left, retry_after = self._throttle
            if left <= 0:
                return None
            self._throttle = (left - 1, retry_after)
            return retry_after

    @property
    def throttle_left(self) -> int:
        with self._lock:
            return self._throttle[0]

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def track(self, connection: socket.socket) -> None:
        with self._connections_changed:
            self._connections.add(connection)
            if self._closing:
                self._end(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_changed:
            self._connections.discard(connection)
            self._connections_changed.notify_all()

    def close_connections(self, timeout: float) -> None:
        """End every open connection and wait up to ``timeout`` seconds for their threads to finish.

        Shutting down only the reading side wakes a thread waiting for the next request on a kept-alive
        connection, while a stream that is ending can still write its last chunk.
        """
        with self._connections_changed:
            self._closing = True
            for connection in self._connections:
                self._end(connection)
            self._connections_changed.wait_for(lambda: not self._connections, timeout)

    @staticmethod
    def _end(connection: socket.socket) -> None:
        try:
            connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # already closed


# --- the stand-in -------------------------------------------------------------------------------------------------


class KubeStandIn:
    """An in-process Kubernetes API server with a simulated Job controller, driven by the test.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). Point code under test at it with
    :meth:`write_kubeconfig`; query the cluster state with :meth:`pods`, :meth:`jobs`, :meth:`services`,
    :meth:`get`, :meth:`terminating_pods` and :attr:`requests`; play scheduler and kubelet with :meth:`start_pod`,
    :meth:`append_log`, :meth:`succeed_pod`, :meth:`fail_pod`, :meth:`fail_init_container`, :meth:`fail_sidecar`,
    :meth:`finish_termination`, :meth:`unschedulable` and :meth:`image_pull_backoff`; fire the Job controller's
    timers with :meth:`expire_deadline` and :meth:`finish_ttl`. The Job controller works on its own thread,
    ``job_controller_delay`` seconds (default 0.05) behind each change: :meth:`wait_for_pods` waits for a Job's
    pods, :meth:`settle` until it has handled every change so far. All of these are thread-safe (one lock), and
    objects they return are copies. A stand-in serves once: it cannot be started again after stopping.

    ``latency_ms`` (default: the :data:`LATENCY_ENV` variable ``MLRT_STANDIN_LATENCY_MS``, else 0) delays every
    request by that many milliseconds before it is served, like a real API server's round trip (benchmarks use
    20 ms); a watch or a followed log waits once, before its stream starts. Requests on separate connections wait
    concurrently, and nothing else changes. It can be changed at any time (:attr:`latency_ms`).

    Faults a test can inject: :attr:`history_limit` and :meth:`compact_history` (410 Gone for watches from expired
    resourceVersions), :attr:`bookmark_interval`, :meth:`cut_streams` and :meth:`throttle` (429 with Retry-After).
    """

    def __init__(self, latency_ms: float | None = None, job_controller_delay: float = 0.05) -> None:
        if latency_ms is None:
            latency_ms = float(os.environ.get(LATENCY_ENV) or 0)
        self._store = Store()
        self._controller = JobController(self._store, job_controller_delay)
        self._kubelet = Kubelet(self._store, self._controller)
        self._requests: list[tuple[str, str]] = []
        api = RestApi(self._store, self._controller, self._kubelet)
        self._server = _Server(api, self._requests, self._store.cond, latency_ms / 1000)
        self._server.access = self._access = Access(TOKEN)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="kube-standin", daemon=True
        )

    # lifecycle and connection

    def start(self) -> KubeStandIn:
        """Start serving on 127.0.0.1 (ephemeral port), and the Job controller."""
        self._controller.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: open watch and log streams end cleanly, then every connection is closed. Idempotent."""
        with self._store.cond:
            self._store.close()
            self._kubelet.cancel_timers()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.close_connections(timeout=5)
        self._server.server_close()

    def __enter__(self) -> KubeStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # faults: what a real API server does under load, restarts and compaction

    @property
    def latency_ms(self) -> float:
        """Milliseconds every request waits before it is served (see the class docstring); settable at any time."""
        return self._server.latency * 1000

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._server.latency = value / 1000

    @property
    def history_limit(self) -> int:
        """How many events the watch history keeps (default 102,400), like the watch cache's capacity; settable. A
        watch from a resourceVersion older than the window gets 410 Gone, see :meth:`RestApi.watch`."""
        with self._store.cond:
            return self._store.history_limit

    @history_limit.setter
    def history_limit(self, value: int) -> None:
        with self._store.cond:
            self._store.history_limit = value

    @property
    def bookmark_interval(self) -> float:
        """Seconds between the BOOKMARK events of watches that allow them (default 60, about the watch cache's
        rate); settable, for watches opened afterwards."""
        with self._store.cond:
            return self._store.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, value: float) -> None:
        with self._store.cond:
            self._store.bookmark_interval = value

    def compact_history(self) -> None:
        """Drop the whole watch history, as an etcd compaction does: open watches go on, but a watch resumed
        from any resourceVersion before now gets 410 Gone (an ERROR event)."""
        with self._store.cond:
            self._store.compact()

    def cut_streams(self, streams: str | None = None, error: bool = False) -> None:
        """End the open ``"watch"`` or ``"log"`` streams, or both (None), while the pods keep running: cleanly
        (the last chunk is sent, as when a watch's ``timeoutSeconds`` passes or a kubelet ends a log stream),
        or with ``error`` by dropping the connection mid-stream (an API server restart). Streams opened
        afterwards are not affected."""
        if streams not in (None, "watch", "log"):
            raise ValueError(f"streams must be 'watch', 'log' or None, not {streams!r}")
        with self._store.cond:
            self._store.cut(streams, error)

    def throttle(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next ``requests`` requests (any verb, streams included) with 429 Too Many Requests and a
        ``Retry-After: retry_after`` header, as an overloaded API server's flow control does."""
        self._server.throttle(requests, retry_after)

    def drop_connections(self, requests: int, method: str | None = None) -> None:
        """Close the connections of the next ``requests`` requests (of ``method``, else any, streams included)
        after reading them, without an answer: the client sees ``Connection aborted`` / ``RemoteDisconnected``, as
        when an API server restarts or a proxy between it and the client closes a kept-alive connection between a
        request and its answer. Nothing of those requests is done (TCP's behaviour, not the API server's: no
        Kubernetes doc involved)."""
        self._server.drop(requests, method)

    @property
    def throttled_left(self) -> int:
        """How many of the requests :meth:`throttle` asked for have not been answered 429 yet."""
        return self._server.throttle_left

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, token: str = TOKEN) -> JSON:
        """A kubeconfig for the stand-in: cluster, user (bearer ``token``, by default the cluster admin's
        :data:`TOKEN`) and current context ``standin``."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": {"token": token}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
            "current-context": CONTEXT,
        }

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write :meth:`kubeconfig` as YAML to ``path`` (for ``kubernetes.config.load_kube_config``); return it."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        return path

    def api_client(self) -> kubernetes.client.ApiClient:
        """A client configured for the stand-in, independent of the client's global default configuration."""
        return kubernetes.config.new_client_from_config_dict(self.kubeconfig())

    # identities and RBAC (see :mod:`kube_rbac`)

    def serviceaccount_kubeconfig(self, path: str | Path, namespace: str, name: str) -> Path:
        """Write a kubeconfig that authenticates as the ServiceAccount ``namespace/name`` to ``path``; return it.

        Its requests are authorized by RBAC: only what the Roles and bindings of :meth:`apply_rbac` grant that
        account (as user ``system:serviceaccount:NAMESPACE:NAME``) is allowed, anything else is 403 Forbidden.
        """
        path = Path(path)
        config = self.kubeconfig(self._access.service_account_token(namespace, name))
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def apply_rbac(self, objects: list[JSON]) -> None:
        """Add (or replace) RBAC objects (Role, ClusterRole, RoleBinding, ClusterRoleBinding), as ``kubectl apply``
        of a chart's RBAC manifests would; ValueError for any other kind."""
        self._access.apply(objects)

    @property
    def denials(self) -> list[Denial]:
        """Every request RBAC has refused with 403 Forbidden so far, oldest first."""
        return self._access.denials

    def asked(self, user: str) -> set[tuple[str, str, str]]:
        """The ``(apiGroup, resource, verb)`` of every request ``user`` (``system:serviceaccount:NS:NAME`` for a
        ServiceAccount) has made so far, allowed or refused; ``resource`` includes a subresource (``pods/log``)."""
        return self._access.asked(user)

    # cluster state

    @property
    def requests(self) -> list[tuple[str, str]]:
        """The ``(method, path)`` of every request served so far (the path without its query string)."""
        with self._store.cond:
            return list(self._requests)

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        """The object (``kind`` as ``Job`` or ``jobs``), or None."""
        with self._store.cond:
            return copy.deepcopy(self._store.get(resolve_kind(kind), namespace, name))

    def pods(self, namespace: str = "default", job: str | None = None) -> list[JSON]:
        """The pods (of one Job if ``job`` is given), by completion index, then name."""
        with self._store.cond:
            pods = [
                copy.deepcopy(pod)
                for pod in self._store.list(PODS, namespace)
                if job is None or pod["metadata"].get("labels", {}).get("job-name") == job
            ]
        return sorted(
            pods, key=lambda pod: (int(pod["metadata"].get("labels", {}).get(INDEX_KEY, -1)), pod["metadata"]["name"])
        )

    def jobs(self, namespace: str = "default") -> list[JSON]:
        """The Jobs, by name."""
        with self._store.cond:
            return copy.deepcopy(self._store.list(JOBS, namespace))

    def secrets(self, namespace: str = "default") -> list[JSON]:
        """The Secrets, by name."""
        with self._store.cond:
            return copy.deepcopy(self._store.list(SECRETS, namespace))

    def services(self, namespace: str = "default") -> list[JSON]:
        """The Services, by name."""
        with self._store.cond:
            return copy.deepcopy(self._store.list(SERVICES, namespace))

    def terminating_pods(self, namespace: str = "default") -> list[JSON]:
        """The pods being deleted gracefully (with a ``deletionTimestamp``) that have not stopped yet."""
        return [pod for pod in self.pods(namespace) if pod["metadata"].get("deletionTimestamp")]

    def wait_for_pods(self, job: str, count: int, namespace: str = "default", timeout: float = 30) -> list[JSON]:
        """The Job's pods (as :meth:`pods`) once it has at least ``count``: the Job controller creates them on its
        own thread, after the POST has answered. TimeoutError after ``timeout`` seconds."""
        with self._store.cond:
            found = self._store.cond.wait_for(lambda: len(self._job_pods(namespace, job)) >= count, timeout)
        if not found:
            raise TimeoutError(f"job {namespace}/{job} did not get {count} pods within {timeout:g}s")
        return self.pods(namespace, job=job)

    def settle(self, timeout: float = 30) -> None:
        """Wait until the Job controller has handled every change so far (its pods created, its status updated)."""
        with self._store.cond:
            self._controller.wait_idle(timeout)

    def _job_pods(self, namespace: str, job: str) -> list[JSON]:
        return [
            pod for pod in self._store.list(PODS, namespace) if pod["metadata"].get("labels", {}).get("job-name") == job
        ]

    # scheduler and kubelet

    def start_pod(self, name: str, namespace: str = "default") -> None:
        """Schedule and start the pod: PodScheduled and Ready True, phase Running, containers running, a podIP."""
        with self._store.cond:
            self._kubelet.start_pod(namespace, name)

    def append_log(self, name: str, text: str, namespace: str = "default") -> None:
        """Append ``text`` to the pod's log (followers of the log receive it)."""
        with self._store.cond:
            self._kubelet.append_log(namespace, name, text)

    def succeed_pod(self, name: str, namespace: str = "default") -> None:
        """Terminate the pod's containers with exit code 0 (reason Completed): phase Succeeded."""
        with self._store.cond:
            self._kubelet.succeed_pod(namespace, name)

    def finish_termination(self, name: str, exit_code: int = 0, namespace: str = "default") -> None:
        """Let a terminating pod (see :meth:`terminating_pods`) stop within its grace period: its containers exit
        with ``exit_code`` (0 after a clean shutdown, 143 for a worker that dies of SIGTERM), it reaches phase
        Succeeded or Failed and is removed. Without this call its grace period ends it: exit code 137."""
        with self._store.cond:
            self._kubelet.finish_termination(namespace, name, exit_code)

    def fail_init_container(
        self, name: str, container: str | None = None, exit_code: int = 1, message: str = "", namespace: str = "default"
    ) -> None:
        """The pod's init container (default: its first that is not a sidecar) exits with ``exit_code`` and
        ``message`` (its termination message): the pod fails before its containers start."""
        with self._store.cond:
            self._kubelet.fail_init_container(namespace, name, container, exit_code, message)

    def fail_sidecar(
        self, name: str, container: str, exit_code: int = 1, message: str = "", namespace: str = "default"
    ) -> None:
        """The running pod's sidecar ``container`` exits with ``exit_code`` and ``message``: it waits in
        CrashLoopBackOff to be restarted, the pod keeps running."""
        with self._store.cond:
            self._kubelet.fail_sidecar(namespace, name, container, exit_code, message)

    def fail_pod(
        self,
        name: str,
        exit_code: int = 1,
        reason: str = "Error",
        message: str = "",
        namespace: str = "default",
        container: str | None = None,
        disruption: str | None = None,
    ) -> None:
        """Terminate the pod's ``container`` (default: the first) with ``exit_code`` and ``reason``: phase Failed.

        An out-of-memory kill is ``exit_code=137, reason="OOMKilled"``. ``disruption`` (e.g.
        ``"PreemptionByScheduler"``) first gives the pod a DisruptionTarget condition with that reason.
        """
        with self._store.cond:
            self._kubelet.fail_pod(namespace, name, exit_code, reason, message, container, disruption)

    def unschedulable(
        self,
        name: str,
        message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        namespace: str = "default",
    ) -> None:
        """Keep the pod Pending with condition PodScheduled False, reason Unschedulable, and ``message``."""
        with self._store.cond:
            self._kubelet.unschedulable(namespace, name, message)

    def image_pull_backoff(self, name: str, message: str | None = None, namespace: str = "default") -> None:
        """Keep the pod Pending with its containers waiting, reason ImagePullBackOff (default message names the image)."""
        with self._store.cond:
            self._kubelet.image_pull_backoff(namespace, name, message)

    # Job controller timers

    def expire_deadline(self, job: str, namespace: str = "default") -> None:
        """Fail the Job as if its activeDeadlineSeconds had passed: FailureTarget, then Failed reason
        DeadlineExceeded; its running pods are deleted."""
        with self._store.cond:
            found = self._store.get(JOBS, namespace, job)
            if found is None:
                raise KeyError(f"no job {namespace}/{job}")
            self._controller.expire_deadline(found)

    def finish_ttl(self, namespace: str = "default") -> None:
        """Delete (Background propagation) every finished Job with ttlSecondsAfterFinished set, as the TTL
        controller would once the TTL has passed."""
        with self._store.cond:
            self._controller.finish_ttl(namespace)
