"""Column roles (features/exclude, weight, analysis-only columns) and the columns `mlrt validate` checks
against a file channel's header."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import command_spec, import_or_missing
from mlrt.algorithms import Dataset, TrainContext, resolve_hyperparameters
from mlrt.columns import roles
from mlrt.data import load_dataset
from mlrt.plugins import algorithms

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: roles}}
spec:
  algorithm: {algorithm}
  data:
    train: {train}
    validation: validation.csv
{extra}"""


def _table(folder: Path, rows: int = 40) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows),
            "sex": rng.choice(["f", "m"], rows),
            "region": rng.choice(["n", "s"], rows),
            "w": rng.integers(1, 4, rows),
            "y": rng.integers(0, 2, rows),
        }
    )
    for name in ("train", "validation"):
        frame.to_csv(folder / f"{name}.csv", index=False)


def _validate(cli, write_spec, tmp_path, train: str, extra: str = "", algorithm: str = "sklearn.logistic_regression"):
    _table(tmp_path)
    spec = write_spec(SPEC.format(algorithm=algorithm, train=train, extra=extra))
    return cli("validate", str(spec))


@pytest.mark.parametrize(
    ("train", "extra", "line"),
    [
        (
            "{uri: train.csv, label: yy}",
            "",
            "error: spec.data.train.label: column 'yy' is not in train.csv (columns: a, b, sex, region, w, y)",
        ),
        ("train.csv", "", "error: spec.data.train.label: column 'label' is not in train.csv (columns: a, b,"),
        (
            "{uri: train.csv, label: y, weight: ww}",
            "",
            "error: spec.data.train.weight: column 'ww' is not in train.csv",
        ),
        (
            "{uri: train.csv, label: y, features: [a, bb]}",
            "",
            "error: spec.data.train.features.1: column 'bb' is not in train.csv",
        ),
        (
            "{uri: train.csv, label: y, features: [a], exclude: [b]}",
            "",
            "error: spec.data.train: set features (the columns the model sees) or exclude (those it does not), not both",
        ),
        ("{uri: train.csv, label: y, weight: a, features: [a]}", "", "error: spec.data.train: column 'a' is both"),
        (
            "{uri: train.csv, label: y}",
            "  evaluation: {threshold: {optimize: min_cost}}",
            "error: spec.evaluation.threshold.optimize: min_cost needs a cost_matrix business metric;"
            " add one to business_metrics",
        ),
        (
            "{uri: train.csv, label: y}",
            "  evaluation: {threshold: {optimize: precision}}",
            "error: spec.evaluation.threshold: optimize: precision needs a target, e.g. target: 0.9",
        ),
    ],
)
def test_validate_names_the_field_of_a_wrong_column_or_role(cli, write_spec, tmp_path, train, extra, line):
    result = _validate(cli, write_spec, tmp_path, train, extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0].startswith(line), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_threshold_needs_a_classifier_and_its_channel(cli, write_spec, tmp_path):
    extra = "  evaluation: {threshold: {optimize: f_beta, channel: test}}"
    result = _validate(cli, write_spec, tmp_path, "{uri: train.csv, label: y}", extra, algorithm="sklearn.ridge")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: spec.evaluation.threshold.channel: no data channel 'test'"), lines
    assert lines[1] == (
        "error: spec.evaluation.threshold: sklearn.ridge is a regression algorithm; thresholds are for classifiers"
    )
    command = write_spec(
        command_spec(
            "cmd", "[python, train.py]", "  data: {validation: validation.csv}\n" + extra.replace("test", "validation")
        )
    )
    lines = cli("validate", str(command)).stderr.splitlines()
    assert lines == [
        "error: spec.evaluation.threshold: only algorithm jobs choose a threshold; a command job's program applies its own"
    ]


def test_roles_that_fit_the_header_validate(cli, write_spec, tmp_path):
    train = "{uri: train.csv, label: y, weight: w, exclude: [b], analysis: [region]}"
    result = _validate(cli, write_spec, tmp_path, train, "  protected: [sex]")
    assert result.exit_code == 0, result.output
    channel = json.loads(cli("validate", str(tmp_path / "job.yaml"), "--json").stdout)["spec"]["spec"]["data"]["train"]
    assert (channel["weight"], channel["exclude"], channel["analysis"]) == ("w", ["b"], ["region"])


def test_roles_split_a_channel_and_other_channels_take_the_train_channels(tmp_path):
    _table(tmp_path)
    spec = {
        "data": {
            "train": {"uri": "train.csv", "label": "y", "weight": "w", "exclude": ["b"]},
            "validation": {"uri": "validation.csv", "label": "y"},
        },
        "protected": ["sex"],
        "slices": ["region", "a"],
    }
    for channel in ("train", "validation"):
        data = load_dataset(channel, tmp_path / f"{channel}.csv", None, "y", None, roles(spec, channel))
        # the protected attribute and the weight stay out of the model; a slice column that is a feature stays in
        assert list(data.features.columns) == ["a", "region"]
        assert list(data.analysis.columns) == ["sex"]
        assert data.weights.tolist() == pd.read_csv(tmp_path / "train.csv")["w"].tolist()
    asked = {"data": {"train": {"uri": "t", "features": ["a", "sex"]}}, "protected": ["sex"], "slices": ["region"]}
    data = load_dataset("train", tmp_path / "train.csv", None, "y", None, roles(asked, "train"))
    assert list(data.features.columns) == ["a", "sex"]  # named in features: the user asked for it
    assert list(data.analysis.columns) == ["region"]  # a slice column the model does not see, kept for reports
    frame = pd.read_csv(tmp_path / "train.csv").assign(w=lambda f: f["w"] * -1)
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"^channel train: weight column 'w' must hold numbers >= 0 \(row 0: '-\d'\)$"):
        load_dataset("train", tmp_path / "bad.csv", None, "y", None, roles(spec, "train"))


def test_weights_reach_the_sklearn_fit_as_sample_weight(tmp_path):
    """A weight of k counts a row k times: the model of the rows repeated, far from the unweighted
    one when positives weigh 5 (labels independent of the features: the intercept moves by log 5)."""
    rng = np.random.default_rng(1)
    features = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    labels = pd.Series(rng.integers(0, 2, 300))
    weights = pd.Series(np.where(labels == 1, 5, 1))
    algorithm = algorithms()["sklearn.logistic_regression"]
    hyperparameters, _ = resolve_hyperparameters(algorithm, {})

    def intercept(dataset: Dataset) -> float:
        ctx = TrainContext(hyperparameters, {"train": dataset}, tmp_path, tmp_path, 0, {}, lambda *a: None)
        return float(algorithm.train(ctx).named_steps["model"].intercept_[0])

    weighted = intercept(Dataset("train", features, labels, pd.Series(range(300)), weights=weights))
    index = features.index.repeat(weights)
    repeated = intercept(Dataset("train", features.loc[index], labels.loc[index], pd.Series(range(len(index)))))
    plain = intercept(Dataset("train", features, labels, pd.Series(range(300))))
    assert abs(weighted - repeated) < 0.05
    assert abs(weighted - plain - np.log(5)) < 0.2


def test_the_torch_loss_weighs_each_example():
    torch = import_or_missing("torch", "torch", "the torch extra is installed with the test extra")
    from mlrt_torch.training import weighted_loss

    outputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([1, 1, 0])
    per_example = torch.nn.CrossEntropyLoss(reduction="none")
    plain = weighted_loss(per_example, outputs, targets, None)
    assert torch.isclose(plain, torch.nn.CrossEntropyLoss()(outputs, targets))
    weighted = weighted_loss(per_example, outputs, targets, torch.tensor([2.0, 1.0, 0.0]))
    repeated = torch.nn.CrossEntropyLoss()(outputs[[0, 0, 1]], targets[[0, 0, 1]])
    assert torch.isclose(weighted, repeated)
    mse = weighted_loss(torch.nn.MSELoss(reduction="none"), outputs[:, :1], outputs[:, 1:], torch.tensor([1.0, 0, 0]))
    assert torch.isclose(mse, torch.tensor(4.0))
