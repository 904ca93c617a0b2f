"""The web UI's runs page and run page in headless Chromium, served by a real ``mlrt ui`` process.

Runs are rows written into the UI's store (the pages read nothing else), so a test can make a
run change while its page is open and watch the page follow without a reload."""

from __future__ import annotations

import hashlib
import json
import re

import httpx
import pytest

from mlrt.states import RunState
from mlrt.store import Store
from mlrt.store.models import Artifact, utcnow
from ui_browser import browser, expect, page, seed_run, ui_server  # noqa: F401  (fixtures)

XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def store(ui_server) -> Store:  # noqa: F811
    return Store(ui_server.db)


@pytest.fixture(scope="module")
def seeded(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Four finished runs to list and filter."""
    folder = tmp_path_factory.mktemp("seeded")
    seed_run(store, "run-a", name="digits-a", labels={"team": "vision"}, metrics={"validation_accuracy": [0.7, 0.95]})
    seed_run(
        store,
        "run-b",
        name="digits-b",
        state="FAILED",
        labels={"team": "speech"},
        metrics={"validation_accuracy": [0.6, 0.8]},
    )
    seed_run(store, "run-c", name="iris", state="CANCELLED", labels={"team": "vision"})
    log = folder / "worker-0.log"
    log.write_text(f"starting\n{XSS}\n")
    seed_run(
        store,
        "run-x",
        name=XSS,
        state="FAILED",
        labels={"note": IMG},
        params={"C": XSS},
        log=log,
        metrics={"loss": [1.0, 0.5]},
    )
    return {"folder": str(folder)}


def _rows(page) -> list[str]:  # noqa: F811
    return page.locator("table.runs tbody tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")


def test_the_runs_table_lists_filters_and_sorts_runs_and_the_url_holds_the_view(page, ui_server, seeded, expect):  # noqa: F811
    page.goto(ui_server.url + "/")
    assert {"run-a", "run-b", "run-c", "run-x"} <= set(_rows(page))
    # Filter by state with the form: the URL then holds the view.
    page.get_by_label("state").get_by_label("FAILED", exact=True).check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"state=FAILED"))
    assert sorted(_rows(page)) == ["run-b", "run-x"]
    # A shared URL: a metric condition, a sort on that metric and it as a column.
    page.goto(ui_server.url + "/?where=validation_accuracy+>+0.75&sort=-validation_accuracy&col=validation_accuracy")
    assert _rows(page) == ["run-a", "run-b"]
    header = page.locator("table.runs thead th").filter(has_text="validation_accuracy")
    expect(header).to_have_count(1)
    expect(page.locator("tr[data-run=run-a] td.num").last).to_have_text("0.95")
    # Ascending by clicking the column's header (it was descending).
    header.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"sort=validation_accuracy"))
    assert _rows(page) == ["run-b", "run-a"]
    page.goto(ui_server.url + "/?label=team%3Dvision")
    assert sorted(_rows(page)) == ["run-a", "run-c"]
    page.goto(ui_server.url + "/?name=IRIS")
    assert _rows(page) == ["run-c"]
    # Pages: one run a page, sorted by name; "next" keeps the view.
    page.goto(ui_server.url + "/?name=digits&sort=name&limit=1")
    assert _rows(page) == ["run-a"]
    expect(page.locator("div.pager")).to_contain_text("1–1 of 2")
    page.get_by_role("link", name="next").click()
    assert _rows(page) == ["run-b"]
    expect(page).to_have_url(re.compile(r"name=digits.*offset=1"))
    # A bad condition is one line naming the field, and no table.
    page.goto(ui_server.url + "/?where=validation_accuracy+%3E+high")
    expect(page.get_by_role("alert")).to_contain_text("where: 'high'")
    assert _rows(page) == []


def test_user_values_are_shown_as_text_never_run(page, ui_server, seeded, expect):  # noqa: F811
    """A run named <script>alert(1)</script>, a label and a param that are HTML, and a log line
    with a script: all shown as text (the page fixture fails the test on any dialog)."""
    page.goto(ui_server.url + "/?name=script")
    expect(page.locator("tr[data-run=run-x]")).to_contain_text(XSS)
    expect(page.locator("tr[data-run=run-x] .label")).to_have_text(f"note={IMG}")
    page.locator("tr[data-run=run-x] a").first.click()
    expect(page.locator("h1")).to_have_text("Run run-x")
    expect(page.locator("main")).to_contain_text(XSS)
    expect(page.locator("#part-params td.mono")).to_have_text(XSS)
    expect(page.locator("#part-state pre.log")).to_contain_text(XSS)  # a failed run shows its log's end
    assert page.locator("main script, main img").count() == 0


def test_a_running_run_s_page_and_the_runs_page_update_without_a_reload(page, ui_server, store, tmp_path, expect):  # noqa: F811
    log = tmp_path / "worker-0.log"
    log.write_text("epoch 0\n")
    seed_run(store, "run-live", name="live", state="RUNNING", log=log, metrics={"loss": [1.0, 0.8]})
    page.goto(f"{ui_server.url}/runs/run-live")
    expect(page.locator("#run-state")).to_have_text("RUNNING")
    chart = page.locator("figure[data-metric=loss] svg path.mlrt-series")
    expect(chart).to_have_attribute("data-points", "2")
    box = chart.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0  # the series is drawn
    runs = page.context.new_page()  # the runs page, open at the same time
    runs.goto(ui_server.url + "/?name=live")
    assert _rows(runs) == ["run-live"]
    for opened in (page, runs):
        opened.evaluate("window.notReloaded = true")

    # The run goes on: a log line, more points, a param, then it succeeds; another run arrives.
    with log.open("a") as out:
        out.write("epoch 1 <done>\n")
    store.insert_metrics("run-live", [("loss", 2, 0.5, 0.0), ("accuracy", 1, 0.8, 0.0), ("accuracy", 2, 0.9, 0.0)])
    store.log_params("run-live", {"lr": "0.1"})
    seed_run(store, "run-live-2", name="live again", state="QUEUED")
    expect(page.locator("#part-logs pre.log")).to_contain_text("epoch 1 <done>")
    expect(page.locator("figure[data-metric=loss] svg path.mlrt-series")).to_have_attribute("data-points", "3")
    expect(page.locator("figure[data-metric=accuracy] svg path.mlrt-series")).to_have_count(1)
    expect(page.locator("tr[data-metric=loss] td.num").first).to_have_text("0.5")  # its last value
    expect(page.locator("#part-params")).to_contain_text("lr")
    expect(runs.locator("tr[data-run=run-live-2] .state")).to_have_text("QUEUED")
    store.transition("run-live", RunState.SUCCEEDED, "the workers succeeded", ended_at=utcnow())
    expect(page.locator("#run-state")).to_have_text("SUCCEEDED")
    expect(page.locator("#part-state")).to_contain_text("the workers succeeded")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(runs.locator("tr[data-run=run-live] .state")).to_have_text("SUCCEEDED")
    assert page.evaluate("window.notReloaded") is True
    assert runs.evaluate("window.notReloaded") is True


def test_cancel_stops_a_run_and_refuses_a_form_without_its_csrf_value(page, ui_server, store, expect):  # noqa: F811
    seed_run(store, "run-stop", name="stop-me", state="RUNNING")
    # Another site's form (no csrf value, a foreign Origin) changes nothing.
    forged = httpx.post(
        f"{ui_server.url}/runs/run-stop/cancel", data={"csrf": "guess"}, headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403
    no_token = httpx.post(f"{ui_server.url}/runs/run-stop/cancel", data={})
    assert no_token.status_code == 403
    assert store.get_run("run-stop").state == "RUNNING"

    page.goto(f"{ui_server.url}/runs/run-stop")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-state")).to_have_text("CANCELLED")
    assert store.get_run("run-stop").state == "CANCELLED"
    expect(page.locator("#part-state")).to_contain_text("cancelled by")


def test_artifacts_download_with_their_sha256_and_reports_show_their_sections(page, ui_server, store, tmp_path, expect):  # noqa: F811
    seed_run(store, "run-art", name="with-artifacts", output=tmp_path)
    content = b"model bytes " * 1000
    folder = tmp_path / "run-art" / "output"
    (folder / "reports").mkdir(parents=True)
    (folder / "model.bin").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    store.put_artifacts(
        [
            Artifact(
                run_id="run-art",
                path="model.bin",
                uri=f"file://{folder / 'model.bin'}",
                size=len(content),
                sha256=digest,
            )
        ]
    )
    (folder / "reports" / "confusion.json").write_text(json.dumps({"report": "confusion", "skipped": "no predictions"}))

    page.goto(f"{ui_server.url}/runs/run-art")
    row = page.locator("#part-artifacts tr").filter(has_text="model.bin")
    expect(row).to_contain_text(digest)
    expect(row).to_contain_text(f"{len(content):,}")
    with page.expect_download() as download:
        row.get_by_role("link").click()
    assert download.value.suggested_filename == "model.bin"
    assert hashlib.sha256(open(download.value.path(), "rb").read()).hexdigest() == digest
    expect(page.locator("#part-reports section#confusion")).to_contain_text("skipped: no predictions")
    expect(page.locator("#reproducibility")).to_contain_text("seed")


def test_mlrt_ui_refuses_bad_options_and_other_hosts_names(cli, ui_server):  # noqa: F811
    busy = httpx.URL(ui_server.url).port
    taken = cli("ui", "--port", str(busy))
    assert taken.exit_code == 2 and f"cannot listen on 127.0.0.1:{busy}" in taken.output
    assert cli("ui", "--port", "70000").exit_code == 2
    remote = cli("--server", "http://127.0.0.1:1", "ui")
    assert remote.exit_code == 2 and "a controller serves its own UI at SERVER/ui" in remote.output
    # Bound to loopback, it answers only loopback names (a rebound DNS name of another site is refused).
    assert httpx.get(ui_server.url + "/", headers={"Host": "evil.example"}).status_code == 400
    assert httpx.get(ui_server.url.replace("127.0.0.1", "localhost") + "/").status_code == 200
