"""The screenshots of docs/ui.md: each page of the web UI in headless Chromium (not a test).

    python tests/ui_screenshots.py            # writes docs/ui/{runs,run,chart,compare,compare-charts,tuning,login}.png

A fresh store is filled the way a user fills one: two real ``mlrt submit`` runs of
``job_specs/diagnose_breast_cancer.yaml`` as histogram boosting with early stopping (learning
rate 0.1 and 0.03, two of its reports, so params, loss curves and the reports differ), a real TuningJob of eight trials
(``job_specs/tune_breast_cancer.yaml``, fewer trials), and one run written straight into the
store with a 200,000-point ``loss`` series (no algorithm logs that many points in seconds) for
the picture of a long, downsampled chart. ``mlrt ui`` serves it; the sign-in page is the UI as
the controller mounts it (``create_ui(store, login_required=True)``) on the same store. Each
page is taken 1200 px wide and at most 1600 px tall, then reduced to 256 colors (Pillow) so the
PNGs stay small.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "docs" / "ui"
sys.path.insert(0, str(HERE))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, seed_run  # noqa: E402

WIDTH, MAX_HEIGHT = 1200, 1600
BOOSTING = (
    "spec.algorithm=sklearn.hist_gradient_boosting",
    "spec.hyperparameters={early_stopping: true, max_depth: 3}",
    "spec.reports=[confusion, per_class]",
    "spec.gates=[]",
)
"""Boosting with early stopping logs its loss per iteration: the compare page has curves to overlay."""
MLRT = str(Path(sys.executable).parent / "mlrt")


def mlrt(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([MLRT, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mlrt {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def submit(env: dict[str, str], spec: str, *sets: str) -> str:
    argv = ["submit", str(ROOT / "job_specs" / spec), "--wait", "--json"]
    for item in sets:
        argv += ["--set", item]
    return json.loads(mlrt(env, *argv))["id"]


def fill(env: dict[str, str], db: str) -> dict[str, str]:
    """The runs the pictures show; their ids by role."""
    from mlrt.store import Store

    ids = {
        "a": submit(env, "diagnose_breast_cancer.yaml", *BOOSTING, "spec.hyperparameters.learning_rate=0.1"),
        "b": submit(env, "diagnose_breast_cancer.yaml", *BOOSTING, "spec.hyperparameters.learning_rate=0.03"),
        "tuning": submit(env, "tune_breast_cancer.yaml", "spec.max_trials=8", "spec.completion.target=0.0"),
    }
    store = Store(db)
    steps = np.arange(200_000)
    rng = np.random.default_rng(0)
    loss = 2.0 * np.exp(-steps / 40_000) + 0.1 + rng.normal(0, 0.03, len(steps))
    loss[120_000] += 1.5  # a spike that downsampling must keep
    seed_run(store, "long-series", name="resnet-long", params={"lr": "0.1", "batch_size": "256"})
    now = time.time()
    store.insert_metrics(
        "long-series", [("loss", int(s), float(v), now - 3600 + s * 0.018) for s, v in zip(steps, loss, strict=True)]
    )
    store.engine.dispose()
    ids["long"] = "long-series"
    return ids


def serve(argv: list[str], env: dict[str, str], pattern: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(pattern, line)
        if found:
            return process, found.group(1)
    process.kill()
    raise SystemExit(f"{argv} printed no URL")


def shoot(page, url: str, name: str, element: str | None = None, start: str | None = None) -> None:
    """``url`` as docs/ui/NAME.png: the page from its top (or from the element ``start`` selects),
    at most MAX_HEIGHT tall; or only the first ``element`` matching a selector."""
    from PIL import Image

    page.goto(url)
    page.wait_for_load_state("networkidle")
    path = OUT / f"{name}.png"
    if element:
        page.locator(element).first.screenshot(path=str(path))
    else:
        top = page.locator(start).first.evaluate("e => e.getBoundingClientRect().top + window.scrollY") if start else 0
        height = min(page.evaluate("document.documentElement.scrollHeight") - top, MAX_HEIGHT)
        page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": top, "width": WIDTH, "height": height})
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} kB")


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlrt-ui-shots-") as folder:
        db = f"sqlite:///{folder}/mlrt.db"
        env = {**os.environ, "MLRT_HOME": folder, "MLRT_DB": db}
        ids = fill(env, db)
        ui, url = serve([MLRT, "ui", "--port", "0"], env, r"(http://\S+/ui)/")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": WIDTH, "height": 900})
                shoot(page, f"{url}/", "runs")
                shoot(page, f"{url}/runs/{ids['a']}", "run")
                shoot(page, f"{url}/runs/{ids['long']}", "chart", "svg.mlrt-chart")
                compare = f"{url}/compare?run={ids['a']}&run={ids['b']}"
                shoot(page, compare, "compare")
                shoot(page, compare, "compare-charts", start="#charts")
                shoot(page, f"{url}/tuning/{ids['tuning']}", "tuning")
                with login_server(db) as base:
                    shoot(page, f"{base}/ui/login", "login")
                browser.close()
        finally:
            ui.terminate()
            ui.wait(10)


@contextlib.contextmanager
def login_server(db: str):
    """The UI as the controller mounts it (sign-in required) over ``db``, in a thread; its base URL."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    from mlrt.store import Store
    from mlrt.ui.app import create_ui

    root = FastAPI()
    root.mount("/ui", create_ui(Store(db), login_required=True))
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
