"""Launch overhead of a no-op job: `mlrt submit --wait -q` vs the program run directly vs TorchX.

Run it with mlrt's interpreter; TorchX runs from the peers' virtual
environment, which the bench makes on first use (bench/_common.py
``peers_venv``), never mlrt's -- see bench/README.md:

    python bench/launch_overhead.py            # 20 repetitions
    python bench/launch_overhead.py -n 50 --json bench/results/launch.json

Every repetition runs the same program, ``<this python> noop.py`` (an empty
script), three ways, interleaved so drift on the machine hits all three alike:

* direct:    ``python noop.py``
* mlrt:      ``mlrt submit --wait -q job.yaml`` (a ``command:`` job running it), the
             way a user's second and later commands run: through the resident
             process (``mlrt.resident``) that the first one started
* mlrt-own:  the same with ``MLRT_RESIDENT=0``: every import in the command's own process
             (what the first command of a session, or every command with it off, costs)
* torchx:    ``torchx run --scheduler local_cwd utils.binary --entrypoint python noop.py``

Wall time is measured around each whole command (process start to exit), and
the CPU it used (its processes', and for the resident mode the child that ran
it in the resident process and its workers).
One untimed warm-up of each comes first; mlrt's warm-up also creates the
database and starts the resident process, so its time is shown separately
as "first run". One fresh MLRT_HOME is used for the whole benchmark run and
reused by every repetition, as a user's would be; the resident process has
a socket folder in the workdir and is stopped at the end.

The headline is the whole command, TorchX's median over mlrt's (goal: mlrt
at least 3x faster, issues 20 and 21), with the min and the median of each.
Overhead = median(tool) - median(direct). Target: mlrt's median overhead
under 0.5 s (TorchX measured about 1.45 s for a no-op).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bench_env,
    load_line,
    machine_line,
    median,
    peer_tool,
    peer_versions,
    percentile,
    start_resident,
    stop_resident,
    tool,
)

TARGET_OVERHEAD_S = 0.5

JOB_YAML = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: noop}}
spec:
  command: [{python}, noop.py]
"""


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds ``argv`` took from start to exit, and the CPU seconds it used; raises if it failed.

    The CPU counts the command's process and every process it waited for, plus, for a command
    that ran in mlrt's resident process, the child that ran it there (and its workers): the
    resident process's ``cutime + cstime`` grow by them when it reaps the child, before the
    client exits."""
    resident = _resident_pid(env)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_resident = _reaped_cpu(resident)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_children.ru_utime - before_children.ru_utime) + (after_children.ru_stime - before_children.ru_stime)
    if resident is not None and _resident_pid(env) == resident:
        cpu += _reaped_cpu(resident) - before_resident
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}:\n{output}")
    return elapsed, cpu


def _resident_pid(env: dict[str, str]) -> int | None:
    """The pid of the resident process that serves ``env``'s commands, if one runs them."""
    if env.get("MLRT_RESIDENT") == "0" or not env.get("MLRT_RESIDENT_DIR"):
        return None
    from mlrt.resident import pids

    return next(iter(pids(env["MLRT_RESIDENT_DIR"])), None)


def _reaped_cpu(pid: int | None) -> float:
    """CPU seconds of the children ``pid`` has reaped (``/proc/PID/stat``: cutime + cstime)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=20, help="timed repetitions of each (default 20)")
    parser.add_argument("--mlrt", default=tool("mlrt"), help="the mlrt executable (default: next to this python)")
    parser.add_argument(
        "--torchx", help="the torchx executable (default: the peers' environment's, made on first use; see _common.py)"
    )
    parser.add_argument("--no-torchx", action="store_true", help="skip the TorchX comparison")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (every process then recompiles uncached source)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()

    if not args.mlrt:
        print("error: no mlrt executable found next to this python or on PATH (pass --mlrt)", file=sys.stderr)
        return 2
    python = sys.executable
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-launch-"))
    # The job's folder holds its code only, as a user's project would: mlrt packs it (the source
    # bundle) and TorchX's local_cwd runs in it; the bench's caches and mlrt's home lie beside it.
    jobdir = workdir / "job"
    jobdir.mkdir()
    (jobdir / "noop.py").write_text("")
    (jobdir / "job.yaml").write_text(JOB_YAML.format(python=json.dumps(python)))
    env = bench_env(workdir, bytecode_cache=not args.no_bytecode_cache)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)

    submit = [args.mlrt, "submit", "--wait", "-q", "job.yaml"]
    commands: dict[str, list[str]] = {"direct": [python, "noop.py"], "mlrt": submit, "mlrt-own": submit}
    envs = {"mlrt-own": {**env, "MLRT_RESIDENT": "0"}}
    torchx_note = None
    if args.no_torchx:
        torchx_note = "skipped (--no-torchx)"
    else:
        if not args.torchx:
            try:
                args.torchx = peer_tool("torchx")
            except RuntimeError as exc:
                torchx_note = f"NOT RUN: {exc}"
    if args.torchx and not args.no_torchx:
        commands["torchx"] = [
            args.torchx, "run", "--scheduler", "local_cwd", "utils.binary", "--entrypoint", python, "noop.py",
        ]  # fmt: skip

    print(f"launch overhead of a no-op job, {args.repetitions} repetitions; {machine_line()}")
    print(f"workdir {workdir}  (MLRT_HOME={env['MLRT_HOME']}); {load_line()} at the start")
    print(
        f"bytecode cache: {'off (caller env kept)' if args.no_bytecode_cache else 'on (PYTHONPYCACHEPREFIX in workdir)'}"
    )

    warmup: dict[str, float] = {}
    start_resident([args.mlrt, "--help"], env)  # as a user's first command of the day would
    for name, argv in list(commands.items()):
        try:
            warmup[name] = timed(argv, jobdir, envs.get(name, env))[0]
        except (RuntimeError, OSError) as exc:
            if name != "torchx":
                raise
            torchx_note = f"NOT RUN: torchx failed here: {str(exc).strip().splitlines()[-1]}"
            del commands["torchx"]

    samples: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repetitions):
        for name, argv in commands.items():
            wall, used = timed(argv, jobdir, envs.get(name, env))
            samples[name].append(wall)
            cpu[name].append(used)

    # Check that every mlrt submission really made a SUCCEEDED run in the one database.
    import sqlite3

    with sqlite3.connect(workdir / "mlrt-home" / "mlrt.db") as db:
        succeeded = db.execute("SELECT COUNT(*) FROM runs WHERE state = 'SUCCEEDED'").fetchone()[0]
    expected_runs = 2 * (args.repetitions + 1)
    stop_resident(workdir / "resident")

    direct_median = median(samples["direct"])
    print()
    print(
        f"{'command':<9} {'median s':>9} {'p90 s':>8} {'min s':>8} {'max s':>8} {'overhead s':>11} "
        f"{'CPU median s':>13} {'CPU min s':>10}  first run s (cold)"
    )
    figures: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        row = {
            "median_s": median(values),
            "p90_s": percentile(values, 90),
            "min_s": min(values),
            "max_s": max(values),
            "overhead_median_s": median(values) - direct_median,
            "first_run_s": warmup[name],
            "cpu_median_s": median(cpu[name]),
            "cpu_min_s": min(cpu[name]),
        }
        figures[name] = row
        print(
            f"{name:<9} {row['median_s']:>9.3f} {row['p90_s']:>8.3f} {row['min_s']:>8.3f} {row['max_s']:>8.3f} "
            f"{row['overhead_median_s'] if name != 'direct' else 0:>11.3f} {row['cpu_median_s']:>13.3f} "
            f"{row['cpu_min_s']:>10.3f}  {row['first_run_s']:.3f}"
        )
    print()
    mlrt_overhead = figures["mlrt"]["overhead_median_s"]
    verdict = "MET" if mlrt_overhead < TARGET_OVERHEAD_S else "MISSED"
    print(f"mlrt median overhead: {mlrt_overhead:.3f} s  (target < {TARGET_OVERHEAD_S} s: {verdict})")
    print(f"mlrt runs SUCCEEDED in the database: {succeeded} of {expected_runs} submitted")
    cold_note = "creates and migrates the database" + (
        "; also fills the fresh bytecode cache" if not args.no_bytecode_cache else ""
    )
    print(f"mlrt first submit ({cold_note}): {warmup['mlrt']:.3f} s")
    result = {
        "repetitions": args.repetitions,
        "machine": machine_line(),
        "bytecode_cache": not args.no_bytecode_cache,
        "figures": figures,
        "mlrt_runs_succeeded": succeeded,
        "mlrt_target_met": mlrt_overhead < TARGET_OVERHEAD_S,
        "load_1min_end": os.getloadavg()[0],
    }
    if "torchx" in figures:
        torchx_overhead = figures["torchx"]["overhead_median_s"]
        ratio = mlrt_overhead / torchx_overhead if torchx_overhead > 0 else float("nan")
        print(
            f"torchx {peer_versions().get('torchx', '?')} median overhead: {torchx_overhead:.3f} s; "
            f"mlrt/torchx overhead ratio: {ratio:.2f} (torchx is {1 / ratio:.1f}x mlrt's overhead)"
        )
        result["torchx_version"] = peer_versions().get("torchx")
        result["mlrt_to_torchx_overhead_ratio"] = ratio
        for name in ("mlrt", "mlrt-own"):
            by_median = figures["torchx"]["median_s"] / figures[name]["median_s"]
            by_min = figures["torchx"]["min_s"] / figures[name]["min_s"]
            by_cpu = figures["torchx"]["cpu_median_s"] / figures[name]["cpu_median_s"]
            verdict = "MET" if by_median >= 3 else "MISSED"
            print(
                f"whole command, {name}: torchx/mlrt {by_median:.2f}x by median, {by_min:.2f}x by min "
                f"(goal >= 3x: {verdict}); CPU {by_cpu:.2f}x by median"
            )
            result[f"torchx_over_{name.replace('-', '_')}_median"] = by_median
            result[f"torchx_over_{name.replace('-', '_')}_min"] = by_min
            result[f"torchx_over_{name.replace('-', '_')}_cpu_median"] = by_cpu
    else:
        print(f"torchx: {torchx_note}")
        result["torchx"] = torchx_note
    print(f"{load_line()} at the end")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if succeeded == expected_runs else 1


if __name__ == "__main__":
    sys.exit(main())
