"""Run every benchmark in bench/ at settings that finish in reasonable time, and write the table of figures.

    python bench/run_all.py                    # all, prints the markdown table
    python bench/run_all.py --write            # and puts it into bench/README.md (between the run_all markers)
    python bench/run_all.py --only metric_logging,tuning_overhead --full

Each benchmark runs as its own process with mlrt's interpreter (the peers come
from the peers' environment the benchmarks make, see ``_common.peers_venv``)
and ``--json``; its figures are read back from that JSON. A row gives the
headline figure, the peer's figure with the peer's configuration, the ratio,
min and median where the benchmark repeats, the load average (1 min) before
and after the benchmark, and the date. ``--full`` runs each benchmark at its
own defaults instead of the quick settings below. The scripts' own output goes
to ``bench/results/run_all/NAME.log`` (git-ignored). A benchmark that fails is
shown as failed, with its log's last line, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "run_all"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"


class Row(dict):
    """One line of the table: figure, value, min, median, peer (with its configuration), peer's value, ratio."""


def row(figure: str, value: str, *, low: str = "", mid: str = "", peer: str = "-", theirs: str = "", ratio: str = ""):
    return Row(figure=figure, value=value, min=low, median=mid, peer=peer, theirs=theirs, ratio=ratio)


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


# -- per benchmark: quick arguments, and the rows from its JSON ------------------------------------------


def launch_rows(j: dict) -> list[Row]:
    torchx, rows = j["figures"].get("torchx"), []
    peer = f"torchx {j.get('torchx_version', '')} local_cwd" if torchx else j.get("torchx", "-")
    for name, how in (("mlrt", "through the resident process"), ("mlrt-own", "in its own process")):
        mine = j["figures"][name]
        rows.append(
            row(
                f"no-op `mlrt submit --wait`, whole command, {how}",
                f"{mine['median_s']:.3f} s",
                low=f"{mine['min_s']:.3f} s",
                mid=f"{mine['median_s']:.3f} s",
                peer=peer,
                theirs=f"{torchx['median_s']:.3f} s (min {torchx['min_s']:.3f} s)" if torchx else "",
                ratio=f"{torchx['median_s'] / mine['median_s']:.2f}x faster" if torchx else "",
            )
        )
    return rows


def metric_rows(j: dict) -> list[Row]:
    by = {(c["tool"], c["database"], c["durability"], c["case"]): c for c in j["cases"]}
    rows = []
    for case, label in (("batch", "batched"), ("one", "one-by-one")):
        ours = by.get(("mlrt", "sqlite", "mlrt", case))
        if not ours:
            continue
        for durability, config in (
            ("mlrt", "WAL + synchronous=NORMAL, as mlrt"),
            ("default", "defaults: journal, synchronous=FULL"),
        ):
            theirs = by.get(("mlflow", "sqlite", durability, case))
            rows.append(
                row(
                    f"metric points/s, {label}, SQLite (WAL + NORMAL; durable at flush())",
                    n(ours["points_per_s_median"]),
                    low=n(ours["points_per_s_min"]),
                    mid=n(ours["points_per_s_median"]),
                    peer=f"MLflow {'log_batch' if case == 'batch' else 'log_metric'}, SQLite {config}; "
                    f"{theirs['when_durable'] if theirs else ''}",
                    theirs=n(theirs["points_per_s_median"]) if theirs else "not run",
                    ratio=f"{ours['points_per_s_median'] / theirs['points_per_s_median']:.1f}x" if theirs else "",
                )
            )
    for case, label in (("batch", "batched (COPY)"), ("one", "one-by-one")):
        ours = by.get(("mlrt", "postgresql", "fsync", case))
        if ours:
            rows.append(
                row(
                    f"metric points/s, {label}, PostgreSQL (synchronous_commit=on; durable at flush()); goal >= 100k",
                    n(ours["points_per_s_median"]),
                    low=n(ours["points_per_s_min"]),
                    mid=n(ours["points_per_s_median"]),
                )
            )
    return rows


def tuning_rows(j: dict) -> list[Row]:
    ms, low, rows = j["ms_per_trial_median"], j["ms_per_trial_min"], []
    for sampler, optuna_name in (("tpe", "TPE"), ("random", "random")):
        for durability, config in (("", "WAL + NORMAL, as mlrt"), ("_default", "defaults: journal, synchronous=FULL")):
            theirs = f"optuna_sqlite{durability}_{sampler}"
            rows.append(
                row(
                    f"ms/trial, {sampler}, whole `mlrt submit` / {j['trials']} trials (start-up included)",
                    f"{ms[f'mlrt_warm_{sampler}']:.1f} ms",
                    low=f"{low[f'mlrt_warm_{sampler}']:.1f} ms",
                    mid=f"{ms[f'mlrt_warm_{sampler}']:.1f} ms",
                    peer=f"Optuna {j['optuna_version']} {optuna_name}, optimize(), SQLite {config}",
                    theirs=f"{ms[theirs]:.1f} ms",
                    ratio=f"{ms[f'mlrt_warm_{sampler}'] / ms[theirs]:.2f}x",
                )
            )
    return rows


def torch_rows(j: dict) -> list[Row]:
    rows = []
    for model, f in j["models"].items():
        rows.append(
            row(
                f"{model}: training samples/s, plugin's own figure (and end to end)",
                f"{n(f['mlrt']['samples_per_second_median'])} ({n(f['mlrt']['end_to_end_samples_per_second_median'])})",
                low=n(min(f["mlrt"]["samples_per_second_runs"])),
                mid=n(f["mlrt"]["samples_per_second_median"]),
                peer="plain torch loop, same batches",
                theirs=n(f["plain"]["samples_per_second_median"]),
                ratio=f"{f['ratio_mlrt_to_plain']:.3f} (end to end {f['end_to_end_ratio_mlrt_to_plain']:.3f})",
            )
        )
    return rows


def tuner_rows(j: dict) -> list[Row]:
    rows = []
    for objective, f in j["objectives"].items():
        budgets = f["by_budget"]
        last = max(budgets, key=int)
        columns = budgets[last]["columns"]
        theirs = columns.get("optuna tpe")
        rows.append(
            row(
                f"{objective}: best after {last} trials, tpe (mean over seeds)",
                f"{columns['tpe']['mean']:.4f}",
                mid=f"{columns['tpe']['median']:.4f}",
                peer="Optuna TPESampler (in process)" if theirs else "-",
                theirs=f"{theirs['mean']:.4f}" if theirs else "",
            )
        )
    return rows


def controller_rows(j: dict) -> list[Row]:
    rows = []
    for r in j.get("rounds", []):
        rows.append(
            row(
                f"controller, {r['jobs']} jobs {r['round']}: submissions/s; launches/s",
                f"{r['submissions_per_s']:.1f}; {r['launches_per_s']:.1f}",
            )
        )
    return rows


def everyday_rows(j: dict) -> list[Row]:
    rows = []
    for result in j["results"]:
        for name, by_label in result["commands"].items():
            for label, f in by_label.items():
                rows.append(
                    row(
                        f"`mlrt {name}` ({result['db']}, {label}) whole process",
                        f"{f['median_s']:.3f} s",
                        low=f"{f['min_s']:.3f} s",
                        mid=f"{f['median_s']:.3f} s",
                    )
                )
    return rows


def reports_rows(j: dict) -> list[Row]:
    return [
        row(
            f"all reports on {j['rows']:,} rows x {j['features']} features: wall; peak memory",
            f"{j['wall_s']:.1f} s; {j['peak_rss_gib']:.2f} GiB",
        )
    ]


BENCHMARKS: dict[str, tuple[list[str], Callable[[dict], list[Row]]]] = {
    # name: (quick arguments, rows from its JSON)
    "launch_overhead": (["-n", "10"], launch_rows),
    "metric_logging": (["-n", "3", "--points", "50000"], metric_rows),
    "tuning_overhead": (["-t", "20", "-n", "3"], tuning_rows),
    "torch_throughput": (["-n", "2", "--epochs", "4", "--rows", "10000"], torch_rows),
    "tuner_efficiency": (["--seeds", "5", "--budgets", "10,20"], tuner_rows),
    "controller_service": (["--jobs", "200", "--rounds", "concurrent", "--no-schema-check"], controller_rows),
    "everyday_commands": (["--runs", "1000", "--points", "100000", "-n", "3"], everyday_rows),
    "reports_scale": (["--rows", "100000"], reports_rows),
}


def run_one(name: str, full: bool) -> dict:
    quick, to_rows = BENCHMARKS[name]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out, log = RESULTS / f"{name}.json", RESULTS / f"{name}.log"
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(BENCH / f"{name}.py"), *([] if full else quick), "--json", str(out)]
    load_before = os.getloadavg()[0]
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    print(f"{started_at:%H:%M:%S} {name}: {' '.join(argv[1:])} (load {load_before:.1f})", flush=True)
    with log.open("w") as sink:
        code = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=BENCH.parent).returncode
    took = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    result = {"name": name, "argv": argv[1:], "exit": code, "seconds": took, "date": f"{started_at:%Y-%m-%d %H:%M} UTC"}
    result["load"] = f"{load_before:.1f} -> {load_after:.1f}"
    try:
        result["rows"] = to_rows(json.loads(out.read_text()))
    except (OSError, ValueError, KeyError, ZeroDivisionError) as exc:
        lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        result["rows"] = [row("FAILED", f"exit {code}: {lines[-1][:160]} ({type(exc).__name__})")]
    print(f"  {name}: exit {code} after {took:.0f} s; {len(result['rows'])} rows; log {log}", flush=True)
    return result


def markdown(results: list[dict], commit: str) -> str:
    lines = [
        f"Made by `python bench/run_all.py` at {commit} on {os.cpu_count()} CPUs; load = load average (1 min) "
        "before -> after the benchmark (other work on the machine shows in it; compare figures of one row, "
        "taken in the same run).",
        "",
        "| benchmark | figure | mlrt | min | median | peer (configuration) | peer | ratio | load | date |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for result in results:
        for r in result["rows"]:
            cells = [
                result["name"],
                r["figure"],
                r["value"],
                r["min"],
                r["median"],
                r["peer"],
                r["theirs"],
                r["ratio"],
                result["load"],
                result["date"],
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_readme(table: str, ran: list[str]) -> None:
    """Put ``table`` between the markers in bench/README.md, keeping the rows there of benchmarks not in ``ran``."""
    readme = BENCH / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        old = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].splitlines()
        kept = [line for line in old if line.startswith("| ") and line.split(" | ")[0][2:] in BENCHMARKS]
        kept = [line for line in kept if line.split(" | ")[0][2:] not in ran]
        block = f"{BEGIN}\n{table}{''.join(line + chr(10) for line in kept)}{END}"
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + f"\n\n## Latest figures (`run_all.py`)\n\n{BEGIN}\n{table}{END}\n"
    readme.write_text(text)
    print(f"wrote the table into {readme}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma list of benchmarks (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--full", action="store_true", help="each benchmark at its own defaults (hours, not minutes)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="put the table into bench/README.md (rows of benchmarks not run now are kept)",
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(
            f"error: --only: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})", file=sys.stderr
        )
        return 2
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    results = [run_one(name, args.full) for name in names]
    table = markdown(results, commit or "?")
    print()
    print(table)
    (RESULTS / "table.md").write_text(table)
    if args.write:
        write_readme(table, names)
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
