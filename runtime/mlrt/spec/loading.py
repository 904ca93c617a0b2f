"""Reading a TrainingJob spec: text limits, YAML, ``--set`` overrides, then validation.

:func:`load_spec` and :func:`parse_text` read a spec within the bounds of
:mod:`mlrt.limits`; :func:`parse_document` applies the overrides and checks
the document against the schema (:mod:`mlrt.spec.schema`) and the installed
plugins (:mod:`mlrt.spec.checks`), every problem at once. The result is a
:class:`LoadedSpec`: the spec as submitted and as resolved (defaults filled
in, relative paths made absolute).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlrt import limits
from mlrt.spec.checks import plugin_problems
from mlrt.spec.errors import SpecError, SpecTooLarge, describe_error, yaml_problem
from mlrt.spec.schema import TrainingJob


@dataclasses.dataclass
class LoadedSpec:
    """A validated spec with what mlrt needs to launch and record it."""

    job: TrainingJob
    source_text: str
    source_path: Path | None
    base_dir: Path
    overrides: list[str]
    hyperparameters: dict[str, Any]

    @property
    def name(self) -> str:
        return self.job.metadata.name

    def resolved(self) -> dict[str, Any]:
        """The spec as it will run: defaults filled in, paths absolute, hyperparameters complete."""
        data = self.job.model_dump(mode="json", by_alias=True)
        data["spec"]["hyperparameters"] = self.hyperparameters
        return data


def apply_override(document: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.path=value`` override (value parsed as YAML within :mod:`mlrt.limits`) to ``document``.

    A key with dots of its own (a plugin's name) is reached when the document already has it."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError([f"--set {limits.cut(assignment)}: expected KEY=VALUE, e.g. spec.hyperparameters.C=0.5"])
    parts = key.strip().split(".")
    if len(parts) > limits.MAX_DEPTH or any(len(part) > limits.MAX_KEY_CHARS for part in parts):
        raise SpecError(
            [f"--set {limits.cut(key)}: at most {limits.MAX_DEPTH} keys of at most {limits.MAX_KEY_CHARS} characters"]
        )
    try:
        value = limits.load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise SpecError([yaml_problem(exc, f"--set {limits.cut(key)}")]) from None
    target: Any = document
    index = 0
    while True:
        if isinstance(target, list):
            part = parts[index]
            where = ".".join(parts[: index + 1])
            if index == len(parts) - 1:
                if not part.isdecimal() or int(part) > len(target):
                    raise SpecError([f"--set {limits.cut(key)}: {limits.cut(part)} is not an index of the list"])
                if int(part) == len(target):
                    target.append(value)
                else:
                    target[int(part)] = value
                return
            if not part.isdecimal() or int(part) >= len(target):
                raise SpecError([f"--set {limits.cut(key)}: {where} is not an index of the list"])
            target = target[int(part)]
            if not isinstance(target, (dict, list)):
                raise SpecError([f"--set {limits.cut(key)}: {where} holds no fields"])
            index += 1
            continue
        span = _key_span(target, parts, index)
        part = ".".join(parts[index : index + span])
        index += span
        if index == len(parts):
            target[part] = value
            return
        if not isinstance(target.get(part), (dict, list)):
            target[part] = [] if parts[index].isdecimal() and part == "command" else {}
        target = target[part]


def _key_span(mapping: dict[str, Any], parts: list[str], start: int) -> int:
    """How many of ``parts`` from ``start`` make up the next key: the most that join (with
    dots) into a key ``mapping`` already has, so ``spec.report_options.acme.calibration.split``
    reaches the options of a report named ``acme.calibration``; else 1."""
    for end in range(len(parts), start + 1, -1):
        if ".".join(parts[start:end]) in mapping:
            return end - start
    return 1


def _absolute(path_text: str, base_dir: Path) -> str:
    path = Path(path_text).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def parse_document(
    document: Any, *, source_text: str, source_path: Path | None, base_dir: Path, overrides: list[str]
) -> LoadedSpec:
    """Validate an already-parsed spec document (see :func:`load_spec`).

    A TuningJob document gives a :class:`mlrt.tuning_spec.LoadedTuning`."""
    if not isinstance(document, dict):
        raise SpecError(["(document): expected a mapping with apiVersion, kind, metadata and spec"])
    if len(overrides) > limits.MAX_OVERRIDES:
        raise SpecError([f"--set: at most {limits.MAX_OVERRIDES} overrides, got {len(overrides)}"])
    for assignment in overrides:
        apply_override(document, assignment)
    out_of_bounds = limits.document_problems(document)
    if out_of_bounds:
        raise SpecError(out_of_bounds)
    if document.get("kind") == "TuningJob":
        from mlrt.tuning_spec import parse_tuning

        return parse_tuning(
            document, source_text=source_text, source_path=source_path, base_dir=base_dir, overrides=overrides
        )
    if document.get("kind") != "TrainingJob":
        raise SpecError([f"kind: must be TrainingJob or TuningJob, got {document.get('kind')!r}"])
    problems, hyperparameters = plugin_problems(document, base_dir)
    job = None
    try:
        job = TrainingJob.model_validate(document)
    except ValidationError as exc:
        problems = [describe_error(e) for e in exc.errors()] + problems
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    assert job is not None
    spec = job.spec
    if spec.output.path:
        out = spec.output.path
        if out.startswith("file://"):
            spec.output.path = "file://" + _absolute(out.removeprefix("file://"), base_dir)
        elif "://" not in out:
            spec.output.path = "file://" + _absolute(out, base_dir)
    spec.working_dir = _absolute(spec.working_dir or ".", base_dir)
    if spec.source:
        spec.source = _absolute(spec.source, base_dir)
    if spec.init_from and spec.init_from.path:
        spec.init_from.path = _absolute(spec.init_from.path.removeprefix("file://"), base_dir)
    return LoadedSpec(
        job=job,
        source_text=source_text,
        source_path=source_path,
        base_dir=base_dir,
        overrides=list(overrides),
        hyperparameters=hyperparameters,
    )


def _size_limit() -> int:
    try:
        return limits.max_spec_bytes()
    except ValueError as exc:
        raise SpecError([str(exc)]) from None


def _too_large(name: str, limit: int) -> SpecTooLarge:
    return SpecTooLarge([f"{name}: the spec is larger than the limit of {limit} bytes (MLRT_MAX_SPEC_BYTES)"])


def read_spec_text(path: str | Path) -> str:
    """The text of the spec file at ``path``: at most the size limit read, UTF-8 checked; raises SpecError."""
    limit = _size_limit()
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)  # one byte over says "too large" without reading a huge file
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file ({exc.strerror})"]) from None
    if len(data) > limit:
        raise _too_large(str(path), limit)
    try:
        return limits.check_text(data)
    except ValueError as exc:
        raise SpecError([f"{path}: {exc}"]) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSpec:
    """Read, override and validate the spec file at ``path``; raise SpecError on any problem."""
    text = read_spec_text(path)
    return parse_text(text, str(path), Path(path).resolve(), overrides)


def _check_size(text: str, name: str) -> None:
    """Refuse text over the size limit or that is not UTF-8 (the API hands over decoded JSON strings)."""
    limit = _size_limit()
    if len(text) > limit:  # a character is at least one byte: no need to encode a huge text
        raise _too_large(name, limit)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SpecError(
            [f"{name}: not UTF-8 text: character U+{ord(text[exc.start]):04X} at offset {exc.start} cannot be encoded"]
        ) from None
    if size > limit:
        raise _too_large(name, limit)
    if "\x00" in text:
        raise SpecError([f"{name}: a binary file (it holds NUL bytes), not a YAML spec"])


def parse_text(text: str, name: str, source_path: Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSpec:
    """Validate spec ``text``; ``name`` is how problems refer to it, and relative
    paths in it are taken against ``source_path``'s folder.

    Everything is bounded (see :mod:`mlrt.limits`): text over the size limit
    raises :class:`SpecTooLarge`; aliases, nesting, numbers, strings and
    collections beyond their limits raise :class:`SpecError`."""
    _check_size(text, name)
    _check_size("\n".join(overrides), "--set")
    try:
        document = limits.load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([yaml_problem(exc, name)]) from None
    return parse_document(
        document,
        source_text=text,
        source_path=source_path,
        base_dir=source_path.parent,
        overrides=list(overrides),
    )
