"""Per-trial cost of a TuningJob, whole wall time / trials: `mlrt submit` vs Optuna's `study.optimize`.

Run it with mlrt's interpreter; Optuna runs from the peers' virtual
environment, which the bench makes on first use (bench/_common.py
``peers_venv``) -- see bench/README.md:

    python bench/tuning_overhead.py            # 40 trials, 3 repetitions
    python bench/tuning_overhead.py -t 20 -n 5 --json bench/results/tuning.json

The objective is a cheap 2-D quadratic, ``(x - 1)^2 + (y + 2)^2`` over
``[-5, 5]^2``, searched one trial at a time by TPE (mlrt's ``tpe`` tuner
with ``startup_trials: 10``, Optuna's ``TPESampler`` with its default 10
startup trials) and by random sampling (mlrt's ``random`` tuner is Optuna's
``RandomSampler``). Each repetition runs, in this order:

* direct:            ``python objective.py`` N times as plain processes (the
                     cost of a fresh interpreter per trial, nothing else)
* mlrt warm tpe / random: ``mlrt submit -q tune-warm-tpe.yaml``: a
                     TuningJob of N ``command:`` trials (``parallel_trials:
                     1``), each trial forked from a pre-started Python (warm
                     workers, the default for trials), launched, tracked and
                     observed by the embedded controller; wall time of the
                     whole command, mlrt's start-up included
* mlrt cold random:  the same with a fresh ``python objective.py`` per trial
                     (``compute.warm: false``)
* optuna sqlite tpe / random: ``study.optimize`` with
                     ``sqlite:///<workdir>/optuna-<durability>.db``, the
                     objective an in-process Python function (what Optuna
                     users do); SQLite opened with mlrt's durability (WAL,
                     ``synchronous=NORMAL``, through a SQLAlchemy ``connect``
                     listener) and again with SQLite's defaults (rollback
                     journal, ``synchronous=FULL``)
* optuna memory tpe: the same with Optuna's in-memory storage
* optuna sqlite+proc random: the SQLite study (mlrt's durability), each
                     trial running ``python objective.py`` with
                     ``subprocess.run`` -- the same cold process per trial as
                     mlrt cold, so the difference is orchestration

Each Optuna case is a process of the peers' environment: ``optimize`` is
timed inside it (``create_study`` apart), and the whole process (interpreter,
``import optuna``, study, optimize) from outside.

The headline is whole wall time / N: mlrt's whole ``submit`` command
(its ~1 s start-up included) against Optuna's ``optimize`` with the same
sampler and the same SQLite durability -- TPE and random. Also shown: the
same against Optuna's whole process, mlrt's cadence (the median gap between
consecutive trials' creation times in its database: the steady state, the
once-per-job start-up left out) and its phases. Per-trial figures are the
median over repetitions (min shown too). One untimed warm-up of every case
comes first (it creates the databases and fills the bytecode cache).

Target (the issue): mlrt within 2x of Optuna + SQLite per trial on the local
backend, by whole wall time / N.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SQLITE_DURABILITY,
    bench_env,
    load_line,
    machine_line,
    median,
    peer_python,
    sqlite_pragmas_snippet,
    tool,
)

TARGET_RATIO = 2.0

OBJECTIVE_PY = """\
import json, os
hp = json.loads(os.environ.get("MLRT_HYPERPARAMETERS", "{}"))
x, y = float(hp["x"]), float(hp["y"])
print(f"score={(x - 1.0) ** 2 + (y + 2.0) ** 2!r}")
"""

TUNE_YAML = """\
apiVersion: mlrt/v1
kind: TuningJob
metadata: {{name: overhead-{mode}-{tuner}}}
spec:
  template:
    command: [{python}, objective.py]
    compute: {{warm: {warm}}}
    metrics: [{{name: score, regex: 'score=(-?[0-9.eE+-]+)'}}]
  objective: {{metric: score, goal: minimize}}
  parameters:
    x: {{type: float, min: -5, max: 5}}
    y: {{type: float, min: -5, max: 5}}
  tuner: {tuner_block}
  max_trials: {trials}
  parallel_trials: 1
  max_failed_trials: 0
  seed: 7
"""


def quadratic(x: float, y: float) -> float:
    return (x - 1.0) ** 2 + (y + 2.0) ** 2


def run_checked(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}:\n{output[-2000:]}")
    return output


def score_of(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("score="):
            return float(line[len("score=") :])
    raise RuntimeError(f"no score= line in {output!r}")


def time_direct(python: str, trials: int, workdir: Path, env: dict[str, str]) -> float:
    """Seconds to run the objective ``trials`` times as plain processes."""
    started = time.perf_counter()
    for i in range(trials):
        trial_env = dict(env, MLRT_HYPERPARAMETERS=json.dumps({"x": -4.0 + i * 0.1, "y": 1.0}))
        score_of(run_checked([python, "objective.py"], workdir, trial_env))
    return time.perf_counter() - started


def time_mlrt(mlrt: str, mode: str, tuner: str, workdir: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run_checked([mlrt, "submit", "-q", f"tune-{mode}-{tuner}.yaml"], workdir, env)
    return time.perf_counter() - started


def mlrt_check(db_path: Path, mode: str, tuner: str) -> tuple[list[dict], list[float], dict[str, list[float]]]:
    """Per tuning run: its state and its trials' states and scores; every trial cadence (s); phases (s).

    The cadence is the gap between consecutive trials' creation times of one
    tuning run: launch, track and observe one trial, then suggest and submit
    the next -- mlrt's steady-state time per trial. The phases split it from
    the database's timestamps: previous trial ended -> this one created
    (observe, suggest, submit), created -> started (launch), started -> ended
    (the process, plus however long the controller took to notice its exit)."""
    with sqlite3.connect(db_path) as db:
        tuning_runs = db.execute(
            "SELECT id, state FROM runs WHERE parent_id IS NULL AND id LIKE ? ORDER BY created_at",
            (f"overhead-{mode}-{tuner}-%",),
        ).fetchall()[1:]  # the first tuning run was the untimed warm-up
        summary, cadences = [], []
        phases: dict[str, list[float]] = {"ended_to_next_created": [], "created_to_started": [], "started_to_ended": []}
        for run_id, state in tuning_runs:
            rows = db.execute(
                "SELECT r.id, r.state, r.created_at, r.started_at, r.ended_at, (SELECT COUNT(*) FROM metrics m WHERE m.run_id = r.id "
                "AND m.key = 'score') FROM runs r WHERE r.parent_id = ? ORDER BY r.trial",
                (run_id,),
            ).fetchall()
            created = [datetime.fromisoformat(r[2]) for r in rows]
            cadences += [(b - a).total_seconds() for a, b in zip(created, created[1:], strict=False)]
            started = [datetime.fromisoformat(r[3]) if r[3] else None for r in rows]
            ended = [datetime.fromisoformat(r[4]) if r[4] else None for r in rows]
            for i, (c, s, e) in enumerate(zip(created, started, ended, strict=True)):
                if s is not None:
                    phases["created_to_started"].append((s - c).total_seconds())
                if s is not None and e is not None:
                    phases["started_to_ended"].append((e - s).total_seconds())
                if i > 0 and ended[i - 1] is not None:
                    phases["ended_to_next_created"].append((c - ended[i - 1]).total_seconds())
            summary.append(
                {
                    "run": run_id,
                    "state": state,
                    "trials": len(rows),
                    "trials_succeeded_with_score": sum(1 for r in rows if r[1] == "SUCCEEDED" and r[5] > 0),
                }
            )
    return summary, cadences, phases


def child_optuna(args) -> dict:
    """Runs in the peers' interpreter: one Optuna study, timed inside (``--child``)."""
    exec(sqlite_pragmas_snippet(args.durability), {})  # before Optuna makes its engine
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
    workdir, python = Path(args.workdir), args.objective_python

    def in_process(trial):
        return quadratic(trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5))

    def subprocess_objective(trial):
        params = {"x": trial.suggest_float("x", -5, 5), "y": trial.suggest_float("y", -5, 5)}
        trial_env = dict(os.environ, MLRT_HYPERPARAMETERS=json.dumps(params))
        return score_of(run_checked([python, "objective.py"], workdir, trial_env))

    objective = in_process if args.objective == "function" else subprocess_objective
    sampler = optuna.samplers.TPESampler(seed=7) if args.sampler == "tpe" else optuna.samplers.RandomSampler(seed=7)
    started = time.perf_counter()
    study = optuna.create_study(study_name=args.study, storage=args.storage, direction="minimize", sampler=sampler)
    created = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    finished = time.perf_counter()
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return {"create_s": created - started, "optimize_s": finished - created, "complete": complete}


OPTUNA_CASES = {
    # case: (storage, durability, sampler, objective)
    "optuna_sqlite_tpe": ("sqlite", "mlrt", "tpe", "function"),
    "optuna_sqlite_random": ("sqlite", "mlrt", "random", "function"),
    "optuna_sqlite_default_tpe": ("sqlite", "default", "tpe", "function"),
    "optuna_sqlite_default_random": ("sqlite", "default", "random", "function"),
    "optuna_memory_tpe": ("memory", "mlrt", "tpe", "function"),
    "optuna_sqlite_subprocess_random": ("sqlite", "mlrt", "random", "subprocess"),
}
MLRT_CASES = {
    "mlrt_warm_tpe": ("warm", "tpe"),
    "mlrt_warm_random": ("warm", "random"),
    "mlrt_cold_random": ("cold", "random"),
}
LABELS = {
    "direct": "direct: python objective.py x N",
    "mlrt_warm_tpe": "mlrt submit, tpe, warm trials",
    "mlrt_warm_random": "mlrt submit, random, warm trials",
    "mlrt_cold_random": "mlrt submit, random, cold trials",
    "optuna_sqlite_tpe": "optuna TPE + SQLite (mlrt's durability)",
    "optuna_sqlite_random": "optuna random + SQLite (mlrt's durability)",
    "optuna_sqlite_default_tpe": "optuna TPE + SQLite (SQLite's defaults)",
    "optuna_sqlite_default_random": "optuna random + SQLite (SQLite's defaults)",
    "optuna_memory_tpe": "optuna TPE in memory",
    "optuna_sqlite_subprocess_random": "optuna random + SQLite, subprocess objective",
}


def time_optuna(case: str, trials: int, study: str, python: str, peer: str, workdir: Path, env) -> dict:
    """One Optuna study in a process of the peers' environment: its own figures plus the whole process's wall time."""
    storage, durability, sampler, objective = OPTUNA_CASES[case]
    out = workdir / "optuna-child.json"
    argv = [peer, str(Path(__file__).resolve()), "--child", "--trials", str(trials), "--study", study]
    argv += ["--sampler", sampler, "--objective", objective, "--durability", durability, "--out", str(out)]
    argv += ["--workdir", str(workdir), "--objective-python", python]
    if storage == "sqlite":
        argv += ["--storage", f"sqlite:///{workdir / f'optuna-{durability}.db'}"]
    started = time.perf_counter()
    run_checked(argv, workdir, env)
    figures = json.loads(out.read_text())
    figures["process_s"] = time.perf_counter() - started
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-t", "--trials", type=int, default=40, help="trials per study (default 40)")
    parser.add_argument("-n", "--repetitions", type=int, default=3, help="timed repetitions of each case (default 3)")
    parser.add_argument("--mlrt", default=tool("mlrt"), help="the mlrt executable (default: next to this python)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (every process then recompiles uncached source)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    for hidden in ("--study", "--sampler", "--objective", "--durability", "--out", "--storage", "--workdir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--objective-python", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        Path(args.out).write_text(json.dumps(child_optuna(args)))
        return 0
    if not args.mlrt:
        print("error: no mlrt executable found next to this python or on PATH (pass --mlrt)", file=sys.stderr)
        return 2
    try:
        peer = peer_python()
    except RuntimeError as exc:
        print(f"error: Optuna is the peer here and its environment could not be made: {exc}", file=sys.stderr)
        return 1
    peer_optuna = subprocess.run(
        [peer, "-c", "import optuna; print(optuna.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()

    python = sys.executable
    trials = args.trials
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-tuning-"))
    (workdir / "objective.py").write_text(OBJECTIVE_PY)
    for mode, tuner in MLRT_CASES.values():
        block = "{algorithm: tpe, startup_trials: 10}" if tuner == "tpe" else "random"
        (workdir / f"tune-{mode}-{tuner}.yaml").write_text(
            TUNE_YAML.format(
                python=json.dumps(python),
                trials=trials,
                mode=mode,
                tuner=tuner,
                tuner_block=block,
                warm="true" if mode == "warm" else "false",
            )
        )
    env = bench_env(workdir, bytecode_cache=not args.no_bytecode_cache)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)

    print(f"tuning overhead: {trials} trials x {args.repetitions} repetitions, 1 trial at a time; {machine_line()}")
    print(f"optuna {peer_optuna} (peers' environment {peer}); workdir {workdir}  (MLRT_HOME={env['MLRT_HOME']})")
    for key, promise in SQLITE_DURABILITY.items():
        print(f"SQLite durability '{key}': {promise}")
    print(f"{load_line()} at the start")

    cases = ["direct", *MLRT_CASES, *OPTUNA_CASES]
    seconds: dict[str, list[float]] = {c: [] for c in cases}
    process_s: dict[str, list[float]] = {c: [] for c in OPTUNA_CASES}
    create_s: dict[str, list[float]] = {c: [] for c in OPTUNA_CASES}
    loads: list[float] = []
    optuna_complete: list[int] = []
    study_counter = iter(range(10**6))

    def one_round(record: bool) -> None:
        results = {"direct": time_direct(python, trials, workdir, env)}
        for case, (mode, tuner) in MLRT_CASES.items():
            results[case] = time_mlrt(args.mlrt, mode, tuner, workdir, env)
        for case in OPTUNA_CASES:
            figures = time_optuna(case, trials, f"bench-{next(study_counter)}", python, peer, workdir, env)
            results[case] = figures["optimize_s"]
            if record:
                create_s[case].append(figures["create_s"])
                process_s[case].append(figures["process_s"])
                optuna_complete.append(figures["complete"])
        if record:
            for case, value in results.items():
                seconds[case].append(value)
            loads.append(os.getloadavg()[0])

    warm_started = time.perf_counter()
    one_round(record=False)  # creates the databases, fills the bytecode cache
    warmup_s = time.perf_counter() - warm_started
    for _ in range(args.repetitions):
        one_round(record=True)

    db_path = workdir / "mlrt-home" / "mlrt.db"
    measured, cadence_ms, fixed_s, phase_ms = [], {}, {}, {}
    ms = {c: 1000 * median(v) / trials for c, v in seconds.items()}
    ms_min = {c: 1000 * min(v) / trials for c, v in seconds.items()}
    process_ms = {c: 1000 * median(v) / trials for c, v in process_s.items()}
    for case, (mode, tuner) in MLRT_CASES.items():
        summary, cadences, phases = mlrt_check(db_path, mode, tuner)
        measured += summary
        cadence_ms[case] = 1000 * median(cadences) if cadences else float("nan")
        fixed_s[case] = median(seconds[case]) - trials * cadence_ms[case] / 1000
        phase_ms[case] = {k: 1000 * median(v) for k, v in phases.items() if v}
    ok_runs = sum(1 for s in measured if s["state"] == "SUCCEEDED" and s["trials_succeeded_with_score"] == trials)
    optuna_ok = all(c == trials for c in optuna_complete)

    print()
    print(f"{'case':<48} {'ms/trial':>9} {'min':>8} {'process':>8} {'cadence':>8}")
    for case in cases:
        cadence = f"{cadence_ms[case]:.1f}" if case in cadence_ms else ""
        process = f"{process_ms[case]:.1f}" if case in process_ms else ""
        print(f"{LABELS[case]:<48} {ms[case]:>9.1f} {ms_min[case]:>8.1f} {process:>8} {cadence:>8}")
    print()
    print("ms/trial = wall time / N, median of repetitions: mlrt's whole command; Optuna's optimize() alone;")
    print("process = the whole Optuna process / N (interpreter, import, create_study, optimize);")
    print("cadence = median gap between consecutive trials' creation in mlrt's database (steady state per trial)")
    for case in MLRT_CASES:
        p = phase_ms[case]
        print(
            f"{LABELS[case]}: fixed cost per submit (wall - N x cadence) {fixed_s[case]:.3f} s; phases, median ms: "
            f"ended -> next created {p.get('ended_to_next_created', float('nan')):.1f}; "
            f"created -> started {p.get('created_to_started', float('nan')):.1f}; "
            f"started -> ended {p.get('started_to_ended', float('nan')):.1f}"
        )
    print(
        f"warm-up round: {warmup_s:.2f} s; load average (1 min) after each repetition: {', '.join(f'{x:.1f}' for x in loads)}"
    )
    print()
    ratios = {
        "tpe_wall_to_optuna_tpe_sqlite": ms["mlrt_warm_tpe"] / ms["optuna_sqlite_tpe"],
        "random_wall_to_optuna_random_sqlite": ms["mlrt_warm_random"] / ms["optuna_sqlite_random"],
        "tpe_wall_to_optuna_tpe_sqlite_default": ms["mlrt_warm_tpe"] / ms["optuna_sqlite_default_tpe"],
        "random_wall_to_optuna_random_sqlite_default": ms["mlrt_warm_random"] / ms["optuna_sqlite_default_random"],
        "tpe_wall_to_optuna_tpe_sqlite_process": ms["mlrt_warm_tpe"] / process_ms["optuna_sqlite_tpe"],
        "tpe_cadence_to_optuna_tpe_sqlite": cadence_ms["mlrt_warm_tpe"] / ms["optuna_sqlite_tpe"],
        "cold_wall_to_optuna_sqlite_subprocess": ms["mlrt_cold_random"] / ms["optuna_sqlite_subprocess_random"],
        "tpe_wall_to_optuna_memory_tpe": ms["mlrt_warm_tpe"] / ms["optuna_memory_tpe"],
    }
    headline = ratios["tpe_wall_to_optuna_tpe_sqlite"]
    met = headline <= TARGET_RATIO
    print(
        f"HEADLINE mlrt tpe (whole command) / optuna TPE + SQLite, same durability: {headline:.2f}x "
        f"({ms['mlrt_warm_tpe']:.1f} vs {ms['optuna_sqlite_tpe']:.1f} ms/trial; target <= {TARGET_RATIO:g}x: "
        f"{'MET' if met else 'MISSED'})"
    )
    print(
        f"mlrt random / optuna random + SQLite, same durability: {ratios['random_wall_to_optuna_random_sqlite']:.2f}x; "
        f"against SQLite's defaults: tpe {ratios['tpe_wall_to_optuna_tpe_sqlite_default']:.2f}x, "
        f"random {ratios['random_wall_to_optuna_random_sqlite_default']:.2f}x"
    )
    print(
        f"mlrt tpe / optuna TPE's whole process: {ratios['tpe_wall_to_optuna_tpe_sqlite_process']:.2f}x; "
        f"mlrt tpe cadence / optuna TPE: {ratios['tpe_cadence_to_optuna_tpe_sqlite']:.2f}x; mlrt cold / optuna with "
        f"a subprocess per trial: {ratios['cold_wall_to_optuna_sqlite_subprocess']:.2f}x; "
        f"mlrt tpe / optuna TPE in memory: {ratios['tpe_wall_to_optuna_memory_tpe']:.0f}x"
    )
    print(
        f"mlrt tuning runs SUCCEEDED with {trials} scored trials: {ok_runs} of {len(measured)}; "
        f"optuna studies with {trials} COMPLETE trials: {sum(c == trials for c in optuna_complete)} "
        f"of {len(optuna_complete)}"
    )
    print(f"{load_line()} at the end")

    result = {
        "trials": trials,
        "repetitions": args.repetitions,
        "machine": machine_line(),
        "optuna_version": peer_optuna,
        "bytecode_cache": not args.no_bytecode_cache,
        "ms_per_trial_median": ms,
        "ms_per_trial_min": ms_min,
        "optuna_process_ms_per_trial_median": process_ms,
        "seconds": seconds,
        "optuna_create_study_ms_median": {c: 1000 * median(v) for c, v in create_s.items()},
        "mlrt_cadence_ms_median": cadence_ms,
        "mlrt_fixed_cost_s": fixed_s,
        "mlrt_phase_ms_median": phase_ms,
        "ratios": ratios,
        "headline_ratio": headline,
        "target_ratio": TARGET_RATIO,
        "target_met": met,
        "load_1min": loads,
        "mlrt_tuning_runs": measured,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok_runs == len(measured) and optuna_ok else 1


if __name__ == "__main__":
    sys.exit(main())
