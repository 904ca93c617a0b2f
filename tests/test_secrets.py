"""Secrets stay secret: a distinctive ``spec.env`` value is never printed, returned or
stored in clear (validate, runs show, status, the API, every column of every table,
stored attempt requests and Kubernetes manifests), while the job still receives it.

Locally through the CLI on SQLite, against a real ``mlrt controller`` on PostgreSQL,
and with the Kubernetes backend through the in-process API stand-in. The values
are encrypted with the operator key; a wrong key fails the attempt with one line.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from conftest import import_or_missing, wait_for
from mlrt.limits import MAX_STRING_CHARS
from mlrt.secrets import HIDDEN, KEY_FILE_NAME, mask_overrides, mask_submitted
from mlrt.store import Store

SECRET = "s3cr3t-Vz9qK-4711"
OTHER = "other-Wq8-0815"  # set with --set, so it is in no file

CHECK = f"""
import os
token = os.environ.get("API_TOKEN")
print("token matches" if token == {SECRET!r} else f"token differs: {{token is not None}}", flush=True)
print("score=" + ("1" if token == {SECRET!r} else "0"), flush=True)
print("key variables:", sorted(k for k in os.environ if k.startswith("MLRT_SECRET_KEY")) or "none", flush=True)
"""

SPEC = f"""\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: secretive}}
spec:
  command: [{sys.executable}, check.py]
  env:
    # the token the job needs
    API_TOKEN: {SECRET}
    MODE: plain
"""

TUNING = f"""\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {{name: secretive-tune}}
spec:
  template:
    command: [{sys.executable}, check.py]
    env: {{API_TOKEN: '{SECRET}', LONG: '{"y" * (MAX_STRING_CHARS - 10)}'}}  # its token is longer than a string may be
    metrics: [{{name: score, regex: 'score=(?P<value>[0-9.]+)'}}]
  objective: {{metric: score, goal: maximize}}
  parameters:
    x: {{type: float, min: 0, max: 1}}
  tuner: random
  max_trials: 2
"""


def write(tmp_path: Path, spec: str, name: str = "job.yaml") -> Path:
    (tmp_path / "check.py").write_text(CHECK)
    path = tmp_path / name
    path.write_text(spec)
    return path


def clean(*texts: str) -> None:
    for shown in texts:
        assert SECRET not in shown and OTHER not in shown, shown


def files_under(folder: Path) -> str:
    """Every file's bytes under ``folder`` (databases, logs, keys), as text."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def sqlite_dump(path: Path) -> str:
    connection = sqlite3.connect(path)
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    rows = [repr(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')]
    connection.close()
    return "\n".join(rows)


def postgres_dump(url: str) -> str:
    """Every row of every table of the database, each cast to text by PostgreSQL."""
    store = Store(url)
    with store.engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        rows = [row for table in tables for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()]
    return "\n".join(rows)


# -- locally ------------------------------------------------------------------------


def test_local_cli_never_shows_or_stores_the_value_and_the_job_receives_it(cli, tmp_path, home):
    spec = write(tmp_path, SPEC)
    overrides = ("--set", f"spec.env.EXTRA={OTHER}")
    for args in (("validate", str(spec)), ("validate", "--json", str(spec))):
        result = cli(*args, *overrides)
        assert result.exit_code == 0, result.output
        clean(result.output)
    assert json.loads(cli("validate", "--json", str(spec)).stdout)["spec"]["spec"]["env"] == {
        "API_TOKEN": HIDDEN,
        "MODE": HIDDEN,
    }

    result = cli("submit", str(spec), *overrides, "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["id"]
    assert json.loads(result.stdout)["state"] == "SUCCEEDED"
    assert "token matches" in cli("logs", run_id).stdout

    shown = [cli(*args).output for args in (("runs", "show", run_id), ("status", run_id), ("status", "--json"))]
    details = json.loads(cli("runs", "show", run_id, "--json").stdout)
    shown += [json.dumps(details), cli("status", run_id, "--json").output]
    clean(*shown)
    repro = details["reproducibility"]
    assert repro["spec_resolved"]["spec"]["env"] == {"API_TOKEN": HIDDEN, "MODE": HIDDEN, "EXTRA": HIDDEN}
    assert "# the token the job needs" in repro["spec_submitted"], "the submitted text keeps its layout"
    assert repro["overrides"] == [f"spec.env.EXTRA={HIDDEN}"]
    assert details["attempts"][0]["request"]["workers"][0]["env"]["API_TOKEN"] == HIDDEN

    # At rest: encrypted values in the job row, nothing in clear in any table or file.
    database = sqlite_dump(home / "mlrt.db")
    assert "enc:gAAAA" in database
    clean(database, files_under(home))
    key_file = home / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_trials_of_a_tuning_job_receive_the_template_values_that_no_view_shows(cli, tmp_path, home):
    spec = write(tmp_path, TUNING, "tune.yaml")
    result = cli("validate", "--json", str(spec))
    assert result.exit_code == 0, result.output
    clean(result.output)
    plan = json.loads(result.stdout)
    assert plan["spec"]["spec"]["template"]["env"] == {"API_TOKEN": HIDDEN, "LONG": HIDDEN}
    assert plan["example_trial"]["launch"]["workers"][0]["env"]["API_TOKEN"] == HIDDEN

    result = cli("submit", str(spec), "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["id"]
    trials = Store().trials(run_id)
    assert len(trials) == 2 and {t.state for t in trials} == {"SUCCEEDED"}, [(t.id, t.reason) for t in trials]
    assert Store().last_values([t.id for t in trials], "score") == {t.id: 1.0 for t in trials}, "trials got the value"
    for shown_id in (run_id, trials[0].id):
        details = cli("runs", "show", shown_id, "--json").stdout
        clean(details, cli("runs", "show", shown_id).output)
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["reproducibility"]["spec_resolved"]["spec"][
        "template"
    ]["env"] == {"API_TOKEN": HIDDEN, "LONG": HIDDEN}
    clean(sqlite_dump(home / "mlrt.db"), files_under(home))


def test_submitted_text_is_masked_in_place_or_re_serialized():
    anchored = "a: &t tok-1\nspec:\n  env:\n    A: *t\n    B: 'tok-2'  # note\n    <<: {C: tok-3}\n"
    masked = mask_submitted(anchored)
    assert "tok-" not in masked and "# note" in masked, masked
    flow = "spec: {env: {A: tok-1, B: !!str tok-2}, template: {env: {C: |\n      tok-3\n    }}}\n"
    masked = mask_submitted(flow)
    assert "tok-" not in masked, masked
    assert mask_submitted("spec: {command: [x]}\n") == "spec: {command: [x]}\n"


def test_a_request_is_masked_for_storage_while_the_launch_keeps_the_values():
    """``to_dict`` is a deep copy, as ``dataclasses.asdict`` was: masking it in place for the
    database leaves the request that launches the workers as it was."""
    import dataclasses

    from mlrt.launchers import LaunchRequest, WorkerRequest
    from mlrt.secrets import mask_request

    env = [{"name": "TOKEN", "value": "tok-1"}, {"name": "SEED", "value": "7"}]
    manifest = {"kind": "Job", "spec": {"template": {"spec": {"containers": [{"name": "w", "env": env}]}}}}
    worker = WorkerRequest(0, ["python", "train.py"], {"TOKEN": "tok-1", "SEED": "7"}, "/w", "/w/log")
    request = LaunchRequest("kubernetes", "r1", 1, [worker], {"manifests": [manifest], "ports": (29500, 29501)})
    before = dataclasses.asdict(request)
    stored = mask_request(request.to_dict(), {"env": {"TOKEN": "tok-1"}})
    assert json.dumps(stored).count("tok-1") == 0 and json.dumps(stored).count('"7"') == 2
    assert dataclasses.asdict(request) == before  # the workers still get the value
    assert {**stored, "workers": before["workers"], "details": before["details"]} == before
    assert stored["details"]["ports"] == [29500, 29501]


def test_set_overrides_of_env_are_recorded_without_their_values():
    overrides = ["spec.env.A=tok-1", "spec.env={B: tok-2}", "spec={env: {C: tok-3}}", "spec.template.env.D=tok-4"]
    assert mask_overrides([*overrides, "spec.seed=7"]) == [
        f"spec.env.A={HIDDEN}",
        f"spec.env={HIDDEN}",
        f"spec={HIDDEN}",
        f"spec.template.env.D={HIDDEN}",
        "spec.seed=7",
    ]


def test_a_malformed_key_is_one_clear_line_and_nothing_is_written(cli, tmp_path, monkeypatch):
    spec = write(tmp_path, SPEC)
    monkeypatch.setenv("MLRT_SECRET_KEY", "not-a-key")
    result = cli("submit", str(spec))
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: MLRT_SECRET_KEY: key 1 is not a Fernet key (32 url-safe base64-encoded bytes)"
    )
    assert Store().list_runs() == []


# -- the controller service on PostgreSQL --------------------------------------------


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    # The local backend runs these command jobs: an operator's opt-in on a shared controller.
    return {"MLRT_ALLOWED_BACKENDS": "local", "MLRT_ALLOWED_PATHS": str(tmp_path)}


def test_the_service_never_returns_or_stores_the_value_and_the_job_receives_it(
    postgres_db, tmp_path, home, service_env
):
    from mlrt.service import auth
    from service_process import ServiceProcess

    token = auth.issue(Store(postgres_db), "user", "alice", "vision")
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=service_env).start()
    try:
        client = httpx.Client(
            base_url=f"{service.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        (tmp_path / "check.py").write_text(CHECK)
        spec = SPEC.replace("check.py", str(tmp_path / "check.py"))
        body = {"spec": spec, "filename": "job.yaml", "overrides": [f"spec.env.EXTRA={OTHER}"]}
        validated = client.post("/validate", json=body)
        assert validated.status_code == 200, validated.text
        clean(validated.text)

        submitted = client.post("/jobs", json=body)
        assert submitted.status_code == 201, submitted.text
        run_id = submitted.json()["run_id"]
        run = wait_for(lambda: (r := client.get(f"/runs/{run_id}").json())["state"] in ("SUCCEEDED", "FAILED") and r)
        assert run["state"] == "SUCCEEDED", run["reason"]
        log = client.get(f"/runs/{run_id}/logs/1/0").text
        assert "token matches" in log
        assert "key variables: none" in log, "the operator key never reaches user code"

        views = [client.get(f"/runs/{run_id}{tail}").text for tail in ("", "/job", "/attempts", "/events", "/params")]
        views.append(client.get("/runs").text)
        clean(*views)
        job = client.get(f"/runs/{run_id}/job").json()
        assert job["spec_resolved"]["spec"]["env"] == {"API_TOKEN": HIDDEN, "MODE": HIDDEN, "EXTRA": HIDDEN}
        attempt = client.get(f"/runs/{run_id}/attempts").json()[0]
        assert attempt["request"]["workers"][0]["env"]["API_TOKEN"] == HIDDEN

        from click.testing import CliRunner

        from mlrt.cli import _register
        from mlrt.cli import cli as root

        _register()
        runner = CliRunner()
        for args in (["runs", "show", run_id], ["runs", "show", run_id, "--json"], ["status", run_id]):
            result = runner.invoke(root, ["--server", service.url, *args], env={"MLRT_TOKEN": token})
            assert result.exit_code == 0, result.output
            clean(result.output)

        database = postgres_dump(postgres_db)
        assert "enc:gAAAA" in database and run_id in database
        clean(database, files_under(home), (tmp_path / "controller.log").read_text())
    finally:
        service.stop()


def test_the_service_needs_a_key_on_postgres_and_old_keys_still_decrypt_after_rotation(
    postgres_db, tmp_path, service_env, monkeypatch
):
    from mlrt.service import auth
    from mlrt.spec import load_spec
    from mlrt.submission import submit
    from service_process import ServiceProcess

    refused = ServiceProcess(postgres_db, tmp_path / "refused.log", env={"MLRT_SECRET_KEY_FILE": ""})
    refused.env.pop("MLRT_SECRET_KEY", None)
    with pytest.raises(RuntimeError, match="controller exited 2"):
        refused.start(timeout=20)
    log = (tmp_path / "refused.log").read_text()
    assert "error: MLRT_SECRET_KEY: the controller service on a shared database needs the operator key" in log
    assert "Traceback" not in log

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("MLRT_SECRET_KEY", old)
    store = Store(postgres_db)
    auth.issue(store, "user", "alice", "vision")
    spec = write(tmp_path, SPEC.replace("check.py", str(tmp_path / "check.py")))
    first = submit(store, load_spec(spec), project="vision", submitted_by="alice")

    # Rotation: the new key first, the old one after it; values sealed under the old key still open.
    rotated = {**service_env, "MLRT_SECRET_KEY": f"{new},{old}"}
    service = ServiceProcess(postgres_db, tmp_path / "rotated.log", env=rotated).start()
    try:
        run = wait_for(lambda: (r := store.get_run(first)).state in ("SUCCEEDED", "FAILED") and r, timeout=60)
        assert run.state == "SUCCEEDED", run.reason
    finally:
        service.stop()

    # The old key dropped too early: a value sealed under it fails its attempt with one line.
    later = submit(store, load_spec(spec, ["spec.retries.max=0"]), project="vision", submitted_by="alice")
    service = ServiceProcess(postgres_db, tmp_path / "wrong.log", env={**service_env, "MLRT_SECRET_KEY": new})
    service.start()
    try:
        run = wait_for(lambda: (r := store.get_run(later)).state in ("SUCCEEDED", "FAILED") and r, timeout=60)
        assert run.state == "FAILED"
        assert "spec.env.API_TOKEN: the stored value cannot be decrypted with the configured MLRT_SECRET_KEY" in (
            run.reason
        )
        assert "Traceback" not in (tmp_path / "wrong.log").read_text()
    finally:
        service.stop()


def test_rows_stored_in_clear_by_an_older_mlrt_are_sealed_when_the_service_starts(postgres_db, tmp_path, service_env):
    from mlrt.spec import load_spec
    from mlrt.store.models import Job, Run
    from mlrt.submission import submit
    from service_process import ServiceProcess

    store = Store(postgres_db)
    spec = write(tmp_path, SPEC.replace("check.py", str(tmp_path / "check.py")))
    run_id = submit(store, load_spec(spec, [f"spec.env.EXTRA={OTHER}"]), project="vision", submitted_by="alice")
    with store.session() as s:  # the row as mlrt wrote it before values were encrypted
        job, run = s.get(Job, run_id), s.get(Run, run_id)
        spec_env = {"API_TOKEN": SECRET, "MODE": "plain", "EXTRA": OTHER}
        job.spec_resolved = {**job.spec_resolved, "spec": {**job.spec_resolved["spec"], "env": spec_env}}
        job.spec_submitted = spec.read_text()
        run.record = {**run.record, "overrides": [f"spec.env.EXTRA={OTHER}"]}
    assert SECRET in postgres_dump(postgres_db) and OTHER in postgres_dump(postgres_db)

    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=service_env).start()
    try:
        run = wait_for(lambda: (r := store.get_run(run_id)).state in ("SUCCEEDED", "FAILED") and r, timeout=60)
        assert run.state == "SUCCEEDED", run.reason
        (attempt,) = store.attempts(run_id)
        assert "token matches" in (Path(attempt.log_dir) / "worker-0.log").read_text()
        clean(postgres_dump(postgres_db))
        assert store.get_job(run_id).spec_submitted.count(HIDDEN) == 2
    finally:
        service.stop()


# -- Kubernetes ------------------------------------------------------------------------

KUBE_SPEC = f"""\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: kube-secretive}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  env: {{API_TOKEN: '{SECRET}'}}
  compute:
    backend: kubernetes
    kubernetes: {{namespace: ml}}
  stopping: {{grace_period: 1s}}
"""


@pytest.fixture
def kube(tmp_path, monkeypatch):
    import_or_missing("kubernetes", "kubernetes", "the kubernetes backend needs the kubernetes client")
    from kube_cluster import controller_standin

    with controller_standin(tmp_path, monkeypatch) as standin:  # mlrt as the chart's ServiceAccount
        yield standin


def test_kubernetes_manifests_are_stored_and_printed_without_the_value_and_the_pod_gets_it(cli, tmp_path, home, kube):
    spec = tmp_path / "kube.yaml"
    spec.write_text(KUBE_SPEC)
    for args in (("validate", "--manifests", str(spec)), ("validate", "--json", str(spec))):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        clean(result.output)

    result = cli("submit", str(spec), "--detach", "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
    # The Job holds a reference; the value is in the attempt's Secret, owned by the Job.
    (job,) = kube.jobs("ml")
    clean(json.dumps(job))
    env = {e["name"]: e.get("valueFrom") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    reference = env["API_TOKEN"]["secretKeyRef"]
    (secret,) = [s for s in kube.secrets("ml") if s["metadata"]["name"] == reference["name"]]
    assert base64.b64decode(secret["data"][reference["key"]]).decode() == SECRET, "the pods get the real value"

    def owners():
        (current,) = [s for s in kube.secrets("ml") if s["metadata"]["name"] == reference["name"]]
        return current["metadata"].get("ownerReferences")

    owners = wait_for(owners)
    assert owners[0]["uid"] == job["metadata"]["uid"], "the Secret goes with the Job"
    kube.start_pod(pod["metadata"]["name"], namespace="ml")
    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
    store = Store()
    run = wait_for(
        lambda: (r := store.get_run(run_id)).state not in ("QUEUED", "STARTING", "RUNNING", "FINALIZING") and r
    )
    assert run.state == "SUCCEEDED", run.reason

    (attempt,) = store.attempts(run_id)
    stored_secret, stored_job = attempt.request["details"]["manifests"]  # one worker: no Service
    assert stored_secret["stringData"] == {"API_TOKEN": "<set at launch>"}
    stored_env = {e["name"]: e for e in stored_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert stored_env["API_TOKEN"] == {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": reference}}
    assert attempt.request["workers"][0]["env"]["API_TOKEN"] == HIDDEN
    clean(json.dumps(attempt.request), cli("runs", "show", run_id, "--json").stdout)
    clean(sqlite_dump(home / "mlrt.db"), files_under(home))
    assert os.environ.get("MLRT_SECRET_KEY") is None, "the embedded mode used its own key file"
