"""Spec problems as one line each: the exceptions, pydantic's errors and YAML's, rendered.

Every line starts with the field path (``spec.compute.workers: must be >= 1,
got 0``) or, for a whole-document problem, the file's name. An unknown field
lists the fields allowed where it is.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

import yaml
from pydantic import BaseModel

from mlrt import limits
from mlrt.spec.schema import TrainingJob


class SpecError(Exception):
    """The spec cannot run; ``problems`` has one line per problem, field path first."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class SpecTooLarge(SpecError):
    """The spec's text is over the size limit (:func:`mlrt.limits.max_spec_bytes`); the API answers 413."""


def field_names(model: type[BaseModel]) -> list[str]:
    """The fields ``model`` allows, as a spec writes them (aliases), sorted."""
    return sorted(info.alias or name for name, info in model.model_fields.items())


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional and step into dict/list values to reach a model."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _unwrap(args[0])
    if origin in (dict, list):
        return (_unwrap(args[-1]),)  # a container: its items' type, wrapped in a tuple
    if origin in (typing.Union, types.UnionType):
        return next((_unwrap(a) for a in args if a is not type(None)), None)
    return annotation


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` whose field is at ``loc`` (for 'allowed fields' hints)."""
    node: Any = root
    for part in loc:
        if isinstance(node, tuple):  # inside a dict or list: ``part`` is a key or index
            node = node[0]
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return None
        fields = {info.alias or name: info for name, info in node.model_fields.items()}
        if part not in fields:
            return None
        node = _unwrap(fields[part].annotation)
    if isinstance(node, tuple):
        node = node[0]
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "literal_error": "must be {expected}",
    "finite_number": "must be a finite number",
    "too_long": "must have at most {max_length} entries",
    "string_too_long": "must be at most {max_length} characters",
}


def describe_error(error: dict[str, Any], root: type[BaseModel] = TrainingJob, prefix: tuple[str, ...] = ()) -> str:
    """One line for one of pydantic's ``errors()`` from validating with ``root`` (default: a
    whole TrainingJob document); ``prefix`` is where ``root``'s data sits in the document
    (``("spec", "compute", "kubernetes")`` for a backend's settings block)."""
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in prefix + loc) or "(document)"
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        hint = f" (allowed: {', '.join(field_names(owner))})" if owner else ""
        return f"{path}: unknown field{hint}"
    if kind == "missing":
        return f"{path}: required field is missing"
    context = error.get("ctx") or {}
    template = _MESSAGES.get(kind)
    message = template.format(**context) if template else str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    shown = error.get("input")
    if kind != "value_error" and shown is not None and not isinstance(shown, (dict, list)):
        message += f", got {limits.shown(shown)}"
    return f"{path}: {message}"


def yaml_problem(exc: yaml.YAMLError, name: str) -> str:
    """One problem line for a YAML error in ``name``: where it is and what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{name}: not valid YAML (character #x{exc.character:04x} at offset {exc.position} is not allowed)"
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    problem = " ".join(f"{context}, {problem}".split() if context else problem.split())
    if isinstance(exc, limits.LimitError):
        return f"{name}:{where}: {problem}"
    if "maximum nesting depth" in problem:  # libyaml's own cap (1,000), met while it looks ahead past ours
        return f"{name}:{where}: nested deeper than {limits.MAX_DEPTH} levels"
    return f"{name}:{where}: not valid YAML ({problem})"
