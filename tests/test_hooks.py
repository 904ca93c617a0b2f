"""Every hook through mlrt's public surface, with throwaway plugin objects.

Each test registers a small plugin object with ``mlrt.plugins.registered``
(in this process only) and drives mlrt as a user would: loading a spec,
submitting it, running the embedded controller, or invoking the CLI. Hooks
run in the controller process, which here is the test process; algorithm
``train`` runs in a worker subprocess, so algorithms registered this way are
checked at validation time only (tests/test_example_plugin.py installs a real
algorithm plugin package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
import yaml
from click.testing import CliRunner

from mlrt import hookimpl, plugins
from mlrt.algorithms import Algorithm, Hyperparameter, TrainContext
from mlrt.cli import _register
from mlrt.cli import cli as root
from mlrt.controller import Controller
from mlrt.data import DataScheme
from mlrt.launchers import LaunchContext, LaunchRequest
from mlrt.plugins import PluginError
from mlrt.records import RunRecord
from mlrt.spec import SpecError, load_spec
from mlrt.store import Store
from mlrt.submission import submit
from mlrt_local import LocalLauncher

# ``home`` (conftest, autouse) points MLRT_HOME at a fresh folder for every test.


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/db.sqlite")


def spec_file(folder: Path, spec: dict[str, Any], name: str = "hook-test") -> Path:
    """Write a TrainingJob with this ``spec`` section to ``folder/NAME.yaml``."""
    path = folder / f"{name}.yaml"
    document = {"apiVersion": "mlrt/v1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(document))
    return path


def command_spec(code: str, **extra: Any) -> dict[str, Any]:
    """A ``command:`` job running ``python -c CODE``."""
    return {"command": [sys.executable, "-c", code], **extra}


def run_job(store: Store, spec_path: Path) -> RunRecord:
    """Validate, submit and drive the job to the end with an in-process controller."""
    run_id = submit(store, load_spec(spec_path))
    Controller(store, poll_interval=0.02).run_until_done([run_id])
    return RunRecord.load(store, run_id)


def invoke(*args: str):
    """Run ``mlrt ARGS`` in-process, with built-in and plugin commands registered."""
    _register()
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


# -- mlrt_commands --------------------------------------------------------------


class GreetCommand:
    """Adds ``mlrt greet NAME``; remembers which commands existed when it was called."""

    def __init__(self) -> None:
        self.saw: list[list[str]] = []

    @hookimpl
    def mlrt_commands(self, cli: click.Group) -> None:
        self.saw.append(sorted(cli.commands))

        @cli.command("greet")
        @click.argument("name")
        def greet(name: str) -> None:
            """Say hello."""
            click.echo(f"hello {name}")


def test_mlrt_commands_adds_a_command_after_the_builtins():
    plugin = GreetCommand()
    try:
        with plugins.registered(plugin, name="greeter"):
            result = invoke("greet", "world")
            assert result.exit_code == 0, result.output
            assert result.output == "hello world\n"
            assert "greet" in invoke("--help").output
            assert {"submit", "validate", "runs", "plugins"} <= set(plugin.saw[0])
            rows = {row["name"]: row for row in json.loads(invoke("plugins", "--json").output)}
            assert rows["greeter"]["hooks"] == ["mlrt_commands"]
    finally:
        root.commands.pop("greet", None)


# -- mlrt_run_started / mlrt_run_finished -----------------------------------------


class Recorder:
    """Remembers every lifecycle notification with what the run looked like then."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, RunRecord, int]] = []

    @hookimpl
    def mlrt_run_started(self, run: RunRecord) -> None:
        self.calls.append(("started", run, os.getpid()))

    @hookimpl
    def mlrt_run_finished(self, run: RunRecord) -> None:
        self.calls.append(("finished", run, os.getpid()))


def test_mlrt_run_started_and_mlrt_run_finished_are_called_in_the_controller(store: Store, tmp_path: Path):
    recorder = Recorder()
    spec = spec_file(tmp_path, command_spec("print('ok')", hyperparameters={"lr": 0.1}))
    with plugins.registered(recorder, name="recorder"):
        record = run_job(store, spec)
    assert record.state == "SUCCEEDED"
    assert [(hook, run.state) for hook, run, _ in recorder.calls] == [("started", "RUNNING"), ("finished", "SUCCEEDED")]
    started, finished = recorder.calls[0][1], recorder.calls[1][1]
    assert started.id == finished.id == record.id
    assert started.attempts == 1 and started.params == {"lr": "0.1"}
    assert finished.reason == record.reason and finished.ended_at is not None
    assert {pid for _, _, pid in recorder.calls} == {os.getpid()}


def test_mlrt_run_started_per_attempt_and_mlrt_run_finished_once_with_the_reason(store: Store, tmp_path: Path):
    recorder = Recorder()
    spec = spec_file(tmp_path, command_spec("raise SystemExit(3)", retries={"max": 1, "backoff": 0.05, "on": "any"}))
    with plugins.registered(recorder, name="recorder"):
        record = run_job(store, spec)
    assert record.state == "FAILED"
    assert [(hook, run.state, run.attempts) for hook, run, _ in recorder.calls] == [
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("finished", "FAILED", 2),
    ]
    reason = recorder.calls[-1][1].reason
    assert "exited with code 3" in reason and "after 2 attempts" in reason


class BrokenFinished:
    @hookimpl
    def mlrt_run_finished(self, run: RunRecord) -> None:
        raise RuntimeError("notification service is down")


def test_a_failing_mlrt_run_finished_hook_is_an_event_not_a_failure(store: Store, tmp_path: Path):
    with plugins.registered(BrokenFinished(), name="broken"):
        record = run_job(store, spec_file(tmp_path, command_spec("pass")))
    assert record.state == "SUCCEEDED"
    reasons = [event.reason for event in store.events(record.id)]
    line = "mlrt_run_finished hook of plugin broken raised RuntimeError: notification service is down; traceback:"
    [event] = [reason for reason in reasons if reason.startswith(line)]
    assert 'raise RuntimeError("notification service is down")' in event  # the traceback is kept


class BrokenStarted:
    @hookimpl
    def mlrt_run_started(self, run: RunRecord) -> None:
        raise RuntimeError("notification service is down")


def test_a_failing_mlrt_run_started_hook_is_an_event_not_a_failure(store: Store, tmp_path: Path):
    with plugins.registered(BrokenStarted(), name="broken"):
        record = run_job(store, spec_file(tmp_path, command_spec("pass")))
    assert record.state == "SUCCEEDED"
    assert any("mlrt_run_started" in event.reason for event in store.events(record.id))


# -- mlrt_reports / mlrt_tuners ----------------------------------------------------


class Report:
    name = "example_slices"
    description = "metrics per slice of the validation set"


class ReportPlugin:
    @hookimpl
    def mlrt_reports(self) -> list[Any]:
        return [Report()]


def test_mlrt_reports_names_are_valid_in_spec_reports(tmp_path: Path):
    path = spec_file(tmp_path, command_spec("pass", reports=["example_slices", "nope"]))
    with plugins.registered(ReportPlugin(), name="example_reports"):
        assert "example_slices" in plugins.reports()
        with pytest.raises(SpecError) as caught:
            load_spec(path)
        problems = [p for p in caught.value.problems if p.startswith("spec.reports.")]
        assert len(problems) == 1 and problems[0].startswith("spec.reports.1: unknown report 'nope' (registered: ")
        assert "example_slices" in problems[0] and "slices" in problems[0]
        loaded = load_spec(path, ["spec.reports=[example_slices]"])
        assert loaded.resolved()["spec"]["reports"] == ["example_slices"]
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["spec.reports=[example_slices]"])
    assert any(p.startswith("spec.reports.0: unknown report 'example_slices'") for p in caught.value.problems)


class Tuner:
    name = "example_random"
    description = "uniform random search"


class TunerPlugin:
    @hookimpl
    def mlrt_tuners(self) -> list[Any]:
        return [Tuner()]


def test_mlrt_tuners_registers_a_listed_tuner(tmp_path: Path):
    builtin = set(plugins.tuners())
    with plugins.registered(TunerPlugin(), name="example-tuners"):
        assert set(plugins.tuners()) == builtin | {"example_random"}
        result = invoke("plugins", "--json")
        assert result.exit_code == 0, result.output
        rows = {row["name"]: row for row in json.loads(result.output)}
        assert rows["example-tuners"]["hooks"] == ["mlrt_tuners"]
        assert rows["example-tuners"]["provides"] == {"tuners": ["example_random"]}
    assert set(plugins.tuners()) == builtin


# -- mlrt_algorithms ----------------------------------------------------------------


class Constant(Algorithm):
    """Predicts one class; enough to check how mlrt treats a registered schema."""

    name: ClassVar[str] = "test.constant"
    task: ClassVar[str] = "classification"
    hyperparameters = {
        "label": Hyperparameter(int, 0, min=0),
        "strategy": Hyperparameter(str, "constant", choices=("constant", "most_frequent")),
    }

    def train(self, ctx: TrainContext) -> Any:  # pragma: no cover - runs only in a worker
        from sklearn.dummy import DummyClassifier

        train = ctx.channels["train"]
        return DummyClassifier(strategy=ctx.hyperparameters["strategy"], constant=ctx.hyperparameters["label"]).fit(
            train.features, train.labels
        )


class AlgorithmPlugin:
    def __init__(self, *algorithms: Algorithm) -> None:
        self.algorithms = list(algorithms)

    @hookimpl
    def mlrt_algorithms(self) -> list[Algorithm]:
        return self.algorithms


def algorithm_spec(**hyperparameters: Any) -> dict[str, Any]:
    return {
        "algorithm": "test.constant",
        "data": {"train": "builtin://sklearn/iris?split=train"},
        "hyperparameters": hyperparameters,
    }


def test_mlrt_algorithms_schema_validates_and_fills_defaults(tmp_path: Path):
    with plugins.registered(AlgorithmPlugin(Constant()), name="constant"):
        loaded = load_spec(spec_file(tmp_path, algorithm_spec(label=2)))
        assert loaded.hyperparameters == {"label": 2, "strategy": "constant"}
        with pytest.raises(SpecError) as caught:
            load_spec(spec_file(tmp_path, algorithm_spec(label=-1, depth=3)))
        assert sorted(caught.value.problems) == [
            "spec.hyperparameters.depth: unknown hyperparameter for test.constant (allowed: label, strategy)",
            "spec.hyperparameters.label: must be >= 0, got -1",
        ]
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file(tmp_path, algorithm_spec()))
    assert caught.value.problems[0].startswith("spec.algorithm: unknown algorithm 'test.constant'")


def test_duplicate_algorithm_names_name_both_plugins():
    first, second = AlgorithmPlugin(Constant()), AlgorithmPlugin(Constant())
    with plugins.registered(first, name="first"), plugins.registered(second, name="second"):
        with pytest.raises(PluginError) as caught:
            plugins.algorithms()
    message = str(caught.value)
    assert "'test.constant'" in message and "'first'" in message and "'second'" in message


def test_duplicate_between_two_plugins_is_a_one_line_cli_error():
    class Clash(Constant):
        name = "acme.same_name"

    with plugins.registered(AlgorithmPlugin(Clash()), name="clash-a"):
        with plugins.registered(AlgorithmPlugin(Clash()), name="clash-b"):
            result = invoke("plugins")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: algorithm 'acme.same_name' is registered by both ")
    assert "'clash-a'" in line and "'clash-b'" in line


def test_a_registration_without_a_name_is_a_plugin_error():
    class Nameless:
        description = "no name"

    class Plugin:
        @hookimpl
        def mlrt_reports(self) -> list[Any]:
            return [Nameless()]

    with plugins.registered(Plugin(), name="nameless"):
        with pytest.raises(PluginError, match="'nameless' registered a report without a name"):
            plugins.reports()


# -- mlrt_launchers --------------------------------------------------------------------


class RecordingLauncher(LocalLauncher):
    """The local backend under another name, remembering what the controller asked of it."""

    name: ClassVar[str] = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.contexts: list[LaunchContext] = []

    def plan(self, ctx: LaunchContext) -> LaunchRequest:
        self.calls.append("plan")
        self.contexts.append(ctx)
        return super().plan(ctx)

    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        self.calls.append("launch")
        return super().launch(request)

    def cleanup(self, handle: dict[str, Any]) -> None:
        self.calls.append("cleanup")
        super().cleanup(handle)


class LauncherPlugin:
    def __init__(self) -> None:
        self.launcher = RecordingLauncher()

    @hookimpl
    def mlrt_launchers(self) -> list[Any]:
        return [self.launcher]


def test_mlrt_launchers_backend_plans_for_validate_and_launches_for_submit(store: Store, tmp_path: Path):
    plugin = LauncherPlugin()
    spec = spec_file(
        tmp_path, command_spec("import os; assert os.environ['RANK'] == '0'", compute={"backend": "recording"})
    )
    with plugins.registered(plugin, name="recording"):
        result = invoke("validate", "--json", str(spec))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["launch"]["backend"] == "recording"
        assert plugin.launcher.calls == ["plan"]  # validate plans and launches nothing

        record = run_job(store, spec)
    assert record.state == "SUCCEEDED", record.reason
    assert plugin.launcher.calls == ["plan", "plan", "launch", "cleanup"]
    ctx = plugin.launcher.contexts[-1]
    assert ctx.run_id == record.id and ctx.attempt == 1
    assert ctx.env["MLRT_RUN_ID"] == record.id and ctx.compute["backend"] == "recording"
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert caught.value.problems[0].startswith("spec.compute.backend: unknown backend 'recording'")


# -- mlrt_data_schemes ----------------------------------------------------------------


class ConstScheme(DataScheme):
    """``const://TEXT``: a one-file channel whose content is TEXT."""

    scheme: ClassVar[str] = "const"

    def check(self, uri: str) -> str | None:
        return None if uri.removeprefix("const://") else "const:// needs some text after it"

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        path = cache_dir / "const" / "channel.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uri.removeprefix("const://"))
        return path


class SchemePlugin:
    @hookimpl
    def mlrt_data_schemes(self) -> list[DataScheme]:
        return [ConstScheme()]


def test_mlrt_data_schemes_scheme_checks_and_materializes_channels(store: Store, tmp_path: Path, home: Path):
    code = "import os; assert open(os.environ['MLRT_CHANNEL_TRAIN']).read() == 'a,b'"
    good = spec_file(tmp_path, command_spec(code, data={"train": "const://a,b"}), name="good")
    empty = spec_file(tmp_path, command_spec(code, data={"train": "const://"}), name="empty")
    with plugins.registered(SchemePlugin(), name="const"):
        with pytest.raises(SpecError) as caught:
            load_spec(empty)
        assert caught.value.problems == ["spec.data.train: const:// needs some text after it"]
        record = run_job(store, good)
    assert record.state == "SUCCEEDED", record.reason
    assert (home / "cache" / "const" / "channel.csv").read_text() == "a,b"


# -- broken plugins ------------------------------------------------------------------
# A user who installs a broken plugin should get one line naming it and exit 2 from
# every command, never a traceback. These install fake distributions (a module and
# its dist-info with an ``mlrt`` entry point) in a folder on PYTHONPATH.

BROKEN = {
    "import_fails": "import not_installed_dependency\n",
    "bad_argument": "from mlrt import hookimpl\n\n@hookimpl\ndef mlrt_run_finished(record):\n    pass\n",
    "hook_raises": (
        "from mlrt import hookimpl\n\n@hookimpl\ndef mlrt_algorithms():\n"
        "    raise RuntimeError('cannot build my algorithms')\n"
    ),
    "misspelled": "from mlrt import hookimpl\n\n@hookimpl\ndef mlrt_algorithm():\n    return []\n",
}


def broken_plugin(tmp_path: Path, home: Path, name: str) -> subprocess.CompletedProcess[str]:
    """Run ``mlrt plugins`` with only the built-ins and the broken plugin ``name`` installed."""
    site = tmp_path / "site"
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{name}.py").write_text(BROKEN[name])
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mlrt]\n{name} = {name}\n")
    # Not mlrt's settings, but the session's resident folder (conftest stops what starts there).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRT_") or k == "MLRT_RESIDENT_DIR"}
    env.update(MLRT_HOME=str(home), PYTHONPATH=str(site))
    mlrt = Path(sys.executable).parent / "mlrt"
    return subprocess.run([str(mlrt), "plugins"], capture_output=True, text=True, env=env, timeout=60)


def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path: Path, home: Path):
    done = broken_plugin(tmp_path, home, "import_fails")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: plugin 'import_fails' (import_fails) failed to load: No module named 'not_installed_dependency'"
    ]


def test_a_hook_with_a_wrong_argument_is_one_line_and_exit_2(tmp_path: Path, home: Path):
    done = broken_plugin(tmp_path, home, "bad_argument")
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert done.stderr.startswith("error: ") and "bad_argument" in done.stderr


def test_a_registration_hook_that_raises_is_one_line_and_exit_2(tmp_path: Path, home: Path):
    done = broken_plugin(tmp_path, home, "hook_raises")
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert done.stderr.startswith("error: ") and "hook_raises" in done.stderr


def test_a_misspelled_hook_is_one_line_and_exit_2(tmp_path: Path, home: Path):
    done = broken_plugin(tmp_path, home, "misspelled")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: plugin 'misspelled' implements a hook mlrt does not have")
    assert "mlrt_algorithm" in done.stderr


class FasterLocal:
    """A third-party plugin that replaces the built-in ``local`` launcher by name."""

    def __init__(self) -> None:
        from mlrt_local import LocalLauncher

        class Replacement(LocalLauncher):
            description = "a replacement local launcher"

        self.launcher = Replacement()

    @hookimpl
    def mlrt_launchers(self) -> list[Any]:
        return [self.launcher]


def test_an_installed_plugin_overrides_a_trylast_builtin_of_the_same_name():
    replacement = FasterLocal()
    with plugins.registered(replacement, name="faster-local"):
        assert plugins.launchers()["local"] is replacement.launcher
        provided = {row["name"]: row["provides"] for row in plugins.describe()}
        assert provided["faster-local"] == {"launchers": ["local"]}
        assert "launchers" not in provided["local"]
    assert plugins.launchers()["local"] is not replacement.launcher
