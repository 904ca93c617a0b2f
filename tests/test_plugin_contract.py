"""The plugin contract, hardened (issue 18): settings schemas for tuners, checks when plugins
load, a plugin's failure reported as that plugin's, hooks called through pluggy, and the
plugin environment variables.

In-process plugins are registered with ``mlrt.plugins.registered``; the checks that need a
real distribution (its name and version in every line) install a fake one on PYTHONPATH and
run the ``mlrt`` console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from mlrt import hookimpl, plugins
from mlrt.algorithms import Hyperparameter
from mlrt.data import DataScheme
from mlrt.reports import Report
from mlrt.store import Store
from mlrt.tuning import EarlyStopper, Tuner

MLRT = Path(sys.executable).parent / "mlrt"


class HillClimb(Tuner):
    """Walks ``x`` up from its minimum by ``step`` per trial."""

    name = "acme.hillclimb"
    settings = {"step": Hyperparameter(float, 0.1, min=0.0, max=1.0, help="how far each trial moves")}
    configured: list[Any] = []

    def start(self, space, goal, seed, parallel, history) -> None:
        HillClimb.configured.append(self.options)
        self.low = space[0].min

    def suggest(self, number: int) -> dict[str, Any] | None:
        return {"x": self.low + self.options["step"] * number}

    def observe(self, result) -> None:
        pass


class Raising(HillClimb):
    name = "acme.raising"

    def suggest(self, number: int) -> dict[str, Any] | None:
        raise KeyError("x")


class TunerPlugin:
    @hookimpl
    def mlrt_tuners(self) -> list[Tuner]:
        return [HillClimb(), Raising()]


def tuning_job(write_spec, tuner: Any, max_trials: int = 2) -> Path:
    document = {
        "apiVersion": "mlrt/v1",
        "kind": "TuningJob",
        "metadata": {"name": "climb"},
        "spec": {
            "template": {
                "command": [sys.executable, "-c", "print('score=1.5')"],
                "metrics": [{"name": "score", "regex": "score=(?P<value>[0-9.]+)"}],
            },
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": {"x": {"type": "float", "min": 0.0, "max": 1.0}},
            "tuner": tuner,
            "max_trials": max_trials,
            "seed": 1,
        },
    }
    return write_spec(yaml.safe_dump(document), name="climb.yaml")


def test_a_tuner_takes_settings_checked_against_its_schema(cli, write_spec):
    with plugins.registered(TunerPlugin(), name="acme"):
        bad = cli("validate", str(tuning_job(write_spec, {"algorithm": "acme.hillclimb", "step": 5})))
        assert bad.exit_code == 2
        assert bad.stderr.splitlines() == ["error: spec.tuner.step: must be <= 1.0, got 5.0"], bad.stderr
        unknown = cli("validate", str(tuning_job(write_spec, {"algorithm": "acme.hillclimb", "stride": 1})))
        assert "spec.tuner.stride: unknown setting for acme.hillclimb (allowed: step)" in unknown.stderr
        # validate shows the tuner's own first trial, built with its settings
        plan = cli("validate", "--json", str(tuning_job(write_spec, {"algorithm": "acme.hillclimb", "step": 0.25})))
        assert json.loads(plan.stdout)["example_trial"]["parameters"] == {"x": 0.25}
        HillClimb.configured.clear()
        done = cli("submit", "--json", str(tuning_job(write_spec, {"algorithm": "acme.hillclimb", "step": 0})))
        run = json.loads(done.stdout)
        assert run["state"] == "SUCCEEDED", run["reason"]
        assert HillClimb.configured == [{"step": 0.0}] and type(HillClimb.configured[0]["step"]) is float
        assert cli("submit", "--json", str(tuning_job(write_spec, "acme.hillclimb", 1))).exit_code == 0
        assert HillClimb.configured[-1] == {"step": 0.1}  # the short form: defaults


def test_a_raising_tuner_ends_its_search_with_a_line_naming_it(cli, write_spec):
    with plugins.registered(TunerPlugin(), name="acme"):
        done = cli("submit", "--json", str(tuning_job(write_spec, "acme.raising")))
    assert done.exit_code == 1 and "Traceback" not in done.output
    run = json.loads(done.stdout)
    assert (run["state"], run["reason"]) == ("FAILED", "tuner 'acme.raising' (plugin acme) raised KeyError: 'x'")
    events = [e["reason"] for e in json.loads(cli("runs", "show", run["id"], "--json").stdout)["events"]]
    [kept] = [e for e in events if e.startswith("tuner 'acme.raising' (plugin acme) raised KeyError: 'x'; traceback:")]
    assert 'raise KeyError("x")' in kept


class RaisingStopper(EarlyStopper):
    name = "acme.stopper"

    def should_stop(self, trial, others, goal, settings) -> str | None:
        raise ZeroDivisionError("division by zero")


class StopperPlugin:
    @hookimpl
    def mlrt_early_stoppers(self) -> list[EarlyStopper]:
        return [RaisingStopper()]


def test_a_raising_early_stopper_ends_its_search_and_cancels_the_running_trial(cli, write_spec):
    path = tuning_job(write_spec, "acme.hillclimb", 1)
    document = yaml.safe_load(path.read_text())
    document["spec"]["early_stopping"] = {"algorithm": "acme.stopper"}
    document["spec"]["template"] = {  # logs step 0, then runs until cancelled
        "command": [sys.executable, "-c", "import time; print('step=0 score=1.0', flush=True); time.sleep(300)"],
        "metrics": [{"name": "score", "regex": "step=(?P<step>\\d+) score=(?P<value>[0-9.]+)"}],
    }
    path.write_text(yaml.safe_dump(document))
    with plugins.registered(TunerPlugin(), name="acme"), plugins.registered(StopperPlugin(), name="acme-stop"):
        done = cli("submit", "--json", str(path))
    run = json.loads(done.stdout)
    assert run["state"] == "FAILED" and "Traceback" not in done.output
    assert run["reason"].startswith(
        "early stopper 'acme.stopper' (plugin acme-stop) raised ZeroDivisionError: division by zero"
    )
    assert [trial.state for trial in Store().trials(run["id"])] == ["CANCELLED"]


class BrokenReport(Report):
    name = "acme_broken"

    def build(self, data) -> dict[str, Any]:
        raise KeyError("column")


class OnFire(DataScheme):
    scheme = "onfire"
    settings = {"heat": Hyperparameter(int, 3, min=1, max=5)}

    def check(self, uri: str) -> str | None:
        return None

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        raise OSError("disk on fire")


class FailingPlugin:
    @hookimpl
    def mlrt_reports(self) -> list[Report]:
        return [BrokenReport()]

    @hookimpl
    def mlrt_data_schemes(self) -> list[DataScheme]:
        return [OnFire()]


PREDICTIONS = (
    "import os, pandas; pandas.DataFrame({'id': ['1', '2'], 'split': ['validation'] * 2, 'label': [0, 1],"
    " 'prediction': [0, 0]}).to_parquet(os.environ['MLRT_OUTPUT_DIR'] + '/predictions.parquet')"
)


def training_job(write_spec, name: str = "job", **spec: Any) -> Path:
    document = {"apiVersion": "mlrt/v1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}
    return write_spec(yaml.safe_dump(document), name=f"{name}.yaml")


def test_a_raising_report_is_skipped_with_a_line_naming_it(cli, write_spec):
    spec = training_job(write_spec, command=[sys.executable, "-c", PREDICTIONS], reports=["acme_broken"])
    with plugins.registered(FailingPlugin(), name="acme"):
        done = cli("submit", "--json", str(spec))
        run = json.loads(done.stdout)
        assert run["state"] == "SUCCEEDED", run["reason"]
        result = json.loads(cli("report", run["id"], "--json").stdout)["acme_broken"]
        shown = cli("report", run["id"]).output
    line = "failed: report 'acme_broken' (plugin acme) raised KeyError: 'column' (traceback: acme_broken.traceback.txt)"
    assert result == {"report": "acme_broken", "skipped": line}
    assert f"acme_broken: {line}" in " ".join(shown.split())  # the summary says so
    artifacts = json.loads(cli("artifacts", run["id"], "--json").stdout)
    assert "reports/acme_broken.traceback.txt" in {a["path"] for a in artifacts}


def test_a_data_scheme_has_settings_in_its_query_and_its_failure_is_named(cli, write_spec):
    assert OnFire().settings_of("onfire://x?heat=4") == ({"heat": 4}, [])
    assert OnFire().settings_of("onfire://x") == ({"heat": 3}, [])
    command = [sys.executable, "-c", "pass"]
    hot = training_job(write_spec, "hot", command=command, data={"train": "onfire://x?heat=9&x=1"})
    spec = training_job(write_spec, command=command, data={"train": "onfire://x"})
    with plugins.registered(FailingPlugin(), name="acme"):
        refused = cli("validate", str(hot))
        shown = cli("plugins", "show", "onfire").output
        done = cli("submit", "--json", str(spec))
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [
        "error: spec.data.train: query parameter 'heat' must be <= 5, got 9",
        "error: spec.data.train: unknown query parameter 'x' (allowed: heat)",
    ]
    assert "settings (the URI's query (?name=value&...))" in shown and "heat" in shown
    run = json.loads(done.stdout)
    assert run["state"] == "FAILED" and "Traceback" not in done.output
    assert (
        "data channel 'train' (onfire://x): data scheme 'onfire' (plugin acme) raised OSError: disk on fire"
        in (run["reason"])
    )


class Wrapper:
    """A hook wrapper around every plugin's ``mlrt_tuners``: hides the built-in grid tuner."""

    @hookimpl(wrapper=True)
    def mlrt_tuners(self):
        answers = yield
        return [[tuner for tuner in answer if tuner.name != "grid"] for answer in answers]


def test_registration_hooks_run_through_pluggy_with_wrappers():
    assert "grid" in plugins.tuners()
    with plugins.registered(Wrapper(), name="wrapper"):
        assert set(plugins.tuners()) == {"random", "tpe", "nsga2"}
    assert "grid" in plugins.tuners()


# -- checks when plugins load, and the plugin environment variables (a real distribution) --

MALFORMED = """
from mlrt import hookimpl
from mlrt.algorithms import Algorithm, Hyperparameter
from mlrt.tuning import Tuner


class Bad(Algorithm):
    name = "acme.bad"
    task = "classification"
    hyperparameters = {
        "a": Hyperparameter(list),
        "b": Hyperparameter(float, 5.0, min=0.0, max=1.0),
        "c": Hyperparameter(int, 1, min=0.5, max=3),
        "d": Hyperparameter(float, min=2.0, max=1.0),
        "e": Hyperparameter(str, 3),
        "f": {"type": "float", "default": 1.0},
    }

    def train(self, ctx):
        raise AssertionError("never reached")


class Good(Bad):
    name = "acme.good"
    hyperparameters = {"n": Hyperparameter(int, 2, min=1, max=9)}


class Shapeless(Tuner):
    name = "acme.shapeless"
    settings = ["step"]
    start = suggest = observe = lambda *args: None


@hookimpl
def mlrt_algorithms():
    return [Bad(), Good()]


@hookimpl
def mlrt_tuners():
    return [Shapeless()]
"""


def install(site: Path) -> None:
    """The fake distribution ``mlrt-acme`` 0.1.0 with the entry point ``acme`` in ``site``."""
    info = site / "mlrt_acme-0.1.0.dist-info"
    info.mkdir(parents=True)
    (site / "acme_plugin.py").write_text(MALFORMED)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlrt-acme\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[mlrt]\nacme = acme_plugin\n")


def mlrt(tmp_path: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Not mlrt's settings, but the session's resident folder (conftest stops what starts there).
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLRT_") or k == "MLRT_RESIDENT_DIR"}
    environment.update(MLRT_HOME=str(home), PYTHONPATH=str(tmp_path / "site"), **env)
    return subprocess.run([str(MLRT), *args], capture_output=True, text=True, env=environment, timeout=90, cwd=tmp_path)


def test_plugins_check_names_every_malformed_schema_and_the_item_stays_out(tmp_path: Path, home: Path):
    install(tmp_path / "site")
    where = "plugin acme (mlrt-acme 0.1.0)"
    done = mlrt(tmp_path, home, "plugins", "--check", MLRT_LOAD_PLUGINS="acme")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"{where}: algorithm 'acme.bad' hyperparameter 'a': type must be float, int, str or bool, got list",
        f"{where}: algorithm 'acme.bad' hyperparameter 'b': default 5.0 must be <= 1.0, got 5.0",
        f"{where}: algorithm 'acme.bad' hyperparameter 'c': min of an int must be a whole number, got 0.5",
        f"{where}: algorithm 'acme.bad' hyperparameter 'd': min (2.0) is above max (1.0)",
        f"{where}: algorithm 'acme.bad' hyperparameter 'e': default 3 must be a str, got 3",
        f"{where}: algorithm 'acme.bad' hyperparameter 'f': must be an mlrt.algorithms.Hyperparameter, got dict",
        f"{where}: tuner 'acme.shapeless': its schema must be a mapping of name -> Hyperparameter, got list",
    ]
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent(
            """\
            apiVersion: mlrt/v1
            kind: TrainingJob
            metadata: {name: bad}
            spec: {algorithm: acme.bad, compute: {backend: local}}
            """
        )
    )
    refused = mlrt(tmp_path, home, "validate", str(job), MLRT_LOAD_PLUGINS="acme,local")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(
        f"error: spec.algorithm: algorithm 'acme.bad' is unusable: {where}: algorithm 'acme.bad' hyperparameter 'a':"
    )
    listed = mlrt(tmp_path, home, "plugins", MLRT_LOAD_PLUGINS="acme")
    assert "7 problem(s) with the installed plugins: mlrt plugins --check" in listed.stdout
    clean = mlrt(tmp_path, home, "plugins", "--check", MLRT_DISABLE_PLUGINS="acme")
    assert (clean.returncode, clean.stdout) == (0, "no problems found in the installed plugins\n"), clean.stderr


def test_plugin_variables_warn_trace_and_keep_builtins_listed(tmp_path: Path, home: Path):
    install(tmp_path / "site")
    job = tmp_path / "job.yaml"
    job.write_text("apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec: {command: [python, t.py]}\n")
    done = mlrt(tmp_path, home, "validate", str(job), MLRT_LOAD_PLUGINS="acme", MLRT_DISABLE_PLUGINS="acmee")
    assert done.returncode == 2
    warning, error = done.stderr.splitlines()
    assert warning.startswith("warning: MLRT_DISABLE_PLUGINS names no installed plugin: acmee (installed: acme, ")
    assert error.startswith("error: spec.compute.backend: backend 'local' is not registered: its plugin local (mlrt ")
    assert error.endswith(") is not loaded (not named in MLRT_LOAD_PLUGINS); add it to MLRT_LOAD_PLUGINS")
    listed = json.loads(mlrt(tmp_path, home, "plugins", "--json", MLRT_LOAD_PLUGINS="acme").stdout)
    local = [row for row in listed if row["name"] == "local"]
    assert local == [{**local[0], "loaded": False, "why": "not named in MLRT_LOAD_PLUGINS", "provides": {}}]
    traced = mlrt(tmp_path, home, "plugins", MLRT_LOAD_PLUGINS="acme", MLRT_TRACE_HOOKS="1")
    assert "mlrt_tuners [hook]" in traced.stderr and "finish mlrt_tuners -->" in traced.stderr
