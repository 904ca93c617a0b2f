"""The practitioner's loop in one run: column roles, weights, a chosen operating point, and a planted weak
slice that the sharpest-slices list ranks first and the end-of-run summary shows."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from conftest import run_json

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: loop}
spec:
  algorithm: sklearn.logistic_regression
  data:
    train: {uri: train.csv, label: y, weight: w, analysis: [segment]}
    validation: {uri: validation.csv, label: y}
  protected: [sex]
  business_metrics: [{name: cost, cost_matrix: {"1": {"0": 3}, "0": {"1": 1}}}]
  evaluation: {threshold: {optimize: min_cost}}
  reports: [skew, slices, fairness]
  seed: 3
"""


def write_data(folder: Path, rows: int, seed: int) -> pd.DataFrame:
    """A noisy linear boundary; segment z (1.5% of rows) has 45% of its labels flipped (the planted weak
    slice); sex plays no part; positives weigh 2."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    segment = np.where(rng.random(rows) < 0.015, "z", rng.choice(list("abcdefghij"), rows))
    y = (x1 + 0.7 * x2 + rng.normal(scale=0.7, size=rows) > 0.3).astype(int)
    y = np.where((segment == "z") & (rng.random(rows) < 0.45), 1 - y, y)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "segment": segment, "sex": rng.choice(["f", "m"], rows), "y": y})
    return frame.assign(w=np.where(y == 1, 2.0, 1.0))


def test_roles_weights_operating_point_and_the_sharpest_slice(cli, write_spec, tmp_path):
    write_data(tmp_path, 3000, 1).to_csv(tmp_path / "train.csv", index=False)
    validation = write_data(tmp_path, 4000, 2)
    validation.to_csv(tmp_path / "validation.csv", index=False)
    result = cli("submit", str(write_spec(SPEC)))
    assert result.exit_code == 0, result.output
    # the summary shows the top of both lists: the most excess error, and the sharpest slice
    assert "sharpest slice 'segment == z' (1." in result.output, result.output
    assert "slices: slice '" in result.output, result.output

    run = run_json(cli, result.output.split()[1])
    params, metrics = run["params"], run["metrics"]
    # sex (protected) and segment (analysis) are read for the reports, not by the model; w weighs the rows
    assert params["features"] == "x1,x2"
    assert params["analysis_columns"] == "segment,sex"
    assert params["sample_weight"] == "w"
    threshold = metrics["decision_threshold"]
    assert params["decision_threshold"] == f"{threshold:.6g}" and params["threshold_optimize"] == "min_cost"

    output = Path(run["output_uri"].removeprefix("file://")) / "output"
    predictions = pd.read_parquet(output / "predictions.parquet").query("split == 'validation'")
    model = joblib.load(output / "model.joblib")  # the saved model applies the threshold
    assert model.threshold == threshold
    assert (model.predict(validation[["x1", "x2"]]) == predictions["prediction"].to_numpy()).all()
    assert (predictions["prediction"] == (predictions["score_1"] >= threshold)).all()
    # metrics are at the chosen threshold, which costs less than the default one
    labels, scores = predictions["label"].to_numpy(), predictions["score_1"].to_numpy()

    def cost(at: float) -> float:
        predicted = scores >= at
        return float((3 * ((labels == 1) & ~predicted) + ((labels == 0) & predicted)).mean())

    assert metrics["validation_cost"] == cost(threshold) < cost(0.5)
    assert json.loads((output / "threshold.json").read_text())["threshold"] == threshold

    reports = output / "reports"
    slices = json.loads((reports / "slices.json").read_text())
    assert slices["sharpest"][0]["description"] == "segment == z", slices["sharpest"][:3]
    assert slices["sharpest"][0]["lift"] > 2
    fairness = json.loads((reports / "fairness.json").read_text())
    assert [a["attribute"] for a in fairness["attributes"]] == ["sex"]
    point = json.loads((reports / "skew.json").read_text())["pr_curve"]["operating_point"]
    assert (point["threshold"], point["source"]) == (threshold, "chosen")
    page = (reports / "report.html").read_text()
    assert 'data-plot="precision-recall"' in page and f"threshold {threshold:.3g} (chosen)" in page
