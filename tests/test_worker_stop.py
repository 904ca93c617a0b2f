"""A torch worker asked to stop (SIGTERM) while it is still loading its data trains one batch,
saves a checkpoint and exits 143, instead of dying with nothing saved (issue 20, item 8: a
`stopping.max_runtime` that fired before the first batch on a loaded machine lost the run).

The signal is sent once the worker has printed its first line (the train channel is loaded,
torch not yet imported), so the test does not depend on how fast the machine is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import import_or_missing

torch = import_or_missing(
    "torch", "torch", "the torch plugin needs torch (pip install -c constraints.txt 'mlrt[torch]')"
)

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: early-stop}
spec:
  algorithm: torch.mlp
  data: {train: digits.csv}
  hyperparameters: {epochs: 10000, batch_size: 8}
  seed: 3
"""


def test_a_sigterm_before_the_first_batch_still_saves_a_checkpoint(cli, write_spec, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    digits.to_csv(tmp_path / "digits.csv", index=False)
    plan = json.loads(cli("validate", str(write_spec(SPEC)), "--json").stdout)
    env = dict(plan["launch"]["workers"][0]["env"])
    env.update(
        MLRT_CHANNEL_TRAIN=str(tmp_path / "digits.csv"),
        MLRT_OUTPUT_DIR=str(tmp_path / "out"),
        MLRT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        MLRT_TRACKING_URI="log:",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "mlrt.worker"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = worker.stdout.readline()
    assert "channel train" in first, first
    worker.send_signal(signal.SIGTERM)
    output = first + worker.communicate(timeout=300)[0]
    assert worker.returncode == 143, output
    saved = torch.load(tmp_path / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] >= 1, "stopped after a batch of the first epoch"
    assert "trained in" not in output
