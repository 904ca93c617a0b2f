"""The web UI under ``mlrt controller`` (PostgreSQL): a token signs in once, the session is an
HttpOnly SameSite=Strict cookie, a request without it is refused, a user sees only their
project's runs, cancel stops a real run, and the API's Bearer auth is unchanged."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from mlrt.service import auth
from mlrt.store import Store
from service_process import ServiceProcess
from ui_browser import browser, expect, page, seed_run  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SLEEPER = "import time\nprint('working', flush=True)\ntime.sleep(600)\n"


@pytest.fixture
def service(postgres_db: str, tmp_path: Path, home: Path):
    started = ServiceProcess(postgres_db, tmp_path / "controller.log", env={"MLRT_ALLOWED_BACKENDS": "local"}).start()
    yield started
    started.stop()


def test_the_service_ui_signs_in_with_a_token_and_shows_only_the_project_s_runs(
    service,
    postgres_db,
    page,  # noqa: F811
    expect,  # noqa: F811
    tmp_path,
):
    store = Store(postgres_db)
    alice = auth.issue(store, "user", "alice", "vision")
    admin = auth.issue(store, "admin", "ops")
    seed_run(store, "run-vision", name="mine", project="vision")
    seed_run(store, "run-speech", name="theirs", project="speech")
    ui = f"{service.url}/ui"

    # No cookie: a page goes to the login page, a fragment and a form are refused.
    with httpx.Client(base_url=ui, follow_redirects=False) as anonymous:
        refused = anonymous.get("/runs/run-vision")
        assert refused.status_code == 303
        assert refused.headers["location"] == "/ui/login?next=%2Fui%2Fruns%2Frun-vision"
        assert anonymous.get("/runs/table", headers={"X-Mlrt-Fragment": "1"}).status_code == 401
        assert anonymous.post("/runs/run-vision/cancel", data={"csrf": "x"}).status_code == 401
        assert anonymous.get("/static/ui.css").status_code == 200  # our own script and style are public
        # The cookie is not an API credential, and the API's Bearer auth is as it was.
        with httpx.Client(cookies={"mlrt_session": alice}) as cookie_only:
            assert cookie_only.get(f"{service.url}/api/v1/runs").status_code == 401
        bearer = anonymous.get(f"{service.url}/api/v1/runs", headers={"Authorization": f"Bearer {alice}"})
        assert bearer.status_code == 200 and [r["id"] for r in bearer.json()] == ["run-vision"]

    page.goto(f"{ui}/runs/run-vision")
    expect(page).to_have_url(f"{ui}/login?next=%2Fui%2Fruns%2Frun-vision")
    page.get_by_label("Token").fill("mlrt_nope_nope")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("token: unknown")
    page.get_by_label("Token").fill(alice)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{ui}/runs/run-vision")  # back where the visit began
    cookie = next(c for c in page.context.cookies() if c["name"] == "mlrt_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts

    # Another project's runs: not listed, not found, not downloadable, not charted.
    page.goto(f"{ui}/")
    rows = page.locator("table.runs tbody tr[data-run]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run", "run-vision")
    assert page.goto(f"{ui}/runs/run-speech").status == 404
    expect(page.locator("main")).not_to_contain_text("theirs")
    assert page.goto(f"{ui}/runs/run-speech/part/state").status == 404
    assert page.goto(f"{ui}/runs/run-speech/chart.svg").status == 404

    # Cancel from the page stops a real run of the project.
    program = tmp_path / "sleeper.py"
    program.write_text(SLEEPER)
    spec = textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {{name: sleeper}}
        spec:
          command: [{sys.executable}, {program}]
        """)
    with httpx.Client(base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as api:
        submitted = api.post("/jobs", json={"spec": spec})
        assert submitted.status_code == 201, submitted.text
        run_id = submitted.json()["run_id"]
        wait_for(lambda: api.get(f"/runs/{run_id}").json()["state"] == "RUNNING", timeout=60)
    page.goto(f"{ui}/runs/{run_id}")
    expect(page.locator("#part-logs pre.log")).to_contain_text("working")
    with httpx.Client(base_url=ui, cookies={"mlrt_session": alice}) as signed_in:  # the session, not the page
        assert signed_in.post(f"/runs/{run_id}/cancel", data={"csrf": "guess"}).status_code == 403
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-state")).to_have_text("CANCELLED")
    expect(page.locator("#part-state")).to_contain_text("cancel requested by alice")

    # Signing out ends the session; an admin sees every project.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{ui}/login")
    page.goto(f"{ui}/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.get_by_label("Token").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("table.runs tbody tr[data-run]")).to_have_count(3)

    # A revoked token ends its sessions at the next request.
    auth.revoke(store, admin.split("_")[1])
    page.reload()
    expect(page).to_have_url(re.compile(r"/ui/login"))
