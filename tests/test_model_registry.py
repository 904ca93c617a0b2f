"""The model registry: `mlrt models register|list|show|alias|download`, locally through the CLI
and through a real controller service on PostgreSQL, where a token sees its project's models only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from click.testing import CliRunner

from conftest import command_spec
from mlrt.service import auth
from mlrt.store import Store
from service_process import ServiceProcess

IRIS = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: sklearn.logistic_regression
  data:
    train: builtin://sklearn/iris?split=train
    validation: builtin://sklearn/iris?split=validation
  hyperparameters: {{max_iter: 200}}
  seed: 3
"""

SAVES_A_MODEL = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: saves}
spec:
  command: [python, -c, "import os; open(os.environ['MLRT_OUTPUT_DIR'] + '/weights.bin', 'wb').write(b'weights')"]
  data: {train: builtin://sklearn/iris?split=train}
"""


def ok_json(cli, *args: str):
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(cli, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    return result.output


def test_register_versions_alias_show_lineage_and_download_checked(cli, write_spec, tmp_path):
    run = ok_json(cli, "submit", str(write_spec(IRIS.format(name="iris"))))
    assert run["state"] == "SUCCEEDED", run["reason"]

    first = ok_json(cli, "models", "register", run["id"], "--name", "churn", "--description", "baseline")
    assert (first["model"], first["version"], first["run_id"]) == ("churn", 1, run["id"])
    assert [f["path"] for f in first["files"]] == ["model.joblib"]  # not predictions.parquet
    assert ok_json(cli, "models", "register", run["id"], "--name", "churn")["version"] == 2

    assert "churn@champion is version 1" in cli("models", "alias", "churn", "champion", "1").output
    ok_json(cli, "models", "alias", "churn", "champion", "2")  # moving it is allowed, and recorded
    ok_json(cli, "models", "alias", "churn", "staging", "1")
    listed = ok_json(cli, "models", "list")
    assert [(m["name"], m["latest_version"], m["versions"]) for m in listed] == [("churn", 2, 2)]
    assert listed[0]["aliases"] == {"champion": 2, "staging": 1}
    assert "champion→2, staging→1" in cli("models").output  # bare `mlrt models` lists

    model = ok_json(cli, "models", "show", "churn")
    assert [(v["version"], v["aliases"]) for v in model["versions"]] == [(2, ["champion"]), (1, ["staging"])]
    assert model["versions"][0]["key_metrics"]["validation_accuracy"] > 0.8
    assert [e["what"] for e in model["history"]][2:] == [
        "alias champion set to version 1",
        "alias champion moved from version 1 to version 2",
        "alias staging set to version 1",
    ]
    table = cli("models", "show", "churn").output
    assert "champion" in table and "validation_accuracy=" in table and "moved from version 1" in table

    champion = ok_json(cli, "models", "show", "churn@champion")
    assert (champion["version"], champion["run"]["id"], champion["run"]["job"]) == (2, run["id"], "iris")
    assert champion["lineage"]["data"]["train"].startswith("sha256:") and champion["lineage"]["parents"] == []
    assert champion["lineage"]["packages"] > 0 and champion["run"]["seed"] == 3
    assert ok_json(cli, "models", "show", "churn/1")["aliases"] == ["staging"]
    shown = cli("models", "show", "churn@champion").output
    assert "builtin://sklearn/iris?split=train" in shown and "model.joblib" in shown

    got = ok_json(cli, "models", "download", "churn@champion", "-o", str(tmp_path / "dl"))
    artifact = next(a for a in ok_json(cli, "artifacts", run["id"]) if a["path"] == "model.joblib")
    written = tmp_path / "dl" / "model.joblib"
    assert got["files"] == [
        {"path": "model.joblib", "file": str(written), "size": artifact["size"], "sha256": artifact["sha256"]}
    ]
    assert hashlib.sha256(written.read_bytes()).hexdigest() == artifact["sha256"]

    Path(url2pathname(urlparse(artifact["uri"]).path)).write_bytes(b"not the model")
    tampered = cli("models", "download", "churn/1", "-o", str(tmp_path / "dl2"))
    assert tampered.exit_code == 1 and "is not the registered file" in tampered.output, tampered.output
    assert list((tmp_path / "dl2").iterdir()) == []

    assert "churn@staging deleted" in cli("models", "alias", "churn", "staging", "--delete").output
    assert ok_json(cli, "models", "list")[0]["aliases"] == {"champion": 2}
    assert "no alias 'staging'" in refused(cli, "models", "show", "churn@staging")
    assert "no version 7" in refused(cli, "models", "alias", "churn", "champion", "7")
    assert "a model name is" in refused(cli, "models", "register", run["id"], "--name", "churn@x")


def test_only_a_succeeded_run_with_model_files_is_registered(cli, write_spec):
    failed = json.loads(cli("submit", str(write_spec(command_spec("bad", "[python, -c, 'exit(4)']"))), "--json").stdout)
    assert f"run {failed['id']} is FAILED" in refused(cli, "models", "register", failed["id"], "--name", "m")
    empty = ok_json(cli, "submit", str(write_spec(command_spec("empty", "[python, -c, 'print(1)']"), "e.yaml")))
    assert "has no model files" in refused(cli, "models", "register", empty["id"], "--name", "m")
    assert "no run 'nope'" in refused(cli, "models", "register", "nope", "--name", "m")
    assert ok_json(cli, "models", "list") == []


def test_through_the_service_a_token_sees_its_projects_models_only(postgres_db, home, tmp_path):
    from mlrt.cli import _register
    from mlrt.cli import cli as root

    store = Store(postgres_db)
    alice = auth.issue(store, "user", "alice", "vision")
    bob = auth.issue(store, "user", "bob", "speech")
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env={"MLRT_ALLOWED_BACKENDS": "local"}).start()
    _register()

    def mlrt(token: str, *args: str):
        return CliRunner().invoke(root, ["--server", service.url, *args], env={"MLRT_TOKEN": token})

    try:
        (tmp_path / "job").mkdir()
        spec = tmp_path / "job" / "save.yaml"
        spec.write_text(SAVES_A_MODEL)
        submitted = mlrt(alice, "submit", str(spec), "--json")
        assert submitted.exit_code == 0, (submitted.output, submitted.exception)
        run = json.loads(submitted.stdout)
        assert run["state"] == "SUCCEEDED", submitted.output

        made = mlrt(alice, "models", "register", run["id"], "--name", "churn", "--json")
        assert made.exit_code == 0, made.output
        assert json.loads(made.stdout)["version"] == 1
        assert mlrt(alice, "models", "alias", "churn", "champion", "1").exit_code == 0
        listed = json.loads(mlrt(alice, "models", "list", "--json").stdout)
        assert [(m["name"], m["project"], m["aliases"]) for m in listed] == [("churn", "vision", {"champion": 1})]
        champion = json.loads(mlrt(alice, "models", "show", "churn@champion", "--json").stdout)
        assert champion["lineage"]["data"]["train"].startswith("sha256:")
        assert len(champion["lineage"]["source"]) == 64  # the digest of the command job's code (its source bundle)
        got = mlrt(alice, "models", "download", "churn", "-o", str(tmp_path / "dl"), "--json")
        assert got.exit_code == 0, got.output
        assert (tmp_path / "dl" / "weights.bin").read_bytes() == b"weights"
        digest = hashlib.sha256(b"weights").hexdigest()
        assert json.loads(got.stdout)["files"][0]["sha256"] == digest == champion["files"][0]["sha256"]

        # Another project's token: the model is not listed, and reading or changing it is refused.
        assert json.loads(mlrt(bob, "models", "list", "--json").stdout) == []
        for args in (["show", "churn"], ["show", "churn/1"], ["alias", "churn", "champion", "--delete"]):
            result = mlrt(bob, "models", *args)
            assert result.exit_code == 2 and "(403)" in result.output and "another project" in result.output, args
        taken = mlrt(bob, "models", "register", run["id"], "--name", "mine")
        assert taken.exit_code == 2 and "(403)" in taken.output  # alice's run
        bad = mlrt(alice, "models", "register", run["id"], "--name", "no spaces")
        assert bad.exit_code == 2 and "(422)" in bad.output and "a model name is" in bad.output
        missing = mlrt(alice, "models", "show", "nothing")
        assert missing.exit_code == 2 and "no model 'nothing'" in missing.output
    finally:
        service.stop()
