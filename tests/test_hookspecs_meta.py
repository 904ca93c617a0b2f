"""Meta-tests that keep the plugin author's reference true (as datasette does).

Every hook in ``mlrt.hookspecs`` must have a docstring, be documented in
``docs/plugins.md`` under a heading with its exact signature, and have a test
named for it (a ``test_*`` function whose name contains the hook's name, such as
``test_mlrt_commands_adds_a_command_after_the_builtins``): adding a hook without
docs or a test fails the suite, and so does a heading for a hook that no longer
exists. A mention in a comment, a helper or a plugin class does not count.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from mlrt import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent


def hook_names() -> list[str]:
    return sorted(name for name, value in vars(hookspecs).items() if name.startswith("mlrt_") and callable(value))


HOOKS = hook_names()


def signature(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` as written in hookspecs.py (annotations are strings there)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def doc_headings() -> dict[str, str]:
    """Hook name -> heading text, for every ``### `mlrt_...(...)` `` heading of docs/plugins.md."""
    headings = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"^#{2,4}\s+`((mlrt_\w+)\(.*)`\s*$", line)
        if match:
            headings[match.group(2)] = match.group(1)
    return headings


def test_there_are_hooks():
    assert "mlrt_algorithms" in HOOKS and len(HOOKS) >= 8


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_a_hookspec_with_a_docstring(name: str):
    function = getattr(hookspecs, name)
    assert hasattr(function, "mlrt_spec"), f"{name} is not decorated with @hookspec"
    doc = inspect.getdoc(function) or ""
    assert len(doc) > 40, f"{name} needs a docstring: it is the plugin author's reference"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name: str):
    headings = doc_headings()
    assert name in headings, f"docs/plugins.md has no heading for {name}"
    assert headings[name] == signature(name), f"docs/plugins.md shows {headings[name]!r}"


def test_docs_describe_no_hook_that_does_not_exist():
    assert sorted(doc_headings()) == HOOKS


def defined_test_names(source: str) -> list[str]:
    """The names of the ``test_*`` functions and methods defined in a module's ``source``."""
    return [
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


def hook_tests(name: str) -> list[str]:
    """``file::test`` for every test under tests/ (this module aside) whose name contains hook ``name``."""
    me = Path(__file__).resolve()
    return [
        f"{path.name}::{test}"
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.resolve() != me
        for test in defined_test_names(path.read_text())
        if name in test
    ]


def test_only_a_test_named_for_a_hook_counts():
    source = (
        "# mlrt_tuners is mentioned here\n"
        "class Plugin:\n    def mlrt_tuners(self): ...\n"
        "def test_something_else(): Plugin().mlrt_tuners()\n"
        "def test_mlrt_tuners_are_listed(): ...\n"
    )
    names = defined_test_names(source)
    assert names == ["test_something_else", "test_mlrt_tuners_are_listed"]
    assert [n for n in names if "mlrt_tuners" in n] == ["test_mlrt_tuners_are_listed"]


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str):
    assert hook_tests(name), (
        f"no test under tests/ is named for {name}: name one test_{name}_... (see tests/test_hooks.py)"
    )
