"""The resident process behind the ``mlrt`` console script (:mod:`mlrt.resident`): a command runs in a
child forked from it, with the client's folder, environment and descriptors; the client forwards its
signals, exits as the child did, and takes the child with it when killed; changed code or an open
socket folder sends commands back to their own process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MLRT_SCRIPT, command_spec, pid_alive, wait_for
from mlrt.resident import _command_of, pids, stop_all

pytestmark = pytest.mark.slow

PARENTS = """\
import json, os, sys, time, psutil
me = psutil.Process()
json.dump({"parent": me.ppid(), "grandparent": psutil.Process(me.ppid()).ppid()}, open(sys.argv[1], "w"))
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def folder() -> Iterator[Path]:
    """A socket folder of this test's own (short: a socket's path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mlrt-r-"))
    yield path
    stop_all(str(path))
    shutil.rmtree(path, ignore_errors=True)


def resident_pids(folder: Path) -> list[int]:
    return [pid for pid in pids(str(folder)) if pid_alive(pid)]


def environment(folder: Path, home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLRT_HOME": str(home), "MLRT_RESIDENT_DIR": str(folder), **extra}


def mlrt(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MLRT_SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def started(env: dict[str, str], folder: Path) -> int:
    """Run one command (which starts the resident process) and wait for it to listen; its pid."""
    assert mlrt(env, "runs", "list").returncode == 0
    wait_for(lambda: list(folder.glob("*.sock")) and resident_pids(folder), timeout=120)
    (pid,) = resident_pids(folder)
    return pid


def sleeper(tmp_path: Path, write_spec, seconds: float) -> Path:
    return write_spec(
        command_spec("resident", f"[python, parents.py, {tmp_path / 'parents.json'}, '{seconds}']"),
        files={"parents.py": PARENTS},
    )


def test_a_command_runs_in_a_child_of_the_resident_process_as_the_client(tmp_path, home, folder, write_spec):
    env = environment(folder, home)
    resident = started(env, folder)
    spec = sleeper(tmp_path, write_spec, 0)

    done = mlrt(env, "submit", "-q", spec.name, cwd=tmp_path)  # a path relative to the client's folder

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("SUCCEEDED")  # written to the client's own stdout pipe
    parents = json.loads((tmp_path / "parents.json").read_text())
    assert parents["grandparent"] == resident  # worker <- command's child <- resident process
    listed = json.loads(mlrt(env, "runs", "list", "--json").stdout)  # in the client's MLRT_HOME
    assert [run["state"] for run in listed] == ["SUCCEEDED"]


def test_a_failing_command_exits_and_says_the_same_as_in_its_own_process(home, folder):
    env = environment(folder, home)
    started(env, folder)

    through = mlrt(env, "runs", "show", "no-such-run")
    alone = mlrt({**env, "MLRT_RESIDENT": "0"}, "runs", "show", "no-such-run")

    assert through.returncode == alone.returncode == 2
    assert through.stderr == alone.stderr == "error: no run 'no-such-run'\n"
    assert through.stdout == alone.stdout == ""


def test_sigterm_reaches_the_command_and_the_client_exits_with_its_status(tmp_path, home, folder, write_spec):
    env = environment(folder, home)
    resident = started(env, folder)
    spec = sleeper(tmp_path, write_spec, 120)
    client = subprocess.Popen(
        [str(MLRT_SCRIPT), "submit", "-q", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parents = wait_for(lambda: (tmp_path / "parents.json").exists() and (tmp_path / "parents.json").read_text())
    assert json.loads(parents)["grandparent"] == resident

    client.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=120)

    assert client.returncode == 1, err
    assert "CANCELLED" in out and "interrupted in the submitting terminal" in out


def test_a_killed_client_takes_its_command_with_it(tmp_path, home, folder, write_spec):
    env = environment(folder, home)
    started(env, folder)
    spec = sleeper(tmp_path, write_spec, 120)
    client = subprocess.Popen(
        [str(MLRT_SCRIPT), "submit", "-q", str(spec)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parents = wait_for(lambda: (tmp_path / "parents.json").exists() and (tmp_path / "parents.json").read_text())
    command = json.loads(parents)["parent"]
    assert command != client.pid and pid_alive(command)

    client.kill()
    client.wait(timeout=60)

    wait_for(lambda: not pid_alive(command), timeout=60)


def test_changed_code_sends_the_next_command_to_its_own_process_and_a_new_resident(tmp_path, home, folder):
    code = tmp_path / "code"  # on sys.path: a change in it is a change of the code commands would run
    code.mkdir()
    env = environment(folder, home, PYTHONPATH=os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))
    first = started(env, folder)

    (code / "new_module.py").write_text("")
    done = mlrt(env, "runs", "list", "--json")

    assert done.returncode == 0 and json.loads(done.stdout) == []
    wait_for(lambda: not pid_alive(first), timeout=60)
    wait_for(lambda: resident_pids(folder) and resident_pids(folder) != [first], timeout=120)


def test_a_socket_folder_others_can_enter_is_not_used(home, folder):
    folder.chmod(0o755)
    env = environment(folder, home)

    for _ in range(2):
        done = mlrt(env, "runs", "list", "--json")
        assert done.returncode == 0 and json.loads(done.stdout) == []

    assert list(folder.iterdir()) == []


def test_the_command_word_skips_global_options_and_their_values():
    assert _command_of(["--db", "sqlite:///x.db", "controller", "--port", "0"]) == "controller"
    assert _command_of(["--server=http://h", "runs", "list"]) == "runs"
    assert _command_of(["-h"]) is None
