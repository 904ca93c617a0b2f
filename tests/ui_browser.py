"""Headless Chromium for the web UI's tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

Import the fixtures into a test module (``from ui_browser import browser, expect, page, ui_server``):
``browser`` is one Chromium per module, ``expect`` Playwright's waiting assertions, ``page`` a fresh page (own cookies) per test that fails the test on a
JavaScript error or a dialog (an ``alert`` from an unescaped value), and ``ui_server`` one
``mlrt ui`` process per module on a SQLite store of its own (``ui_server.db``, ``ui_server.url``). Without
Chromium or Playwright the tests skip, or fail under ``MLRT_REQUIRE=chromium``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import MLRT_SCRIPT, import_or_missing, missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless Chromium for the module's tests."""
    if not Path(CHROMIUM).is_file() or shutil.which("chromium") is None:
        missing("chromium", "Debian's chromium is not installed (.ci/run installs it)")
    sync_api = import_or_missing("playwright.sync_api", "chromium", "playwright is not installed (pip install .[test])")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def expect(browser):
    """Playwright's ``expect`` (assertions that wait: a live page changes within seconds)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=20_000)
    return playwright_expect


@pytest.fixture
def page(browser) -> Iterator:
    """A page in a context of its own (no cookies shared between tests). A dialog or an uncaught
    JavaScript error fails the test: the UI has no dialogs, so one means injected script ran."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    problems: list[str] = []
    opened.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield opened
    context.close()
    assert not problems, problems


@dataclass
class UiServer:
    """A running ``mlrt ui``: its store's URL and the URL it printed."""

    db: str
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """``mlrt --db sqlite:///... ui --port 0`` for the module; the URL is the one it prints."""
    folder = tmp_path_factory.mktemp("ui")
    db = f"sqlite:///{folder / 'mlrt.db'}"
    env = {**os.environ, "MLRT_HOME": str(folder / "home")}
    log = folder / "ui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(MLRT_SCRIPT), "--db", db, "ui", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        found = re.search(r"http://\S+/ui/", line)
        assert found, f"mlrt ui printed {line!r}; log: {log.read_text()}"
        url = found.group(0).rstrip("/")
        deadline = time.monotonic() + 30
        while httpx.get(url + "/static/ui.css").status_code != 200:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        yield UiServer(db, url, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed_run(
    store,
    run_id: str,
    *,
    name: str | None = None,
    state: str = "SUCCEEDED",
    labels: dict[str, str] | None = None,
    project: str | None = None,
    metrics: dict[str, list[float]] | None = None,
    params: dict[str, str] | None = None,
    kind: str = "TrainingJob",
    parent_id: str | None = None,
    trial: int | None = None,
    log: Path | None = None,
    output: Path | None = None,
):
    """A job and its run written straight into ``store`` (no launch: the pages read rows), with
    ``metrics`` as points at steps 0, 1, ... and, with ``log``, one attempt whose worker 0 writes
    there; ``output``: the folder of ``file://`` outputs (the run's is ``output/RUN_ID``). Returns
    the run row."""
    from datetime import datetime, timedelta, timezone

    from mlrt.store.models import Attempt, Job, Run

    now = datetime.now(timezone.utc)
    job_id = parent_id or run_id
    if parent_id is None:
        spec = {"apiVersion": "mlrt/v1", "kind": kind, "metadata": {"name": name or run_id}, "spec": {}}
        job = Job(
            id=run_id,
            name=name or run_id,
            kind=kind,
            labels=labels or {},
            spec_submitted=f"metadata: {{name: {name or run_id}}}\n",
            spec_resolved=spec,
            project=project,
        )
    terminal = state not in ("QUEUED", "STARTING", "RUNNING", "FINALIZING")
    run = Run(
        id=run_id,
        job_id=job_id,
        parent_id=parent_id,
        trial=trial,
        state=state,
        reason=f"seeded as {state}",
        output_uri=f"file://{output or Path('/nowhere')}/{run_id}",
        record={"git": None, "python": "3.11", "seed": 7, "data": {}},
        started_at=now - timedelta(seconds=90),
        ended_at=now if terminal else None,
    )
    if parent_id is None:
        store.create_job(job, run, params or {})
    else:
        with store.session() as s:
            s.add(run)
        store.log_params(run_id, params or {})
    store.add_event(run_id, f"{state} (seeded)")
    for key, values in (metrics or {}).items():
        store.insert_metrics(run_id, [(key, step, value, now.timestamp() + step) for step, value in enumerate(values)])
    if log is not None:
        store.add_attempt(
            Attempt(
                run_id=run_id,
                number=1,
                state=state,
                backend="local",
                request={"workers": [{"rank": 0, "log_path": str(log)}]},
                log_dir=str(log.parent),
            )
        )
    return store.get_run(run_id)
