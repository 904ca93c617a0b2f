"""User code is isolated from the controller (issue 13, items 3 and 7).

Each attack a project user could try on a shared controller (a real ``mlrt
controller`` on PostgreSQL with podman as the allowed backend, see
``tests/hostile.py``) is refused with one ``field: problem`` line: images
that an engine would read as options, environment names that are not names,
paths of the controller's machine, the local backend without the operator's
opt-in; a container job sees none of the service's environment. The local
rendezvous of a two-worker DDP run listens on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import hostile as attacks
from conftest import import_or_missing, wait_for
from mlrt.names import env_name_problem, image_problem
from mlrt.service import policy
from service_process import ServiceProcess

# The fixtures of tests/hostile.py: a controller on PostgreSQL with podman, tokens of two projects.
hostile, training_image = attacks.hostile, attacks.training_image

DIGEST = "sha256:" + "0123456789abcdef" * 4


def training_job(name: str, spec: str) -> str:
    """A TrainingJob document with ``spec`` (YAML lines of its spec) indented in place."""
    return f"apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {{name: {name}}}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  "
    )


def container_job(name: str, image: str, extra: str = "", compute: str = "{backend: container}") -> str:
    lines = f"image: {json.dumps(image)}\ncommand: [python, -c, 'print(1)']\ncompute: {compute}\n"
    return training_job(name, lines + extra)


def assert_refused(response, field: str) -> str:
    """A 422 whose detail is one line about ``field``; returns that line."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail.startswith(f"{field}:"), detail
    assert "Traceback" not in response.text
    return detail


# -- names.py ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "alpine",
        "library/alpine:3.19",
        "localhost/mlrt-train:0.1.0",
        "registry.example.com:5000/team/train:1.2",
        "Registry.Example.com/a/b",
        f"ghcr.io/org/repo@{DIGEST}",
        f"ghcr.io/org/repo:v1@{DIGEST}",
        "[::1]:5000/train:latest",
        "a__b/c.d/e-f---g:Tag_1.x-y",
        "192.168.1.10:5000/x",
    ],
)
def test_oci_references_are_images(reference):
    assert image_problem(reference) is None


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "--volume=/:/host",
        "-v/:/host",
        "--privileged",
        "alpine --volume=/:/host",
        "alpine\n--privileged",
        "Alpine",
        "alpine:",
        ":latest",
        "alpine:" + "t" * 129,
        "alpine@sha256:abc",
        "team//train",
        "team/-train",
        "train_",
        "alpine;id",
        "trâin",
        "a" * 256,
    ],
)
def test_anything_else_is_not_an_image(reference):
    assert image_problem(reference)


@pytest.mark.parametrize("name", ["A", "_x", "PATH", "MY_VAR_2", "a" * 255])
def test_posix_names_are_environment_names(name):
    assert env_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "A=B", "--x", "-e", "1A", "A-B", "A B", "A\nB", "Ä", "a" * 256])
def test_anything_else_is_not_an_environment_name(name):
    assert env_name_problem(name)


# -- the path policy, in process ---------------------------------------------------------------


def test_paths_are_resolved_before_the_allowed_folders_are_checked(tmp_path, monkeypatch):
    submission, shared = tmp_path / "submissions" / "ab12", tmp_path / "shared"
    submission.mkdir(parents=True)
    (shared / "data").mkdir(parents=True)
    (shared / "escape").symlink_to("/etc")
    monkeypatch.setenv("MLRT_ALLOWED_BACKENDS", "container")
    monkeypatch.setenv("MLRT_ALLOWED_PATHS", f"{tmp_path / 'elsewhere'}:{shared}")

    def check(**spec):
        document = {"kind": "TrainingJob", "spec": {"compute": {"backend": "container"}, **spec}}
        try:
            policy.check(document, submission)
        except policy.PolicyError as exc:
            return exc.problems
        return []

    assert check(working_dir=str(submission / "code")) == []
    assert check(data={"train": {"uri": f"file://{shared}/data/train.csv"}}) == []
    assert check(output={"path": f"file://{shared}/out"}, init_from={"path": f"{shared}/data/model.pt"}) == []
    (escaped,) = check(data={"train": {"uri": f"file://{shared}/escape/passwd"}})
    assert escaped.startswith("spec.data.train: ") and "outside the folders it allows (MLRT_ALLOWED_PATHS)" in escaped
    (dotdot,) = check(working_dir=f"{shared}/data/../../..")
    assert dotdot.startswith("spec.working_dir: ")
    assert [p.split(":")[0] for p in check(tags={"files": ["../../../etc/shadow"]})] == ["spec.tags.files.0"]


def test_a_search_parameter_cannot_move_trials_into_another_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRT_ALLOWED_BACKENDS", "kubernetes")
    monkeypatch.setenv("MLRT_KUBE_NAMESPACES", "ml,vision")
    template = {"image": "train:1", "compute": {"backend": "kubernetes"}}
    namespaces = {"type": "categorical", "path": "compute.kubernetes.namespace", "values": ["ml", "kube-system", "ml"]}
    document = {
        "kind": "TuningJob",
        "base_dir": str(tmp_path),
        "spec": {"template": template, "parameters": {"x": {"type": "float", "min": 0, "max": 1}}},
    }
    policy.check(document, tmp_path)  # the template's namespace: the first managed one
    document["spec"]["parameters"]["ns"] = namespaces
    with pytest.raises(policy.PolicyError) as refused:
        policy.check(document, tmp_path)
    assert refused.value.problems == [
        "spec.parameters.ns.compute.kubernetes.namespace: this controller launches in ml, vision"
    ]


def test_a_link_planted_in_a_shared_folder_is_not_mounted(tmp_path, monkeypatch):
    from mlrt.launchers import LaunchError
    from mlrt_container import check_links

    shared, alias = tmp_path / "shared", tmp_path / "alias"
    (shared / "team" / "data").mkdir(parents=True)
    alias.symlink_to(shared)  # the operator's own link to the folder stays usable
    monkeypatch.setenv("MLRT_ALLOWED_PATHS", str(alias))
    check_links([(str(alias / "team" / "data"), True), (str(shared / "team" / "data"), True)])
    (shared / "team" / "later").symlink_to("/etc")  # what another job could plant after the submission
    for path in (alias / "team" / "later", shared / "team" / "later" / "ssl"):
        with pytest.raises(LaunchError, match="is a symbolic link inside"):
            check_links([(str(path), True)])


# -- against a real controller -----------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "--volume=/:/host",
        "-v=/:/host",
        "--privileged",
        "--mount=type=bind,source=/,destination=/host",
        "alpine --volume=/:/host",
        "Alpine:latest",
    ],
)
def test_images_an_engine_would_read_as_options_are_refused(hostile, image):
    assert_refused(hostile.submit("alice", container_job("flags", image)), "spec.image")
    with hostile.client("alice") as client:
        assert_refused(client.post("/validate", json={"spec": container_job("flags", image)}), "spec.image")
        assert client.get("/runs").json() == []
    assert hostile.alive()


@pytest.mark.parametrize("name", ["A=B", "--privileged", "1ST", "LD PRELOAD"])
def test_environment_names_that_are_not_names_are_refused(hostile, name):
    env = f"env: {{{json.dumps(name)}: x}}\n"
    detail = assert_refused(hostile.submit("alice", container_job("env", hostile.image, env)), "spec.env")
    assert "not an environment variable name" in detail
    secret = (
        f"compute: {{backend: container, kubernetes: {{secret_env: {{{json.dumps(name)}: {{secret: s, key: k}}}}}}}}\n"
    )
    spec = training_job("env", f"image: {hostile.image}\ncommand: [python]\n{secret}")
    assert_refused(hostile.submit("alice", spec), "spec.compute.kubernetes.secret_env")


@pytest.mark.parametrize(
    ("field", "lines"),
    [
        ("spec.working_dir", "working_dir: /etc\n"),
        ("spec.working_dir", "working_dir: ../../../../../../etc\n"),
        ("spec.data.train", "data: {train: 'file:///etc/passwd'}\n"),
        ("spec.data.train", "data: {train: /etc/passwd}\n"),
        # The same answer for a file that does not exist: no oracle for the machine's files.
        ("spec.data.train", "data: {train: /root/.ssh/no-such-key}\n"),
        ("spec.output.path", "output: {path: 'file:///tmp'}\n"),
        ("spec.output.path", "output: {path: /var/tmp}\n"),
        ("spec.init_from.path", "init_from: {path: /etc/passwd}\n"),
        ("spec.tags.files.0", "tags: {files: [/etc/passwd]}\n"),
    ],
)
def test_paths_of_the_controllers_machine_are_refused(hostile, field, lines):
    detail = assert_refused(hostile.submit("alice", container_job("paths", hostile.image, lines)), field)
    assert "outside the folders it allows" in detail
    with hostile.client("alice") as client:
        assert client.get("/runs").json() == []
    submissions = hostile.home / "submissions"
    assert not submissions.exists() or not any(submissions.iterdir()), "nothing half-written"


def test_overrides_are_checked_like_the_spec_they_change(hostile):
    spec = container_job("overridden", hostile.image)
    for override, field in [
        ("spec.working_dir=/root", "spec.working_dir"),
        ("spec.output.path=file:///etc", "spec.output.path"),
        ("spec.image=--privileged", "spec.image"),
    ]:
        assert_refused(hostile.submit("alice", spec, overrides=[override]), field)
    no_image = training_job("overridden", "command: [python, -c, 'print(1)']\ncompute: {backend: container}\n")
    assert_refused(hostile.submit("alice", no_image, overrides=["spec.compute.backend=local"]), "spec.compute.backend")


def test_a_relative_working_dir_stays_in_the_submissions_folder(hostile):
    response = hostile.submit("alice", container_job("inside", hostile.image, "working_dir: code\n"))
    assert response.status_code == 201, response.text
    with hostile.client("alice") as client:
        job = client.get(f"/runs/{response.json()['run_id']}/job").text
    assert f"{hostile.home / 'submissions'}/" in job and "/code" in job


TUNING = """\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {{name: tune}}
spec:
  template:
    image: {image}
    command: [python, -c, 'print(1)']
    compute: {{backend: container}}
{template}
  objective: {{metric: loss, goal: minimize}}
  parameters:
    x: {{type: float, min: 0, max: 1}}
{parameters}
  max_trials: 2
"""


@pytest.mark.parametrize(
    ("field", "template", "parameters"),
    [
        ("spec.template.working_dir", "    working_dir: /etc", ""),
        ("spec.template.data.train", "    data: {train: 'file:///etc/passwd'}", ""),
        ("spec.template.data.train", "    data: {train: 'file:///etc/no-such-file'}", ""),
        # A value in the middle of a categorical list is never validated as a trial corner.
        ("spec.parameters.where.working_dir", "", "    where: {type: categorical, path: working_dir, values: [a, /root, b]}"),
        ("spec.parameters.where.compute.backend", "", "    where: {type: categorical, path: compute.backend, values: [container, local, container]}"),
    ],
)  # fmt: skip
def test_tuning_templates_and_their_search_spaces_are_checked_the_same_way(hostile, field, template, parameters):
    spec = TUNING.format(image=hostile.image, template=template, parameters=parameters)
    assert_refused(hostile.submit("alice", spec), field)


def test_host_volumes_cannot_be_asked_for(hostile):
    volume = "{backend: container, kubernetes: {volumes: [{name: h, mount_path: /h, host_path: /}]}}"
    spec = container_job("hostvol", hostile.image, compute=volume)
    detail = assert_refused(hostile.submit("alice", spec), "spec.compute.kubernetes.volumes.0.host_path")
    assert "unknown field" in detail


def test_the_local_backend_needs_the_operators_opt_in(hostile, tmp_path, monkeypatch):
    monkeypatch.delenv("MLRT_ALLOWED_BACKENDS")
    default = ServiceProcess(hostile.db, tmp_path / "default.log").start(leader=False)
    try:
        hostile.service, started = default, hostile.service
        spec = training_job("local", "command: [sh, -c, 'cat /etc/passwd']\n")
        detail = assert_refused(hostile.submit("alice", spec), "spec.compute.backend")
        assert "runs container, kubernetes jobs, not local" in detail and "MLRT_ALLOWED_BACKENDS" in detail
        with hostile.client("alice") as client:
            assert client.get("/runs").json() == []
    finally:
        hostile.service = started
        default.stop()


PLANT_LINK = """\
import os, pathlib
search, number = os.environ["MLRT_RUN_ID"].rsplit("-t", 1)
following = pathlib.Path("out") / f"{search}-t{int(number) + 1:03d}"
following.mkdir(parents=True, exist_ok=True)
(following / "output").symlink_to(os.environ["TARGET"])  # resolved on the controller's machine when mounted
print("loss=0.5")
"""


def test_a_trial_cannot_plant_a_link_that_a_later_trial_would_mount(hostile, tmp_path):
    outside = tmp_path / "outside"  # a folder of the controller's machine no spec may name
    outside.mkdir()
    spec = textwrap.dedent(f"""\
        apiVersion: mlrt/v1
        kind: TuningJob
        metadata: {{name: planter}}
        spec:
          template:
            image: {hostile.image}
            command: [python, -c, {json.dumps(PLANT_LINK)}]
            env: {{TARGET: {outside}}}
            output: {{path: out}}
            metrics: [{{name: loss, regex: 'loss=([0-9.]+)'}}]
            compute: {{backend: container}}
          objective: {{metric: loss, goal: minimize}}
          parameters:
            x: {{type: float, min: 0, max: 1}}
          max_trials: 2
          parallel_trials: 1
        """)
    response = hostile.submit("alice", spec)
    assert response.status_code == 201, response.text
    search = response.json()["run_id"]
    hostile.wait_terminal(search, timeout=180)
    with hostile.client("alice") as client:
        trials = {t["id"].rsplit("-", 1)[1]: t for t in client.get(f"/runs/{search}/trials").json()}
    assert trials["t001"]["state"] == "SUCCEEDED", trials["t001"]["reason"]
    assert trials["t002"]["state"] == "FAILED"
    assert "is a symbolic link inside" in trials["t002"]["reason"], trials["t002"]["reason"]


FAKE_SECRET = "fake-aws-secret-4f1c9e"


@pytest.fixture
def service_secrets(monkeypatch):
    """Credentials in the service's own environment (set before ``hostile`` starts it)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKESERVICEKEY")
    monkeypatch.setenv("MLRT_SERVICE_ONLY_SETTING", FAKE_SECRET)


DUMP_ENV = "import json, os; print('ENV=' + json.dumps(dict(os.environ), sort_keys=True))"


def test_a_container_job_sees_none_of_the_services_environment(service_secrets, hostile):
    assert hostile.service.env["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET, "the service runs with the credentials"
    spec = training_job(
        "envdump",
        f"""\
        image: {hostile.image}
        command: [python, -c, {json.dumps(DUMP_ENV)}]
        env: {{MODE: fast}}
        compute: {{backend: container}}
        """,
    )
    response = hostile.submit("alice", spec)
    assert response.status_code == 201, response.text
    run_id = response.json()["run_id"]
    run = hostile.wait_terminal(run_id)
    assert run["state"] == "SUCCEEDED", run["reason"]
    with hostile.client("alice") as client:
        log = client.get(f"/runs/{run_id}/logs/1/0").text
    line = next(line for line in log.splitlines() if line.startswith("ENV="))
    seen = json.loads(line.removeprefix("ENV="))
    assert seen["MLRT_RUN_ID"] == run_id and seen["MODE"] == "fast"
    assert FAKE_SECRET not in log
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLRT_SERVICE_ONLY_SETTING"} & set(seen)
    assert "MLRT_DB" not in seen and hostile.db not in log


LOCAL_DUMP = """\
import json, os, pathlib
out = pathlib.Path(os.environ["MLRT_OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "env.json").write_text(json.dumps(dict(os.environ)))
(out / "environ.bin").write_bytes(pathlib.Path("/proc/self/environ").read_bytes())
"""


@pytest.mark.parametrize("warm", [False, True])
def test_local_workers_inherit_only_the_allow_list_once_it_is_set(cli, write_spec, home, monkeypatch, warm):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("LC_FAKE", "kept")
    spec = write_spec(
        training_job(
            "localenv", f"command: [python, dump.py]\nenv: {{MODE: fast}}\ncompute: {{warm: {str(warm).lower()}}}\n"
        ),
        files={"dump.py": LOCAL_DUMP},
    )

    def run() -> tuple[dict[str, str], bytes]:
        result = cli("submit", str(spec), "--json")
        assert result.exit_code == 0, result.output
        done = json.loads(result.stdout)
        assert done["state"] == "SUCCEEDED", done["reason"]
        output = home / "runs" / done["id"] / "output"
        return json.loads((output / "env.json").read_text()), (output / "environ.bin").read_bytes()

    # mlrt submit on one's own machine: the worker is the user's own process, with their shell's variables.
    seen, _ = run()
    assert seen["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET

    # What the controller service does (MLRT_WORKER_ENV_ALLOW defaults to policy.DEFAULT_WORKER_ENV there).
    monkeypatch.setenv("MLRT_WORKER_ENV_ALLOW", policy.DEFAULT_WORKER_ENV)
    seen, environ = run()
    assert "AWS_SECRET_ACCESS_KEY" not in seen and FAKE_SECRET.encode() not in environ
    assert seen["LC_FAKE"] == "kept" and seen["MODE"] == "fast" and seen["HOME"] == os.environ["HOME"]
    assert seen["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "MLRT_HOME" not in seen, "the controller's own settings stay with it"


# -- the local rendezvous ----------------------------------------------------------------------


def test_a_local_ddp_run_listens_on_127_0_0_1_only(cli, write_spec):
    import_or_missing(
        "torch", "torch", "the rendezvous test needs torch (pip install -c constraints.txt 'mlrt[torch]')"
    )
    spec = write_spec(
        training_job(
            "loopback",
            """\
            algorithm: torch.mlp
            data:
              train: builtin://sklearn/digits?split=train
              validation: builtin://sklearn/digits?split=validation
            hyperparameters: {epochs: 500}
            compute: {workers: 2, cpu: 1}
            seed: 3
            """,
        )
    )
    submitted = cli("submit", str(spec), "--detach", "--json")
    assert submitted.exit_code == 0, submitted.output
    run_id = json.loads(submitted.stdout)["run_id"]
    try:
        # An epoch's metrics: both ranks joined the group and all-reduced through gloo.
        wait_for(lambda: json.loads(cli("metrics", run_id, "--json").stdout), timeout=120, interval=0.5)
        workers = [p for p in psutil.process_iter() if _environ(p).get("MLRT_RUN_ID") == run_id]
        assert sorted(_environ(p)["RANK"] for p in workers) == ["0", "1"]
        sockets = [c for p in workers for c in p.net_connections(kind="inet")]
        listening = {(c.laddr.ip, c.laddr.port) for c in sockets if c.status == psutil.CONN_LISTEN}
        master_port = int(_environ(workers[0])["MASTER_PORT"])
        assert ("127.0.0.1", master_port) in listening, f"rank 0 serves the rendezvous: {listening}"
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        connected = [c for c in sockets if c.status == psutil.CONN_ESTABLISHED]
        assert connected and {_ipv4(c.laddr.ip) for c in connected} == {"127.0.0.1"}, connected
    finally:
        cli("cancel", run_id)
        wait_for(lambda: json.loads(cli("runs", "show", run_id, "--json").stdout)["state"] == "CANCELLED", timeout=60)


def _ipv4(address: str) -> str:
    """``127.0.0.1`` for ``::ffff:127.0.0.1`` too (torch's client sockets are IPv6 ones)."""
    mapped = getattr(ipaddress.ip_address(address), "ipv4_mapped", None)
    return str(mapped) if mapped else address


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return {}


# -- code named by a spec, and a planted output folder ---------------------------------------


def test_tag_functions_are_imported_only_from_modules_the_operator_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRT_ALLOWED_BACKENDS", "container")
    rule = {"function": "subprocess:getoutput"}
    document = {"kind": "TrainingJob", "spec": {"compute": {"backend": "container"}, "tags": {"rules": {"x": rule}}}}
    with pytest.raises(policy.PolicyError) as refused:
        policy.check(document, tmp_path)
    (line,) = refused.value.problems
    assert line.startswith("spec.tags.rules.x.function: ") and "MLRT_ALLOWED_TAG_FUNCTIONS" in line
    monkeypatch.setenv("MLRT_ALLOWED_TAG_FUNCTIONS", "acme.tags")
    rule["function"] = "acme.tags.rules:is_blurry"
    policy.check(document, tmp_path)
    rule["function"] = "acme.tagsx:is_blurry"
    with pytest.raises(policy.PolicyError):
        policy.check(document, tmp_path)


def test_the_operator_key_never_reaches_a_local_worker(monkeypatch):
    from mlrt_local.environment import inherited

    environ = {"MLRT_SECRET_KEY": "k", "MLRT_SECRET_KEY_FILE": "/k", "MLRT_WORKER_ENV_ALLOW": "MLRT_*", "LANG": "C"}
    assert set(inherited(environ)) == {"MLRT_WORKER_ENV_ALLOW"}
    assert "MLRT_SECRET_KEY" not in inherited({"MLRT_SECRET_KEY": "k", "LANG": "C"})  # mlrt submit: everything else


def test_an_output_folder_that_is_a_link_is_not_registered_uploaded_or_served(tmp_path):
    from mlrt import s3
    from mlrt.artifacts import collect

    secret = tmp_path / "controller-files"
    secret.mkdir()
    (secret / "admin-token").write_text("not yours")
    run = tmp_path / "out" / "run-1"
    run.mkdir(parents=True)
    (run / "output").symlink_to(secret)
    assert collect("run-1", run / "output") == ([], ["output"])
    assert s3.upload_tree(run / "output", "s3://bucket/run-1/output") == ([], ["output"])
    planted = tmp_path / "out" / "run-2"
    planted.symlink_to(secret)  # the run's own folder planted as a link
    (secret / "output").mkdir()
    (secret / "output" / "model.bin").write_text("x")
    assert collect("run-2", planted / "output") == ([], ["output"])
