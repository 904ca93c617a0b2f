"""The training loop shared by the torch algorithms.

One loop serves one worker or many: with ``WORLD_SIZE > 1`` it joins the
torch process group (gloo on CPU, nccl with GPUs) at ``MASTER_ADDR:MASTER_PORT``
and wraps the network in ``DistributedDataParallel``; each worker trains on
its shard of the data (a ``DistributedSampler`` reshuffled every epoch), and
rank 0 alone evaluates, logs metrics and writes checkpoints.

Checkpoints (``checkpoint.pt`` in ``MLRT_CHECKPOINT_DIR``) hold the weights,
the optimizer, the epoch and batch reached, the plateau tracker and every RNG
state, so a retried attempt continues exactly where the last checkpoint was
taken, and the metric series continues without duplicate steps. SIGTERM (a
timeout or a cancel) makes every worker stop after its current batch, rank 0
save a checkpoint, and all exit; one that came before the loop started (while
the worker loaded the data, see :mod:`mlrt.worker`) stops it after its first batch.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import mlrt
from mlrt.algorithms import TrainContext
from mlrt.worker import take_over_stop
from mlrt_torch.model import Preprocessor, TorchModel, load_saved
from mlrt_torch.networks import build

CHECKPOINT_FILE = "checkpoint.pt"
EPOCH_METRICS = ("train_loss", "validation_loss", "validation_accuracy", "validation_rmse", "samples_per_second")
_LOWER_IS_BETTER = ("loss", "error", "rmse", "mae")


class Stopped(SystemExit):
    """Raised to end the worker after a SIGTERM, once its checkpoint is saved."""

    def __init__(self) -> None:
        super().__init__(143)


@dataclass
class Plateau:
    """Tracks the monitored metric for plateau stopping."""

    metric: str
    lower_is_better: bool
    min_delta: float
    patience: int | None
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` at ``epoch``; True when patience is exhausted."""
        improved = self.best is None or (
            value < self.best - self.min_delta if self.lower_is_better else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def reason(self) -> str:
        return (
            f"plateau: {self.metric} did not improve by more than {self.min_delta:g} for {self.patience} epochs"
            f" (best {self.best:.4g} at epoch {self.best_epoch})"
        )


@dataclass
class Setup:
    """What a run of the loop needs beyond the TrainContext."""

    kind: str
    config: dict[str, Any]
    task: str
    hp: dict[str, Any]
    preprocessor: Preprocessor
    classes: list | None
    record: dict[str, Any] = field(default_factory=dict)


# -- distributed ------------------------------------------------------------------

GLOO_HANDOVER = 0.1
"""Seconds a worker sleeps after leaving its process group, so that the process
does not start to exit while a gloo thread waits for the GIL.

Gloo's worker threads drop each finished work themselves, and dropping an
all-reduce made during a backward pass takes the GIL (the work keeps the
autograd engine's context, a Python object). A thread still waiting for the
GIL when the interpreter starts to exit aborts the whole process ("terminate
called without an active exception"; pytorch/pytorch#190489 discusses that GIL
acquire during finalization). The sleep releases the GIL to them. Measured
with torch 2.13 on two gloo ranks that exit right after their last backward
pass and a barrier: 5 of 40 runs aborted without it, 0 of 120 with it."""


def join_process_group(ctx: TrainContext) -> None:
    """Join the workers' process group, or fail with a clear reason within the timeout.

    With a loopback ``MASTER_ADDR`` (the local backend) rank 0's rendezvous store
    listens on that address only: torch's ``env://`` store would listen on every
    interface of the machine. (The local launcher binds gloo's own sockets to the
    loopback interface, ``GLOO_SOCKET_IFNAME``.) Elsewhere ``MASTER_ADDR`` is rank
    0's name on the attempt's own network, which may not resolve yet when rank 0
    starts, so torch's ``env://`` rendezvous is used there."""
    backend = "nccl" if ctx.gpus and torch.cuda.is_available() else "gloo"
    host = os.environ.get("MASTER_ADDR", "")
    where = f"{host}:{os.environ.get('MASTER_PORT')}"
    timeout = timedelta(seconds=ctx.rendezvous_timeout)
    try:
        if _is_loopback(host):
            store = _loopback_store(host, int(os.environ["MASTER_PORT"]), ctx.rank, ctx.world_size, timeout)
            dist.init_process_group(backend, store=store, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)
        else:
            dist.init_process_group(
                backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size, timeout=timeout
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(
            f"worker {ctx.rank} of {ctx.world_size} could not join the rendezvous at {where}"
            f" within {ctx.rendezvous_timeout:g}s ({first})"
        ) from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _loopback_store(host: str, port: int, rank: int, world_size: int, timeout: timedelta) -> dist.TCPStore:
    """The rendezvous store: served by rank 0 on a socket bound to ``host`` alone, a client elsewhere."""
    import socket

    if rank != 0:
        return dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(max(world_size, 128))
    except OSError:
        listener.close()
        raise
    # The store's server takes the socket over (and closes it): Python must not close it too.
    return dist.TCPStore(host, port, world_size, is_master=True, timeout=timeout, master_listen_fd=listener.detach())


def _any(flag: bool, distributed: bool) -> bool:
    """True when ``flag`` is set on any worker (an all-reduce when distributed)."""
    if not distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


# -- starting points ---------------------------------------------------------------


def _checkpoint_to_resume(ctx: TrainContext) -> tuple[Path, str] | None:
    own = ctx.checkpoint_dir / CHECKPOINT_FILE
    if own.is_file():
        return own, "retry"
    if ctx.resume_from is not None and (ctx.resume_from / CHECKPOINT_FILE).is_file():
        return ctx.resume_from / CHECKPOINT_FILE, "resume_from"
    return None


def initialize_from(network: nn.Module, ctx: TrainContext, setup: Setup) -> None:
    """Load matching weights from ``ctx.init_from`` and freeze what ``ctx.freeze`` names."""
    if ctx.init_from is not None:
        saved = load_saved(ctx.init_from)
        own = network.state_dict()
        loaded, replaced = [], []
        for name, tensor in saved["state_dict"].items():
            if name in own and own[name].shape == tensor.shape:
                own[name] = tensor
                loaded.append(name)
            elif name in own:
                replaced.append(name)
        if not loaded:
            raise ValueError(
                f"init_from: no weights in {ctx.init_from} fit this network"
                f" ({saved['kind']} {saved['config']} vs {setup.kind} {setup.config})"
            )
        network.load_state_dict(own)
        setup.record.update(init_from=str(ctx.init_from), init_loaded=loaded, init_replaced=replaced)
    if ctx.freeze:
        names = [name for name, _ in network.named_parameters()]
        if ctx.freeze == ["all_but_head"]:
            frozen = [n for n in names if not n.startswith("head.")]
        else:
            unknown = [f for f in ctx.freeze if not any(n == f or n.startswith(f + ".") for n in names)]
            if unknown:
                modules = sorted({n.rsplit(".", 1)[0] for n in names})
                raise ValueError(f"init_from.freeze: {unknown} match no parameter (modules: {', '.join(modules)})")
            frozen = [n for n in names if any(n == f or n.startswith(f + ".") for f in ctx.freeze)]
        for name, parameter in network.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)
        setup.record["frozen"] = frozen


def _optimizer(parameters, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer, stepping all parameters at once (``foreach``): torch's default does that on
    GPUs only and loops over the tensors in Python on CPU, ~3% of a small network's step there,
    for the same arithmetic (the same weights, bit for bit)."""
    name, lr, decay = hp["optimizer"], hp["learning_rate"], hp["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=hp["momentum"], weight_decay=decay, foreach=True)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(parameters, lr=lr, weight_decay=decay, foreach=True)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a worker killed mid-write leaves the previous checkpoint intact


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


# -- the loop ------------------------------------------------------------------------


def train(ctx: TrainContext, setup: Setup) -> TorchModel:
    """Train ``setup``'s network on ``ctx`` and return it packaged as a TorchModel."""
    distributed = ctx.world_size > 1
    if distributed:
        join_process_group(ctx)
    try:
        model = _train(ctx, setup, distributed)
        if distributed:
            # Leave together: a gloo group torn down while a peer still talks to
            # it can abort that peer ("terminate called without an active exception").
            dist.barrier()
        return model
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
            time.sleep(GLOO_HANDOVER)


def _train(ctx: TrainContext, setup: Setup, distributed: bool) -> TorchModel:
    hp = setup.hp
    torch.manual_seed(ctx.seed)
    np.random.seed(ctx.seed % 2**32)
    random.seed(ctx.seed)
    device = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if ctx.gpus and torch.cuda.is_available() else "cpu"
    )
    leader = ctx.rank == 0

    resume = _checkpoint_to_resume(ctx)
    checkpoint = torch.load(resume[0], map_location="cpu", weights_only=False) if resume else None
    if checkpoint is not None:
        if (checkpoint["kind"], checkpoint["config"]) != (setup.kind, setup.config):
            raise ValueError(
                f"checkpoint {resume[0]} is of another network ({checkpoint['kind']} {checkpoint['config']});"
                " resume with the hyperparameters and data it was trained with"
            )
        setup.preprocessor = Preprocessor(checkpoint["preprocessor"])
    network = build(setup.kind, setup.config)
    if checkpoint is None:
        initialize_from(network, ctx, setup)
    else:
        network.load_state_dict(checkpoint["network"])
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(name not in checkpoint["frozen"])
    network.to(device)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, hp)
    model_for_training = nn.parallel.DistributedDataParallel(network) if distributed else network

    train_set = ctx.channels["train"]
    x = torch.from_numpy(setup.preprocessor.transform(train_set.features)).to(device)
    y = _targets(train_set.labels, setup).to(device)
    weights = None if train_set.weights is None else torch.tensor(train_set.weights.to_numpy(dtype=np.float32))
    weights = None if weights is None else weights.to(device)
    validation = ctx.channels.get("validation")
    loss_fn = nn.CrossEntropyLoss() if setup.task == "classification" else nn.MSELoss()
    per_example = (
        nn.CrossEntropyLoss(reduction="none") if setup.task == "classification" else nn.MSELoss(reduction="none")
    )

    def batch_loss(outputs: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if weights is None:
            return loss_fn(outputs, targets)  # the mean in one kernel, as weighted_loss without weights
        return weighted_loss(per_example, outputs, targets, weights[rows])

    stopping = ctx.stopping or {}
    epochs = min(hp["epochs"], stopping.get("max_epochs") or hp["epochs"])
    metric = stopping.get("metric") or ("validation_loss" if validation is not None else "train_loss")
    mode = stopping.get("mode")
    lower = mode == "min" if mode else any(word in metric for word in _LOWER_IS_BETTER)
    plateau = Plateau(metric, lower, stopping.get("min_delta") or 0.0, stopping.get("patience"))
    start_epoch, skip_batches, global_step = 0, 0, 0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, skip_batches, global_step = checkpoint["epoch"], checkpoint["batch"], checkpoint["global_step"]
        plateau = Plateau(**checkpoint["plateau"])
        _set_rng_state(checkpoint["rng"])
        setup.record.update(resumed_from=str(resume[0]), resumed_at_epoch=start_epoch, resumed_at_batch=skip_batches)
        if leader and resume[1] == "retry":
            mlrt.sdk.discard_metrics(EPOCH_METRICS, from_step=start_epoch)
    if leader and setup.record:
        mlrt.log_params({k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in setup.record.items()})

    # A SIGTERM that came while the worker loaded the data (recorded by mlrt.worker) stops
    # the loop after its first step, with a checkpoint, like one that comes later.
    terminate = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGTERM)
    terminate["flag"] = take_over_stop(lambda *_: terminate.__setitem__("flag", True))
    sampler = torch.utils.data.DistributedSampler(
        range(len(x)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=ctx.seed
    )
    batch_size = hp["batch_size"]

    def state(epoch: int, batch: int) -> dict[str, Any]:
        return {
            "network": {k: v.cpu() for k, v in network.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "global_step": global_step,
            "plateau": vars(plateau).copy(),
            "rng": _rng_state(),
            "frozen": [n for n, p in network.named_parameters() if not p.requires_grad],
            "preprocessor": setup.preprocessor.state,
            "kind": setup.kind,
            "config": setup.config,
        }

    checkpoint_path = ctx.checkpoint_dir / CHECKPOINT_FILE
    stop_reason = f"completed {epochs} epochs" + (f" (stopping.max_epochs {epochs})" if epochs < hp["epochs"] else "")
    try:
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler))
            batches = torch.split(order, batch_size)
            started = time.perf_counter()
            model_for_training.train()
            first = skip_batches if epoch == start_epoch else 0
            # Each batch's loss stays a tensor until the epoch ends: reading it (.item()) every
            # step would make the host wait for the device at every step on a GPU.
            losses = []
            for index in range(first, len(batches)):
                rows = batches[index]
                xb, yb = x[rows], y[rows]
                optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(model_for_training(xb), yb, rows)
                loss.backward()
                optimizer.step()
                global_step += 1
                losses.append(loss.detach())
                if _any(terminate["flag"], distributed):
                    if leader:
                        _save_checkpoint(checkpoint_path, state(epoch, index + 1))
                    raise Stopped()
                if leader and ctx.checkpoint_every and global_step % ctx.checkpoint_every == 0:
                    _save_checkpoint(checkpoint_path, state(epoch, index + 1))
            loss_total, seen = 0.0, 0
            for value, rows in zip(torch.stack(losses).tolist() if losses else [], batches[first:], strict=True):
                loss_total += value * len(rows)
                seen += len(rows)
            elapsed = time.perf_counter() - started  # after reading the losses: the device has finished
            totals = torch.tensor([loss_total, float(seen)], dtype=torch.float64)
            if distributed:
                dist.all_reduce(totals)
            stop = False
            if leader:
                values = {"train_loss": (totals[0] / max(totals[1], 1)).item()}
                values["samples_per_second"] = totals[1].item() / elapsed if elapsed > 0 else 0.0
                if validation is not None and validation.labels is not None:
                    values.update(_evaluate(network, validation, setup, loss_fn, device))
                for key, value in values.items():
                    ctx.log_metric(key, value, epoch)
                if metric in values and plateau.update(values[metric], epoch):
                    stop, stop_reason = True, plateau.reason()
                # Metrics first: a worker killed between the two resumes at this
                # epoch and rewrites its points, instead of skipping past them.
                mlrt.flush()
                _save_checkpoint(checkpoint_path, state(epoch + 1, 0))
            if _any(stop, distributed):
                break
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if leader:
        mlrt.log_params({"stop_reason": stop_reason})
    return TorchModel(setup.kind, setup.config, network.cpu(), setup.preprocessor, setup.classes)


def weighted_loss(
    per_example: nn.Module, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """A batch's loss: the mean of ``per_example``'s losses (a loss with ``reduction="none"``),
    weighted by ``weights`` when the training channel has a ``weight`` column
    (``sum(w * loss) / sum(w)``, so a weight of 2 counts an example twice)."""
    losses = per_example(outputs, targets)
    if losses.dim() > 1:  # MSE keeps the output dimension
        losses = losses.mean(dim=tuple(range(1, losses.dim())))
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def _targets(labels, setup: Setup) -> torch.Tensor:
    if setup.task == "classification":
        index = {label: i for i, label in enumerate(setup.classes)}
        return torch.tensor([index[v] for v in labels.tolist()], dtype=torch.long)
    return torch.tensor(labels.to_numpy(dtype=np.float32)).unsqueeze(1)


def _evaluate(network: nn.Module, dataset, setup: Setup, loss_fn, device) -> dict[str, float]:
    """Validation loss and accuracy (or RMSE) of the network as it is now.

    Accuracy counts every row (a label never seen in training is an error);
    the loss covers the rows whose label the network can score."""
    network.eval()
    with torch.no_grad():
        outputs = network(torch.from_numpy(setup.preprocessor.transform(dataset.features)).to(device)).cpu()
    network.train()
    if setup.task == "regression":
        loss = loss_fn(outputs, _targets(dataset.labels, setup)).item()
        return {"validation_loss": loss, "validation_rmse": loss**0.5}
    predicted = np.asarray(setup.classes)[outputs.argmax(1).numpy()]
    accuracy = float((predicted == dataset.labels.to_numpy()).mean())
    known = dataset.labels.isin(setup.classes).to_numpy()
    loss = loss_fn(outputs[torch.tensor(known)], _targets(dataset.labels[known], setup)).item()
    return {"validation_loss": loss, "validation_accuracy": accuracy}
