"""Mistakes the CLI catches at once with one line (exit 2) instead of later or in silence:
report columns that the data does not have, and a metric key a run never logged."""

from __future__ import annotations

import json

import pandas as pd

from mlrt import plugins
from mlrt.spec import load_spec
from mlrt.states import RunState
from mlrt.store import Store
from mlrt.submission import submit

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {name: columns}
spec:
  algorithm: sklearn.logistic_regression
  data: {train: train.csv, validation: validation.csv}
  reports: [slices, fairness, error_categories]
  slices: [region, {column: agee, bins: 4}]
  protected: [sexx]
  tags: {rules: {senior: {column: age, min: 65}, linked: {column: txt, contains: "http"}}}
"""


def test_report_columns_missing_from_the_data_are_refused_before_anything_runs(cli, write_spec, tmp_path):
    frame = pd.DataFrame({"region": ["n", "s"], "age": [30, 70], "sex": ["f", "m"], "label": [0, 1]})
    for name in ("train", "validation"):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    spec = write_spec(SPEC)
    for command in ("validate", "submit"):
        result = cli(command, str(spec))
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 6, lines  # agee, sexx and txt, in each of the two channels
        assert "error: spec.slices.1.column: no column 'agee' in data channel train (" in lines[0]
        assert "has: region, age, sex, label)" in lines[0]
        assert any(line.startswith("error: spec.protected.0: no column 'sexx'") for line in lines)
        assert any(line.startswith("error: spec.tags.rules.linked.column: no column 'txt'") for line in lines)
        assert "Traceback" not in result.output
    assert json.loads(cli("runs", "list", "--json").stdout) == [], "nothing was queued"
    fixed = cli(
        "validate",
        str(spec),
        "--set",
        "spec.slices=[region]",
        "--set",
        "spec.protected=[sex]",
        "--set",
        "spec.tags.rules.linked.column=region",
    )
    assert fixed.exit_code == 0, fixed.output


def test_metrics_of_a_key_the_run_never_logged_is_an_error_that_lists_its_keys(cli, write_spec):
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: keys}\nspec:\n  command: [python, -c, pass]\n"
    )
    store = Store()
    run_id = submit(store, load_spec(str(spec)))
    store.insert_metrics(run_id, [("val_acc", 0, 0.5, 0.0), ("loss", 0, 1.0, 0.0)])
    result = cli("metrics", run_id, "--key", "val_loss")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: run {run_id} has no metric 'val_loss' yet (its metrics: loss, val_acc)"
    store.update_run(run_id, state=RunState.SUCCEEDED.value)
    assert "no metric 'val_loss' (its" in cli("metrics", run_id, "--key", "val_loss", "--json").stderr
    assert json.loads(cli("metrics", run_id, "--key", "loss", "--json").stdout)[0]["value"] == 1.0


def test_a_kubernetes_job_without_cluster_credentials_is_refused_at_submit(cli, write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = write_spec(
        "apiVersion: mlrt/v1\nkind: TrainingJob\nmetadata: {name: kube}\nspec:\n"
        "  algorithm: sklearn.logistic_regression\n  data: {train: 'builtin://sklearn/iris?split=train'}\n"
        "  compute: {backend: kubernetes}\n"
    )
    assert cli("validate", str(spec), "--manifests").exit_code == 0, "planning needs no cluster"
    result = cli("submit", str(spec))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: spec.compute.backend: kubernetes: no usable cluster credentials here (")
    assert "set KUBECONFIG" in line
    assert json.loads(cli("runs", "list", "--json").stdout) == [], "nothing was queued"


def test_credentials_are_read_again_when_the_kubeconfig_changes(tmp_path, monkeypatch):
    """A service checks credentials for every submission and rereads them only when their file
    changed: a kubeconfig removed or emptied after a passing check is refused at once."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    launcher = plugins.launchers()["kubernetes"]
    assert launcher.preflight({}) is None
    assert launcher.preflight({}) is None
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n")
    assert "no usable cluster credentials" in launcher.preflight({})
    config.unlink()
    assert "no usable cluster credentials" in launcher.preflight({})


def test_the_kubernetes_client_follows_the_kubeconfig_it_is_pointed_at(tmp_path, monkeypatch):
    """One process serving several commands (the resident process) talks to the cluster the
    credentials name now, not the one they named before."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    launcher = plugins.launchers()["kubernetes"]
    servers = []
    for port in (6443, 7443):
        config = tmp_path / f"kubeconfig-{port}"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        )
        monkeypatch.setenv("KUBECONFIG", str(config))
        servers.append(launcher.cluster.api.configuration.host)
        assert launcher.cluster is launcher.cluster, "made again only when the credentials change"
    assert servers == ["https://127.0.0.1:6443", "https://127.0.0.1:7443"]
