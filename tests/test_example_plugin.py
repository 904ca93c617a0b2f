"""A real third-party plugin package, installed and used as a user would.

``tests/example_plugin`` is an ordinary distribution (``mlrt-example-plugin``)
that registers ``example.nearest_centroid`` through the ``mlrt`` entry-point
group. The test builds and installs it with pip into a folder of its own
(``pip install --target``), puts that folder on ``PYTHONPATH`` and drives the
installed ``mlrt`` console script in subprocesses, so discovery goes through
``importlib.metadata`` exactly as after ``pip install mlrt-example-plugin``,
in the controller and in the worker, without touching the test environment.
"""

from __future__ import annotations

import json
import os
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
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLRT_")}
    environment.update(MLRT_HOME=str(home), PYTHONPATH=str(site), **env)
    return subprocess.run(
        [str(MLRT), *args], capture_output=True, text=True, env=environment, cwd=home.parent, timeout=90
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


def test_plugins_lists_the_installed_distribution_and_its_algorithm(site: Path, home: Path):
    done = mlrt(site, home, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["example"] == {
        "name": "example",
        "distribution": "mlrt-example-plugin",
        "version": "0.1.0",
        "hooks": ["mlrt_algorithms"],
        "provides": {"algorithms": ["example.nearest_centroid"]},
        "loaded": True,
    }
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
