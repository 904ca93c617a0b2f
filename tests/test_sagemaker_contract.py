"""``spec.contract: sagemaker`` end to end: scripts written for SageMaker training run unchanged on the
local backend and in containers (podman, the stand-in training image of ``container_image.py``).

Two scripts in the styles SageMaker's users write: one reads everything through the
``sagemaker-training`` toolkit's ``Environment`` (the real package, from the test extra), one is the
argparse-from-``SM_*`` script of the SageMaker examples. A third writes ``/opt/ml/output/failure``
and exits 1: the text is the run's reason, and its retry finds the checkpoint the first attempt left
in ``/opt/ml/checkpoints``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from conftest import command_spec, import_or_missing, missing, run_json
from hostile import ENGINE, RUN_ARGS, engine_problem
from mlrt.store import Store

ENVIRONMENT_SCRIPT = """
    import json, os, sys

    import joblib
    import pandas as pd
    from sagemaker_training import environment
    from sklearn.linear_model import LogisticRegression

    env = environment.Environment()
    train_dir = env.channel_input_dirs["train"]
    frame = pd.concat(pd.read_csv(os.path.join(train_dir, name)) for name in sorted(os.listdir(train_dir)))
    model = LogisticRegression(C=env.hyperparameters["C"], max_iter=env.hyperparameters["max_iter"])
    model.fit(frame[["x1", "x2"]], frame["y"])
    joblib.dump(model, os.path.join(env.model_dir, "model.joblib"))
    seen = {
        "hosts": env.hosts,
        "current_host": env.current_host,
        "hyperparameters": env.hyperparameters,
        "input_data_config": env.input_data_config,
        "rows": len(frame),
        "argv": sys.argv[1:],
        "job_name": env.job_name,
        "sm_hps": json.loads(os.environ["SM_HPS"]),
        "training_env_hosts": json.loads(os.environ["SM_TRAINING_ENV"])["hosts"],
    }
    with open(os.path.join(env.output_data_dir, "seen.json"), "w") as handle:
        json.dump(seen, handle)
"""

ARGPARSE_SCRIPT = """
    import argparse
    import json
    import os
    import socket
    import time

    import joblib
    import numpy as np
    from sklearn.linear_model import SGDClassifier


    def resolve(host):
        # As SageMaker's training toolkit does before it runs a script: wait until the name resolves
        # (a container's name joins the network's DNS when that container starts).
        deadline = time.monotonic() + 120
        while True:
            try:
                return socket.gethostbyname(host)
            except socket.gaierror:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


    def resolve_all_together(hosts, current):
        # Every host resolves every name while all are up: the first host waits for the others to
        # connect, and each of them stays until the first has resolved (a host that ended would
        # leave the network's DNS before a slower one looked it up).
        port = int(os.environ["MASTER_PORT"])
        if current == hosts[0]:
            with socket.create_server(("", port)) as server:
                server.settimeout(120)
                peers = [server.accept()[0] for _ in hosts[1:]]
                addresses = {host: resolve(host) for host in hosts}
                for peer in peers:
                    peer.close()
                return addresses
        addresses = {host: resolve(host) for host in hosts}
        deadline = time.monotonic() + 120
        while True:
            try:
                peer = socket.create_connection((hosts[0], port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with peer:
            peer.settimeout(120)
            peer.recv(1)  # until the first host has resolved every name and closed
        return addresses


    if __name__ == "__main__":
        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=1)
        parser.add_argument("--alpha", type=float, default=0.0001)
        parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
        parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
        parser.add_argument("--output-data-dir", type=str, default=os.environ["SM_OUTPUT_DATA_DIR"])
        parser.add_argument("--hosts", type=list, default=json.loads(os.environ["SM_HOSTS"]))
        parser.add_argument("--current-host", type=str, default=os.environ["SM_CURRENT_HOST"])
        args, _ = parser.parse_known_args()

        rows = np.loadtxt(os.path.join(args.train, "train.csv"), delimiter=",", skiprows=1)
        model = SGDClassifier(max_iter=args.epochs, alpha=args.alpha, tol=None, random_state=0)
        model.fit(rows[:, :2], rows[:, 2])
        addresses = resolve_all_together(args.hosts, args.current_host) if len(args.hosts) > 1 else {}
        if args.current_host == args.hosts[0]:
            joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
        report = {
            "epochs": args.epochs,
            "alpha": args.alpha,
            "hosts": args.hosts,
            "addresses": addresses,
            "sm_hp_epochs": os.environ["SM_HP_EPOCHS"],
            "num_gpus": os.environ["SM_NUM_GPUS"],
            "channels": json.loads(os.environ["SM_CHANNELS"]),
        }
        with open(os.path.join(args.output_data_dir, args.current_host + ".json"), "w") as handle:
            json.dump(report, handle)
"""

FAILING_SCRIPT = """
    import os, sys

    marker = "/opt/ml/checkpoints/attempts.txt"
    attempt = int(open(marker).read()) + 1 if os.path.exists(marker) else 1
    with open(marker, "w") as handle:
        handle.write(str(attempt))
    with open("/opt/ml/output/failure", "w") as handle:
        handle.write(f"AlgorithmError: column 'y' has no values (attempt {attempt})\\n")
    sys.exit(1)
"""

PROBLEM = engine_problem()


@pytest.fixture
def toolkit() -> None:
    import_or_missing("sagemaker_training.environment", "sagemaker-training", "pip install -e '.[test]'")


@pytest.fixture
def container_engine(monkeypatch) -> str:
    if PROBLEM is not None:
        missing("podman", f"SageMaker contract in containers: {PROBLEM}")
    from container_image import build_image

    image = build_image(ENGINE, RUN_ARGS.split())
    monkeypatch.setenv("MLRT_CONTAINER_RUN_ARGS", RUN_ARGS)
    monkeypatch.setenv("MLRT_TRAINING_IMAGE", image)
    monkeypatch.delenv("MLRT_CONTAINER_ENGINE", raising=False)
    return image


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the three scripts and a small CSV (two features, a 0/1 label)."""
    import textwrap

    generator = random.Random(7)
    rows = ["x1,x2,y"]
    for _ in range(60):
        x1, x2 = generator.random(), generator.random()
        rows.append(f"{x1:.4f},{x2:.4f},{int(x1 + x2 > 1)}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("\n".join(rows) + "\n")
    for name, script in (("env_train.py", ENVIRONMENT_SCRIPT), ("sk_train.py", ARGPARSE_SCRIPT)):
        (tmp_path / name).write_text(textwrap.dedent(script))
    (tmp_path / "fail.py").write_text(textwrap.dedent(FAILING_SCRIPT))
    return tmp_path


def sagemaker_spec(name: str, script: str, extra: str) -> str:
    return command_spec(name, f"[python, {script}]", f"  contract: sagemaker\n{extra}")


ENVIRONMENT_JOB = "  data: {train: file://./data}\n  hyperparameters: {C: 0.5, max_iter: 100, solver: lbfgs}\n"
ARGPARSE_JOB = "  data: {train: file://./data/train.csv}\n  hyperparameters: {epochs: 5, alpha: 0.001}\n"


def submit(cli, spec: Path) -> dict:
    result = cli("submit", str(spec), "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def output_of(cli, run_id: str) -> Path:
    return Path(run_json(cli, run_id)["output_uri"].removeprefix("file://")) / "output"


def check_environment_run(cli, run: dict) -> None:
    """What the ``Environment`` script saw and left, wherever it ran."""
    import joblib

    assert run["state"] == "SUCCEEDED", run["reason"]
    artifacts = {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}
    assert artifacts == {"model/model.joblib", "data/seen.json"}
    output = output_of(cli, run["id"])
    seen = json.loads((output / "data" / "seen.json").read_text())
    assert seen["hyperparameters"] == seen["sm_hps"] == {"C": 0.5, "max_iter": 100, "solver": "lbfgs"}
    assert seen["argv"] == ["-C", "0.5", "--max_iter", "100", "--solver", "lbfgs"]  # script mode's arguments
    assert (seen["hosts"], seen["current_host"], seen["training_env_hosts"]) == (["algo-1"], "algo-1", ["algo-1"])
    assert seen["input_data_config"] == {
        "train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    }
    assert (seen["rows"], seen["job_name"]) == (60, run["id"])
    model = joblib.load(output / "model" / "model.joblib")
    assert model.predict(pd.DataFrame({"x1": [0.9, 0.05], "x2": [0.9, 0.05]})).tolist() == [1, 0]
    config = Path(Store().latest_attempt(run["id"]).log_dir) / "sagemaker" / "algo-1" / "input" / "config"
    # As SageMaker writes it: every value a JSON text.
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "C": "0.5",
        "max_iter": "100",
        "solver": '"lbfgs"',
    }


def test_environment_class_script_runs_on_the_local_backend(cli, write_spec, project, toolkit):
    run = submit(cli, write_spec(sagemaker_spec("sm-env", "env_train.py", ENVIRONMENT_JOB)))
    check_environment_run(cli, run)


def test_argparse_script_runs_on_two_local_hosts(cli, write_spec, project):
    extra = ARGPARSE_JOB + "  compute: {workers: 2}\n"
    run = submit(cli, write_spec(sagemaker_spec("sm-args", "sk_train.py", extra)))
    assert run["state"] == "SUCCEEDED", run["reason"]
    output = output_of(cli, run["id"])
    for host in ("algo-1", "algo-2"):
        report = json.loads((output / "data" / f"{host}.json").read_text())
        assert (report["epochs"], report["alpha"], report["sm_hp_epochs"]) == (5, 0.001, "5")
        assert (report["hosts"], report["num_gpus"], report["channels"]) == (["algo-1", "algo-2"], "0", ["train"])
        # Every host is this machine: the names resolve to it in the workers' Python.
        assert report["addresses"] == {"algo-1": "127.0.0.1", "algo-2": "127.0.0.1"}
    assert (output / "model" / "model.joblib").stat().st_size > 0


def test_environment_class_script_runs_in_a_container(cli, write_spec, project, toolkit, container_engine):
    extra = ENVIRONMENT_JOB + f"  image: {container_engine}\n  compute: {{backend: container, cpu: 1}}\n"
    run = submit(cli, write_spec(sagemaker_spec("sm-env-box", "env_train.py", extra)))
    check_environment_run(cli, run)


def test_argparse_script_runs_on_two_hosts_that_resolve(cli, write_spec, project, container_engine):
    extra = ARGPARSE_JOB + f"  image: {container_engine}\n  compute: {{backend: container, workers: 2, cpu: 1}}\n"
    run = submit(cli, write_spec(sagemaker_spec("sm-args-box", "sk_train.py", extra)))
    assert run["state"] == "SUCCEEDED", run["reason"]
    output = output_of(cli, run["id"])
    reports = [json.loads((output / "data" / f"algo-{n}.json").read_text()) for n in (1, 2)]
    for report in reports:
        assert (report["epochs"], report["hosts"]) == (5, ["algo-1", "algo-2"])
        assert sorted(report["addresses"]) == ["algo-1", "algo-2"]
    # Each host resolves both names, to the same two addresses everywhere.
    assert reports[0]["addresses"] == reports[1]["addresses"]
    assert len(set(reports[0]["addresses"].values())) == 2
    artifacts = {a["path"] for a in json.loads(cli("artifacts", run["id"], "--json").stdout)}
    assert artifacts == {"model/model.joblib", "data/algo-1.json", "data/algo-2.json"}


def test_failure_file_is_the_reason_and_the_retry_finds_the_checkpoint(cli, write_spec, project, container_engine):
    retries = "  retries: {max: 1, backoff: 0.1, on: any}\n"  # on: any, as the failure is the program's own
    extra = f"  image: {container_engine}\n  compute: {{backend: container}}\n" + retries
    run = submit(cli, write_spec(sagemaker_spec("sm-fail", "fail.py", extra)))
    assert run["state"] == "FAILED"
    assert run["attempts"] == 2, run["reason"]
    # The second attempt found the first one's checkpoint, and its failure file is the reason.
    assert "worker 0 exited with code 1: AlgorithmError: column 'y' has no values (attempt 2)" in run["reason"]
    status = cli("status", run["id"], "--json")
    assert "AlgorithmError: column 'y' has no values (attempt 2)" in status.stdout


def test_the_plan_shows_opt_ml_and_other_backends_or_values_are_refused(cli, write_spec, project, monkeypatch):
    monkeypatch.setenv("MLRT_CONTAINER_ENGINE", "podman")
    extra = ARGPARSE_JOB + "  image: registry.example/acme/train:1\n  compute: {backend: container, workers: 2}\n"
    result = cli("validate", str(write_spec(sagemaker_spec("sm-plan", "sk_train.py", extra))), "--json")
    assert result.exit_code == 0, result.output
    launch = json.loads(result.stdout)["launch"]
    second = launch["workers"][1]
    assert second["argv"] == ["python", "sk_train.py", "--alpha", "0.001", "--epochs", "5"]
    assert (second["env"]["SM_CURRENT_HOST"], second["env"]["SM_MODEL_DIR"]) == ("algo-2", "/opt/ml/model")
    assert second["env"]["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    command = launch["details"]["commands"][1]
    assert "--network-alias=algo-2" in command
    destinations = [arg.split("destination=")[1].split(",")[0] for arg in command if "destination=/opt/ml" in arg]
    assert destinations == [
        "/opt/ml/input/config",
        "/opt/ml/input/data/train/train.csv",
        "/opt/ml/model",
        "/opt/ml/output",
        "/opt/ml/output/data",
        "/opt/ml/checkpoints",
    ]
    files = launch["details"]["sagemaker"][1]["files"]
    config = {Path(path).name: json.loads(text) for path, text in files.items()}
    assert config["resourceconfig.json"]["current_host"] == "algo-2"
    assert config["resourceconfig.json"]["hosts"] == ["algo-1", "algo-2"]
    assert config["hyperparameters.json"] == {"alpha": "0.001", "epochs": "5"}

    wrong = write_spec(command_spec("sm-bad", "[python, sk_train.py]", "  contract: aws\n"), name="bad.yaml")
    result = cli("validate", str(wrong))
    assert result.exit_code == 2
    assert "spec.contract:" in result.output and "Traceback" not in result.output


def test_a_pod_gets_opt_ml_from_its_volumes_and_an_init_container(cli, write_spec, project, toolkit, tmp_path):
    import subprocess
    import sys

    import yaml

    validator = import_or_missing("kubernetes_validate", "kubernetes-validate", "pip install kubernetes-validate")
    extra = ENVIRONMENT_JOB + "  image: registry.example/acme/sklearn:1\n  compute: {backend: kubernetes}\n"
    result = cli("validate", str(write_spec(sagemaker_spec("sm-pod", "env_train.py", extra))), "--manifests")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    for document in documents:
        validator.validate(document, "1.33.0", strict=True)
    pod = documents[-1]["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert worker["command"] == ["python", "env_train.py", "-C", "0.5", "--max_iter", "100", "--solver", "lbfgs"]
    assert (env["SM_CURRENT_HOST"], env["SM_CHANNEL_TRAIN"]) == ("algo-1", "/opt/ml/input/data/train")
    assert worker["terminationMessagePath"] == env["MLRT_FAILURE_FILE"] == "/opt/ml/output/failure"
    mounts = {m["mountPath"]: (m["name"], m.get("subPath")) for m in worker["volumeMounts"]}
    assert mounts["/opt/ml/model"] == ("mlrt-run", "output/model")
    assert mounts["/opt/ml/output/data"] == ("mlrt-run", "output/data")
    assert mounts["/opt/ml/checkpoints"] == ("mlrt-run", "checkpoints")
    assert mounts["/opt/ml/input/data"] == ("mlrt-data", None)
    writer = pod["initContainers"][0]
    assert writer["command"] == ["python", "-m", "mlrt.sagemaker_contract", "/opt/ml/input/config"]

    # What the init container writes is what the toolkit reads.
    config = tmp_path / "opt-ml" / "input" / "config"
    writer_env = {e["name"]: e["value"] for e in writer["env"]}
    command = [sys.executable, *writer["command"][1:-1], str(config)]
    subprocess.run(command, env={**writer_env, "PATH": ""}, check=True, capture_output=True)
    probe = "from sagemaker_training import environment as e; import json; print(json.dumps(e.read_hyperparameters()))"
    base = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml"), "PATH": ""}
    read = subprocess.run([sys.executable, "-c", probe], env=base, check=True, capture_output=True, text=True)
    assert json.loads(read.stdout) == {"C": 0.5, "max_iter": 100, "solver": "lbfgs"}
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]

    several = extra.replace("{backend: kubernetes}", "{backend: kubernetes, workers: 2}")
    result = cli("validate", str(write_spec(sagemaker_spec("sm-pods", "env_train.py", several), name="two.yaml")))
    assert result.exit_code == 2
    assert "spec.contract: the kubernetes backend gives the sagemaker contract to one worker" in result.output


def test_an_image_without_a_command_is_started_as_sagemaker_starts_it(cli, write_spec, project, monkeypatch):
    import yaml

    monkeypatch.setenv("MLRT_CONTAINER_ENGINE", "podman")
    image = "registry.example/acme/byo-algorithm:3"
    spec = f"apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {{name: sm-byo}}\nspec:\n  image: {image}\n"
    spec += "  contract: sagemaker\n  data: {train: file://./data}\n  hyperparameters: {epochs: 5}\n"
    boxed = write_spec(spec + "  compute: {backend: container}\n", name="boxed.yaml")
    result = cli("validate", str(boxed), "--json")
    assert result.exit_code == 0, result.output
    command = json.loads(result.stdout)["launch"]["details"]["commands"][0]
    assert command[-2:] == [image, "train"], "docker run IMAGE train: the image's entry point gets 'train'"
    assert not [arg for arg in command if arg.startswith("--workdir")], "the image's own working directory"
    pod = write_spec(spec + "  compute: {backend: kubernetes}\n", name="pod.yaml")
    result = cli("validate", str(pod), "--manifests")
    assert result.exit_code == 0, result.output
    worker = list(yaml.safe_load_all(result.stdout))[-1]["spec"]["template"]["spec"]["containers"][0]
    assert (worker["args"], "command" in worker) == (["train"], False)
