"""100 Kubernetes launches through one controller, with the API answering 429 to many of its requests.

Run it from the repository root with an interpreter that has mlrt[test] installed (the API
stand-in of tests/kube_standin.py needs kubernetes-validate):

    python bench/kube_throttled_launches.py                 # 100 jobs, 200 requests throttled, 3 repeats
    python bench/kube_throttled_launches.py --jobs 30 --throttled 60 --repeats 1 --json out.json

What runs, per round, in a child process of its own (a fresh stand-in, database and backend):
the API stand-in with ``--latency-ms`` per request (default 20, a real API server's round
trip), a SQLite store under a temporary ``MLRT_HOME``, ``--jobs`` queued ``compute.backend:
kubernetes`` jobs and one in-process :class:`mlrt.controller.Controller` passing until every
run is RUNNING (its Job created; the stand-in never runs pods). In the throttled round the
stand-in answers the first ``--throttled`` requests with 429 TooManyRequests and
``Retry-After: 1`` (``KubeStandIn.throttle``), as the API server's max-in-flight and
priority-and-fairness filters do; the backend must wait that long and retry.

Figures: wall time from the first pass to the last RUNNING run, every run on its first
attempt (a launch that failed on a 429 would be a second attempt), and the 429s answered.
The peer is the same controller with no throttling, interleaved round by round; the ratio
is throttled / unthrottled. There is no other peer: no other job controller is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_line, machine_line, median, write_json  # noqa: E402

SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: launch-{index:03d}}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  compute:
    backend: kubernetes
    kubernetes: {{namespace: default}}
"""


def one_round(jobs: int, throttled: int, latency_ms: float) -> dict:
    """In a fresh process: launch ``jobs`` runs through one controller; return the figures."""
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "tests"))
    from kube_standin import KubeStandIn

    with tempfile.TemporaryDirectory(prefix="mlrt-bench-") as folder, KubeStandIn(latency_ms=latency_ms) as kube:
        os.environ["MLRT_HOME"] = str(Path(folder) / "home")
        os.environ["KUBECONFIG"] = str(kube.write_kubeconfig(Path(folder) / "kubeconfig"))
        from mlrt.controller import Controller
        from mlrt.spec import load_spec
        from mlrt.states import RunState
        from mlrt.store import Store
        from mlrt.submission import submit

        store = Store()
        controller = Controller(store)
        run_ids = []
        for index in range(jobs):
            path = Path(folder) / f"job-{index}.yaml"
            path.write_text(SPEC.format(index=index))
            run_ids.append(submit(store, load_spec(path), owner=controller.owner))
        if throttled:
            kube.throttle(requests=throttled, retry_after=1)
        started = time.perf_counter()
        deadline = started + 900
        while time.perf_counter() < deadline:
            controller.reconcile()
            states = [store.get_run(run_id).state for run_id in run_ids]
            if all(state == RunState.RUNNING.value for state in states):
                break
            if any(RunState(state).is_terminal() for state in states):
                break
            controller.wait(0.05)
        seconds = time.perf_counter() - started
        runs = [store.get_run(run_id) for run_id in run_ids]
        figures = {
            "jobs": jobs,
            "throttled_requests": throttled,
            "seconds": seconds,
            "running": sum(run.state == RunState.RUNNING.value for run in runs),
            "first_attempt": sum(run.attempts == 1 for run in runs),
            "throttles_left": kube.throttled_left,
            "jobs_created": len(kube.jobs("default")),
        }
        controller.cancel_all("benchmark over")
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--throttled", type=int, default=200, help="requests answered 429 in the throttled round")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--round", help=argparse.SUPPRESS)  # internal: run one round, print its JSON
    args = parser.parse_args()
    if args.round is not None:
        print(json.dumps(one_round(args.jobs, int(args.round), args.latency_ms)))
        return 0

    print(machine_line())
    rounds: dict[str, list[dict]] = {"throttled": [], "unthrottled": []}
    for repeat in range(args.repeats):
        for name, throttled in (("unthrottled", 0), ("throttled", args.throttled)):
            done = subprocess.run(
                [sys.executable, __file__, "--round", str(throttled), "--jobs", str(args.jobs),
                 "--latency-ms", str(args.latency_ms)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
                return 1
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["load"] = load_line()
            rounds[name].append(figures)
            print(
                f"  {repeat + 1}/{args.repeats} {name:>11}: {figures['running']}/{figures['jobs']} RUNNING in "
                f"{figures['seconds']:.1f}s, {figures['first_attempt']} on their first attempt, "
                f"{throttled - figures['throttles_left']} 429s answered ({figures['load']})"
            )
    summary = {}
    for name, figures in rounds.items():
        seconds = [f["seconds"] for f in figures]
        summary[name] = {"min_s": min(seconds), "median_s": median(seconds), "rounds": figures}
    ratio = summary["throttled"]["median_s"] / summary["unthrottled"]["median_s"]
    every = all(f["running"] == f["jobs"] == f["first_attempt"] for f in rounds["throttled"])
    print(
        f"{args.jobs} launches with {args.throttled} requests throttled (Retry-After: 1): "
        f"min {summary['throttled']['min_s']:.1f}s, median {summary['throttled']['median_s']:.1f}s; "
        f"unthrottled min {summary['unthrottled']['min_s']:.1f}s, median {summary['unthrottled']['median_s']:.1f}s; "
        f"ratio {ratio:.2f}; every launch on its first attempt: {every}"
    )
    summary.update(ratio_median=ratio, every_launch_first_attempt=every, latency_ms=args.latency_ms)
    if args.json:
        write_json(args.json, summary)
    return 0 if every else 1


if __name__ == "__main__":
    sys.exit(main())
