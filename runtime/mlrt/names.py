"""Names that reach a container engine or a cluster: OCI image references and environment variable names.

A value from a spec ends up on an engine's command line (``podman run ... IMAGE``)
or in a pod manifest. Checked here against the grammars the engines themselves
use, such a value can never be read as an option (``--volume=/:/host``) or smuggle
a second assignment into an environment (``A=B``).

- :func:`image_problem`: the OCI image reference grammar of
  ``github.com/distribution/reference`` (``regexp.go``), which podman, docker,
  containerd and the kubelet parse: ``[domain[:port]/]path[:tag][@digest]``,
  path components lowercase, at most 255 characters of name.
- :func:`env_name_problem`: POSIX portable environment variable names, letters,
  digits and ``_``, not starting with a digit.
"""

from __future__ import annotations

import re

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
"""The whole OCI reference grammar (use with ``fullmatch``); group ``name`` is the repository."""
NAME_TOTAL_LENGTH_MAX = 255
"""distribution/reference's limit on the name part (domain and path) of a reference."""
REFERENCE_MAX = 512
"""Longer than any valid reference (a 255-character name, a 128-character tag and a sha512 digest):
refused before the grammar is tried, so a huge value costs nothing."""

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
"""An RFC 1123 label (use with ``fullmatch``): a job's name, a Kubernetes namespace or volume."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
"""A POSIX portable environment variable name (use with ``fullmatch``)."""
ENV_NAME_MAX = 255


def image_problem(reference: str) -> str | None:
    """Why ``reference`` is not an OCI image reference such as
    ``registry.example.com:5000/team/train:1.2@sha256:<64 hex>``, or None when it is."""
    if not reference:
        return "must name an image, e.g. registry.example.com/team/train:1.0"
    if reference.startswith("-"):
        return "an image reference cannot start with '-'"
    if len(reference) > REFERENCE_MAX:
        return f"longer than {REFERENCE_MAX} characters: not an image reference"
    match = IMAGE_REFERENCE.fullmatch(reference)
    if match is None:
        return (
            "not an image reference ([registry[:port]/]path[:tag][@digest], path in lowercase letters,"
            " digits and . _ -), e.g. registry.example.com/team/train:1.0"
        )
    if len(match.group("name")) > NAME_TOTAL_LENGTH_MAX:
        return f"the image name is longer than {NAME_TOTAL_LENGTH_MAX} characters"
    return None


def env_name_problem(name: str) -> str | None:
    """Why ``name`` is not a POSIX environment variable name (``[A-Za-z_][A-Za-z0-9_]*``), or None."""
    if len(name) > ENV_NAME_MAX:
        return f"an environment variable name has at most {ENV_NAME_MAX} characters"
    if ENV_NAME.fullmatch(name) is None:
        return "not an environment variable name: use letters, digits and '_', not starting with a digit"
    return None
