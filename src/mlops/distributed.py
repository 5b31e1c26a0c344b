"""distributed: the device and the PyTorch DDP process group of `mlops train`.

`mlops train` runs in one process by default. With `train.distributed.nproc_per_node: N > 1` it starts
itself again under `torchrun --standalone --nproc-per-node N` (PyTorch's own launcher), and every rank
trains a `DistributedDataParallel` copy of the network; a multi-node run is started by the cluster's
launcher instead (Kubeflow Trainer sets the torchrun environment), which `mlops train` detects from
`WORLD_SIZE`/`RANK`/`LOCAL_RANK`.

The global batch (`train.batch_size` rows, the same permutation as a single process) is split across
the ranks: rank r takes rows r, r+W, r+2W, ... of it (`shard`). Each rank's loss is the *sum* over its
rows divided by the global batch size, times W because DDP averages the gradients over the W ranks: the
all-reduced gradient is then exactly the single-process gradient of that global batch (up to float
summation order), including a short last batch. Dropout masks are not drawn per rank either: every rank
draws the masks of the whole global batch from one generator seeded from `train.seed` (advanced alike
everywhere) and applies the rows of its own shard (`batch_masks`), the masks one process applies to
those rows. So W processes reach the weights of one, with dropout on or off (up to float summation
order: 2 CPU processes vs 1 within 1e-5 with the demo's dropout 0.1).
Only rank 0 writes files, logs to MLflow or TensorBoard.

Backends: gloo on CPU, NCCL on CUDA (`train.distributed.backend: auto`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from mlops.errors import ConfigError
from mlops.params.train import TrainParams

if TYPE_CHECKING:  # annotations only: this module must not import the network's dependencies
    from mlops.model import MLP

log = logging.getLogger(__name__)

# set by torchrun (and by Kubeflow Trainer's torch runtime) in every rank's environment
_RANK_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Context:
    """Where this process trains: its rank in the group, the group size, backend and device."""

    world_size: int
    rank: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and logs (rank 0)."""
        return self.rank == 0

    def describe(self) -> dict[str, object]:
        """How the model was trained, for model.json."""
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device.type}


def resolve_device(requested: str) -> torch.device:
    """`train.device` -> a torch device: cpu, cuda (exit 2 when absent) or auto (cuda when present)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "params.yaml: train.device: cuda, but torch sees no CUDA device on this machine (use cpu or auto)"
        )
    return torch.device(requested)


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError as e:
        raise ConfigError(f"environment: {name}={env[name]!r} is not an integer (set by torchrun)") from e


def check_world_size(params: TrainParams, world_size: int) -> None:
    """The global batch must split evenly: exit 2 naming train.batch_size otherwise."""
    if params.batch_size % world_size:
        raise ConfigError(
            f"params.yaml: train.batch_size {params.batch_size} is not divisible by the world size "
            f"{world_size} (train.distributed.nproc_per_node x nodes): each rank takes an equal share "
            "of the global batch"
        )


def wants_launch(params: TrainParams, env: Mapping[str, str] = os.environ) -> bool:
    """True when `mlops train` should start itself under torchrun (N > 1 and not already a rank)."""
    return params.distributed.nproc_per_node > 1 and "WORLD_SIZE" not in env


def launch(params: TrainParams, argv: Sequence[str]) -> int:
    """Run `mlops <argv>` under `torchrun --standalone --nproc-per-node N`; return its exit code.

    torchrun is PyTorch's launcher (`python -m torch.distributed.run`): it sets the rank variables,
    the rendezvous on 127.0.0.1, and stops every rank when one fails.
    """
    n = params.distributed.nproc_per_node
    check_world_size(params, n)
    resolve_device(params.device)  # fail before starting N processes
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n}",
        "-m",
        "mlops",
        *argv,
    ]
    log.info("train: starting %d processes under torchrun", n)
    return subprocess.call(cmd)


def init(params: TrainParams, env: Mapping[str, str] = os.environ) -> Context:
    """Join the process group when started by torchrun, else a single-process context."""
    device = resolve_device(params.device)
    if "WORLD_SIZE" not in env:
        return Context(1, 0, 0, None, device)
    missing = [v for v in _RANK_VARS if v not in env]
    if missing:
        raise ConfigError(f"environment: WORLD_SIZE is set but {missing[0]} is not (start with torchrun)")
    world, rank, local = (_env_int(env, v) for v in _RANK_VARS)
    check_world_size(params, world)
    backend = params.distributed.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("params.yaml: train.distributed.backend: nccl needs train.device cuda (use gloo)")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Context(world, rank, local, backend if world > 1 else None, device)


def shard(rows: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This rank's share of a global batch (rows r, r+W, ...): its row indices, or its dropout masks' rows."""
    return rows[ctx.rank :: ctx.world_size] if ctx.world_size > 1 else rows


def dropout_generator(seed: int) -> torch.Generator:
    """The dedicated CPU generator of the dropout masks: a stream of `seed` apart from the batch order's.

    Args:
        seed: `train.seed`.

    Returns:
        A generator seeded identically on every rank (numpy's SeedSequence, spawn key 1).
    """
    state = np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def batch_masks(net: MLP, rows: int, generator: torch.Generator, ctx: Context) -> list[torch.Tensor] | None:
    """This rank's dropout masks for one global batch: drawn for all `rows` rows, then its shard.

    Every rank draws the whole global batch's masks (so the generator advances identically everywhere)
    and keeps the rows `shard` gives it, the rows of the batch it trains on; a single process keeps them
    all. Drawn on CPU, then moved to the device, so CUDA and CPU see the same masks.

    Args:
        net: the network (its widths and dropout rate).
        rows: rows in the global batch.
        generator: the dropout generator (`dropout_generator`).
        ctx: this process's rank and device.

    Returns:
        One mask per Dropout layer, [shard rows, width] on `ctx.device`; None when dropout is 0.
    """
    masks = net.draw_masks(rows, generator)
    if masks is None:
        return None
    return [shard(m, ctx).to(ctx.device) for m in masks]


def reduce_sum(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum a scalar over the ranks (every rank gets the total)."""
    if ctx.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def shutdown(ctx: Context) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
