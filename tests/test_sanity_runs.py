"""`mlrt submit --sanity` on a `command:` job: the command reads a deterministic subsample of
every table channel (file, folder, builtin), knows it from MLRT_SANITY, and the run says so."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import command_spec
from mlrt.fetch import fetch
from mlrt.sanity import SANITY_ROWS

COUNT_ROWS = """\
import os, pathlib, sys
print("MLRT_SANITY", os.environ.get("MLRT_SANITY"))
for name in ("TRAIN", "SHARDS", "DIGITS"):
    path = pathlib.Path(os.environ["MLRT_CHANNEL_" + name])
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        rows = len(f.read_text().splitlines()) - 1 if f.suffix == ".csv" else "-"
        print("ROWS", name, f.name, rows)
"""


def write_table(path: Path, rows: int, start: int = 0) -> None:
    path.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(start, start + rows)))


def test_a_sanity_run_of_a_command_job_reads_a_subsample_of_every_channel(cli, write_spec, tmp_path):
    write_table(tmp_path / "train.csv", 1000)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_table(shards / "a.csv", 500)
    write_table(shards / "b.csv", 50, start=500)
    (shards / "README").write_text("not a table\n")
    (tmp_path / "count.py").write_text(COUNT_ROWS)
    data = (
        "  data:\n"
        f"    train: {{uri: 'file://{tmp_path / 'train.csv'}'}}\n"
        f"    shards: {{uri: 'file://{shards}'}}\n"
        "    digits: {uri: 'builtin://sklearn/digits?split=train'}\n"
    )
    spec = write_spec(command_spec("sanity-cmd", f"[python, '{tmp_path / 'count.py'}']", data))

    run = json.loads(cli("submit", str(spec), "--sanity", "--json").stdout)
    assert run["state"] == "SUCCEEDED", run["reason"]
    log = cli("logs", run["id"]).output
    assert "MLRT_SANITY 1" in log
    assert f"ROWS TRAIN train.csv {SANITY_ROWS}" in log
    assert f"ROWS SHARDS a.csv {SANITY_ROWS}" in log and "ROWS SHARDS b.csv 50" in log
    assert "ROWS SHARDS README -" in log, "a folder's other files are passed whole"
    digits = [line for line in log.splitlines() if line.startswith("ROWS DIGITS")]
    assert digits and all(line.endswith(f" {SANITY_ROWS}") for line in digits if ".csv" in line), digits

    shown = json.loads(cli("runs", "show", run["id"], "--json").stdout)
    events = [e["reason"] for e in shown["events"]]
    assert "sanity run: channel train: 200 of 1,000 rows" in events
    assert "sanity run: channel shards: 250 of 550 rows in 2 table files" in events
    assert shown["reproducibility"]["data"]["train"]["sanity"] == "200 of 1,000 rows"


def test_the_fetch_init_container_subsamples_too(tmp_path):
    write_table(tmp_path / "train.csv", 1000)
    folders = fetch(tmp_path / "data", {"train": f"file://{tmp_path / 'train.csv'}"}, sanity_seed=7)
    kept = (folders["train"] / "train.csv").read_text().splitlines()
    assert kept[0] == "x,label" and len(kept) == SANITY_ROWS + 1
    numbers = [int(line.split(",")[0]) for line in kept[1:]]
    assert numbers == sorted(numbers) and numbers != list(range(SANITY_ROWS)), "random rows, in file order"
    again = fetch(tmp_path / "again", {"train": f"file://{tmp_path / 'train.csv'}"}, sanity_seed=7)
    assert (again["train"] / "train.csv").read_text().splitlines() == kept, "the seed draws the same rows"
