"""Training throughput of the torch plugin through `mlrt submit` vs the same model in a plain torch loop.

Run it from an environment that has mlrt with torch installed
(``pip install -c constraints.txt -e ".[torch]"``) -- see bench/README.md:

    python bench/torch_throughput.py                  # CNN and MLP, 3 repetitions, 20,000 rows x 6 epochs
    python bench/torch_throughput.py -n 5 --models cnn --json bench/results/torch.json

Data (default ``--dataset synthetic``): ``--rows`` images made from
scikit-learn's bundled 8x8 digits -- rows drawn with replacement plus
Gaussian pixel noise (sd 2 on the 0-16 scale), 64 features, 10 classes --
written once as Parquet and given to mlrt as a ``file://`` channel (plus a
validation channel of rows/10, so the job evaluates every epoch as a real one
would). ``--dataset digits`` uses ``builtin://sklearn/digits?split=train``
(1,077 rows) instead; its epochs are short (~0.1 s) and noisy, so raise
``--epochs`` with it.

For each model, every repetition runs both sides, alternating which goes first:

* mlrt:  ``mlrt submit --wait -q job.yaml`` (``algorithm: torch.cnn`` or
  ``torch.mlp``, ``compute: {workers: 1, cpu: C}``). The plugin logs
  ``samples_per_second`` per epoch (training loop only, no evaluation); the
  figure is the median over the epochs after the first, read back with
  ``mlrt metrics RUN --key samples_per_second --json``. End to end: training
  samples (rows x epochs) / wall time of the whole ``mlrt submit`` (process
  start, torch import, data loading, per-epoch validation and checkpoint,
  final evaluation, model and predictions written).
* plain: a fresh process with the same thread settings (OMP/MKL/OPENBLAS
  ``_NUM_THREADS=C`` as the local launcher sets them, and
  ``torch.set_num_threads(C)``), in a session of its own as the launcher
  starts each worker (the kernel's autogroup scheduling shares CPU out
  between sessions first), running a plain loop on the same network class
  (``mlrt_torch.networks.CNN``/``MLP``), the same preprocessing (done before
  the clock), seed, optimizer, batch size, dropout and the same per-epoch
  shuffle (``randperm`` with a generator seeded ``seed + epoch``, as the
  plugin's ``DistributedSampler``), timing only the batch loop of each epoch.
  Per batch it does what a typical loop does: index the batch, zero_grad,
  forward, loss, backward, step, and ``loss.item()`` to accumulate the epoch's
  training loss. The per-epoch training loss must equal the plugin's (the same
  batches, dropout masks and updates; to 1e-5 relative, and it is printed
  whether they are equal to the bit, as they are since the plugin takes the
  mean loss the same way), or the bench exits 1.

  The optimizer: the plugin steps all parameters at once (``foreach=True``,
  the same arithmetic and the same weights to the bit); the plain loop uses
  torch's default, which on CPU loops over the parameters in Python, as a
  typical loop does. ``--plain-foreach`` gives the plain loop ``foreach=True``
  too, to compare the two loops with the same optimizer code.

Reported: median over repetitions of each side's per-run figure, and the ratio
mlrt/plain. Target: mlrt >= 0.95 of the plain loop (training samples/s).
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
from _common import bench_env, machine_line, median, peer_version, tool  # noqa: E402

TARGET_RATIO = 0.95
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

JOB_YAML = """\
apiVersion: mlrt/v1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: {algorithm}
  data: {data}
  hyperparameters: {hyperparameters}
  compute: {{workers: 1, cpu: {cpu}}}
  seed: {seed}
"""

MODELS = {
    # name -> (mlrt algorithm, hyperparameters other than the shared training ones)
    "cnn": ("torch.cnn", {"channels": 16, "hidden_size": 64}),
    "mlp": ("torch.mlp", {"hidden_size": 128, "layers": 2}),
}


def make_dataset(workdir: Path, rows: int, seed: int) -> dict[str, str]:
    """Synthetic digits-like images as Parquet; the channel URIs."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    channels = {}
    for name, count in (("train", rows), ("validation", max(rows // 10, 1))):
        pick = rng.integers(0, len(digits.target), count)
        images = np.clip(digits.data[pick] + rng.normal(0.0, 2.0, (count, 64)), 0.0, 16.0).astype(np.float32)
        frame = pd.DataFrame(images, columns=[f"px{i}" for i in range(64)])
        frame["label"] = digits.target[pick]
        path = workdir / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        channels[name] = path.as_uri()
    return channels


# -- the plain loop (runs in a child process) ----------------------------------------


def child_plain(config: dict) -> dict:
    import torch
    from mlrt_torch.model import Preprocessor
    from mlrt_torch.networks import CNN, MLP
    from torch import nn

    from mlrt.data import load_dataset

    threads = config["cpu"]
    torch.set_num_threads(threads)
    hp = config["hyperparameters"]
    seed = config["seed"]

    # Data and preprocessing, as the worker and the plugin do them; not timed.
    dataset = load_dataset("train", Path(config["train_path"]), None, "label", None)
    preprocessor = Preprocessor.fit(dataset.features)
    x = torch.from_numpy(preprocessor.transform(dataset.features))
    classes = sorted(dataset.labels.unique().tolist())
    index = {label: i for i, label in enumerate(classes)}
    y = torch.tensor([index[v] for v in dataset.labels.tolist()], dtype=torch.long)

    torch.manual_seed(seed)
    if config["model"] == "cnn":
        side = int(round(x.shape[1] ** 0.5))
        model = CNN((1, side, side), len(classes), hp["channels"], hp["hidden_size"], hp["dropout"], "relu")
    else:
        model = MLP(x.shape[1], len(classes), hp["hidden_size"], hp["layers"], hp["dropout"], "relu")
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["learning_rate"], foreach=config["plain_foreach"] or None)
    loss_fn = nn.CrossEntropyLoss()
    batch_size = hp["batch_size"]

    samples_per_second, train_loss = [], []
    for epoch in range(hp["epochs"]):
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        batches = torch.randperm(len(x), generator=generator).split(batch_size)
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for rows in batches:
            xb, yb = x[rows], y[rows]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
            seen += len(rows)
        elapsed = time.perf_counter() - started
        samples_per_second.append(seen / elapsed)
        train_loss.append(total / seen)
    return {
        "samples_per_second": samples_per_second,
        "train_loss": train_loss,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
    }


# -- the driver ------------------------------------------------------------------


def run_mlrt(spec: Path, workdir: Path, env: dict[str, str], mlrt: str) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [mlrt, "submit", "--wait", "-q", str(spec)], cwd=workdir, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0 or "SUCCEEDED" not in result.stdout:
        raise RuntimeError(f"mlrt submit {spec.name} failed (exit {result.returncode}): {result.stdout}{result.stderr}")
    run_id = result.stdout.split()[0]

    def series(key: str) -> list[float]:
        points = json.loads(
            subprocess.run(
                [mlrt, "metrics", run_id, "--key", key, "--json"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        return [p["value"] for p in sorted(points, key=lambda p: p["step"])]

    return {
        "run_id": run_id,
        "wall_s": wall,
        "samples_per_second": series("samples_per_second"),
        "train_loss": series("train_loss"),
    }


def run_plain(config: dict, workdir: Path, env: dict[str, str]) -> dict:
    out = workdir / "plain.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config), "--out", str(out)]
    started = time.perf_counter()
    # In a session of its own, as mlrt's local launcher starts each worker: with the kernel's
    # autogroup scheduling, CPU is shared out between sessions first, then within each one.
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, start_new_session=True)
    wall = time.perf_counter() - started
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"plain loop failed (exit {result.returncode}): {result.stderr[-3000:]}")
    figures = json.loads(out.read_text())
    figures["wall_s"] = wall
    return figures


def same_series(a: list[float], b: list[float]) -> bool:
    """Equal per-epoch losses, to 1e-5 relative (a plugin that averages per-example losses differs in the last bits)."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-5 * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def after_warmup(values: list[float]) -> float:
    """Median over the epochs after the first (the first when there is only one)."""
    return median(values[1:] or values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=3, help="timed repetitions of each side (default 3)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cnn", "mlp"])
    parser.add_argument("--dataset", choices=("synthetic", "digits"), default="synthetic")
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic training rows (default 20,000)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6; the first is warm-up)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu", type=int, default=1, help="compute.cpu = torch threads on both sides (default 1)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--plain-foreach", action="store_true", help="the plain loop's Adam with foreach=True, as the plugin's"
    )
    parser.add_argument("--mlrt", default=tool("mlrt"), help="the mlrt executable (default: next to this python)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        Path(args.out).write_text(json.dumps(child_plain(json.loads(args.child))))
        return 0
    if not args.mlrt:
        print("error: no mlrt executable found next to this python or on PATH (pass --mlrt)", file=sys.stderr)
        return 2
    if args.epochs < 2:
        print("error: --epochs must be at least 2 (the first epoch is warm-up)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="mlrt-bench-torch-"))
    env = bench_env(workdir, bytecode_cache=True)
    env["MLRT_HOME"] = str(workdir / "mlrt-home")
    env.pop("MLRT_DB", None)
    for name in THREAD_VARIABLES:  # the local launcher sets these for mlrt's worker; the plain child gets the same
        env[name] = str(args.cpu)

    if args.dataset == "synthetic":
        channels = make_dataset(workdir, args.rows, args.seed)
        train_path = Path(channels["train"].removeprefix("file://"))
        data = f"{{train: {channels['train']}, validation: {channels['validation']}}}"
        rows = args.rows
    else:
        import pandas as pd

        from mlrt_data.builtin import BuiltinScheme

        train_uri = "builtin://sklearn/digits?split=train"
        train_path = Path(BuiltinScheme().materialize(train_uri, workdir / "cache"))
        data = f"{{train: '{train_uri}', validation: 'builtin://sklearn/digits?split=validation'}}"
        rows = len(pd.read_csv(train_path))

    shared = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 1e-3, "optimizer": "adam"}
    shared["dropout"] = 0.1
    print(
        f"torch training throughput, {args.repetitions} repetitions, {args.epochs} epochs of {rows} rows "
        f"({args.dataset}), batch {args.batch_size}, adam lr 1e-3, dropout 0.1, seed {args.seed}, "
        f"1 worker, {args.cpu} torch thread(s) each side; {machine_line()}"
    )
    print(
        "optimizer: the plugin's Adam foreach=True; the plain loop's "
        + ("foreach=True (--plain-foreach)" if args.plain_foreach else "torch's default (per-tensor on CPU)")
    )
    print(f"torch {peer_version('torch') or '?'} (CPU); GPU: not measured (no GPU on this machine)")
    print(f"workdir {workdir}  (MLRT_HOME={env['MLRT_HOME']})")
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} (1 min) -- other work on the machine skews both sides")

    specs, configs = {}, {}
    for model in args.models:
        algorithm, own = MODELS[model]
        hyperparameters = {**own, **shared}
        spec = workdir / f"{model}.yaml"
        spec.write_text(
            JOB_YAML.format(
                name=f"bench-{model}", algorithm=algorithm, data=data,
                hyperparameters=json.dumps(hyperparameters), cpu=args.cpu, seed=args.seed,
            )
        )  # fmt: skip
        specs[model] = spec
        configs[model] = {
            "model": model, "hyperparameters": hyperparameters, "seed": args.seed,
            "cpu": args.cpu, "train_path": str(train_path), "plain_foreach": args.plain_foreach,
        }  # fmt: skip

    # Untimed warm-up of each side (creates the database, fills the bytecode and page caches).
    warm_spec = workdir / "warmup.yaml"
    first_model = args.models[0]
    warm_spec.write_text(specs[first_model].read_text().replace(f'"epochs": {args.epochs}', '"epochs": 1'))
    run_mlrt(warm_spec, workdir, env, args.mlrt)
    run_plain({**configs[first_model], "hyperparameters": {**configs[first_model]["hyperparameters"], "epochs": 1}},
              workdir, env)  # fmt: skip

    runs: dict[str, dict[str, list[dict]]] = {model: {"mlrt": [], "plain": []} for model in args.models}
    for repetition in range(args.repetitions):
        for model in args.models:
            order = ("mlrt", "plain") if repetition % 2 == 0 else ("plain", "mlrt")
            for side in order:
                if side == "mlrt":
                    figures = run_mlrt(specs[model], workdir, env, args.mlrt)
                else:
                    figures = run_plain(configs[model], workdir, env)
                runs[model][side].append(figures)
                print(
                    f"  rep {repetition + 1} {model} {side:<5}: "
                    f"{after_warmup(figures['samples_per_second']):>9.0f} samples/s (epochs 2..), "
                    f"wall {figures['wall_s']:.2f} s",
                    flush=True,
                )

    samples = rows * args.epochs
    result: dict = {
        "machine": machine_line(),
        "torch_version": peer_version("torch"),
        "gpu": "not measured (no GPU on this machine)",
        "repetitions": args.repetitions,
        "dataset": args.dataset,
        "rows": rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "cpu_threads": args.cpu,
        "seed": args.seed,
        "plain_optimizer_foreach": args.plain_foreach,
        "models": {},
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
    }
    print()
    print(
        f"{'model':<5} {'side':<6} {'train samples/s':>16} {'min':>9} {'max':>9}  {'end-to-end samples/s':>21} "
        f"{'wall s':>7}"
    )
    all_met = True
    for model in args.models:
        figures = {}
        for side in ("mlrt", "plain"):
            per_run = [after_warmup(f["samples_per_second"]) for f in runs[model][side]]
            walls = [f["wall_s"] for f in runs[model][side]]
            figures[side] = {
                "samples_per_second_median": median(per_run),
                "samples_per_second_runs": per_run,
                "end_to_end_samples_per_second_median": samples / median(walls),
                "wall_s_median": median(walls),
                "epochs_samples_per_second": [f["samples_per_second"] for f in runs[model][side]],
            }
            row = figures[side]
            print(
                f"{model:<5} {side:<6} {row['samples_per_second_median']:>16.0f} {min(per_run):>9.0f} "
                f"{max(per_run):>9.0f}  {row['end_to_end_samples_per_second_median']:>21.0f} "
                f"{row['wall_s_median']:>7.2f}"
            )
        ratio = figures["mlrt"]["samples_per_second_median"] / figures["plain"]["samples_per_second_median"]
        # Each repetition's two runs are adjacent in time, so their ratio is less exposed to drift on the machine.
        paired = [
            m / p
            for m, p in zip(
                figures["mlrt"]["samples_per_second_runs"], figures["plain"]["samples_per_second_runs"], strict=True
            )
        ]
        figures["paired_ratios"] = paired
        figures["paired_ratio_median"] = median(paired)
        e2e_ratio = (
            figures["mlrt"]["end_to_end_samples_per_second_median"]
            / (figures["plain"]["end_to_end_samples_per_second_median"])
        )
        same_loss = all(
            same_series(m["train_loss"], p["train_loss"])
            for m, p in zip(runs[model]["mlrt"], runs[model]["plain"], strict=True)
        )
        figures["ratio_mlrt_to_plain"] = ratio
        figures["end_to_end_ratio_mlrt_to_plain"] = e2e_ratio
        figures["same_train_loss"] = same_loss
        figures["bitwise_same_train_loss"] = all(
            m["train_loss"] == p["train_loss"] for m, p in zip(runs[model]["mlrt"], runs[model]["plain"], strict=True)
        )
        figures["train_loss_mlrt"] = runs[model]["mlrt"][0]["train_loss"]
        figures["train_loss_plain"] = runs[model]["plain"][0]["train_loss"]
        figures["plain_torch_threads"] = runs[model]["plain"][0]["torch_threads"]
        figures["mlrt_run_ids"] = [f["run_id"] for f in runs[model]["mlrt"]]
        figures["target_met"] = ratio >= TARGET_RATIO
        all_met &= figures["target_met"]
        result["models"][model] = figures
    print()
    for model, figures in result["models"].items():
        verdict = "MET" if figures["target_met"] else "MISSED"
        print(
            f"{model}: mlrt/plain training samples/s = {figures['ratio_mlrt_to_plain']:.3f} "
            f"(target >= {TARGET_RATIO}: {verdict}); per-repetition ratios "
            f"{', '.join(f'{r:.3f}' for r in figures['paired_ratios'])} (median {figures['paired_ratio_median']:.3f})"
        )
        print(
            f"{model}: end to end mlrt/plain {figures['end_to_end_ratio_mlrt_to_plain']:.3f} (mlrt: whole submit incl. "
            "evaluation and saving; plain: python + imports + data load + training, no evaluation)"
        )
        same = "DIFFERENT (the sides did not do the same work)"
        if figures["same_train_loss"]:
            same = "equal to the bit" if figures["bitwise_same_train_loss"] else "equal (1e-5 rel.)"
        print(
            f"{model}: per-epoch train_loss mlrt vs plain: {same}; plain torch threads {figures['plain_torch_threads']}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        "train samples/s: median over runs of each run's median over epochs 2.. (training loop only); "
        "end to end: rows x epochs / median wall time of the whole command"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(f["same_train_loss"] for f in result["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
