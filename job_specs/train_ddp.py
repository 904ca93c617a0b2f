"""A plain torch DDP training script, run by mlrt as a `command:` job.

Nothing here is mlrt-specific except `mlrt.log_metric`: the process group is
set up from the torch variables mlrt provides (MASTER_ADDR, MASTER_PORT,
WORLD_SIZE, RANK), data comes from MLRT_CHANNEL_<NAME> paths, and the model
goes to MLRT_OUTPUT_DIR. The same script runs under torchrun.
"""

import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import mlrt


def load(path):
    """Features and integer labels from a CSV whose last column is `label`."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    return torch.from_numpy(table[:, :-1] / 16.0), torch.from_numpy(table[:, -1]).long()


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    hp = json.loads(os.environ.get("MLRT_HYPERPARAMETERS", "{}"))
    epochs, lr, batch_size = hp.get("epochs", 10), hp.get("lr", 1e-3), hp.get("batch_size", 32)
    torch.manual_seed(0)

    x, y = load(os.environ["MLRT_CHANNEL_TRAIN"])
    x_val, y_val = load(os.environ["MLRT_CHANNEL_VALIDATION"])
    train = TensorDataset(x, y)
    sampler = DistributedSampler(train, shuffle=True, seed=0)
    loader = DataLoader(train, batch_size=batch_size, sampler=sampler)

    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        if rank == 0:
            model.eval()
            with torch.no_grad():
                accuracy = (model.module(x_val).argmax(1) == y_val).float().mean().item()
            mlrt.log_metric("val_accuracy", accuracy, step=epoch)
            print(f"epoch {epoch} val_accuracy={accuracy:.4f}", flush=True)

    if rank == 0:
        torch.save(model.module.state_dict(), os.path.join(os.environ["MLRT_OUTPUT_DIR"], "model.pt"))
    # Leave together: a gloo group torn down while a peer still uses it can abort
    # that peer ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()
    # Then hand gloo's threads the GIL before exiting: each drops its last
    # gradient all-reduce itself, which takes the GIL, and a thread still waiting
    # for it when the interpreter exits aborts the process (pytorch/pytorch#190489).
    time.sleep(0.1)


if __name__ == "__main__":
    main()
