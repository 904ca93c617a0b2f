"""The torch plugin end to end: DDP, checkpoints and resume, stopping, transfer learning."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import import_or_missing, run_json, wait_for
from mlrt.store import Store

torch = import_or_missing(
    "torch", "torch", "the torch plugin needs torch (pip install -c constraints.txt 'mlrt[torch]')"
)

DIGITS = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: {algorithm}
  data:
    train: builtin://sklearn/digits?split=train
    validation: builtin://sklearn/digits?split=validation
  hyperparameters: {hyperparameters}
  compute: {{workers: {workers}, cpu: 1}}
  seed: 3
"""


def digits_spec(write_spec, name="digits", algorithm="torch.mlp", hyperparameters="{epochs: 3}", workers=1, extra=""):
    text = DIGITS.format(name=name, algorithm=algorithm, hyperparameters=hyperparameters, workers=workers)
    return write_spec(text + extra, name=f"{name}.yaml")


def series(cli, run_id, key):
    return [(p["step"], p["value"]) for p in json.loads(cli("metrics", run_id, "--key", key, "--json").stdout)]


def test_two_worker_ddp_cnn_reaches_target_with_one_metric_series(cli, write_spec):
    spec = digits_spec(
        write_spec, "ddp-cnn", "torch.cnn", "{epochs: 8, batch_size: 32, learning_rate: 0.003}", workers=2
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["metrics"]["validation_accuracy"] >= 0.9
    accuracy = series(cli, run["id"], "validation_accuracy")
    assert [step for step, _ in accuracy] == list(range(8)), "one point per epoch, not one series per rank"
    assert "completed 8 epochs" in run["reason"]
    artifacts = {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}
    assert {"model.pt", "predictions.parquet"} <= artifacts


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(cli, write_spec):
    spec = digits_spec(
        write_spec,
        "resume",
        hyperparameters="{epochs: 25, batch_size: 8, hidden_size: 64}",
        extra="  retries: {max: 1, backoff: 0.1s}\n",
    )
    run_id = json.loads(cli("submit", str(spec), "--detach", "--json").stdout)["run_id"]
    store = Store()
    wait_for(lambda: any(p.step >= 2 for p in store.metrics(run_id, "validation_accuracy")), timeout=120)
    pid = store.latest_attempt(run_id).handle["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    run = wait_for(lambda: (r := store.get_run(run_id)).state in ("SUCCEEDED", "FAILED") and r, timeout=240)
    assert run.state == "SUCCEEDED", run.reason
    assert run.attempts == 2
    params = store.params(run_id)
    # Epoch 2's points were seen; its checkpoint is written after them (a worker killed in between
    # resumes at epoch 2 and writes its points again), so the checkpoint holds epoch 2 at least.
    assert int(params["resumed_at_epoch"]) >= 2
    steps = [p.step for p in store.metrics(run_id, "validation_accuracy")]
    assert steps == list(range(25)), "the series continues without gaps or duplicate steps"
    assert store.metrics(run_id, "validation_accuracy")[-1].value >= 0.9


def test_max_runtime_stops_gracefully_with_a_checkpoint(cli, write_spec):
    spec = digits_spec(
        write_spec,
        "timeout",
        hyperparameters="{epochs: 10000, batch_size: 8}",
        extra="  stopping: {max_runtime: 12s, grace_period: 10m}\n",  # generous: a loaded machine may be slow to stop
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "TIMED_OUT"
    checkpoint = Path(run["output_uri"].removeprefix("file://")) / "checkpoints" / "checkpoint.pt"
    assert checkpoint.exists(), cli("logs", run["id"]).output[-2000:]
    saved = torch.load(checkpoint, weights_only=False)
    # Saved on SIGTERM, in the middle of an epoch: the checkpoints written at the end of an
    # epoch resume at its batch 0, so only the graceful stop leaves a later batch.
    assert saved["batch"] > 0 and saved["global_step"] > 0
    attempt = run_json(cli, run["id"])["attempts"][-1]
    assert attempt["exit_code"] is None or attempt["state"] == "TIMED_OUT"


def test_plateau_stopping_stops_early_and_says_why(cli, write_spec):
    spec = digits_spec(
        write_spec,
        "plateau",
        hyperparameters="{epochs: 50}",
        extra="  stopping: {patience: 2, min_delta: 10, metric: validation_loss}\n",
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED"
    assert "plateau: validation_loss did not improve by more than 10 for 2 epochs" in run["reason"]
    assert [step for step, _ in series(cli, run["id"], "validation_loss")] == [0, 1, 2]
    assert run["params"]["stop_reason"].startswith("plateau")


def test_max_epochs_caps_the_epochs(cli, write_spec):
    spec = digits_spec(write_spec, "capped", hyperparameters="{epochs: 50}", extra="  stopping: {max_epochs: 2}\n")
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert "completed 2 epochs (stopping.max_epochs 2)" in run["reason"]


def test_fine_tuning_with_frozen_layers_changes_only_the_head(cli, write_spec, tmp_path):
    base = json.loads(
        cli("submit", str(digits_spec(write_spec, "base", hyperparameters="{epochs: 3}")), "--json").stdout
    )
    assert base["state"] == "SUCCEEDED"
    # A new task on the same inputs: is the digit odd? (2 classes instead of 10)
    from mlrt_data.builtin import BuiltinScheme

    cache = tmp_path / "cache"
    for split in ("train", "validation"):
        frame = pd.read_csv(BuiltinScheme().materialize(f"builtin://sklearn/digits?split={split}", cache))
        frame["label"] = frame["label"] % 2
        frame.to_csv(tmp_path / f"odd-{split}.csv", index=False)
    spec = write_spec(
        f"""\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {{name: odd}}
        spec:
          algorithm: torch.mlp
          data: {{train: odd-train.csv, validation: odd-validation.csv}}
          hyperparameters: {{epochs: 3}}
          init_from: {{run: {base["id"]}, freeze: [all_but_head]}}
        """,
        name="odd.yaml",
    )
    tuned = json.loads(cli("submit", str(spec), "--json").stdout)
    assert tuned["state"] == "SUCCEEDED", tuned["reason"]
    before = torch.load(Path(base["output_uri"][7:]) / "output" / "model.pt", weights_only=True)["state_dict"]
    after = torch.load(Path(tuned["output_uri"][7:]) / "output" / "model.pt", weights_only=True)["state_dict"]
    for name in before:
        if name.startswith("head."):
            assert after[name].shape[0] == 2 and before[name].shape[0] == 10
        else:
            assert torch.equal(before[name], after[name]), f"{name} was frozen but changed"
    params = tuned["params"]
    assert json.loads(params["init_replaced"]) == ["head.weight", "head.bias"]
    assert set(json.loads(params["frozen"])) == {n for n in before if not n.startswith("head.")}
    assert tuned["metrics"]["validation_accuracy"] > 0.8
    record = run_json(cli, tuned["id"])["reproducibility"]
    assert record["init_from"]["run"] == base["id"]


def test_init_from_an_unknown_run_is_bad_input(cli, write_spec):
    spec = digits_spec(write_spec, "ghost", extra="  init_from: {run: no-such-run}\n")
    result = cli("submit", str(spec))
    assert result.exit_code == 2
    assert "spec.init_from.run: no run 'no-such-run'" in result.stderr


def test_resume_from_another_runs_checkpoint(cli, write_spec):
    first = json.loads(
        cli("submit", str(digits_spec(write_spec, "first", hyperparameters="{epochs: 3}")), "--json").stdout
    )
    spec = digits_spec(write_spec, "second", hyperparameters="{epochs: 5}")
    second = json.loads(cli("submit", str(spec), "--resume-from", first["id"], "--json").stdout)
    assert second["state"] == "SUCCEEDED"
    assert second["params"]["resumed_at_epoch"] == "3"
    assert [step for step, _ in series(cli, second["id"], "validation_accuracy")] == [3, 4]
    other = cli(
        "submit", str(spec), "--resume-from", first["id"], "--json", "--set", "spec.hyperparameters.hidden_size=7"
    )
    assert json.loads(other.stdout)["state"] == "FAILED"
    assert "is of another network" in json.loads(other.stdout)["reason"]
    missing = cli("submit", str(spec), "--resume-from", "nope")
    assert missing.exit_code == 2 and "--resume-from: no run 'nope'" in missing.stderr


def test_an_unreachable_rendezvous_fails_within_its_timeout(cli, write_spec, tmp_path):
    pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "label": [0, 1, 0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: lonely}\nspec:\n"
        "  algorithm: torch.mlp\n  data: {train: t.csv}\n"
        "  compute: {workers: 2, rendezvous_timeout: 3s}\n  seed: 1\n"
    )
    plan = json.loads(cli("validate", str(spec), "--json").stdout)
    env = plan["launch"]["workers"][1]["env"]  # rank 1; rank 0, which hosts the rendezvous, never starts
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        env["MASTER_PORT"] = str(sock.getsockname()[1])  # a port nobody listens on
    env["MLRT_CHANNEL_TRAIN"] = str(tmp_path / "t.csv")
    env["MLRT_FAILURE_FILE"] = str(tmp_path / "failure.txt")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mlrt.worker"], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert elapsed < 60
    reason = (tmp_path / "failure.txt").read_text()
    assert "worker 1 of 2 could not join the rendezvous at 127.0.0.1:" in reason
    assert "within 3s" in reason


def test_mlp_regressor_learns_diabetes(cli, write_spec):
    spec = write_spec(
        """\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {name: sugar}
        spec:
          algorithm: torch.mlp_regressor
          data:
            train: builtin://sklearn/diabetes?split=train
            validation: builtin://sklearn/diabetes?split=validation
          hyperparameters: {epochs: 30, learning_rate: 0.03, hidden_size: 32, batch_size: 16, dropout: 0.0}
          seed: 0
        """
    )
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["metrics"]["validation_r2"] > 0.3


REPO = Path(__file__).resolve().parents[1]


def test_the_bring_your_own_ddp_script_runs_on_two_workers(cli):
    run = json.loads(cli("submit", str(REPO / "job_specs" / "ddp_script.yaml"), "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert [step for step, _ in series(cli, run["id"], "val_accuracy")] == list(range(10))
    assert run["metrics"]["val_accuracy"] > 0.85
    logs = cli("logs", run["id"]).output
    assert "[worker 0] epoch 9 val_accuracy=" in logs
    assert "model.pt" in {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}


def test_the_training_loop_computes_what_a_plain_torch_loop_does(tmp_path, monkeypatch):
    """Per epoch, the plugin's train_loss is a plain loop's over the same batches, to the bit
    (same shuffle, dropout masks, loss and optimizer arithmetic); all-one weights change nothing."""
    import numpy as np
    from mlrt_torch import CNN as CNNAlgorithm
    from mlrt_torch.model import Preprocessor
    from mlrt_torch.networks import CNN

    from mlrt.algorithms import Dataset, TrainContext

    monkeypatch.delenv("MLRT_RUN_ID", raising=False)
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(200, 16)).astype(np.float32), columns=[f"px{i}" for i in range(16)])
    labels = pd.Series(rng.integers(0, 3, 200))
    hp = {
        **{name: h.default for name, h in CNNAlgorithm.hyperparameters.items()},
        **{"epochs": 2, "batch_size": 32, "channels": 4, "hidden_size": 8},
    }

    def plugin_losses(weights: pd.Series | None) -> list[float]:
        logged: list[float] = []
        ctx = TrainContext(
            hyperparameters=hp,
            channels={"train": Dataset("train", features, labels, pd.Series(range(200)), weights)},
            output_dir=tmp_path,
            checkpoint_dir=tmp_path / ("weighted" if weights is not None else "plain"),
            seed=3,
            stopping={},
            log_metric=lambda key, value, step: logged.append(value) if key == "train_loss" else None,
        )
        ctx.checkpoint_dir.mkdir()
        CNNAlgorithm().train(ctx)
        return logged

    x = torch.from_numpy(Preprocessor.fit(features).transform(features))
    y = torch.tensor(labels.to_numpy())
    torch.manual_seed(3)
    network = CNN((1, 4, 4), 3, 4, 8, hp["dropout"], "relu")
    optimizer = torch.optim.Adam(network.parameters(), lr=hp["learning_rate"])
    plain = []
    for epoch in range(2):
        total = 0.0
        for rows in torch.randperm(200, generator=torch.Generator().manual_seed(3 + epoch)).split(32):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(network(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        plain.append(total / 200)

    assert plugin_losses(None) == plain
    assert plugin_losses(pd.Series(np.ones(200))) == pytest.approx(plain, rel=1e-6)
