"""Run ids: ``NAME-`` and 80 random bits, short enough for Kubernetes, and a taken id is drawn again."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy.exc import IntegrityError

from conftest import command_spec
from mlrt import limits, submission
from mlrt.store import Store
from mlrt.store.models import Job, Run
from mlrt_container import container_name
from mlrt_kubernetes.manifests import object_name, selector

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
QUICK = "[python, -c, 'print(1)']"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_drawn_id_that_is_taken_is_drawn_again_and_nothing_is_left_half_made(
    cli, write_spec, monkeypatch, request, database
):
    db = ["--db", request.getfixturevalue("postgres_db")] if database == "postgres" else []
    spec = write_spec(command_spec("nightly", QUICK))
    first = json.loads(cli(*db, "submit", str(spec), "--json").stdout)
    real, drawn = submission.new_job_id, []

    def clashing(name: str) -> str:  # the first draw repeats the first run's id
        drawn.append(real(name) if drawn else first["id"])
        return drawn[-1]

    monkeypatch.setattr(submission, "new_job_id", clashing)
    result = cli(*db, "submit", str(spec), "--json")
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    assert second["state"] == "SUCCEEDED", second["reason"]
    assert drawn[0] == first["id"] and second["id"] == drawn[1] != first["id"]
    listed = json.loads(cli(*db, "runs", "list", "--json").stdout)
    assert sorted(r["id"] for r in listed) == sorted([first["id"], second["id"]])
    shown = json.loads(cli(*db, "runs", "show", first["id"], "--json").stdout)
    assert [e["to_state"] for e in shown["events"]].count("QUEUED") == 1  # no event of the refused insert


def test_a_given_id_that_is_taken_is_an_error_not_replaced(cli, write_spec):
    run = json.loads(cli("submit", str(write_spec(command_spec("trialish", QUICK))), "--json").stdout)
    store = Store()
    job, row = store.get_job(run["id"]), store.get_run(run["id"])

    def rows(job_id: str) -> tuple[Job, Run, dict]:
        return (
            Job(**{**job.model_dump(), "id": job_id}),
            Run(**{**row.model_dump(), "id": job_id, "job_id": job_id}),
            {},
        )

    with pytest.raises(IntegrityError):
        submission.create(store, "trialish", rows, job_id=run["id"])  # a trial's id says which trial it is
    assert submission.create(store, "trialish", rows) != run["id"]


def test_ids_of_the_longest_name_fit_kubernetes_names_labels_and_trials(cli, write_spec):
    name = "a" * 38 + "-" + "b" * 24  # 63 characters, the longest metadata.name; a dash where it is cut
    run = json.loads(cli("submit", str(write_spec(command_spec(name, QUICK))), "--json").stdout)
    run_id = run["id"]
    assert re.fullmatch(r"a{38}-[0-9a-hjkmnp-tv-z]{16}", run_id), run_id
    trial = f"{run_id}-t{limits.MAX_TRIALS}"  # the longest trial id of a tuning job of that name
    for made in (run_id, trial):
        assert len(made) <= 63 and DNS_LABEL.fullmatch(made)
        assert f"mlrt.dev/run-id={made}," in selector(made, 1)  # the label holds the whole id
        assert DNS_LABEL.fullmatch(object_name(made, 1)) and DNS_LABEL.fullmatch(container_name(made, 1, 0))
    ids = {submission.new_job_id("nightly") for _ in range(20_000)}
    assert len(ids) == 20_000 and all(len(i) == len("nightly-") + 16 for i in ids)
