"""Every ```python block of docs/plugins.md runs, so the plugin author's guide cannot drift from the code.

A block is run by what it is:

- a block that defines ``test_*`` functions is a test module: it is written to a
  file and run with pytest in a subprocess (it must pass, and run at least one test);
- any other block is executed as a module of its own; when it defines hook
  implementations (``@hookimpl def mlrt_...``), the module is registered as a
  plugin with :func:`mlrt.plugins.registered` and every registry is built, so a
  registration that is malformed or raises fails here, and the names it
  provides must include every name the block registers.

A block that cannot run on its own (a signature shown as a call, say) is
marked with the line ``<!-- docs-test: not run (REASON) -->`` right before
its fence; the test allows at most :data:`MAX_NOT_RUN` of them, each with a
reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mlrt import plugins

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
NOT_RUN = re.compile(r"<!-- docs-test: not run \((?P<reason>[^)]+)\) -->")
MAX_NOT_RUN = 2
"""How many python blocks of the guide may be shown without being run."""


def python_blocks() -> list[tuple[int, str, str | None]]:
    """``(line, code, not_run_reason)`` for every fenced ```python block of the guide."""
    lines = DOCS.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
            previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marker = NOT_RUN.search(previous)
            blocks.append((start, "\n".join(lines[start:end]) + "\n", marker and marker.group("reason")))
            index = end
        index += 1
    return blocks


BLOCKS = python_blocks()
RUN = [(line, code) for line, code, reason in BLOCKS if reason is None]


def test_the_guide_has_python_blocks_and_marks_few_as_not_run():
    assert len(RUN) >= 10
    not_run = [(line, reason) for line, _, reason in BLOCKS if reason is not None]
    assert len(not_run) <= MAX_NOT_RUN, f"too many blocks are not run: {not_run}"
    assert all(reason.strip() for _, reason in not_run)


def test_a_marker_only_counts_right_before_a_fence(tmp_path: Path):
    assert NOT_RUN.search("<!-- docs-test: not run (a signature, not a call) -->").group("reason")
    assert NOT_RUN.search("<!-- docs-test: not run () -->") is None


def hook_names(module: types.ModuleType) -> list[str]:
    return [name for name, value in vars(module).items() if name.startswith("mlrt_") and callable(value)]


REGISTRIES = ("algorithms", "tuners", "early_stoppers", "reports", "launchers", "data_schemes")


@pytest.mark.parametrize(("line", "code"), RUN, ids=[f"line{line}" for line, _ in RUN])
def test_python_block_runs(line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if re.search(r"^def test_", code, re.M):
        path = tmp_path / f"test_docs_block_{line}.py"
        path.write_text(code)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, f"docs/plugins.md:{line}\n{done.stdout}\n{done.stderr}"
        assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout
        return
    name = f"docs_block_{line}"
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses and pickling look classes up here
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/plugins.md:{line}", "exec"), module.__dict__)
    if not hook_names(module):
        return
    with plugins.registered(module, name=name):
        for kind in REGISTRIES:
            getattr(plugins, kind)()
        mine = [row for row in plugins.describe() if row["name"] == name]
        assert mine and sorted(mine[0]["hooks"]) == sorted(hook_names(module))
        assert not [p for p in plugins.problems() if name in p], plugins.problems()
