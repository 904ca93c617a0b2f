"""Reports end to end: built after a run, shown by `mlrt report`, gated, diffed, opened in a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import missing, run_json

JOB = """
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: sklearn.random_forest
  data:
    train: {{uri: "file://{data}/train.csv", label: label, id: id}}
    validation: {{uri: "file://{data}/validation.csv", label: label, id: id}}
  hyperparameters: {{n_estimators: 30, max_depth: {depth}}}
  reports: [bias_variance, confusion, per_class, skew, slices, error_categories, fairness]
  slices: [region, {{column: age, bins: 3}}]
  protected: [sex]
  tags: {{rules: {{senior: {{column: age, min: 60}}}}}}
  baseline: {{metric: validation_accuracy, value: 0.99, source: human-level}}
  seed: 5
{extra}"""


def write_data(folder: Path, rows: int = 3000, seed: int = 0) -> Path:
    """Separable labels, except region 3 where they are flipped at random (the planted weak slice)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "x1": rng.normal(size=rows),
            "x2": rng.normal(size=rows),
            "age": rng.integers(18, 90, size=rows),
            "region": rng.integers(0, 4, size=rows),
            "sex": rng.integers(0, 2, size=rows),
        }
    )
    label = (frame["x1"] + 0.5 * frame["x2"] > 0).astype(int)
    noisy = (frame["region"] == 3) & (rng.random(rows) < 0.5)
    frame["label"] = np.where(noisy, 1 - label, label)
    folder.mkdir(parents=True, exist_ok=True)
    cut = int(rows * 0.7)
    frame.iloc[:cut].to_csv(folder / "train.csv", index=False)
    frame.iloc[cut:].to_csv(folder / "validation.csv", index=False)
    return folder


def submit(cli, write_spec, tmp_path, name: str, depth: int = 6, extra: str = ""):
    data = write_data(tmp_path / "data")
    spec = write_spec(JOB.format(name=name, data=data, depth=depth, extra=extra), name=f"{name}.yaml")
    return cli("submit", str(spec))


def run_id_of(result) -> str:
    return re.search(r"^run (\S+) ", result.output, re.M).group(1)


def test_reports_are_built_after_the_run_and_summarized(cli, write_spec, tmp_path):
    result = submit(cli, write_spec, tmp_path, "diag")
    assert result.exit_code == 0, result.output
    assert "diagnosis" in result.output and "full report:" in result.output
    run_id = run_id_of(result)
    run = run_json(cli, run_id)
    artifacts = {a["path"] for a in run["artifacts"]}
    assert {"reports/slices.json", "reports/fairness.json", "reports/report.html"} <= artifacts
    shown = cli("report", run_id, "--only", "slices", "--json")
    assert shown.exit_code == 0, shown.output
    slices = json.loads(shown.stdout)["slices"]
    assert slices["discovered"][0]["description"].startswith("region")
    assert "3" in slices["discovered"][0]["description"]
    fairness = json.loads(cli("report", run_id, "--only", "fairness", "--json").stdout)["fairness"]
    assert fairness["report"] == "fairness" and not fairness.get("skipped")


def test_a_failed_gate_fails_the_run_with_the_reason(cli, write_spec, tmp_path):
    gates = (
        "  gates:\n    - {metric: slices.worst_accuracy, min: 0.95}\n    - {metric: skew.balanced_accuracy, min: 0.5}\n"
    )
    result = submit(cli, write_spec, tmp_path, "gated", 6, gates)
    assert result.exit_code == 1
    run_id = run_id_of(result)
    run = run_json(cli, run_id)
    assert run["state"] == "FAILED_GATE"
    assert "slices.worst_accuracy" in run["reason"] and "below the gate's min 0.95" in run["reason"]
    assert "skew.balanced_accuracy" not in run["reason"]


def test_diff_marks_regressions_and_a_compare_gate_uses_them(cli, write_spec, tmp_path):
    good = submit(cli, write_spec, tmp_path, "good", 6)
    good_id = run_id_of(good)
    stump = submit(
        cli, write_spec, tmp_path, "stump", 1, f"  gates:\n    - {{compare_to: {good_id}, max_regression: 0.02}}\n"
    )
    stump_id = run_id_of(stump)
    assert run_json(cli, stump_id)["state"] == "FAILED_GATE"
    assert f"vs {good_id}" in run_json(cli, stump_id)["reason"]
    diff = cli("report", "diff", good_id, stump_id, "--json")
    assert diff.exit_code == 0, diff.output
    data = json.loads(diff.stdout)
    assert any(row["regression"] > 0.02 for row in data["rows"])
    assert {m["metric"] for m in data["metrics"]} >= {"validation_accuracy", "train_accuracy"}
    text = cli("report", "diff", good_id, stump_id)
    assert "regressed" in text.output


def test_bad_report_requests_are_one_line_errors(cli, write_spec, tmp_path):
    result = cli("report", "no-such-run")
    assert result.exit_code == 2 and "no-such-run" in result.output
    bad = submit(
        cli, write_spec, tmp_path, "bad", 6, "  gates: [{metric: worst}]\n  report_options: {slices: {nope: 1}}\n"
    )
    assert bad.exit_code == 2
    assert "spec.gates.0" in bad.output and "spec.report_options.slices.nope" in bad.output
    assert "Traceback" not in bad.output


def test_the_html_report_renders_its_plots_in_headless_chromium(cli, write_spec, tmp_path):
    if shutil.which("chromium") is None:
        missing("chromium", "Debian's chromium is not installed (.ci/run installs it)")
    result = submit(cli, write_spec, tmp_path, "page")
    run_id = run_id_of(result)
    page = tmp_path / "report.html"
    assert cli("report", run_id, "--html", str(page)).exit_code == 0
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch: opens offline
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    plots = int(dom.split('data-plots="')[1].split('"')[0])
    drawn = int(dom.split('data-plots-drawn="')[1].split('"')[0])
    assert plots >= 7 and drawn == plots
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,2400",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page: text and plots drew
