"""Weak slices from both sides: the slices report's sharpest list (error-rate lift at a minimum support)
beside the most-excess-error list, on a planted weak slice next to a noisy decision boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.slices import SlicesReport
from sklearn.linear_model import LogisticRegression

from mlrt.reports import ReportInput
from mlrt.summary import summarize

REPORT = SlicesReport()


def _data(seed: int, scores: bool = True) -> ReportInput:
    """A logistic regression on a noisy linear boundary; segment z (1.5% of rows) has 45% of its labels
    flipped. The cells along the boundary hold more errors, segment z the sharpest rate."""
    rng = np.random.default_rng(seed)

    def table(rows: int) -> pd.DataFrame:
        x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
        segment = np.where(rng.random(rows) < 0.015, "z", rng.choice(list("abcdefghij"), rows))
        y = (x1 + 0.7 * x2 + rng.normal(scale=0.7, size=rows) > 0.3).astype(int)
        y = np.where((segment == "z") & (rng.random(rows) < 0.45), 1 - y, y)
        return pd.DataFrame({"x1": x1, "x2": x2, "segment": segment, "y": y})

    train, validation = table(3000), table(4000)
    model = LogisticRegression().fit(train[["x1", "x2"]], train["y"])
    score = model.predict_proba(validation[["x1", "x2"]])[:, 1]
    frame = pd.DataFrame({"id": range(4000), "split": "validation", "label": validation["y"]})
    frame["prediction"] = (score >= 0.5).astype(int)
    if scores:
        frame["score_0"], frame["score_1"] = 1 - score, score
    frame = pd.concat([frame, validation[["x1", "x2", "segment"]]], axis=1)
    return ReportInput(
        "run-1", frame, ["x1", "x2"], "classification", [0, 1], 1, {}, {}, {}, Path("."), None, ["segment"]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_the_planted_slice_ranks_first_in_the_sharpest_list_and_the_summary_shows_it(seed):
    result = REPORT.build(_data(seed))
    top = result["sharpest"][0]
    assert top["description"] == "segment == z", result["sharpest"][:3]
    assert top["lift"] > 2 and top["share"] < 0.03
    assert top["expected_error_rate"] < top["error_rate"] / 2  # the model was confident there
    # the most-excess-error list is led by the boundary, which is not sharp: the model knows it is unsure there
    assert "segment" not in result["discovered"][0]["description"]
    assert all("segment" in row["description"] for row in result["sharpest"])
    summary = summarize({"slices": result}, cap=1)
    shown = [finding.text for finding in summary.shown]
    assert shown[0].startswith("slice 'x"), shown  # the top of the excess-error list
    assert shown[1].startswith("sharpest slice 'segment == z' (1."), shown  # pinned past the cap
    assert all(not finding.pinned for finding in summary.more)


def test_without_scores_the_sharpest_list_ranks_by_lift_alone():
    result = REPORT.build(_data(0, scores=False))
    lifts = [row["lift"] for row in result["sharpest"]]
    assert lifts == sorted(lifts, reverse=True) and "expected_error_rate" not in result["sharpest"][0]
    minimum = result["search"]["min_rows"]
    assert all(row["rows"] >= minimum for row in result["sharpest"])
    assert "sharpest slices" in REPORT.html(result).lower()
