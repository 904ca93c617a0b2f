"""The worker SDK: a no-op outside jobs, artifacts confined to the run's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import command_spec


def test_outside_a_job_the_sdk_warns_once_and_records_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRT_")}
    result = subprocess.run(
        [sys.executable, "-c", "import mlrt\nfor i in range(3): mlrt.log_metric('a', i)\nmlrt.log_params({'x': 1})"],
        env={**env, "MLRT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stderr.count("not inside an mlrt job") == 1
    assert not (tmp_path / "mlrt.db").exists()


def test_artifacts_cannot_escape_the_run_output(cli, write_spec, tmp_path):
    program = """
        import mlrt, pathlib
        pathlib.Path("model.txt").write_text("weights")
        pathlib.Path("plots").mkdir()
        pathlib.Path("plots/loss.svg").write_text("<svg/>")
        mlrt.log_artifact("model.txt")
        mlrt.log_artifact("plots", "figures")
        mlrt.log_artifact("model.txt", "../../outside.txt")
    """
    spec = write_spec(command_spec("escape", "[python, esc.py]"), files={"esc.py": program})
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    assert run["state"] == "FAILED"
    assert "must stay inside the run's output" in run["reason"]
    artifacts = json.loads(cli("artifacts", run["id"], "--json").stdout)
    assert [a["path"] for a in artifacts] == ["figures/loss.svg", "model.txt"]
    assert not list(tmp_path.rglob("outside.txt"))


def test_only_rank_zero_records_metrics(cli, write_spec):
    program = "import mlrt, os\nmlrt.log_metric('rank_seen', float(os.environ['RANK']))\n"
    spec = write_spec(command_spec("ranks", "[python, r.py]", "  compute: {workers: 3}\n"), files={"r.py": program})
    run = json.loads(cli("submit", str(spec), "--json").stdout)
    points = json.loads(cli("metrics", run["id"], "--json").stdout)
    assert [(p["key"], p["value"]) for p in points] == [("rank_seen", 0.0)]
