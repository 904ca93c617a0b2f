"""The error_categories report on generated data with planted error categories."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlrt_reports.categories import ErrorCategoriesReport
from rich.console import Console

from mlrt.algorithms import resolve_values
from mlrt.reports import ReportInput, option_schema

N = 4000


def planted(seed: int = 0, n: int = N) -> tuple[pd.DataFrame, np.ndarray]:
    """Validation rows where texts with "http" are wrong half the time and the rest 5% of the time,
    plus train rows (same ids) that are all wrong, which the report must ignore."""
    rng = np.random.default_rng(seed)
    has_http = rng.random(n) < 0.2
    words = np.array(["cat photo", "a dog", "some text", "hello world"])
    text = words[rng.integers(0, len(words), n)].astype(object)
    text[has_http] = "see http://example.com/" + pd.Series(rng.integers(0, 999, has_http.sum())).astype(str)
    wrong = np.where(has_http, rng.random(n) < 0.5, rng.random(n) < 0.05)
    label = rng.integers(0, 2, n)
    prediction = np.where(wrong, 1 - label, label)
    score = np.where(prediction == 1, 0.8, 0.2)
    quality = np.array(["blurry,dark", "dark", " blurry ", "", None], dtype=object)[rng.integers(0, 5, n)]
    validation = pd.DataFrame(
        {
            "id": np.arange(n),
            "split": "validation",
            "label": label,
            "prediction": prediction,
            "score_0": 1 - score,
            "score_1": score,
            "text": text,
            "length": rng.integers(1, 100, n),
            "colour": np.array(["red", "green", "blue"])[rng.integers(0, 3, n)],
            "quality": quality,
        }
    )
    train = validation.iloc[:500].copy()
    train["split"] = "train"
    train["prediction"] = 1 - train["label"]
    return pd.concat([train, validation], ignore_index=True), wrong


def make_input(
    frame: pd.DataFrame,
    output_dir: Path,
    tags: dict[str, Any] | None,
    options: dict[str, Any] | None = None,
    task: str = "classification",
    **spec: Any,
) -> ReportInput:
    report = ErrorCategoriesReport()
    resolved, problems = resolve_values(option_schema(report), options or {}, report.name)
    assert not problems
    features = [c for c in frame.columns if c not in ("id", "split", "label", "prediction", "score_0", "score_1")]
    return ReportInput(
        run_id="run-1",
        frame=frame,
        features=features,
        task=task,
        classes=[0, 1] if task == "classification" else [],
        positive=1 if task == "classification" else None,
        spec={"tags": tags, "seed": None, "working_dir": None, **spec},
        metrics={},
        options=resolved,
        output_dir=output_dir,
    )


def tags_spec(**given: Any) -> dict[str, Any]:
    return {"rules": {}, "column": None, "separator": ",", "files": [], **given}


def check_outputs(result: dict[str, Any]) -> None:
    report = ErrorCategoriesReport()
    json.dumps(result)
    buffer = io.StringIO()
    report.render(result, Console(file=buffer, width=120))
    assert "Error categories" in buffer.getvalue()
    page = report.html(result)
    assert "<h2>" in page and "<svg" in page and 'class="mlrt-plot"' in page


def by_tag(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["tag"]: e for e in result["tags"]}


def test_planted_http_tag_ranks_first_with_its_share_of_errors(tmp_path: Path) -> None:
    frame, wrong = planted()
    validation = frame[frame["split"] == "validation"]
    rules = {
        "contains http": {"column": "text", "contains": "http"},
        "short": {"column": "length", "min": 1, "max": 30},
        "red": {"column": "colour", "equals": "red"},
        "greeting": {"column": "text", "regex": r"^hel+o\b"},
    }
    report = ErrorCategoriesReport()
    result = report.build(make_input(frame, tmp_path, tags_spec(rules=rules)))
    check_outputs(result)

    has_http = validation["text"].str.contains("http").to_numpy()
    assert result["split"] == "validation" and result["rows"] == N
    assert result["errors"] == wrong.sum()
    top = result["tags"][0]
    assert top["tag"] == "contains http"
    assert top["rows"] == has_http.sum()
    assert top["errors"] == (wrong & has_http).sum()
    assert top["share_of_errors"] == pytest.approx((wrong & has_http).sum() / wrong.sum())
    assert top["share_of_errors"] > 0.55  # half of 20% of rows vs 5% of 80%: about 71%
    assert top["error_rate"] == pytest.approx((wrong & has_http).sum() / has_http.sum())
    rest_rate = (wrong & ~has_http).sum() / (~has_http).sum()
    assert top["rest_error_rate"] == pytest.approx(rest_rate)
    assert top["gain"] == pytest.approx(((wrong & has_http).sum() - has_http.sum() * rest_rate) / N)
    # the other rules tag exactly what they say, and none of them stands out
    tags = by_tag(result)
    assert tags["short"]["rows"] == validation["length"].between(1, 30).sum()
    assert tags["red"]["rows"] == (validation["colour"] == "red").sum()
    assert tags["greeting"]["rows"] == (validation["text"] == "hello world").sum()
    for name in ("short", "red", "greeting"):
        assert tags[name]["gain"] < 0.01 < top["gain"]
    # sorted by share of errors
    shares = [e["share_of_errors"] for e in result["tags"]]
    assert shares == sorted(shares, reverse=True)
    any_tag = has_http | validation["length"].between(1, 30).to_numpy() | (validation["colour"] == "red").to_numpy()
    any_tag |= (validation["text"] == "hello world").to_numpy()
    assert result["untagged"]["errors"] == (wrong & ~any_tag).sum()
    assert result["untagged"]["share_of_errors"] == pytest.approx((wrong & ~any_tag).sum() / wrong.sum())

    gates = report.gate_values(result)
    assert gates == {
        "max_share_of_errors": pytest.approx(top["share_of_errors"]),
        "untagged_share": pytest.approx(result["untagged"]["share_of_errors"]),
    }
    findings = report.findings(result)
    assert len(findings) == 3
    assert findings[0].text.startswith(f"tag 'contains http': {top['share_of_errors']:.0%} of errors (error rate 0.")
    assert findings[0].gain == pytest.approx(top["gain"])
    comparable = {(c.key, c.metric): c for c in report.comparable(result)}
    assert comparable[("tag contains http", "error_rate")].value == pytest.approx(top["error_rate"])
    assert comparable[("tag contains http", "error_rate")].higher_is_better is False


def test_tags_column_is_split_and_stripped(tmp_path: Path) -> None:
    frame, wrong = planted()
    validation = frame[frame["split"] == "validation"]
    result = ErrorCategoriesReport().build(make_input(frame, tmp_path, tags_spec(column="quality")))
    check_outputs(result)
    tags = by_tag(result)
    assert set(tags) == {"blurry", "dark"}
    quality = validation["quality"].fillna("")
    blurry = quality.str.contains("blurry").to_numpy()
    dark = quality.str.contains("dark").to_numpy()
    assert tags["blurry"]["rows"] == blurry.sum() and tags["blurry"]["errors"] == (wrong & blurry).sum()
    assert tags["dark"]["rows"] == dark.sum() and tags["dark"]["errors"] == (wrong & dark).sum()
    assert tags["blurry"]["sources"] == ["column"]
    assert result["untagged"]["rows"] == (~blurry & ~dark).sum()


def test_sample_has_n_errors_and_is_reproducible(tmp_path: Path) -> None:
    frame, wrong = planted()
    report = ErrorCategoriesReport()
    first = report.build(make_input(frame, tmp_path / "a", None, {"sample_size": 60}, seed=7))
    second = report.build(make_input(frame, tmp_path / "b", None, {"sample_size": 60}, seed=7))
    other = report.build(make_input(frame, tmp_path / "c", None, {"sample_size": 60, "seed": 8}, seed=7))
    path = Path(first["sample"]["path"])
    assert path == tmp_path / "a" / "error_sample.csv"
    assert path.read_bytes() == Path(second["sample"]["path"]).read_bytes()
    assert path.read_bytes() != Path(other["sample"]["path"]).read_bytes()
    assert first["sample"]["seed"] == 7 and other["sample"]["seed"] == 8
    sample = pd.read_csv(path, keep_default_na=False)
    assert len(sample) == 60 == first["sample"]["rows"]
    assert list(sample.columns) == [
        "id", "split", "label", "prediction", "score_0", "score_1", "text", "length", "colour", "quality", "tags"
    ]  # fmt: skip
    assert (sample["label"] != sample["prediction"]).all()
    assert (sample["split"] == "validation").all()
    assert wrong[sample["id"].to_numpy()].all()
    assert sample["id"].is_unique and (sample["tags"] == "").all()

    # no tags defined: reported as such, not skipped
    assert first["message"] == "no tags defined" and not first["tags_defined"] and first["tags"] == []
    assert report.gate_values(first) == {"max_share_of_errors": 0.0, "untagged_share": 1.0}
    [finding] = report.findings(first)
    assert finding.severity == "info" and "no tags defined" in finding.text and str(path) in finding.text
    check_outputs(first)

    # a sample larger than the errors holds every error once
    everything = report.build(make_input(frame, tmp_path / "d", None, {"sample_size": 10_000}))
    assert everything["sample"]["rows"] == wrong.sum()


def test_reviewed_sample_is_read_back(tmp_path: Path) -> None:
    frame, wrong = planted()
    report = ErrorCategoriesReport()
    first = report.build(make_input(frame, tmp_path / "run1", None, {"sample_size": 50}))
    sample = pd.read_csv(first["sample"]["path"], dtype=str, keep_default_na=False)
    sample.loc[sample.index[:20], "tags"] = "typo, sarcasm"
    sample.loc[sample.index[20:30], "tags"] = "sarcasm"
    sample.to_csv(tmp_path / "reviewed.csv", index=False)

    spec = tags_spec(files=["reviewed.csv"])
    second = report.build(make_input(frame, tmp_path / "run2", spec, {"sample_size": 50}, working_dir=str(tmp_path)))
    check_outputs(second)
    tags = by_tag(second)
    assert set(tags) == {"typo", "sarcasm"}
    assert tags["typo"]["rows"] == tags["typo"]["errors"] == 20
    assert tags["sarcasm"]["rows"] == tags["sarcasm"]["errors"] == 30
    assert tags["sarcasm"]["sources"] == ["file"]
    assert tags["sarcasm"]["share_of_errors"] == pytest.approx(30 / wrong.sum())
    assert tags["sarcasm"]["share_of_reviewed_errors"] == pytest.approx(30 / 50)
    assert tags["typo"]["share_of_reviewed_errors"] == pytest.approx(20 / 50)
    assert second["reviewed"]["rows"] == 50 and second["reviewed"]["errors"] == 50
    assert second["reviewed"]["unmatched"] == 0

    # a file without a split column matches by id; unknown ids are counted
    sample[["id", "tags"]].iloc[:30].to_csv(tmp_path / "ids_only.csv", index=False)
    with (tmp_path / "ids_only.csv").open("a") as handle:
        handle.write("999999,typo\n")
    spec = tags_spec(files=[str(tmp_path / "ids_only.csv")])
    by_id = report.build(make_input(frame, tmp_path / "run3", spec, {"sample_size": 0}))
    assert by_id["sample"] is None
    assert by_tag(by_id)["typo"]["rows"] == 20 and by_tag(by_id)["sarcasm"]["errors"] == 30
    assert by_id["reviewed"]["rows"] == 30 and by_id["reviewed"]["unmatched"] == 1

    # a file whose rows carry no tag: tags are defined but none applies
    sample[["id", "split"]].assign(tags="").to_csv(tmp_path / "empty.csv", index=False)
    empty = report.build(
        make_input(frame, tmp_path / "run4", tags_spec(files=["empty.csv"]), working_dir=str(tmp_path))
    )
    assert empty["tags_defined"] and empty["tags"] == [] and empty["message"] == "no row has a tag"
    assert empty["reviewed"]["rows"] == 50
    check_outputs(empty)

    # a review in place is not overwritten by the next sample
    sample.to_csv(first["sample"]["path"], index=False)
    third = report.build(make_input(frame, tmp_path / "run1", None, {"sample_size": 50}))
    assert Path(third["sample"]["path"]).name == "error_sample.1.csv"
    assert "typo, sarcasm" in Path(first["sample"]["path"]).read_text()


def test_function_rule(tmp_path: Path) -> None:
    (tmp_path / "planted_tag_rules.py").write_text(
        "def has_link(rows):\n"
        "    return rows['text'].str.contains('http://')\n"
        "def as_list(rows):\n"
        "    return list(rows['length'] > 90)\n"
        "def broken(rows):\n"
        "    raise KeyError('no such column')\n"
        "def too_short(rows):\n"
        "    return [True]\n"
    )
    frame, wrong = planted()
    validation = frame[frame["split"] == "validation"]
    rules = {
        "link": {"function": "planted_tag_rules:has_link"},
        "long": {"function": "planted_tag_rules:as_list"},
    }
    result = ErrorCategoriesReport().build(
        make_input(frame, tmp_path, tags_spec(rules=rules), working_dir=str(tmp_path))
    )
    tags = by_tag(result)
    has_http = validation["text"].str.contains("http").to_numpy()
    assert result["tags"][0]["tag"] == "link"
    assert tags["link"]["errors"] == (wrong & has_http).sum()
    assert tags["long"]["rows"] == (validation["length"] > 90).sum()

    for name, pattern in (("broken", "failed: KeyError"), ("too_short", "one boolean per row"), ("nope", "import")):
        spec = tags_spec(rules={"bad": {"function": f"planted_tag_rules:{name}"}})
        with pytest.raises(ValueError, match=f"spec.tags.rules.bad.*{pattern}"):
            ErrorCategoriesReport().build(make_input(frame, tmp_path, spec, working_dir=str(tmp_path)))


def test_bad_specs_give_clear_errors(tmp_path: Path) -> None:
    frame, _ = planted(n=500)
    report = ErrorCategoriesReport()
    with pytest.raises(ValueError, match="rules.x: column 'nope' is not a column"):
        report.build(make_input(frame, tmp_path, tags_spec(rules={"x": {"column": "nope", "contains": "a"}})))
    with pytest.raises(ValueError, match="rules.x: bad regex"):
        report.build(make_input(frame, tmp_path, tags_spec(rules={"x": {"column": "text", "regex": "("}})))
    with pytest.raises(ValueError, match="missing.csv: cannot read it"):
        report.build(make_input(frame, tmp_path, tags_spec(files=["missing.csv"]), working_dir=str(tmp_path)))
    (tmp_path / "no_tags.csv").write_text("id,label\n1,0\n")
    with pytest.raises(ValueError, match="missing column.*tags"):
        report.build(make_input(frame, tmp_path, tags_spec(files=[str(tmp_path / "no_tags.csv")])))


def test_regression_errors_are_large_absolute_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    night = rng.random(n) < 0.1
    label = rng.normal(10, 2, n)
    noise = np.where(night, rng.normal(0, 5, n), rng.normal(0, 0.5, n))
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "split": "validation",
            "label": label,
            "prediction": label + noise,
            "hour": np.where(night, 2, 14),
            "x": rng.normal(size=n),
        }
    )
    spec = tags_spec(rules={"night": {"column": "hour", "max": 5}, "x high": {"column": "x", "min": 1.0}})
    report = ErrorCategoriesReport()
    result = report.build(make_input(frame, tmp_path, spec, {"sample_size": 30}, task="regression"))
    check_outputs(result)
    threshold = np.quantile(np.abs(noise), 0.9)
    assert result["regression_threshold"] == pytest.approx(threshold)
    assert result["errors"] == (np.abs(noise) > threshold).sum()
    assert result["tags"][0]["tag"] == "night" and result["tags"][0]["share_of_errors"] > 0.7
    assert result["tags"][1]["gain"] < 0.01
    sample = pd.read_csv(result["sample"]["path"])
    assert len(sample) == 30 and (sample["abs_error"] > threshold).all()
    metrics = {(c.key, c.metric) for c in report.comparable(result)}
    assert ("tag night", "mean_abs_error") in metrics

    fixed = report.build(make_input(frame, tmp_path, spec, {"regression_threshold": 4.0}, task="regression"))
    assert fixed["errors"] == (np.abs(noise) > 4.0).sum() and "regression_threshold" in fixed["error_definition"]


def test_skipped_without_rows(tmp_path: Path) -> None:
    frame, _ = planted(n=100)
    report = ErrorCategoriesReport()
    result = report.build(make_input(frame, tmp_path, None, {"split": "test"}))
    assert result == {"report": "error_categories", "skipped": "no labelled rows in split 'test'"}
    assert report.findings(result) == [] and report.gate_values(result) == {}
    assert "Skipped" in report.html(result)
    buffer = io.StringIO()
    report.render(result, Console(file=buffer, width=120))
    assert "skipped" in buffer.getvalue()
