"""Authentication and RBAC authorization for the Kubernetes API stand-in (:mod:`kube_standin`).

Every request carries a bearer token. :class:`Access` maps it to a user: the stand-in's admin token is the
cluster admin (group ``system:masters``, which the API server lets do anything before any authorizer is asked),
and a token minted by :meth:`Access.service_account_token` is that ServiceAccount's
(``system:serviceaccount:NAMESPACE:NAME``). Every other user's request is authorized by RBAC from the Roles,
ClusterRoles, RoleBindings and ClusterRoleBindings given to :meth:`Access.apply` (a Helm chart's own manifests,
for instance), plus the bootstrap ``system:discovery`` binding every cluster has. A request no rule allows is
refused with 403 ``Forbidden`` and the API server's own message; an unknown token with 401.

It follows, and names in comments, the Kubernetes sources and documentation it copies:

- request attributes from the URL and method: ``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``
  (``RequestInfoFactory.NewRequestInfo``);
- rule matching: ``plugin/pkg/auth/authorizer/rbac/rbac.go`` (``RuleAllows``, ``RBACAuthorizer.Authorize``) and
  ``pkg/apis/rbac/v1/evaluation_helpers.go`` (``VerbMatches``, ``APIGroupMatches``, ``ResourceMatches``,
  ``ResourceNameMatches``, ``NonResourceURLMatches``);
- which bindings apply to whom: ``pkg/registry/rbac/validation/rule.go`` (``VisitRulesFor``, ``appliesToUser``,
  ``GetRoleReferenceRules``);
- the refusal: ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go``
  (``forbiddenMessage``) and ``apimachinery/pkg/api/errors.NewForbidden``;
- the model as a whole: https://kubernetes.io/docs/reference/access-authn-authz/rbac/ ("Using RBAC
  Authorization") and, for the users and groups of ServiceAccounts,
  https://kubernetes.io/docs/reference/access-authn-authz/authentication/#service-account-tokens.

Not modelled: ClusterRole aggregation (``aggregationRule``), impersonation, escalation checks on creating RBAC
objects (they are not served over the API here), and the authorizers a cluster may chain before or after RBAC
(Node, webhooks).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
"""The kinds :meth:`Access.apply` takes."""

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
"""The verbs of resource requests (``requestinfo.go``); non-resource requests use the lowercase HTTP method."""

_API_PREFIXES = ("api", "apis")
_GROUPLESS_PREFIXES = ("api",)
_NAMESPACE_SUBRESOURCES = ("status", "finalize")  # requestinfo.go: namespaceSubresources

# The bootstrap policy's system:discovery ClusterRole and its binding to every authenticated user
# (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go, "Default roles and role bindings" in the RBAC doc):
# any identity may read the discovery documents the client asks for.
_BOOTSTRAP: list[JSON] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:discovery"},
        "rules": [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                "verbs": ["get"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}],
    },
]


@dataclass(frozen=True)
class User:
    """An authenticated identity: a user name and the groups it belongs to."""

    name: str
    groups: tuple[str, ...]


ADMIN = User("kubernetes-admin", ("system:masters", "system:authenticated"))
"""The cluster admin, as kubeadm's ``admin.conf`` user: in ``system:masters``, which no authorizer can refuse."""

_PRIVILEGED_GROUP = "system:masters"  # authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup)


def service_account_user(namespace: str, name: str) -> User:
    """The user a ServiceAccount's token authenticates as, with the groups the API server gives it."""
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


@dataclass(frozen=True)
class RequestAttributes:
    """What the authorizer sees of a request (``authorizer.Attributes``)."""

    verb: str
    path: str
    resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        """``resource/subresource`` (``pods/log``), or the resource alone: what a rule's ``resources`` names."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def request_attributes(method: str, path: str, query: dict[str, str]) -> RequestAttributes:
    """The request's attributes, as ``RequestInfoFactory.NewRequestInfo`` (``requestinfo.go``) derives them.

    ``/api/v1/namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]`` and ``/apis/GROUP/VERSION/...`` are resource requests;
    the verb comes from the method (GET get, POST create, PUT update, PATCH patch, DELETE delete), a GET without a
    name is ``list`` or (``?watch=true``) ``watch``, naming an object with ``fieldSelector=metadata.name=X``, and a
    DELETE without a name is ``deletecollection``. Anything else (``/version``, ``/apis``) is a non-resource
    request whose verb is the lowercase method.
    """
    parts = [part for part in path.strip("/").split("/") if part]
    plain = RequestAttributes(verb=method.lower(), path=path)
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return plain
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return plain
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    namespace = ""
    if parts and parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource, name, subresource = (parts + ["", "", ""])[:3]
    attributes = RequestAttributes(
        verb=verb.get(method, ""),
        path=path,
        resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )
    if not name and attributes.verb == "get":
        named = _exact_name(query.get("fieldSelector", ""))
        verb_now = "watch" if query.get("watch") in ("true", "1") else "list"
        return _replace(attributes, verb=verb_now, name=named)
    if not name and attributes.verb == "delete":
        return _replace(attributes, verb="deletecollection")
    return attributes


def _exact_name(field_selector: str) -> str:
    """The name a field selector pins with ``metadata.name=X`` (``RequiresExactMatch``), else ``""``."""
    for term in field_selector.split(","):
        key, operator, value = term.partition("==") if "==" in term else term.partition("=")
        if operator and not key.endswith("!") and key.strip() == "metadata.name":
            return value.strip()
    return ""


def _replace(attributes: RequestAttributes, **changes: str) -> RequestAttributes:
    return RequestAttributes(**{**attributes.__dict__, **changes})


# --- rule matching: rbac.go and evaluation_helpers.go ---------------------------------------------------------


def rule_allows(attributes: RequestAttributes, rule: JSON) -> bool:
    """``RuleAllows``: whether one PolicyRule allows the request."""
    verbs = rule.get("verbs") or []
    if not ("*" in verbs or attributes.verb in verbs):
        return False
    if not attributes.resource_request:
        return _url_matches(rule.get("nonResourceURLs") or [], attributes.path)
    groups = rule.get("apiGroups") or []
    names = rule.get("resourceNames") or []
    return (
        ("*" in groups or attributes.api_group in groups)
        and _resource_matches(rule.get("resources") or [], attributes)
        and (not names or attributes.name in names)
    )


def _resource_matches(resources: list[str], attributes: RequestAttributes) -> bool:
    """``ResourceMatches``: ``*``, the exact ``resource/subresource``, or ``*/subresource``."""
    for resource in resources:
        if resource in ("*", attributes.combined_resource):
            return True
        if attributes.subresource and resource == f"*/{attributes.subresource}":
            return True
    return False


def _url_matches(urls: list[str], path: str) -> bool:
    """``NonResourceURLMatches``: ``*``, the exact path, or a prefix ending in ``*``."""
    return any(url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))) for url in urls)


# --- the authorizer: rule.go ----------------------------------------------------------------------------------


class RbacAuthorizer:
    """The RBAC authorizer over a set of Roles, ClusterRoles and their bindings (the bootstrap ones included)."""

    def __init__(self) -> None:
        self._roles: dict[tuple[str, str], JSON] = {}
        self._cluster_roles: dict[str, JSON] = {}
        self._role_bindings: dict[tuple[str, str], JSON] = {}
        self._cluster_role_bindings: dict[str, JSON] = {}
        for obj in _BOOTSTRAP:
            self.apply(obj)

    def apply(self, obj: JSON) -> None:
        """Add or replace a Role, ClusterRole, RoleBinding or ClusterRoleBinding (ValueError for any other kind)."""
        meta = obj.get("metadata") or {}
        kind, name, namespace = obj.get("kind"), meta.get("name", ""), meta.get("namespace", "")
        if kind in ("Role", "RoleBinding") and not namespace:
            raise ValueError(f"{kind} {name!r} has no metadata.namespace")
        if kind == "Role":
            self._roles[(namespace, name)] = obj
        elif kind == "ClusterRole":
            self._cluster_roles[name] = obj
        elif kind == "RoleBinding":
            self._role_bindings[(namespace, name)] = obj
        elif kind == "ClusterRoleBinding":
            self._cluster_role_bindings[name] = obj
        else:
            raise ValueError(f"not an RBAC object: {kind} {name!r} (expected one of {', '.join(RBAC_KINDS)})")

    def authorize(self, user: User, attributes: RequestAttributes) -> tuple[bool, str]:
        """``Authorize``: (allowed, reason). The reason of a refusal lists the role references that could not be
        resolved (``RBAC: role.rbac.authorization.k8s.io "x" not found``), else it is empty."""
        errors: list[str] = []
        for rules, error in self._rules_for(user, attributes.namespace):
            if error:
                errors.append(error)
            elif any(rule_allows(attributes, rule) for rule in rules):
                return True, ""
        if not errors:
            return False, ""
        return False, "RBAC: " + (errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")

    def _rules_for(self, user: User, namespace: str) -> Iterable[tuple[list[JSON], str]]:
        """``VisitRulesFor``: the rules of every ClusterRoleBinding, then (in a namespace) every RoleBinding there,
        that applies to the user; an unresolvable role reference yields its error instead."""
        for binding in self._cluster_role_bindings.values():
            if _applies_to(user, binding.get("subjects") or [], ""):
                yield self._role_rules(binding["roleRef"], "")
        if namespace:
            for (binding_namespace, _), binding in sorted(self._role_bindings.items()):
                if binding_namespace == namespace and _applies_to(user, binding.get("subjects") or [], namespace):
                    yield self._role_rules(binding["roleRef"], namespace)

    def _role_rules(self, reference: JSON, namespace: str) -> tuple[list[JSON], str]:
        """``GetRoleReferenceRules``: a RoleBinding's Role is in its own namespace; a ClusterRole is global."""
        if reference.get("kind") == "Role":
            role = self._roles.get((namespace, reference["name"]))
            missing = f'role.rbac.authorization.k8s.io "{reference["name"]}" not found'
        elif reference.get("kind") == "ClusterRole":
            role = self._cluster_roles.get(reference["name"])
            missing = f'clusterrole.rbac.authorization.k8s.io "{reference["name"]}" not found'
        else:
            return [], f"unsupported role reference kind: {reference.get('kind')!r}"
        if role is None:
            return [], missing
        return list(role.get("rules") or []), ""


def _applies_to(user: User, subjects: list[JSON], namespace: str) -> bool:
    """``appliesToUser`` for any subject: a User by name, a Group by membership, a ServiceAccount by its user name
    (a subject without a namespace means the binding's namespace)."""
    for subject in subjects:
        kind = subject.get("kind")
        if kind == "User" and subject.get("name") == user.name:
            return True
        if kind == "Group" and subject.get("name") in user.groups:
            return True
        if kind == "ServiceAccount":
            account_namespace = subject.get("namespace") or namespace
            if account_namespace and user.name == f"system:serviceaccount:{account_namespace}:{subject.get('name')}":
                return True
    return False


# --- authentication and the refusals --------------------------------------------------------------------------


class RequestRefused(Exception):
    """A request the stand-in refuses before serving it: 401 Unauthorized or 403 Forbidden, with a Status body."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        """The ``Status`` object the API answers with."""
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message}
        status.update(reason=self.reason, code=self.code)
        if self.details is not None:
            status["details"] = self.details
        return status


def forbidden(user: User, attributes: RequestAttributes, reason: str = "") -> RequestRefused:
    """The 403 the API server sends (``responsewriters.Forbidden`` with ``errors.NewForbidden``), e.g.
    ``pods "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "pods/log" in API group ""
    in the namespace "ns"``."""
    if not attributes.resource_request:
        message = f'User "{user.name}" cannot {attributes.verb} path "{attributes.path}"'
    elif attributes.namespace:
        message = (
            f'User "{user.name}" cannot {attributes.verb} resource "{attributes.combined_resource}" in API group '
            f'"{attributes.api_group}" in the namespace "{attributes.namespace}"'
        )
    else:
        message = (
            f'User "{user.name}" cannot {attributes.verb} resource "{attributes.combined_resource}" in API group '
            f'"{attributes.api_group}" at the cluster scope'
        )
    if reason:
        message = f"{message}: {reason}"
    if not attributes.resource_request:
        return RequestRefused(403, "Forbidden", f"forbidden: {message}", {})
    qualified = f"{attributes.resource}.{attributes.api_group}" if attributes.api_group else attributes.resource
    details: JSON = {"group": attributes.api_group, "kind": attributes.resource}
    if attributes.name:
        details["name"] = attributes.name
        return RequestRefused(403, "Forbidden", f'{qualified} "{attributes.name}" is forbidden: {message}', details)
    return RequestRefused(403, "Forbidden", f"{qualified} is forbidden: {message}", details)


@dataclass(frozen=True)
class Denial:
    """A request RBAC refused: who asked, and the attributes it was refused for."""

    user: str
    verb: str
    api_group: str
    resource: str
    namespace: str
    name: str
    message: str


class Access:
    """The stand-in's authenticator and authorizer: bearer tokens to users, users' requests through RBAC.

    ``admin_token`` authenticates as :data:`ADMIN`. Thread-safe; :attr:`denials` records every 403.
    """

    def __init__(self, admin_token: str) -> None:
        self._lock = threading.Lock()
        self._users = {admin_token: ADMIN}
        self._rbac = RbacAuthorizer()
        self._denials: list[Denial] = []
        self._asked: set[tuple[str, str, str, str]] = set()

    def service_account_token(self, namespace: str, name: str) -> str:
        """A new bearer token for the ServiceAccount ``namespace/name`` (the account need not exist as an object:
        RBAC subjects name it, and only they matter here)."""
        token = f"sa.{namespace}.{name}.{secrets.token_hex(8)}"
        with self._lock:
            self._users[token] = service_account_user(namespace, name)
        return token

    def apply(self, objects: Iterable[JSON]) -> None:
        """Add (or replace) RBAC objects: Roles, ClusterRoles, RoleBindings, ClusterRoleBindings."""
        with self._lock:
            for obj in objects:
                self._rbac.apply(obj)

    @property
    def denials(self) -> list[Denial]:
        """Every request refused with 403 so far, oldest first."""
        with self._lock:
            return list(self._denials)

    def asked(self, user: str) -> set[tuple[str, str, str]]:
        """The ``(apiGroup, resource, verb)`` of every resource request ``user`` made so far, allowed or not
        (``resource`` with its subresource: ``pods/log``); the admin's requests are not recorded."""
        with self._lock:
            return {(group, resource, verb) for name, group, resource, verb in self._asked if name == user}

    def check(self, authorization: str | None, method: str, path: str, query: dict[str, str]) -> User:
        """The request's user; raises :class:`RequestRefused` (401 for a missing or unknown token, 403 when RBAC
        allows it nothing)."""
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            user = self._users.get(token) if scheme.lower() == "bearer" else None
            if user is None:
                raise RequestRefused(401, "Unauthorized", "Unauthorized")
            if _PRIVILEGED_GROUP in user.groups:
                return user
            attributes = request_attributes(method, path, query)
            if attributes.resource_request:
                self._asked.add((user.name, attributes.api_group, attributes.combined_resource, attributes.verb))
            allowed, reason = self._rbac.authorize(user, attributes)
            if allowed:
                return user
            refusal = forbidden(user, attributes, reason)
            self._denials.append(
                Denial(
                    user.name,
                    attributes.verb,
                    attributes.api_group,
                    attributes.combined_resource if attributes.resource_request else attributes.path,
                    attributes.namespace,
                    attributes.name,
                    refusal.message,
                )
            )
            raise refusal
