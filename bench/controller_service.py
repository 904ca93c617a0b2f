"""Controller service throughput: submissions/s, submit-to-RUNNING latency, fairness, idle passes, metric ingestion.

Run it from the repository root with an interpreter that has mlrt[test]
installed (the stand-in needs kubernetes-validate; the `mlrt` script next to
the interpreter is started as the controller) -- see bench/README.md:

    python bench/controller_service.py                      # 1,000 jobs, 8 clients, 200,000 points, PostgreSQL
    python bench/controller_service.py --jobs 200 --points 20000 --db sqlite --json bench/results/service.json
    python bench/controller_service.py --jobs 1000,10000 --rounds concurrent,fairness,idle --no-schema-check

What runs: a real `mlrt --db URL controller` process (the HTTP API and the
leader's reconcile loop) on a fresh database (PostgreSQL at 127.0.0.1:5432:
a new `mlrt_bench_*` database per round, dropped afterwards; or `--db
sqlite`: a file in the workdir), launching `compute.backend: kubernetes`
jobs against the in-process Kubernetes API stand-in of tests/kube_standin.py,
which answers every request after `--latency-ms` (default 20 ms, a real API
server's round trip). The stand-in stores objects and plays the Job
controller (a Job gets its pod) but never starts pods, so every launched run
stays RUNNING: the figures are submit -> RUNNING, i.e. the control plane only.
The controller process's CPU time and resident memory (with any children)
are sampled with psutil throughout each round.

Rounds (each with its own fresh database, stand-in and controller, so one
round's running runs do not slow the next):

* sequential: `--jobs` submissions from one client (POST /api/v1/jobs, one
  after the other); `--jobs 1000,10000` runs the round once per count;
* concurrent: `--jobs` submissions from `--clients` threads;
* queue-only: `--jobs` submissions from `--clients` threads into a project
  limited to 0 running runs: the submissions alone, nothing launched beside
  them (submissions/s, and CPU per submission of the controller, the clients
  and PostgreSQL);
* fairness: project A queues `--fair-jobs` jobs (from `--clients` threads),
  then project B submits `--fair-b` jobs from one client: how long until B's
  first run is RUNNING, B's p50/p99, and how many of A's ran before it;
* idle: reconcile passes while nothing changes, with one RUNNING run, first
  alone, then with `--finished` finished runs added to the database (rows
  cloned from that run: job, run, params, attempt and events, inserted in
  bulk through mlrt's models, SUCCEEDED);
* ingestion: one submitted (RUNNING) run, a worker token for it, and
  `--points` points per case POSTed to /api/v1/runs/ID/tracking/metrics in
  batches of 1,000 and 10,000, from 1 and 4 clients; then the SDK end to end
  (a process logging `--sdk-points` points one by one with
  MLRT_TRACKING_URI=<the service>) and, as the ratio's reference, the same
  SDK process writing straight to the database (MLRT_TRACKING_URI=<db URL>).

Submit-to-RUNNING per run: from the client's clock just before the request
to the `at` of the run's RUNNING event in the database (same machine, same
clock). Its parts come from the run's events too: request start -> QUEUED
event (the submit's commit), QUEUED -> STARTING (waiting for a reconcile
pass) and STARTING -> RUNNING (planning and the Kubernetes API calls).

There is no peer for the submission figures: no Kubeflow, SageMaker or other
job service is installed here. The ingestion ratio compares the service's
HTTP tracking path with the SDK writing to the same database directly.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cryptography.fernet import Fernet

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import bench_env, clone_finished_runs, machine_line, median, percentile, tool, write_json  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IMAGE = "localhost/mlrt-train:bench"
BATCHES = (1_000, 10_000)
INGEST_CLIENTS = 4
PROJECT_A, PROJECT_B = "project-a", "project-b"
SAMPLE_INTERVAL = 0.2  # seconds between samples of the controller's CPU and memory

ALGORITHM_SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: bench-{index:05d}}}
spec:
  algorithm: sklearn.logistic_regression
  data:
    train: builtin://sklearn/digits?split=train
    validation: builtin://sklearn/digits?split=validation
  hyperparameters: {{C: 1.0, max_iter: 200}}
  compute:
    backend: kubernetes
    workers: 1
    cpu: 1
    memory: 1Gi
    kubernetes: {{namespace: default}}
  stopping: {{max_runtime: 1h}}
"""

COMMAND_SPEC = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: bench-{index:05d}}}
spec:
  image: registry.example.com/acme/train:1.0
  command: [python, train.py]
  compute:
    backend: kubernetes
    workers: 1
    kubernetes: {{namespace: default}}
  stopping: {{max_runtime: 1h}}
"""

QUIET = False


def say(message: str) -> None:
    if not QUIET:
        print(message, flush=True)


# -- the SDK child (runs in its own process) -------------------------------------


def child_sdk(key: str, n: int) -> dict:
    """Log ``n`` points one by one (explicit steps), then flush; time from the first call to the flush's return."""
    import mlrt

    mlrt.log_metric("_warmup", 0.0, step=0)  # opens the connection / database outside the clock
    mlrt.flush()
    started = time.perf_counter()
    for i in range(n):
        mlrt.log_metric(key, float(i), step=i)
    logged = time.perf_counter()
    mlrt.flush()
    ended = time.perf_counter()
    return {"points": n, "seconds": ended - started, "call_seconds": logged - started}


def speed_check() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3), taken before and after each round.

    The shared machines these run on change speed from minute to minute; a round
    whose check moved is not comparable with one whose did not."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return best * 1000


# -- timing the Kubernetes API stand-in (it runs in this process) -----------------


class StandInClock:
    """Wall time the stand-in spends per request kind, and in schema validation (wraps its methods)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.seconds: dict[str, float] = {}
            self.counts: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.counts[name] = self.counts.get(name, 0) + 1

    def install(self, module) -> None:
        def timed(name, function, kind_arg: bool):
            @functools.wraps(function)
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    label = f"{name} {args[1].plural}" if kind_arg else name
                    self.add(label, time.perf_counter() - started)

            return wrapper

        for verb in ("create", "read", "list", "patch", "delete"):
            setattr(module.RestApi, verb, timed(verb, getattr(module.RestApi, verb), True))
        module._validated = timed("validate (schema)", module._validated, False)

    def figures(self) -> dict:
        with self.lock:
            return {k: {"count": self.counts[k], "seconds": self.seconds[k]} for k in sorted(self.seconds)}


# -- the controller's CPU time and memory ---------------------------------------------


class ProcessSampler:
    """CPU seconds and resident memory of a process, sampled with psutil in a thread.

    CPU: user + system of the process, of its children that have ended and been
    waited for (the service runs ``git`` for each submission's record), and of
    its live children at the time of reading. Memory: the largest resident set
    of the process seen in any sample, every ``SAMPLE_INTERVAL`` seconds;
    :meth:`high_water` adds the kernel's own peak (``VmHWM``), which no sample
    can miss. Children are left out of the memory figures (a child between
    fork and exec shows its parent's whole resident set, which would count the
    controller twice), except the service processes of ``--processes N``,
    forked and never exec'd (same command line): their sets are added up, and
    ``VmHWM`` is then the supervisor's alone."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _tree(self) -> list:
        import psutil

        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return [self.process]

    def _run(self) -> None:
        import psutil

        command = self.process.cmdline()
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children():  # --processes N: the service processes, forked
                    try:
                        if child.cmdline() == command:
                            rss += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                return
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL)

    def cpu_seconds(self) -> float:
        import psutil

        times = self.process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self._tree()[1:]:
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                pass
        return total

    def high_water(self) -> int | None:
        """The main process's peak resident set in bytes (Linux ``VmHWM``), None where unknown."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def machine_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (the submitting clients and the
    in-process stand-in) and of the whole machine (every process: the controller, this one,
    PostgreSQL's backends, which come and go with the controller's connections, and anything else)."""
    import psutil

    own = psutil.Process().cpu_times()
    machine = psutil.cpu_times()
    busy = sum(getattr(machine, part, 0.0) for part in ("user", "nice", "system", "irq", "softirq"))
    return {"bench_process": own.user + own.system, "machine": busy}


# -- one environment: database, stand-in, controller -------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Environment:
    """A fresh database, a Kubernetes API stand-in and a controller process; ``close`` removes all three."""

    def __init__(self, name: str, args, workdir: Path, standin_clock: StandInClock):
        from kube_standin import KubeStandIn
        from mlrt.service import auth
        from mlrt.store import Store

        self.name = name
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.admin_engine = None
        self.db_name = None
        self.process: subprocess.Popen | None = None
        self.sampler: ProcessSampler | None = None
        self.memory: dict = {}
        self.kube = None
        self.store = None
        try:
            if args.db == "postgres":
                from sqlalchemy import create_engine, text

                self.admin_engine = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
                self.db_name = f"mlrt_bench_{uuid.uuid4().hex[:10]}"
                with self.admin_engine.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
                self.url = args.pg_url.rsplit("/", 1)[0] + f"/{self.db_name}"
            else:
                self.url = f"sqlite:///{self.workdir / 'mlrt.db'}"
            self.store = Store(self.url)  # creates the schema
            self.token = auth.issue(self.store, "user", "bench", "bench")
            standin_clock.reset()
            self.kube = KubeStandIn(latency_ms=args.latency_ms).start()
            kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
            env = bench_env(self.workdir, bytecode_cache=True)
            env.pop("MLRT_DB", None)
            env.update(MLRT_HOME=str(self.workdir / "mlrt-home"), KUBECONFIG=str(kubeconfig), MLRT_TRAINING_IMAGE=IMAGE)
            # A controller on PostgreSQL refuses to start without the operator key for spec.env values.
            env.setdefault("MLRT_SECRET_KEY", Fernet.generate_key().decode())
            self.env = env
            port = free_port()
            self.url_api = f"http://127.0.0.1:{port}"
            self.log = self.workdir / "controller.log"
            command = [args.mlrt, "--db", self.url, "controller", "--port", str(port)]
            command += ["--poll-interval", str(args.poll_interval)]
            if args.controller_processes > 1:  # a commit from before --processes can be measured too
                command += ["--processes", str(args.controller_processes)]
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            self.sampler = ProcessSampler(self.process.pid)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                ready = httpx.get(f"{self.url_api}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("leader"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"controller not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def token_for(self, project: str) -> str:
        """A user token of ``project`` (what ``mlrt tokens create --user NAME --project NAME`` prints)."""
        from mlrt.service import auth

        return auth.issue(self.store, "user", f"bench-{project}", project)

    def cpu_seconds(self) -> float:
        return self.sampler.cpu_seconds()

    def reconcile_histogram(self) -> tuple[float, float]:
        """(passes, seconds) of ``mlrt_reconcile_seconds`` so far, from the leader's ``/metrics``
        (with ``--processes N`` each connection reaches one process: ask until the leader answers)."""
        import httpx

        count = total = 0.0
        for _ in range(100):
            scrape = httpx.get(f"{self.url_api}/metrics", timeout=30).text
            if "\nmlrt_leader 1.0" in scrape:
                break
        for line in scrape.splitlines():
            if line.startswith("mlrt_reconcile_seconds_count"):
                count = float(line.split()[-1])
            elif line.startswith("mlrt_reconcile_seconds_sum"):
                total = float(line.split()[-1])
        return count, total

    def state_counts(self, run_ids: list[str] | None = None) -> dict[str, int]:
        """Runs by state: all, or those of ``run_ids``."""
        from sqlalchemy import bindparam, text

        with self.store.engine.connect() as conn:
            if run_ids is None:
                return dict(conn.execute(text("SELECT state, COUNT(*) FROM runs GROUP BY state")).all())
            query = text("SELECT state, COUNT(*) FROM runs WHERE id IN :ids GROUP BY state")
            query = query.bindparams(bindparam("ids", expanding=True))
            return dict(conn.execute(query, {"ids": run_ids}).all())

    def waiting_reasons(self) -> dict[str, int]:
        """Why QUEUED runs wait, as the controller says (``runs.waiting`` where the schema has it)."""
        from sqlalchemy import inspect, text

        if "waiting" not in {c["name"] for c in inspect(self.store.engine).get_columns("runs")}:
            return {}
        with self.store.engine.connect() as conn:
            query = text("SELECT waiting, COUNT(*) FROM runs WHERE state = 'QUEUED' GROUP BY waiting")
            return dict(conn.execute(query).all())

    def failures(self) -> dict[str, int]:
        """Why runs FAILED, by reason (none should: the stand-in never fails a pod)."""
        from sqlalchemy import text

        with self.store.engine.connect() as conn:
            return dict(
                conn.execute(text("SELECT reason, COUNT(*) FROM runs WHERE state = 'FAILED' GROUP BY reason")).all()
            )

    def close(self) -> None:
        if self.store is not None and self.admin_engine is not None:
            for reason, count in self.failures().items():  # said before the database goes
                print(f"    {count} run(s) FAILED: {reason}", flush=True)
        if self.sampler is not None:
            self.memory = {"peak_rss_sampled": self.sampler.peak_rss, "vm_hwm": self.sampler.high_water()}
            self.sampler.stop()
            self.sampler = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.kube is not None:
            self.kube.stop()
            self.kube = None
        if self.store is not None:
            self.store.engine.dispose()
            self.store = None
        if self.admin_engine is not None:
            from sqlalchemy import text

            with self.admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            self.admin_engine.dispose()
            self.admin_engine = None


# -- submissions ---------------------------------------------------------------------


def submit_all(env: Environment, specs: list[str], clients: int, token: str | None = None) -> list[dict]:
    """POST every spec, from ``clients`` threads; per submission its client-side start/end (unix time) and run id.

    ``token`` is the user token to submit with (its project is the jobs'); the environment's by default."""
    import httpx

    token = token or env.token

    results: list[dict | None] = [None] * len(specs)
    next_index = iter(range(len(specs)))
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=env.url_api, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None or errors:
                    return
                body = {"spec": specs[index], "filename": "job.yaml"}
                started = time.time()
                response = http.post("/api/v1/jobs", json=body)
                ended = time.time()
                if response.status_code != 201:
                    errors.append(f"submission {index}: HTTP {response.status_code}: {response.text[:500]}")
                    return
                results[index] = {"start": started, "end": ended, "run_id": response.json()["run_id"]}

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return results  # type: ignore[return-value]


def request_floor(env: Environment, clients: int, n: int) -> float:
    """Authenticated no-op requests per second (``GET /api/v1/whoami``: the token's lookup, no
    work) from ``clients`` threads like :func:`submit_all`'s: the most submissions per second
    the API, the clients and this machine could reach if a submission cost nothing."""
    import httpx

    left = iter(range(n))
    lock = threading.Lock()

    def client(http: httpx.Client) -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            http.get("/api/v1/whoami").raise_for_status()

    headers = {"Authorization": f"Bearer {env.token}"}
    https = [httpx.Client(base_url=env.url_api, headers=headers, timeout=120) for _ in range(clients)]
    for http in https:  # connect outside the clock
        http.get("/api/v1/whoami").raise_for_status()
    return n / run_clients(https, client)


def run_clients(https: list, client) -> float:
    """Seconds until ``client(http)``, one thread per connected client of ``https``, has returned
    for all of them; the clients are closed afterwards."""
    threads = [threading.Thread(target=client, args=(http,)) for http in https]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for http in https:
        http.close()
    return seconds


WAITING_STATES = ("QUEUED", "STARTING", "RUNNING")


def wait_running(
    env: Environment, n: int, timeout: float, label: str, run_ids: list[str] | None = None, *, required: bool = True
) -> bool:
    """Until ``n`` runs (of ``run_ids``, else of all) are RUNNING (the stand-in never ends a pod); fail on a run
    that ends. After ``timeout`` seconds: raise, or with ``required=False`` say why runs still wait and return False."""
    deadline = time.monotonic() + timeout
    last_print = time.monotonic()
    while True:
        counts = env.state_counts(run_ids)
        running = counts.get("RUNNING", 0)
        others = {s: c for s, c in counts.items() if s not in WAITING_STATES}
        if others:
            raise RuntimeError(f"{label}: runs ended instead of running: {others}; see {env.log}")
        if running >= n:
            return True
        if time.monotonic() > deadline:
            message = f"{label}: only {running:,} of {n:,} runs RUNNING after {timeout:.0f}s ({counts})"
            if required:
                raise RuntimeError(message)
            reasons = "; ".join(f"{c:,} x {w!r}" for w, c in env.waiting_reasons().items()) or "none given"
            say(f"    {message}; why they wait: {reasons}")
            return False
        if time.monotonic() - last_print > 10:
            say(f"    {label}: {running:,}/{n:,} RUNNING, {counts.get('QUEUED', 0):,} QUEUED")
            last_print = time.monotonic()
        time.sleep(0.25)


def run_events(env: Environment) -> dict[str, dict[str, float]]:
    """Per run, the unix time of its first QUEUED, STARTING and RUNNING event."""
    from sqlalchemy import text

    found: dict[str, dict[str, float]] = {}
    with env.store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT run_id, to_state, at FROM events WHERE to_state IS NOT NULL ORDER BY id")
        ).all()
    for run_id, state, at in rows:
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        found.setdefault(run_id, {}).setdefault(state, at.timestamp())
    return found


QUANTILES = (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100), ("min", 0))


def spread(values: list[float], unfinished: list[float] = ()) -> dict:
    """p50, p90, p99, max and min of ``values``.

    ``unfinished`` holds the runs that had not got there when the round stopped
    waiting, each as its time so far: a lower bound of its value. They are
    ranked with the others, and any quantile they could move is listed in
    ``lower_bounds`` (printed as ">="): it is a lower bound, the others exact."""
    pool = sorted([(v, False) for v in values] + [(v, True) for v in unfinished])
    if not pool:
        return {}
    first_open = next((i for i, (_, open_) in enumerate(pool) if open_), len(pool))
    figures: dict = {"count": len(values), "unfinished": len(unfinished), "lower_bounds": []}
    for name, q in QUANTILES:
        figures[name] = percentile([v for v, _ in pool], q)
        if first_open <= min(len(pool) - 1, int((len(pool) - 1) * q / 100) + 1):
            figures["lower_bounds"].append(name)
    return figures


def idle_window(env: Environment, seconds: float) -> dict:
    """The controller's cost while nothing changes: CPU share, reconcile passes/s and mean pass (from /metrics)."""
    cpu0, (count0, total0) = env.cpu_seconds(), env.reconcile_histogram()
    time.sleep(seconds)
    cpu, (count, total) = env.cpu_seconds() - cpu0, env.reconcile_histogram()
    passes = count - count0
    return {
        "window_s": seconds,
        "cpu_share": cpu / seconds,
        "passes": passes,
        "passes_per_s": passes / seconds,
        "pass_mean_ms": 1000 * (total - total0) / passes if passes else None,
    }


def warm_up(env: Environment, template: str, label: str) -> tuple[str, float]:
    """Submit one job and wait until it runs: the controller's first launch imports the backend and the
    algorithm's plugin and materializes the builtin data set into the cache. Shown apart, not in the figures."""
    (warmup,) = submit_all(env, [template.format(index=99999)], 1)
    wait_running(env, 1, timeout=300, label=f"{label} warm-up")
    return warmup["run_id"], run_events(env)[warmup["run_id"]]["RUNNING"] - warmup["start"]


def latencies(submitted: list[dict], events: dict, stopped: float) -> dict:
    """submit -> RUNNING and its parts per run; a run not RUNNING when the round stopped waiting counts
    with its time so far, as a lower bound (see :func:`spread`)."""
    total, unfinished, http, to_queued, queued_wait, launch = [], [], [], [], [], []
    for s in submitted:
        e = events.get(s["run_id"], {})
        http.append(s["end"] - s["start"])
        if "QUEUED" in e:
            to_queued.append(e["QUEUED"] - s["start"])
        if "STARTING" in e and "QUEUED" in e:
            queued_wait.append(e["STARTING"] - e["QUEUED"])
        if "RUNNING" in e:
            total.append(e["RUNNING"] - s["start"])
            if "STARTING" in e:
                launch.append(e["RUNNING"] - e["STARTING"])
        else:
            unfinished.append(stopped - s["start"])
    return {
        "submit_to_running": spread(total, unfinished),
        "http_request": spread(http),
        "request_to_queued_commit": spread(to_queued),
        "queued_to_starting": spread(queued_wait),
        "starting_to_running": spread(launch),
    }


def submission_round(name: str, clients: int, jobs: int, args, workdir: Path, clock: StandInClock) -> dict:
    template = ALGORITHM_SPEC if args.spec == "algorithm" else COMMAND_SPEC
    specs = [template.format(index=i) for i in range(jobs)]
    plural = "s" * (clients > 1)
    say(f"  {name}: {jobs:,} jobs from {clients} client{plural}; starting database, stand-in, controller")
    speed_before = speed_check()
    env = Environment(f"{name}-{jobs}", args, workdir, clock)
    try:
        say(f"    controller at {env.url_api}, database {env.url.rsplit('/', 1)[-1]}; one warm-up job first")
        _, cold = warm_up(env, template, name)
        floor = request_floor(env, clients, min(jobs, 2000))
        cpu_before = env.cpu_seconds()
        others_before = machine_cpu()
        passes_before = env.reconcile_histogram()
        say("    submitting...")
        submitted = submit_all(env, specs, clients)
        last_response = max(s["end"] for s in submitted)
        say(f"    submitted in {last_response - submitted[0]['start']:.1f}s; waiting for RUNNING...")
        drained_all = wait_running(env, jobs + 1, timeout=args.timeout, label=name, required=False)
        stopped = time.time()
        cpu_drain = env.cpu_seconds() - cpu_before
        others = {k: v - others_before[k] for k, v in machine_cpu().items()}
        passes_drain = env.reconcile_histogram()
        # The controller's steady cost with every run RUNNING and nothing changing.
        idle = idle_window(env, args.idle_window) if drained_all else None
        events = run_events(env)
        standin = clock.figures()
        kube_objects = {
            "jobs": len(env.kube.jobs()),
            "pods": len(env.kube.pods()),
            "services": len(env.kube.services()),
        }
    finally:
        env.close()
    speed_after = speed_check()

    first_start = min(s["start"] for s in submitted)
    ran = [events[s["run_id"]] for s in submitted if "RUNNING" in events.get(s["run_id"], {})]
    last_running = max((e["RUNNING"] for e in ran), default=stopped)
    first_starting = min((e["STARTING"] for e in ran if "STARTING" in e), default=stopped)
    figures = latencies(submitted, events, stopped)
    # Latency by submission order, in tenths: does it grow with the number of runs already running?
    by_order = [events.get(s["run_id"], {}).get("RUNNING", stopped) - s["start"] for s in submitted]
    tenth = max(1, len(by_order) // 10)
    by_tenth = [median(by_order[i : i + tenth]) for i in range(0, len(by_order), tenth)][:10]
    drain_passes = passes_drain[0] - passes_before[0]
    return {
        "round": name,
        "clients": clients,
        "first_launch_cold_s": cold,
        "jobs": jobs,
        "running_at_end": len(ran),
        "drained": drained_all,
        "submissions_per_s": jobs / (last_response - first_start),
        "noop_requests_per_s": floor,
        "submit_seconds": last_response - first_start,
        **figures,
        "median_by_tenth": by_tenth,
        "median_by_tenth_lower_bound": not drained_all,
        "drain_seconds": last_running - first_start,
        "launches_per_s": len(ran) / (last_running - first_start),
        "launch_rate_while_launching": len(ran) / max(1e-9, last_running - first_starting),
        "controller_cpu_seconds": cpu_drain,
        "controller_cpu_share": cpu_drain / (stopped - first_start),
        "controller_memory": env.memory,
        "bench_process_cpu_seconds": others["bench_process"],
        "machine_cpu_seconds": others["machine"],
        "cpu_window_seconds": stopped - first_start,
        "cpus": os.cpu_count(),
        "reconcile_passes": drain_passes,
        "reconcile_mean_ms": 1000 * (passes_drain[1] - passes_before[1]) / max(1, drain_passes),
        "idle": idle,
        "standin": standin,
        "kube_objects": kube_objects,
        "speed_check_ms": [speed_before, speed_after],
    }


# -- queue-only: the submissions alone -------------------------------------------------


def queue_only_round(jobs: int, args, workdir: Path, clock: StandInClock) -> dict:
    """``jobs`` submissions from ``--clients`` threads while the project may run none of them
    (its ``max_running`` limit is 0, set after the warm-up job ran): what the API, the clients
    and the database take per submission on this machine with nothing launched beside them."""
    template = ALGORITHM_SPEC if args.spec == "algorithm" else COMMAND_SPEC
    specs = [template.format(index=i) for i in range(jobs)]
    say(f"  queue-only: {jobs:,} jobs from {args.clients} clients, nothing launched; starting")
    speed_before = speed_check()
    env = Environment(f"queue-only-{jobs}", args, workdir, clock)
    try:
        _, cold = warm_up(env, template, "queue-only")
        env.store.set_project_limit("bench", max_running=0)  # the project of env.token
        floor = request_floor(env, args.clients, min(jobs, 2000))
        cpu_before, others_before, passes_before = env.cpu_seconds(), machine_cpu(), env.reconcile_histogram()
        submitted = submit_all(env, specs, args.clients)
        cpu, passes = env.cpu_seconds() - cpu_before, env.reconcile_histogram()
        others = {k: v - others_before[k] for k, v in machine_cpu().items()}
        counts = env.state_counts([s["run_id"] for s in submitted])
    finally:
        env.close()
    speed_after = speed_check()
    seconds = max(s["end"] for s in submitted) - min(s["start"] for s in submitted)
    return {
        "round": "queue-only",
        "jobs": jobs,
        "clients": args.clients,
        "first_launch_cold_s": cold,
        "submissions_per_s": jobs / seconds,
        "noop_requests_per_s": floor,
        "submit_seconds": seconds,
        "http_request": spread([s["end"] - s["start"] for s in submitted]),
        "states_after": counts,
        "reconcile_passes": passes[0] - passes_before[0],
        "reconcile_seconds": passes[1] - passes_before[1],
        "controller_cpu_seconds": cpu,
        "bench_process_cpu_seconds": others["bench_process"],
        "machine_cpu_seconds": others["machine"],
        "cpus": os.cpu_count(),
        "speed_check_ms": [speed_before, speed_after],
    }


def print_queue_only(r: dict) -> None:
    per = {key: 1000 * r[f"{key}_cpu_seconds"] / r["jobs"] for key in ("controller", "bench_process", "machine")}
    rest = per["machine"] - per["controller"] - per["bench_process"]
    print(
        f"queue-only ({r['jobs']:,} jobs, {r['clients']} clients; the project limited to 0 running runs, so nothing"
        f" launches): {r['submissions_per_s']:,.1f} submissions/s; states after: {r['states_after']}"
    )
    print(f"  the same clients' authenticated no-op requests before the round: {r['noop_requests_per_s']:,.1f}/s")
    passes = r["reconcile_passes"]
    print(
        f"  the leader's reconcile passes meanwhile: {passes:,.0f}, {1000 * r['reconcile_seconds'] / max(1, passes):.1f} ms"
        f" each, {r['reconcile_seconds']:.1f}s in all"
    )
    cells = " ".join(f"{quantile(r['http_request'], q):>9}" for q in ("p50", "p90", "p99", "max"))
    print(f"  submit request ms (client side), p50 p90 p99 max: {cells}")
    print(
        f"  CPU per submission: controller {per['controller']:.1f} ms, this process (clients) {per['bench_process']:.1f} ms,"
        f" PostgreSQL and the rest {rest:.1f} ms; the machine {per['machine']:.1f} ms,"
        f" {r['machine_cpu_seconds'] / r['submit_seconds'] / r['cpus']:.0%} of its {r['cpus']} CPUs over the"
        f" {r['submit_seconds']:.1f}s; speed check {r['speed_check_ms'][0]:.0f} / {r['speed_check_ms'][1]:.0f} ms"
    )


# -- fairness: a second project behind a full queue -------------------------------------


def fairness_round(args, workdir: Path, clock: StandInClock) -> dict:
    """Project A queues ``--fair-jobs`` jobs, then project B submits ``--fair-b``; until B's all run."""
    template = ALGORITHM_SPEC if args.spec == "algorithm" else COMMAND_SPEC
    say(f"  fairness: {PROJECT_A} queues {args.fair_jobs:,} jobs, then {PROJECT_B} submits {args.fair_b}")
    speed_before = speed_check()
    env = Environment("fairness", args, workdir, clock)
    try:
        _, cold = warm_up(env, template, "fairness")
        token_a, token_b = env.token_for(PROJECT_A), env.token_for(PROJECT_B)
        cpu_before = env.cpu_seconds()
        submitted_a = submit_all(env, [template.format(index=i) for i in range(args.fair_jobs)], args.clients, token_a)
        queued_a = env.state_counts([s["run_id"] for s in submitted_a]).get("QUEUED", 0)
        say(f"    {PROJECT_A}: {args.fair_jobs:,} submitted, {queued_a:,} still QUEUED; {PROJECT_B} submits")
        specs_b = [template.format(index=50000 + i) for i in range(args.fair_b)]
        submitted_b = submit_all(env, specs_b, 1, token_b)
        ids_b = [s["run_id"] for s in submitted_b]
        drained_b = wait_running(env, len(ids_b), args.timeout, f"fairness {PROJECT_B}", ids_b, required=False)
        stopped = time.time()
        cpu = env.cpu_seconds() - cpu_before
        events = run_events(env)
        counts_a = env.state_counts([s["run_id"] for s in submitted_a])
    finally:
        env.close()
    b_start = min(s["start"] for s in submitted_b)
    b_running = [events[i]["RUNNING"] for i in ids_b if "RUNNING" in events.get(i, {})]
    first_b = min(b_running) if b_running else None
    a_running = [events[s["run_id"]].get("RUNNING") for s in submitted_a]
    return {
        "round": "fairness",
        "first_launch_cold_s": cold,
        "a_jobs": args.fair_jobs,
        "a_queued_when_b_submitted": queued_a,
        "b_jobs": args.fair_b,
        "b_drained": drained_b,
        "b_first_running_s": first_b - b_start if first_b is not None else None,
        "b_first_running_lower_bound_s": stopped - b_start,
        "b_submit_to_running": latencies(submitted_b, events, stopped)["submit_to_running"],
        "a_running_before_b_first": sum(1 for t in a_running if t is not None and (first_b is None or t <= first_b)),
        "a_states_at_end": counts_a,
        "controller_cpu_seconds": cpu,
        "controller_memory": env.memory,
        "speed_check_ms": [speed_before, speed_check()],
    }


# -- idle passes with many finished runs in the database ---------------------------------


def insert_finished(env: Environment, template_id: str, n: int) -> float:
    """Insert ``n`` SUCCEEDED runs cloned from run ``template_id`` (:func:`_common.clone_finished_runs`);
    returns the seconds taken."""
    started = time.perf_counter()
    clone_finished_runs(env.store, template_id, n)
    return time.perf_counter() - started


def idle_round(args, workdir: Path, clock: StandInClock) -> dict:
    """Reconcile passes with nothing changing: one RUNNING run, then with ``--finished`` finished runs added."""
    template = ALGORITHM_SPEC if args.spec == "algorithm" else COMMAND_SPEC
    say(f"  idle: one RUNNING run, then {args.finished:,} finished runs added; {args.idle_window:g}s windows")
    speed_before = speed_check()
    env = Environment("idle", args, workdir, clock)
    try:
        run_id, cold = warm_up(env, template, "idle")
        time.sleep(args.settle)
        empty = idle_window(env, args.idle_window)
        inserted = insert_finished(env, run_id, args.finished)
        counts = env.state_counts()
        say(f"    inserted {args.finished:,} finished runs in {inserted:.1f}s ({counts}); settling {args.settle:g}s")
        time.sleep(args.settle)
        full = idle_window(env, args.idle_window)
    finally:
        env.close()
    return {
        "round": "idle",
        "first_launch_cold_s": cold,
        "finished": args.finished,
        "insert_seconds": inserted,
        "states": counts,
        "without_finished": empty,
        "with_finished": full,
        "controller_memory": env.memory,
        "speed_check_ms": [speed_before, speed_check()],
    }


# -- metric ingestion -----------------------------------------------------------------


def post_points(env: Environment, run_id: str, token: str, key: str, points: int, batch: int, clients: int) -> float:
    """POST ``points`` points of ``key`` in bodies of ``batch`` from ``clients`` threads; wall seconds.

    Bodies are encoded before the clock starts, so the figure is the service's, not the client's JSON encoding."""
    import httpx

    now = time.time()
    bodies = []
    for start in range(0, points, batch):
        chunk = [[key, step, float(step), now] for step in range(start, min(points, start + batch))]
        bodies.append(json.dumps({"points": chunk}).encode())
    next_body = iter(bodies)
    lock = threading.Lock()
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    http_clients = [httpx.Client(base_url=env.url_api, headers=headers, timeout=120) for _ in range(clients)]
    for http in http_clients:  # connect outside the clock
        http.get("/healthz")

    def client(http) -> None:
        while not errors:
            with lock:
                body = next(next_body, None)
            if body is None:
                return
            response = http.post(f"/api/v1/runs/{run_id}/tracking/metrics", content=body)
            if response.status_code != 204:
                errors.append(f"HTTP {response.status_code}: {response.text[:300]}")

    seconds = run_clients(http_clients, client)
    if errors:
        raise RuntimeError(f"ingestion {key}: {errors[0]}")
    return seconds


def count_points(env: Environment, run_id: str, key: str) -> int:
    from sqlalchemy import text

    with env.store.engine.connect() as conn:
        query = text("SELECT COUNT(*) FROM metrics WHERE run_id = :run AND key = :key")
        return conn.execute(query, {"run": run_id, "key": key}).scalar_one()


def run_sdk_child(env: Environment, run_id: str, key: str, n: int, tracking_uri: str, token: str | None) -> dict:
    out = env.workdir / f"sdk-{key}.json"
    child_env = dict(env.env, MLRT_RUN_ID=run_id, MLRT_TRACKING_URI=tracking_uri, RANK="0")
    child_env.pop("MLRT_TRACKING_TOKEN", None)
    if token:
        child_env["MLRT_TRACKING_TOKEN"] = token
    command = [sys.executable, str(Path(__file__).resolve()), "--child", key, "--sdk-points", str(n)]
    command += ["--out", str(out)]
    result = subprocess.run(command, env=child_env, cwd=env.workdir, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"SDK child {key} failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return json.loads(out.read_text())


def ingestion_round(args, workdir: Path, clock: StandInClock) -> dict:
    from mlrt.service import auth

    say(f"  ingestion: {args.points:,} points per case; starting database, stand-in, controller")
    speed_before = speed_check()
    env = Environment("ingestion", args, workdir, clock)
    cases = []
    try:
        template = ALGORITHM_SPEC if args.spec == "algorithm" else COMMAND_SPEC
        (submitted,) = submit_all(env, [template.format(index=0)], 1)
        run_id = submitted["run_id"]
        wait_running(env, 1, timeout=60, label="ingestion")
        token = auth.issue(env.store, "worker", f"run:{run_id}", run_id=run_id)
        for clients in (1, INGEST_CLIENTS):
            for batch in BATCHES:
                key = f"http_b{batch}_c{clients}"
                say(f"    POST tracking/metrics: {batch:,} points/request, {clients} client{'s' * (clients > 1)}...")
                seconds = post_points(env, run_id, token, key, args.points, batch, clients)
                rows = count_points(env, run_id, key)
                label = f"HTTP POST, {batch:,} points/request, {clients} client{'s' * (clients > 1)}"
                cases.append({"case": key, "label": label, "points": args.points, "seconds": seconds, "rows": rows})
        if args.sdk_points:
            for key, uri, tok, label in (
                ("sdk_http", env.url_api, token, "SDK log_metric one-by-one -> service (HTTP)"),
                ("sdk_direct", env.url, None, "SDK log_metric one-by-one -> database directly"),
            ):
                say(f"    {label} ({args.sdk_points:,} points)...")
                figures = run_sdk_child(env, run_id, key, args.sdk_points, uri, tok)
                rows = count_points(env, run_id, key)
                cases.append({"case": key, "label": label, **figures, "rows": rows})
        points_counter = None
        import httpx

        for line in httpx.get(f"{env.url_api}/metrics", timeout=30).text.splitlines():
            if line.startswith("mlrt_metric_points_total"):
                points_counter = float(line.split()[-1])
    finally:
        env.close()
    for case in cases:
        case["points_per_s"] = case["points"] / case["seconds"]
    return {"cases": cases, "service_points_counter": points_counter, "speed_check_ms": [speed_before, speed_check()]}


# -- report --------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:,.0f}"


def quantile(figures: dict, name: str) -> str:
    """One quantile of :func:`spread` in ms, with ">=" where it is a lower bound."""
    if name not in figures:
        return "-"
    return (">=" if name in figures["lower_bounds"] else "") + ms(figures[name])


def memory_line(memory: dict) -> str:
    sampled = memory.get("peak_rss_sampled") or 0
    hwm = memory.get("vm_hwm")
    return f"peak RSS {sampled / 2**20:,.0f} MiB sampled" + (f" (VmHWM {hwm / 2**20:,.0f} MiB)" if hwm else "")


def idle_line(idle: dict) -> str:
    mean = "no pass" if idle["pass_mean_ms"] is None else f"mean pass {idle['pass_mean_ms']:,.1f} ms"
    return (
        f"{idle['cpu_share']:.0%} of a core, {idle['passes']:,.0f} passes in {idle['window_s']:g}s "
        f"({idle['passes_per_s']:.1f}/s), {mean}"
    )


def print_round(r: dict) -> None:
    plural = "s" * (r["clients"] > 1)
    print(
        f"{r['round']} ({r['jobs']:,} jobs, {r['clients']} client{plural}): "
        f"{r['submissions_per_s']:,.1f} submissions/s; {r['running_at_end']:,} RUNNING after {r['drain_seconds']:.1f}s "
        f"({r['launches_per_s']:,.1f} launches/s end to end, {r['launch_rate_while_launching']:,.1f}/s from the first launch)"
    )
    if "noop_requests_per_s" in r:
        print(
            f"  the same clients' authenticated no-op requests (GET /api/v1/whoami) before the round:"
            f" {r['noop_requests_per_s']:,.1f}/s, the ceiling of submissions/s here"
        )
    if not r["drained"]:
        print(f"  NOT DRAINED: {r['jobs'] - r['running_at_end']:,} runs not RUNNING when the round stopped waiting")
        print("  (their time so far counts as a lower bound: quantiles marked >= are lower bounds;")
        print("  the rows of the parts below cover only the runs that got that far)")
    print(
        f"  (warm-up job before the clock: first launch after the controller started took {r['first_launch_cold_s']:.1f}s)"
    )
    print(f"  {'ms':<36} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
    for key, label in (
        ("submit_to_running", "submit -> RUNNING"),
        ("http_request", "  submit request (client side)"),
        ("request_to_queued_commit", "  request start -> QUEUED committed"),
        ("queued_to_starting", "  QUEUED -> STARTING (wait for pass)"),
        ("starting_to_running", "  STARTING -> RUNNING (launch)"),
    ):
        cells = " ".join(f"{quantile(r[key], q):>9}" for q in ("p50", "p90", "p99", "max"))
        print(f"  {label:<36} {cells}")
    tenths = " ".join(ms(v) for v in r["median_by_tenth"])
    bound = " (lower bounds: not all ran)" if r["median_by_tenth_lower_bound"] else ""
    print(f"  median submit -> RUNNING by tenth of the submissions (ms){bound}: {tenths}")
    print(
        f"  controller: {r['controller_cpu_seconds']:.1f} CPU-s from the first submission ({r['controller_cpu_share']:.0%} of a core), "
        f"{memory_line(r['controller_memory'])}; "
        f"{r['reconcile_passes']:,.0f} reconcile passes, mean {r['reconcile_mean_ms']:,.0f} ms"
    )
    if "machine_cpu_seconds" in r:
        wall = r["cpu_window_seconds"]
        rest = r["machine_cpu_seconds"] - r["controller_cpu_seconds"] - r["bench_process_cpu_seconds"]
        print(
            f"  CPU from the first submission until all were RUNNING: controller {r['controller_cpu_seconds']:.1f}, "
            f"this process (clients + stand-in) {r['bench_process_cpu_seconds']:.1f}, PostgreSQL and the rest {rest:.1f}; "
            f"the machine {r['machine_cpu_seconds']:.1f} CPU-s = {1000 * r['machine_cpu_seconds'] / (r['jobs'] or 1):.1f} ms per job, "
            f"{r['machine_cpu_seconds'] / wall / r['cpus']:.0%} of its {r['cpus']} CPUs over the {wall:.1f}s"
        )
    if r["idle"]:
        print(f"  with all {r['jobs']:,} RUNNING and nothing changing: {idle_line(r['idle'])}")
    parts = ", ".join(
        f"{name} {f['count']:,} x {1000 * f['seconds'] / f['count']:.1f} ms" for name, f in r["standin"].items()
    )
    busy = sum(f["seconds"] for name, f in r["standin"].items() if not name.startswith("validate"))
    print(
        f"  speed check (fixed Python loop) before / after the round: {r['speed_check_ms'][0]:.0f} / {r['speed_check_ms'][1]:.0f} ms"
    )
    print(
        f"  stand-in (in this process, injected latency not counted): {busy:.1f}s busy in requests; {parts}; "
        f"objects: {r['kube_objects']}"
    )


def print_fairness(r: dict) -> None:
    b = r["b_submit_to_running"]
    first = (
        f"{r['b_first_running_s']:.2f}s"
        if r["b_first_running_s"] is not None
        else f"not within {r['b_first_running_lower_bound_s']:.0f}s"
    )
    print(
        f"fairness: {PROJECT_A} queued {r['a_jobs']:,} ({r['a_queued_when_b_submitted']:,} still QUEUED when "
        f"{PROJECT_B} submitted), then {PROJECT_B} submitted {r['b_jobs']}"
    )
    print(f"  {PROJECT_B}'s first run RUNNING after {first} (from its first submission; target < 2 s)")
    print(
        f"  {PROJECT_B} submit -> RUNNING ms: p50 {quantile(b, 'p50')}, p99 {quantile(b, 'p99')}, max {quantile(b, 'max')}"
        f"{'' if r['b_drained'] else ' (NOT all RUNNING: >= marks lower bounds)'}"
    )
    print(
        f"  {PROJECT_A}: {r['a_running_before_b_first']:,} of its runs were RUNNING before {PROJECT_B}'s first; "
        f"its states when {PROJECT_B}'s all ran: {r['a_states_at_end']}"
    )
    print(
        f"  controller: {r['controller_cpu_seconds']:.1f} CPU-s, {memory_line(r['controller_memory'])}; "
        f"speed check {r['speed_check_ms'][0]:.0f} / {r['speed_check_ms'][1]:.0f} ms"
    )


def print_idle(r: dict) -> None:
    print(
        f"idle (one RUNNING run, nothing changing; {r['finished']:,} finished runs inserted in {r['insert_seconds']:.1f}s)"
    )
    print(f"  without finished runs: {idle_line(r['without_finished'])}")
    print(f"  with {r['finished']:,} finished:  {idle_line(r['with_finished'])} (target < 50 ms)")
    print(
        f"  controller: {memory_line(r['controller_memory'])}; "
        f"speed check {r['speed_check_ms'][0]:.0f} / {r['speed_check_ms'][1]:.0f} ms"
    )


ROUNDS = ("sequential", "concurrent", "queue-only", "fairness", "idle", "ingestion")


def job_counts(text: str) -> list[int]:
    """``--jobs``: a comma list of positive counts."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of positive counts, such as 1000,10000")
    return counts


def main() -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=job_counts,
        default=[1000],
        help="submissions per round, a comma list such as 1000,10000 (default 1000)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=20.0, help="the stand-in answers each request after this delay (default 20)"
    )
    parser.add_argument("--fair-jobs", type=int, default=1000, help="fairness: project A's queued jobs (default 1,000)")
    parser.add_argument("--fair-b", type=int, default=10, help="fairness: project B's jobs (default 10)")
    parser.add_argument("--finished", type=int, default=10_000, help="idle: finished runs inserted (default 10,000)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle: seconds to wait before each window")
    parser.add_argument("--clients", type=int, default=8, help="client threads of the concurrent round (default 8)")
    parser.add_argument("--points", type=int, default=200_000, help="points per HTTP ingestion case (default 200,000)")
    parser.add_argument(
        "--sdk-points", type=int, default=100_000, help="points of the SDK cases (default 100,000; 0 skips them)"
    )
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres", help="database (default postgres)")
    parser.add_argument("--pg-url", default=os.environ.get("MLRT_TEST_POSTGRES", DEFAULT_PG), help="server URL")
    parser.add_argument("--spec", choices=("algorithm", "command"), default="algorithm", help="job kind submitted")
    parser.add_argument(
        "--no-schema-check",
        action="store_true",
        help="the stand-in skips its JSON-schema validation of created objects (~20 ms each in Python; "
        "a real API server validates in Go), so the figures are the controller's rather than the stand-in's",
    )
    parser.add_argument("--poll-interval", type=float, default=0.2, help="the controller's --poll-interval")
    parser.add_argument("--controller-processes", type=int, default=1, help="the controller's --processes (default 1)")
    parser.add_argument(
        "--rounds", default="sequential,concurrent,fairness,idle,ingestion", help="which rounds to run (default all)"
    )
    parser.add_argument("--idle-window", type=float, default=10.0, help="seconds to watch an idle controller")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="longest wait for RUNNING after the last submission (s); runs still waiting then count as lower bounds",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir (logs) afterwards")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        Path(args.out).write_text(json.dumps(child_sdk(args.child, args.sdk_points)))
        return 0

    QUIET = args.quiet
    args.mlrt = tool("mlrt")
    if args.mlrt is None:
        print("error: no mlrt executable found next to this python or on PATH", file=sys.stderr)
        return 2
    sys.path.insert(0, str(BENCH.parent / "tests"))
    try:
        import kube_standin
    except ImportError as exc:
        print(f"error: the Kubernetes API stand-in needs the kubernetes client extras: {exc}", file=sys.stderr)
        return 2
    clock = StandInClock()
    clock.install(kube_standin)
    if args.no_schema_check:
        import types

        real = kube_standin.kubernetes_validate
        kube_standin.kubernetes_validate = types.SimpleNamespace(
            validate=lambda *a, **k: None, ValidationError=real.ValidationError
        )

    rounds = [r.strip() for r in args.rounds.split(",") if r.strip()]
    unknown = sorted(set(rounds) - set(ROUNDS))
    if unknown:
        print(f"error: --rounds: no round {unknown[0]!r}; choose from {', '.join(ROUNDS)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-service-"))
    database = "SQLite (file in the workdir)"
    if args.db == "postgres":
        from sqlalchemy import create_engine, text

        try:
            engine = create_engine(args.pg_url)
            with engine.connect() as conn:
                database = f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar_one()} at {args.pg_url.split('@')[-1]}"
            engine.dispose()
        except Exception as exc:
            print(f"error: PostgreSQL not reachable at {args.pg_url}: {exc}", file=sys.stderr)
            return 2
    print(f"controller service: submissions and metric ingestion; {machine_line()}")
    schema = "without its schema check" if args.no_schema_check else "with its schema check"
    print(
        f"database: {database}; Kubernetes: API stand-in (tests/kube_standin.py) in this process, {schema}, "
        f"{args.latency_ms:g} ms latency per request"
    )
    print(f"spec: {args.spec} job, compute.backend kubernetes; controller --poll-interval {args.poll_interval:g}")
    print(f"workdir {workdir}")

    summary: dict = {
        "machine": machine_line(),
        "database": database,
        "spec": args.spec,
        "standin_schema_check": not args.no_schema_check,
        "standin_latency_ms": args.latency_ms,
        "poll_interval": args.poll_interval,
        "rounds": [],
    }
    try:
        load_before = os.getloadavg()
        for jobs in args.jobs:
            for name, clients in (("sequential", 1), ("concurrent", args.clients)):
                if name in rounds:
                    summary["rounds"].append(submission_round(name, clients, jobs, args, workdir, clock))
                    print()
                    print_round(summary["rounds"][-1])
                    print()
            if "queue-only" in rounds:
                summary["rounds"].append(queue_only_round(jobs, args, workdir, clock))
                print()
                print_queue_only(summary["rounds"][-1])
                print()
        if "fairness" in rounds:
            summary["fairness"] = fairness_round(args, workdir, clock)
            print()
            print_fairness(summary["fairness"])
            print()
        if "idle" in rounds:
            summary["idle"] = idle_round(args, workdir, clock)
            print()
            print_idle(summary["idle"])
            print()
        if "ingestion" in rounds:
            summary["ingestion"] = ingestion_round(args, workdir, clock)
        load_after = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    ok = True
    if "ingestion" in summary:
        print()
        ing = summary["ingestion"]
        print(f"{'metric ingestion':<56} {'points':>9} {'in DB':>9} {'seconds':>8} {'points/s':>10}")
        for c in ing["cases"]:
            ok &= c["rows"] == c["points"]
            print(
                f"{c['label']:<56} {c['points']:>9,} {c['rows']:>9,} {c['seconds']:>8.2f} {c['points_per_s']:>10,.0f}"
            )
        by_case = {c["case"]: c for c in ing["cases"]}
        if "sdk_http" in by_case:
            ratio = by_case["sdk_http"]["points_per_s"] / by_case["sdk_direct"]["points_per_s"]
            ing["ratio_sdk_http_to_direct"] = ratio
            print(f"SDK through the service / SDK straight to the database: {ratio:.2f}x")
        print(f"every posted point found in the database: {'yes' if ok else 'NO -- figures are not valid'}")
        print(
            f"speed check before / after ingestion: {ing['speed_check_ms'][0]:.0f} / {ing['speed_check_ms'][1]:.0f} ms"
        )
    print("peer: none for submissions (no Kubeflow, SageMaker or other job service here); the ingestion ratio above")
    print("      compares the service's HTTP tracking path with the SDK writing to the same database directly")
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    summary["load_average"] = [load_before, load_after]
    summary["all_points_in_db"] = ok
    if args.json:
        write_json(args.json, summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
