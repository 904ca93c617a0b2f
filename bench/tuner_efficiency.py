"""Sample efficiency of mlrt's tuners: best objective after N trials, `tpe` vs `random` (vs Optuna's TPE).

Run it from an environment that has mlrt installed (Optuna comes with it) --
see bench/README.md:

    python bench/tuner_efficiency.py                 # 10 seeds, N = 10, 20, 40
    python bench/tuner_efficiency.py --seeds 30 --json bench/results/tuners.json

No processes and no database: the tuner plugins (``mlrt.plugins.tuners()``,
each ``copy.deepcopy``'d per search as the tuning controller does) are driven
directly through ``start`` / ``suggest`` / ``observe`` on fixed objectives:

* quadratic: ``(x - 1)^2 + (y + 2)^2`` over ``[-5, 5]^2`` (minimum 0)
* branin:    the Branin-Hoo function over ``x1 in [-5, 10], x2 in [0, 15]``
             (minimum 0.397887, at three points)

Columns, each over the same seeds (0 .. seeds-1):

* random:     the ``random`` tuner, one trial at a time
* tpe:        the ``tpe`` tuner, one trial at a time
* tpe par=4:  the ``tpe`` tuner started with ``parallel=4``: suggest 4 trials,
              then observe the 4 (as ``parallel_trials: 4`` would, with all
              four finishing together)
* optuna tpe: reference, Optuna's own ``TPESampler(seed=seed)`` with its
              defaults (10 random start-up trials, univariate) through
              ``study.optimize``; ``--no-optuna`` leaves it out

For each N the table shows the mean and median over seeds of the best value
found in the first N trials (lower is better), and how often tpe's best beat
random's on the same seed (tied: both still had the same best point from the
start-up trials, which TPE draws from the same seeded stream as random).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, peer_version  # noqa: E402


def quadratic(p: dict[str, float]) -> float:
    return (p["x"] - 1.0) ** 2 + (p["y"] + 2.0) ** 2


def branin(p: dict[str, float]) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


# name -> (objective, {param: (min, max)}, known minimum)
OBJECTIVES: dict[str, tuple[Callable[[dict[str, float]], float], dict[str, tuple[float, float]], float]] = {
    "quadratic": (quadratic, {"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, 0.0),
    "branin": (branin, {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, 0.397887),
}


def mlrt_search(tuner_name: str, objective: str, seed: int, trials: int, parallel: int) -> list[float]:
    """Objective values of trials 1..trials, in trial order, from an mlrt tuner plugin."""
    from mlrt import plugins
    from mlrt.tuning import Parameter, TrialResult

    fn, bounds, _ = OBJECTIVES[objective]
    space = [
        Parameter(name=n, type="float", path=f"hyperparameters.{n}", min=lo, max=hi) for n, (lo, hi) in bounds.items()
    ]
    tuner = copy.deepcopy(plugins.tuners()[tuner_name])
    tuner.start(space, "minimize", seed, parallel, [])
    values: list[float] = []
    number = 1
    while number <= trials:
        batch = []
        for _ in range(min(parallel, trials - number + 1)):
            params = tuner.suggest(number)
            if params is None:
                break
            batch.append((number, params))
            number += 1
        if not batch:
            break
        for n, params in batch:
            value = fn(params)
            tuner.observe(TrialResult(n, params, "SUCCEEDED", value))
            values.append(value)
    return values


def optuna_search(objective: str, seed: int, trials: int) -> list[float]:
    import optuna

    fn, bounds, _ = OBJECTIVES[objective]
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda t: fn({n: t.suggest_float(n, lo, hi) for n, (lo, hi) in bounds.items()}), n_trials=trials)
    return [t.value for t in study.trials]


def best_after(values: list[float], n: int) -> float:
    return min(values[:n])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per column (default 10)")
    parser.add_argument("--budgets", default="10,20,40", help="trial counts N to report (default 10,20,40)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated (default: all)")
    parser.add_argument("--no-optuna", action="store_true", help="leave out Optuna's own TPESampler column")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")

    budgets = sorted(int(b) for b in args.budgets.split(","))
    trials = budgets[-1]
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        print(f"error: unknown objective(s) {', '.join(unknown)} (known: {', '.join(OBJECTIVES)})", file=sys.stderr)
        return 2
    columns: dict[str, Callable[[str, int], list[float]]] = {
        "random": lambda o, s: mlrt_search("random", o, s, trials, 1),
        "tpe": lambda o, s: mlrt_search("tpe", o, s, trials, 1),
        "tpe par=4": lambda o, s: mlrt_search("tpe", o, s, trials, 4),
    }
    if not args.no_optuna:
        columns["optuna tpe"] = lambda o, s: optuna_search(o, s, trials)

    mlrt_search("random", objectives[0], 0, 2, 1)  # import the plugins and Optuna before any clock runs
    print(
        f"tuner sample efficiency: best objective after N trials (lower is better), {args.seeds} seeds; "
        f"{machine_line()}; optuna {peer_version('optuna') or '?'}"
    )
    result: dict = {
        "seeds": args.seeds,
        "budgets": budgets,
        "machine": machine_line(),
        "optuna_version": peer_version("optuna"),
        "objectives": {},
    }
    for objective in objectives:
        known_min = OBJECTIVES[objective][2]
        values: dict[str, list[list[float]]] = {}
        seconds: dict[str, float] = {}
        for column, search in columns.items():
            started = time.perf_counter()
            values[column] = [search(objective, seed) for seed in range(args.seeds)]
            seconds[column] = time.perf_counter() - started
            short = [len(v) for v in values[column] if len(v) < trials]
            if short:
                print(f"error: {column} on {objective} gave only {short} trials of {trials}", file=sys.stderr)
                return 1
        print()
        print(f"{objective} (known minimum {known_min:g}): mean / median of best-so-far over seeds")
        header = f"{'N':>4}  " + "  ".join(f"{c:>19}" for c in columns) + "  tpe beat random"
        print(header)
        table: dict[str, dict] = {}
        for n in budgets:
            row: dict[str, dict[str, float]] = {}
            cells = []
            for column in columns:
                bests = [best_after(v, n) for v in values[column]]
                row[column] = {"mean": statistics.mean(bests), "median": statistics.median(bests), "bests": bests}
                cells.append(f"{row[column]['mean']:>9.4f} / {row[column]['median']:<7.4f}")
            pairs = list(zip(row["tpe"]["bests"], row["random"]["bests"], strict=True))
            wins, ties = sum(t < r for t, r in pairs), sum(t == r for t, r in pairs)
            print(
                f"{n:>4}  "
                + "  ".join(f"{c:>19}" for c in cells)
                + f"  {wins}/{args.seeds}"
                + (f" ({ties} tied)" if ties else "")
            )
            table[str(n)] = {"columns": row, "tpe_beats_random": wins, "tpe_ties_random": ties}
        print(
            "time per search of "
            + f"{trials} trials: "
            + ", ".join(f"{c} {1000 * s / args.seeds:.0f} ms" for c, s in seconds.items())
        )
        result["objectives"][objective] = {
            "known_minimum": known_min,
            "by_budget": table,
            "ms_per_search": {c: 1000 * s / args.seeds for c, s in seconds.items()},
        }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
