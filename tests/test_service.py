"""The controller service end to end: a real `mlrt controller` process on PostgreSQL,
driven through the CLI's remote mode and raw HTTP, with S3 outputs on a moto server."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import wait_for
from mlrt import s3
from mlrt.service import auth
from mlrt.states import RunState
from mlrt.store import Store
from service_process import ServiceProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EPOCHS = 30
MODEL = bytes(range(256)) * 4096  # 1 MiB: the artifact whose sha256 is checked end to end

PROGRAM = f"""
import os, pathlib, sys, time
import mlrt

print("tracking over", os.environ["MLRT_TRACKING_URI"].split(":")[0], flush=True)
checkpoint = pathlib.Path(os.environ["MLRT_CHECKPOINT_DIR"]) / "epoch.txt"
start = int(checkpoint.read_text()) + 1 if checkpoint.exists() else 0
if start:
    mlrt.discard_metrics(["loss"], from_step=start)  # steps after the checkpoint are logged again
for epoch in range(start, {EPOCHS}):
    mlrt.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    mlrt.flush()
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(str(epoch))
    time.sleep(float(os.environ.get("EPOCH_SECONDS", "0")))
mlrt.log_params({{"epochs": {EPOCHS}}})
output = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
output.mkdir(parents=True, exist_ok=True)
(output / "model.bin").write_bytes(bytes(range(256)) * 4096)
print("trained", flush=True)
"""


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(PROGRAM)
    return path


def job_spec(tmp_path: Path, program: Path, name: str = "tracked", extra: str = "") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TrainingJob
        metadata: {{name: {name}}}
        spec:
          command: [{sys.executable}, {program}]
        """)
        + textwrap.indent(extra, "  ")
    )
    return spec


# These tests run their jobs as local processes: the operator's explicit opt-in
# ("runs user code as the controller's user"), off by default.
LOCAL = {"MLRT_ALLOWED_BACKENDS": "local"}


@pytest.fixture
def service(postgres_db: str, tmp_path: Path, home: Path):
    started = ServiceProcess(postgres_db, tmp_path / "controller.log", env=LOCAL).start()
    yield started
    started.stop()


@pytest.fixture
def tokens(postgres_db: str) -> dict[str, str]:
    store = Store(postgres_db)
    return {
        "alice": auth.issue(store, "user", "alice", "vision"),
        "bob": auth.issue(store, "user", "bob", "speech"),
        "admin": auth.issue(store, "admin", "ops"),
    }


@pytest.fixture
def remote(service: ServiceProcess):
    """Run `mlrt --server URL ARGS...` in-process with a token (MLRT_TOKEN)."""
    from mlrt.cli import _register
    from mlrt.cli import cli as root

    _register()
    runner = CliRunner()

    def invoke(token: str | None, *args: str):
        env = {"MLRT_TOKEN": token} if token else {"MLRT_TOKEN": None}
        return runner.invoke(root, ["--server", service.url, *args], env=env, catch_exceptions=False)

    return invoke


def api(service: ServiceProcess, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{service.url}/api/v1", headers=headers, timeout=30)


def row_counts(db: str) -> dict[str, int]:
    from sqlalchemy import text

    store = Store(db)
    with store.engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("jobs", "runs", "attempts", "events", "metrics", "params", "artifacts")
        }


def test_a_job_submitted_over_http_runs_tracks_through_the_endpoint_and_stores_artifacts_in_s3(
    s3_endpoint,  # noqa: F811  (first: the service starts with its S3 settings)
    remote,
    service,
    tokens,
    tmp_path,
    program,
):
    spec = job_spec(
        tmp_path, program, extra="output: {path: s3://mlrt-test/teams/vision}\nenv: {API_KEY: s3cr3t-v4lue}\n"
    )
    result = remote(tokens["alice"], "submit", str(spec), "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED"
    assert run["output_uri"] == f"s3://mlrt-test/teams/vision/{run['id']}"

    # Metrics went through the tracking endpoint, with a run-scoped token.
    logs = remote(tokens["alice"], "logs", run["id"])
    assert "tracking over http" in logs.stdout
    points = json.loads(remote(tokens["alice"], "metrics", run["id"], "--key", "loss", "--json").stdout)
    assert [p["step"] for p in points] == list(range(EPOCHS))
    assert json.loads(remote(tokens["alice"], "runs", "show", run["id"], "--json").stdout)["params"]["epochs"] == "30"

    # The artifact is in S3 under the run's prefix, with the sha256 of what the worker wrote.
    expected = hashlib.sha256(MODEL).hexdigest()
    artifacts = json.loads(remote(tokens["alice"], "artifacts", run["id"], "--json").stdout)
    model = next(a for a in artifacts if a["path"] == "model.bin")
    assert model["sha256"] == expected and model["size"] == len(MODEL)
    assert model["uri"] == f"s3://mlrt-test/teams/vision/{run['id']}/output/model.bin"
    body = s3.client().get_object(Bucket="mlrt-test", Key=f"teams/vision/{run['id']}/output/model.bin")
    assert hashlib.sha256(body["Body"].read()).hexdigest() == expected
    served = api(service, tokens["alice"]).get(f"/runs/{run['id']}/artifacts/model.bin")
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == expected

    # Secrets: neither the spec's env value nor the worker token shows anywhere.
    with api(service, tokens["alice"]) as client:
        answers = [client.get(f"/runs/{run['id']}{suffix}").text for suffix in ("", "/job", "/attempts", "/events")]
    shown = json.loads(remote(tokens["alice"], "runs", "show", run["id"], "--json").stdout)
    everything = "\n".join([*answers, json.dumps(shown), service.log_file.read_text()])
    assert "s3cr3t-v4lue" not in everything
    assert "mlrt_" not in everything.replace("mlrt_run", "")  # no token text
    from sqlalchemy import text

    with Store(service.db).engine.connect() as conn:
        stored = json.dumps([list(r) for r in conn.execute(text("SELECT request FROM attempts")).all()])
        assert "s3cr3t-v4lue" not in stored and "mlrt_" not in stored
        assert (
            conn.execute(text("SELECT count(*) FROM tokens WHERE kind = 'worker' AND revoked_at IS NULL")).scalar() == 0
        )


def test_remote_mode_keeps_the_local_exit_codes_and_messages(remote, tokens, tmp_path, program):
    bad = job_spec(tmp_path, program, name="bad", extra="compute: {workers: 0}\n")
    result = remote(tokens["alice"], "submit", str(bad))
    assert result.exit_code == 2
    assert "error: spec.compute.workers" in result.output and "Traceback" not in result.output

    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nprint('boom: bad data')\nsys.exit(3)\n")
    result = remote(tokens["alice"], "submit", str(job_spec(tmp_path, failing, name="failing")), "-q")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "exit" in result.stdout

    result = remote(tokens["alice"], "status", "no-such-run")
    assert result.exit_code == 2 and "error: no run 'no-such-run'" in result.output


def test_the_service_checks_report_columns_against_the_data_before_queueing(postgres_db, tokens, tmp_path, program):
    (tmp_path / "train.csv").write_text("region,label\nn,0\ns,1\n")
    env = {**LOCAL, "MLRT_ALLOWED_PATHS": str(tmp_path)}
    spec = job_spec(
        tmp_path, program, name="columns", extra=f"data: {{train: {tmp_path / 'train.csv'}}}\nslices: [regio]\n"
    )
    service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
    try:
        with api(service, tokens["alice"]) as http:
            response = http.post("/jobs", json={"spec": spec.read_text(), "filename": spec.name})
            assert response.status_code == 422, response.text
            assert "spec.slices.0.column: no column 'regio' in data channel train" in response.json()["detail"]
            assert http.get("/runs").json() == [], "nothing was queued"
    finally:
        service.stop()


def test_cancel_over_http_stops_the_workers(remote, tokens, tmp_path, program):
    spec = job_spec(tmp_path, program, extra="env: {EPOCH_SECONDS: '1'}\n")
    result = remote(tokens["alice"], "submit", str(spec), "--detach", "--json")
    run_id = json.loads(result.stdout)["run_id"]
    wait_for(lambda: json.loads(remote(tokens["alice"], "status", run_id, "--json").stdout)["state"] == "RUNNING")
    result = remote(tokens["alice"], "cancel", run_id)
    assert result.exit_code == 0, result.output
    assert "CANCELLED" in result.stdout
    status = json.loads(remote(tokens["alice"], "status", run_id, "--json").stdout)
    assert status["state"] == "CANCELLED" and status["attempts"][0]["state"] == "CANCELLED"


def test_a_controller_killed_mid_job_and_restarted_finishes_it_once_without_losing_points(
    remote, service, tokens, tmp_path, program
):
    spec = job_spec(tmp_path, program, extra="env: {EPOCH_SECONDS: '0.2'}\n")
    result = remote(tokens["alice"], "submit", str(spec), "--detach", "--json")
    run_id = json.loads(result.stdout)["run_id"]
    with api(service, tokens["alice"]) as client:
        wait_for(lambda: len(client.get(f"/runs/{run_id}/metrics").json()) >= 5, timeout=60)
    service.kill()

    restarted = ServiceProcess(service.db, service.log_file, port=service.port, env=LOCAL).start()
    try:
        with api(restarted, tokens["alice"]) as client:
            wait_for(lambda: RunState(client.get(f"/runs/{run_id}").json()["state"]).is_terminal(), timeout=90)
            points = client.get(f"/runs/{run_id}/metrics", params={"key": "loss"}).json()
            events = client.get(f"/runs/{run_id}/events").json()
            attempts = client.get(f"/runs/{run_id}/attempts").json()
    finally:
        restarted.stop()
    assert [e["to_state"] for e in events][-1] == "SUCCEEDED", events[-1]["reason"]
    assert [p["step"] for p in points] == list(range(EPOCHS))  # every step once: none lost, none twice
    assert [p["value"] for p in points] == [1.0 / (e + 1) for e in range(EPOCHS)]
    assert [e["to_state"] for e in events].count("SUCCEEDED") == 1
    assert [a["state"] for a in attempts] == ["FAILED", "SUCCEEDED"]
    assert "controller stopped during attempt 1" in attempts[0]["reason"]


TRIAL = """
import json, os, time
x = json.loads(os.environ["MLRT_HYPERPARAMETERS"])["x"]
time.sleep(1.0)
print(f"score={-(x - 3) ** 2:.6f}", flush=True)
"""


def test_a_tuning_job_goes_on_in_place_after_its_controller_is_killed(remote, service, tokens, tmp_path):
    (tmp_path / "trial.py").write_text(TRIAL)
    spec = tmp_path / "tune.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {{name: resumed}}
        spec:
          template:
            command: [{sys.executable}, {tmp_path / "trial.py"}]
            metrics: [{{name: score, regex: 'score=(?P<value>-?[0-9.]+)'}}]
          objective: {{metric: score, goal: maximize}}
          parameters:
            x: {{type: float, min: 0, max: 6}}
          tuner: random
          max_trials: 5
          max_failed_trials: 0
        """)
    )
    result = remote(tokens["alice"], "submit", str(spec), "--detach", "--json")
    run_id = json.loads(result.stdout)["run_id"]

    def trials(client: httpx.Client) -> list[dict]:
        return client.get(f"/runs/{run_id}/trials").json()

    def two_done_one_running(client: httpx.Client) -> bool:
        states = [t["state"] for t in trials(client)]
        return states.count("SUCCEEDED") >= 2 and "RUNNING" in states

    with api(service, tokens["alice"]) as client:
        wait_for(lambda: two_done_one_running(client), timeout=90)
    service.kill()
    store = Store(service.db)
    finished_before = {t.id for t in store.trials(run_id) if t.state == "SUCCEEDED"}
    running_before = {t.id for t in store.trials(run_id) if t.state == "RUNNING"}

    restarted = ServiceProcess(service.db, service.log_file, port=service.port, env=LOCAL).start()
    try:
        with api(restarted, tokens["alice"]) as client:
            wait_for(lambda: RunState(client.get(f"/runs/{run_id}").json()["state"]).is_terminal(), timeout=120)
            run = client.get(f"/runs/{run_id}").json()
            events = client.get(f"/runs/{run_id}/events").json()
            after = trials(client)
    finally:
        restarted.stop()
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert "all 5 trials finished" in run["reason"]
    assert sorted(t["trial"] for t in after) == [1, 2, 3, 4, 5]  # no trial number twice, none run anew
    assert all(t["state"] == "SUCCEEDED" for t in after)
    assert any(f"resumed the search after {len(finished_before)} finished trials" in e["reason"] for e in events)
    assert "FAILED" not in [e["to_state"] for e in events]
    for trial in after:
        attempts = [(a.state, a.reason) for a in store.attempts(trial["id"])]
        if trial["id"] in finished_before:
            assert len(attempts) == 1, f"finished trial {trial['trial']} was run again"
        elif trial["id"] in running_before:  # its worker died with the controller: it ran once more
            assert [state for state, _ in attempts] == ["FAILED", "SUCCEEDED"], attempts
            assert "controller stopped during attempt 1" in attempts[0][1]


def test_refused_requests_get_401_or_403_and_leave_no_trace(remote, service, tokens, tmp_path, program, postgres_db):
    result = remote(tokens["alice"], "submit", str(job_spec(tmp_path, program)), "-q")
    run_id = result.stdout.split()[0]
    other = remote(tokens["bob"], "submit", str(job_spec(tmp_path, program, name="bobs")), "-q").stdout.split()[0]
    before = row_counts(postgres_db)

    with api(service, None) as anonymous:
        assert anonymous.get("/runs").status_code == 401
        assert anonymous.post(f"/runs/{run_id}/cancel").status_code == 401
    with api(service, "mlrt_0123456789ab_not-a-real-secret") as wrong:
        assert wrong.get(f"/runs/{run_id}").status_code == 401
        assert wrong.post("/jobs", json={"spec": job_spec(tmp_path, program).read_text()}).status_code == 401
    with api(service, tokens["bob"]) as bob:
        assert bob.get(f"/runs/{run_id}").status_code == 403
        assert bob.get(f"/runs/{run_id}/metrics").status_code == 403
        assert bob.post(f"/runs/{run_id}/cancel").status_code == 403
        assert bob.get(f"/runs/{run_id}/artifacts/model.bin").status_code == 403
        assert run_id not in bob.get("/runs").text
    worker = auth.issue(Store(postgres_db), "worker", f"run:{other}", run_id=other)
    with api(service, worker) as stray:
        point = {"points": [["loss", 99, 1.0, 0.0]]}
        assert stray.post(f"/runs/{run_id}/tracking/metrics", json=point).status_code == 403
        assert stray.post(f"/runs/{run_id}/tracking/params", json={"x": 1}).status_code == 403
        assert stray.get(f"/runs/{run_id}").status_code == 403
        assert stray.get("/runs").status_code == 403
        assert stray.post("/jobs", json={"spec": job_spec(tmp_path, program).read_text()}).status_code == 403
    ghost = auth.issue(Store(postgres_db), "worker", "run:ghost", run_id="no-such-run")
    with api(service, ghost) as orphan:  # a worker token whose run is not there: 404, not a server error
        assert orphan.post("/runs/no-such-run/tracking/params", json={"x": 1}).status_code == 404
        assert (
            orphan.post("/runs/no-such-run/tracking/metrics", json={"points": [["x", 0, 1.0, 0.0]]}).status_code == 404
        )
    with api(service, tokens["alice"]) as alice:
        for path in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "a/../../b", "%2Fetc%2Fpasswd"):
            assert alice.get(f"/runs/{run_id}/artifacts/{path}").status_code in (400, 404)
    assert row_counts(postgres_db) == before

    # The CLI says why, with exit code 2, and no traceback.
    result = remote(tokens["bob"], "cancel", run_id)
    assert result.exit_code == 2 and "403" in result.output and "another project" in result.output
    result = remote(None, "runs", "list")
    assert result.exit_code == 2 and "401" in result.output and "Traceback" not in result.output


def test_login_saves_the_token_for_the_owner_only_and_later_commands_use_it(
    remote, service, tokens, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = remote(None, "login", "--token", tokens["alice"])
    assert result.exit_code == 0, result.output
    assert "as alice (project vision)" in result.stdout
    saved = tmp_path / "config" / "mlrt" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert remote(None, "runs", "list", "--json").exit_code == 0
    result = remote(None, "login", "--token", "mlrt_bad_token")
    assert result.exit_code == 2 and "401" in result.output


def _scraped(scrape: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels) in a Prometheus text scrape."""
    return float(next(line.split()[-1] for line in scrape.splitlines() if line.startswith(name + " ")))


def test_metrics_report_the_answering_process_and_its_garbage_collector(service):
    scrape = httpx.get(f"{service.url}/metrics").text
    assert _scraped(scrape, "process_resident_memory_bytes") > 0
    assert _scraped(scrape, "process_cpu_seconds_total") > 0
    assert _scraped(scrape, 'python_gc_collections_total{generation="0"}') >= 0


def test_a_service_process_serves_with_the_cyclic_collector_on(tmp_path, monkeypatch):
    """A service runs for weeks: the reference cycles its requests and passes leave must be
    freed, though the console script pauses the collector for start-up (mlrt.cli.main)."""
    import gc

    import uvicorn

    from mlrt import service as service_module

    seen = {}

    def run(server, sockets=None):  # what the collector is like when the server would start serving
        seen.update(enabled=gc.isenabled(), threshold=gc.get_threshold())
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()
    try:
        service_module._serve_one(
            Store(f"sqlite:///{tmp_path / 'mlrt.db'}"), "http://127.0.0.1:1", 0.2, 1 << 20, "127.0.0.1", 1
        )
    finally:
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()
    assert seen == {"enabled": True, "threshold": (service_module.GC_YOUNG_THRESHOLD, *threshold[1:])}


def test_replicas_elect_one_leader_that_launches_each_job_once(postgres_db, service, tokens, tmp_path, program, remote):
    standby = ServiceProcess(postgres_db, tmp_path / "standby.log", env=LOCAL).start(leader=False)
    try:
        assert service.is_leader() and not standby.is_leader()
        with api(standby, tokens["alice"]) as client:
            spec = job_spec(tmp_path, program).read_text()
            run_ids = [client.post("/jobs", json={"spec": spec}).json()["run_id"] for _ in range(4)]
            wait_for(lambda: all(client.get(f"/runs/{r}").json()["state"] == "SUCCEEDED" for r in run_ids), 90)
            assert all(len(client.get(f"/runs/{r}/attempts").json()) == 1 for r in run_ids)
        scrape = httpx.get(f"{service.url}/metrics").text
        assert "mlrt_leader 1.0" in scrape and 'mlrt_runs{state="SUCCEEDED"} 4.0' in scrape
        assert "mlrt_queue_depth 0.0" in scrape and "mlrt_reconcile_seconds_count" in scrape
        assert "mlrt_leader 0.0" in httpx.get(f"{standby.url}/metrics").text

        service.kill()  # the lock goes with the leader's connection; the standby takes over
        wait_for(standby.is_leader, timeout=30)
        result = remote(tokens["alice"], "runs", "list", "--json")  # the old address is gone
        assert result.exit_code == 2
        with api(standby, tokens["alice"]) as client:
            run_id = client.post("/jobs", json={"spec": spec}).json()["run_id"]
            wait_for(lambda: client.get(f"/runs/{run_id}").json()["state"] == "SUCCEEDED", 60)
    finally:
        standby.stop()


def test_the_openapi_schema_lists_every_route(service):
    schema = httpx.get(f"{service.url}/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/api/v1/jobs",
        "/api/v1/validate",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/logs/{attempt}/{rank}",
        "/api/v1/runs/{run_id}/artifacts/{path}",
        "/api/v1/runs/{run_id}/reports",
        "/api/v1/runs/{run_id}/tracking/metrics",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path


def test_every_command_answers_from_the_service(remote, tokens):
    quickstart = str(Path(__file__).parents[1] / "job_specs" / "quickstart.yaml")
    plan = json.loads(remote(tokens["alice"], "validate", quickstart, "--json").stdout)
    assert plan["launch"]["backend"] == "local"
    result = remote(tokens["alice"], "submit", quickstart, "--set", "spec.reports=[confusion]")
    assert result.exit_code == 0, result.output
    run_id = result.stdout.split()[1]
    assert f"details: mlrt runs show {run_id}" in result.stdout and "validation" in result.stdout

    shown = json.loads(remote(tokens["alice"], "runs", "show", run_id, "--json").stdout)
    assert shown["state"] == "SUCCEEDED" and shown["params"]["algorithm"] == "sklearn.logistic_regression"
    assert {"artifacts", "attempts", "events", "reproducibility", "metrics"} <= set(shown)
    assert run_id in {r["id"] for r in json.loads(remote(tokens["alice"], "status", "--json").stdout)}
    assert run_id in {r["id"] for r in json.loads(remote(tokens["alice"], "runs", "list", "--json").stdout)}
    assert "validation_accuracy" in remote(tokens["alice"], "metrics", run_id).stdout
    assert "model" in remote(tokens["alice"], "artifacts", run_id).stdout
    assert remote(tokens["alice"], "runs", "compare", run_id, run_id).exit_code == 0
    report = json.loads(remote(tokens["alice"], "report", run_id, "--only", "confusion", "--json").stdout)
    assert report["confusion"]["classes"]
    plugins = json.loads(remote(tokens["alice"], "plugins", "--json").stdout)
    assert {"local", "sklearn", "reports"} <= {p["name"] for p in plugins}
    assert remote(tokens["alice"], "logs", run_id).exit_code == 0


KUBE_SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: kube-tracked}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
"""


def test_pods_report_to_the_tracking_endpoint_with_a_token_from_a_secret(
    s3_endpoint,  # noqa: F811  (first: the service starts with its S3 settings)
    postgres_db,
    tokens,
    tmp_path,
    home,
):
    from kube_cluster import CONTROLLER_NAMESPACE, chart_rbac
    from kube_standin import KubeStandIn
    from mlrt import s3sync

    with KubeStandIn() as kube:
        rbac, account = chart_rbac(("ml",))  # the controller as in the cluster: the chart's ServiceAccount
        kube.apply_rbac(rbac)
        env = {
            "KUBECONFIG": str(kube.serviceaccount_kubeconfig(tmp_path / "kubeconfig", CONTROLLER_NAMESPACE, account)),
            "MLRT_ADVERTISE_URL": "http://mlrt.mlrt.svc:8080",
            "MLRT_KUBE_NAMESPACES": "ml",
            "MLRT_ALLOWED_BACKENDS": "kubernetes",
            "MLRT_DEFAULT_OUTPUT": "s3://mlrt-test/cluster",
        }
        service = ServiceProcess(postgres_db, tmp_path / "controller.log", env=env).start()
        try:
            with api(service, tokens["alice"]) as alice:
                local = KUBE_SPEC.replace("  image: registry.example.com/acme/train:1.0\n", "")
                refused = alice.post("/jobs", json={"spec": local + "  compute: {backend: local}\n"})
                assert refused.status_code == 422 and "runs kubernetes jobs" in refused.json()["detail"]
                other = KUBE_SPEC + "  compute: {backend: kubernetes, kubernetes: {namespace: kube-system}}\n"
                assert "launches in ml" in alice.post("/jobs", json={"spec": other}).json()["detail"]
                spec = KUBE_SPEC + "  compute: {backend: kubernetes}\n"
                run_id = alice.post("/jobs", json={"spec": spec}).json()["run_id"]
                (pod,) = wait_for(lambda: kube.pods("ml"), timeout=30)
                (job,) = kube.jobs("ml")
                (secret,) = kube.secrets("ml")

                # The Job names the endpoint and takes the token from the attempt's Secret, owned by the Job.
                container = job["spec"]["template"]["spec"]["containers"][0]
                variables = {e["name"]: e for e in container["env"]}
                assert variables["MLRT_TRACKING_URI"]["value"] == "http://mlrt.mlrt.svc:8080"
                reference = variables["MLRT_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]
                assert reference == {"name": secret["metadata"]["name"], "key": "token"}
                token = base64.b64decode(secret["data"]["token"]).decode()
                assert token.startswith("mlrt_") and token not in json.dumps(job)
                owners = wait_for(lambda: kube.secrets("ml")[0]["metadata"].get("ownerReferences"), timeout=10)
                assert owners[0]["uid"] == job["metadata"]["uid"]

                # Acting as the pod: its token writes its own run only.
                kube.start_pod(pod["metadata"]["name"], namespace="ml")
                with api(service, token) as worker:
                    points = {"points": [["loss", step, 1.0 / (step + 1), time.time()] for step in range(5)]}
                    assert worker.post(f"/runs/{run_id}/tracking/metrics", json=points).status_code == 204
                    assert worker.get(f"/runs/{run_id}").status_code == 403
                    # The pod's upload sidecar (mlrt.s3sync) sends the output; the controller registers it.
                    pod_run = tmp_path / "pod-run"
                    (pod_run / "output").mkdir(parents=True)
                    (pod_run / "output" / "model.bin").write_bytes(MODEL)
                    s3sync.final_upload(pod_run, f"s3://mlrt-test/cluster/{run_id}", attempt=1, worker=0)
                    kube.succeed_pod(pod["metadata"]["name"], namespace="ml")
                    wait_for(lambda: alice.get(f"/runs/{run_id}").json()["state"] == "SUCCEEDED", timeout=30)
                    assert worker.post(f"/runs/{run_id}/tracking/metrics", json=points).status_code == 401
                assert [p["step"] for p in alice.get(f"/runs/{run_id}/metrics").json()] == list(range(5))
                (model,) = alice.get(f"/runs/{run_id}/artifacts").json()
                assert model["uri"] == f"s3://mlrt-test/cluster/{run_id}/output/model.bin"
                assert model["sha256"] == hashlib.sha256(MODEL).hexdigest() and model["size"] == len(MODEL)
                kube.finish_ttl("ml")
                assert kube.secrets("ml") == [], "the token's Secret goes with the Job"
                assert [denial.message for denial in kube.denials] == [], "the chart's Role is enough"
        finally:
            service.stop()


def test_tokens_are_administered_on_the_database_and_shown_only_once(cli, postgres_db):
    created = json.loads(
        cli("--db", postgres_db, "tokens", "create", "--user", "carol", "--project", "nlp", "--json").stdout
    )
    token = created["token"]
    assert auth.authenticate(Store(postgres_db), token).project == "nlp"
    listed = json.loads(cli("--db", postgres_db, "tokens", "list", "--json").stdout)
    assert [t["user"] for t in listed] == ["carol"] and token not in json.dumps(listed)
    token_id = token.split("_")[1]
    assert cli("--db", postgres_db, "tokens", "revoke", token_id).exit_code == 0
    assert auth.authenticate(Store(postgres_db), token) is None
    refused = cli("--server", "http://127.0.0.1:9", "tokens", "list")
    assert refused.exit_code == 2 and "--db URL" in refused.output


def test_a_project_at_its_limit_waits_saying_why_while_another_project_runs(
    remote, tokens, tmp_path, program, postgres_db
):
    Store(postgres_db).set_project_limit("vision", max_running=1, max_cpus=None, max_gpus=None, max_memory=None)
    spec = job_spec(tmp_path, program, extra="env: {EPOCH_SECONDS: '0.1'}\n")
    Store(postgres_db).set_project_limit("speech", max_priority=10)
    refused = remote(tokens["bob"], "submit", str(spec), "--set", "spec.priority=50")
    assert refused.exit_code == 2, refused.output
    assert "error: spec.priority: 50 is above project speech's limit of 10" in refused.output

    def submitted(token: str) -> str:
        return json.loads(remote(token, "submit", str(spec), "--detach", "--json").stdout)["run_id"]

    def status(run_id: str) -> dict:
        return json.loads(remote(tokens["admin"], "status", run_id, "--json").stdout)

    first, second = submitted(tokens["alice"]), submitted(tokens["alice"])
    other = submitted(tokens["bob"])
    wait_for(lambda: status(second)["waiting"] == "project vision is at its limit of 1 running runs")
    assert status(second)["state"] == "QUEUED"
    wait_for(lambda: status(other)["state"] in ("RUNNING", "FINALIZING", "SUCCEEDED"))
    wait_for(lambda: status(second)["state"] == "SUCCEEDED", timeout=120)
    runs = {run_id: status(run_id) for run_id in (first, second)}
    assert runs[first]["state"] == "SUCCEEDED" and runs[second]["waiting"] == ""
    assert runs[second]["started_at"] >= runs[first]["ended_at"]
