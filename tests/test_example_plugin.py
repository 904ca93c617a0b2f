"""A real third-party plugin package, installed and used as a user would.

``tests/example_plugin`` is an ordinary distribution (``mlrt-example-plugin``)
that registers one of each kind of thing through the ``mlrt`` entry-point
group: an algorithm (``example.nearest_centroid``), a tuner with a setting
(``example.hillclimb``), a report with a dot in its name that a gate reads
(``example.calibration``), a data scheme whose settings are its URIs' query
(``example://moons``) and a launch backend with a settings block
(``example.nice``). The test builds and installs it with pip into a folder of
its own (``pip install --target``), puts that folder on ``PYTHONPATH`` and
drives the installed ``mlrt`` console script in subprocesses, so discovery
goes through ``importlib.metadata`` exactly as after ``pip install
mlrt-example-plugin``, in the controller and in the worker, without touching
the test environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SOURCE = Path(__file__).parent / "example_plugin"
MLRT = Path(sys.executable).parent / "mlrt"


def _build_deps_importable() -> bool:
    """Whether setuptools can build a wheel here without downloading anything."""
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(part) for part in setuptools.__version__.split(".")[:2] if part.isdigit())
    if version >= (70, 1):  # bdist_wheel moved into setuptools
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed with pip into its own folder."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "src"
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    if _build_deps_importable():
        command.append("--no-build-isolation")  # offline and faster
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=90)
    if done.returncode != 0 and "satisfies the requirement setuptools" in done.stdout + done.stderr:
        pytest.skip("pip cannot build the example plugin: setuptools is not available offline")
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def mlrt(site: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mlrt`` console script with the plugin's folder on the path."""
    # Not mlrt's settings, but the session's resident folder (conftest stops what starts there).
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLRT_") or k == "MLRT_RESIDENT_DIR"}
    environment.update(MLRT_HOME=str(home), PYTHONPATH=str(site), **env)
    return subprocess.run(
        [str(MLRT), *args], capture_output=True, text=True, env=environment, cwd=home.parent, timeout=240
    )


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "centroid.yaml"
    document = {
        "apiVersion": "mlrt/v1",
        "kind": "TrainingJob",
        "metadata": {"name": "iris-centroid"},
        "spec": {
            "algorithm": "example.nearest_centroid",
            "data": {
                "train": "builtin://sklearn/iris?split=train",
                "validation": "builtin://sklearn/iris?split=validation",
            },
            "hyperparameters": {"shrink_threshold": 0.1},
            "compute": {"backend": "local", "workers": 1, "cpu": 1},
            "seed": 3,
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_plugins_lists_the_installed_distribution_and_what_it_provides(site: Path, home: Path):
    done = mlrt(site, home, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["example"] == {
        "name": "example",
        "distribution": "mlrt-example-plugin",
        "version": "0.1.0",
        "hooks": ["mlrt_algorithms", "mlrt_data_schemes", "mlrt_launchers", "mlrt_reports", "mlrt_tuners"],
        "provides": {
            "algorithms": ["example.nearest_centroid"],
            "data_schemes": ["example"],
            "launchers": ["example.nice"],
            "reports": ["example.calibration"],
            "tuners": ["example.hillclimb"],
        },
        "loaded": True,
    }
    checked = mlrt(site, home, "plugins", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr  # every schema of the plugin is well formed
    assert {"local", "data", "sklearn"} <= set(rows)  # the built-ins still load next to it


def test_disable_plugins_hides_it(site: Path, home: Path):
    done = mlrt(site, home, "plugins", "--json", MLRT_DISABLE_PLUGINS="example")
    assert done.returncode == 0, done.stderr
    [row] = [row for row in json.loads(done.stdout) if row["name"] == "example"]
    assert (row["loaded"], row["why"], row["provides"]) == (False, "named in MLRT_DISABLE_PLUGINS", {})


def test_submit_trains_with_the_plugin_algorithm(site: Path, home: Path, spec: Path):
    done = mlrt(site, home, "submit", "--json", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    assert run["params"]["algorithm"] == "example.nearest_centroid"
    assert run["params"]["shrink_threshold"] == "0.1"
    assert run["params"]["metric"] == "euclidean"  # a schema default, filled in
    assert run["metrics"]["validation_accuracy"] > 0.8

    shown = mlrt(site, home, "runs", "show", run["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert {"model.joblib", "predictions.parquet"} <= {a["path"] for a in details["artifacts"]}
    assert "mlrt-example-plugin" in json.dumps(details["reproducibility"])


def test_unknown_hyperparameter_is_bad_input_naming_the_field(site: Path, home: Path, spec: Path):
    done = mlrt(site, home, "submit", str(spec), "--set", "spec.hyperparameters.n_neighbors=3")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: spec.hyperparameters.n_neighbors: unknown hyperparameter for example.nearest_centroid"
        " (allowed: metric, shrink_threshold, standardize)"
    ]
    assert "Traceback" not in done.stderr


def test_without_the_plugin_the_algorithm_is_unknown(tmp_path: Path, home: Path, spec: Path):
    done = mlrt(tmp_path / "empty", home, "validate", str(spec))
    assert done.returncode == 2
    assert done.stderr.startswith("error: spec.algorithm: unknown algorithm 'example.nearest_centroid'")


MOONS = {
    "train": "example://moons?rows=400&split=train",
    "validation": "example://moons?rows=400&split=validation",
}


def write(path: Path, kind: str, spec: dict) -> Path:
    path.write_text(
        yaml.safe_dump({"apiVersion": "mlrt/v1", "kind": kind, "metadata": {"name": path.stem}, "spec": spec})
    )
    return path


@pytest.mark.timeout(300)
def test_a_job_uses_the_plugin_scheme_backend_and_a_dotted_report_in_gates(site: Path, home: Path, tmp_path: Path):
    spec = write(
        tmp_path / "moons.yaml",
        "TrainingJob",
        {
            "algorithm": "example.nearest_centroid",
            "data": MOONS,
            "compute": {"backend": "example.nice", "example.nice": {"niceness": 7}},
            "report_options": {"example.calibration": {"split": "train", "bins": 20}},
            "gates": [
                {"report": "example.calibration", "value": "ece", "max": 1.0},
                {"report": "example.calibration", "value": "ece", "max": 0.0},  # no classifier is this calibrated
            ],
            "seed": 3,
        },
    )
    done = mlrt(site, home, "submit", str(spec))
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = re.search(r"^run (\S+) FAILED_GATE", done.stdout, re.M).group(1)
    run = json.loads(mlrt(site, home, "runs", "show", run_id, "--json").stdout)
    assert run["state"] == "FAILED_GATE"
    assert "example.calibration.ece" in run["reason"] and "the gate's max 0" in run["reason"]
    assert "max 1" not in run["reason"]  # the other gate on the same value passed
    assert run["metrics"]["validation_accuracy"] > 0.8

    [attempt] = run["attempts"]
    assert attempt["request"]["workers"][0]["argv"][:3] == ["nice", "-n", "7"]  # the backend's typed settings
    cache = home / "cache" / "example"
    assert sorted(p.name for p in cache.iterdir()) == ["moons-400-0.25-0-train.csv", "moons-400-0.25-0-validation.csv"]

    artifacts = {a["path"]: a for a in run["artifacts"]}
    result = json.loads(Path(artifacts["reports/example.calibration.json"]["uri"].removeprefix("file://")).read_text())
    assert result["split"] == "train" and result["rows"] == 320  # split: an option the report never declared
    findings = 1 + len(result["bins"])  # the ECE, then one per confidence bin
    assert findings > 3
    assert f"{findings - 3} more finding" in done.stdout and "gates failed" in done.stdout
    page = Path(artifacts["reports/report.html"]["uri"].removeprefix("file://")).read_text()
    assert "<section id='example.calibration'><h2>example.calibration</h2><p>Expected calibration error" in page


@pytest.mark.timeout(300)
def test_a_tuning_job_searches_with_the_plugin_tuner_and_its_settings(site: Path, home: Path, tmp_path: Path):
    spec = write(
        tmp_path / "moons-tune.yaml",
        "TuningJob",
        {
            "template": {"algorithm": "example.nearest_centroid", "data": MOONS, "compute": {"cpu": 1}},
            "objective": {"metric": "validation_accuracy", "goal": "maximize"},
            "parameters": {"shrink_threshold": {"type": "float", "min": 0.0, "max": 0.4}},
            "tuner": {"algorithm": "example.hillclimb", "step": 0.5},
            "max_trials": 2,
            "seed": 5,
        },
    )
    planned = mlrt(site, home, "validate", "--json", str(spec))
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["example_trial"]["parameters"] == {"shrink_threshold": 0.2}  # its first

    bad = mlrt(site, home, "validate", str(spec), "--set", "spec.tuner.step=5")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: spec.tuner.step: must be <= 1.0, got 5.0"]

    done = mlrt(site, home, "submit", "--json", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    status = json.loads(mlrt(site, home, "status", run["id"], "--json").stdout)
    assert status["tuning"]["trials"] == {"SUCCEEDED": 2}, status["tuning"]
    trials = json.loads(mlrt(site, home, "runs", "compare", run["id"], "--json").stdout)
    first, second = sorted((float(t["params"]["shrink_threshold"]) for t in trials), key=lambda v: v != 0.2)
    assert first == 0.2  # the middle of the range first, then a step of at most half of the range
    assert 0.0 <= second <= 0.4 and second != 0.2
