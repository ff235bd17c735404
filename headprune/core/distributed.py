"""Running under `torchrun` / `accelerate launch`: who am I, summing across processes, only rank 0 writes.

Everything here is a no-op in an ordinary single process, so engine code calls it unconditionally.
The process group is started by Accelerate (`accelerator()`: gloo on CPU, NCCL on GPUs) from the launcher's
environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...); headprune never spawns or manages processes itself.
Torch is imported lazily so that `headprune --help` stays fast.
"""
from __future__ import annotations

import os

_ACCELERATOR = None


def launched() -> bool:
    """True when a launcher started this process as one of several (`WORLD_SIZE` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    if launched() and _initialised():
        import torch.distributed as dist

        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    if launched() and _initialised():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the process that writes files and prints results (global rank 0)."""
    return rank() == 0


def accelerator(**kwargs):
    """The process's `accelerate.Accelerator` (created on first use; starts the process group when launched).

    Keyword arguments apply only to the first call. On a machine without a GPU it runs on CPU with gloo.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        import torch
        from accelerate import Accelerator

        kwargs.setdefault("cpu", not torch.cuda.is_available())  # Accelerate needs cpu=True for gloo DDP on CPUs
        _ACCELERATOR = Accelerator(**kwargs)
    return _ACCELERATOR


def init() -> None:
    """Start the process group when launched by torchrun / accelerate (no-op otherwise)."""
    if launched():
        accelerator()


def all_reduce_sum(tensor):
    """Sum `tensor` over all processes, in place, and return it; returns it unchanged when not distributed.

    For scores that are sums over examples (Michel et al. 2019's Σ|∂L/∂ξ|, Kwon et al. 2022's Σ(∂L/∂ξ)²):
    each process sums over its shard, then this makes every process hold the total.
    """
    if not (launched() and _initialised()):
        return tensor
    import torch.distributed as dist

    device = tensor.device
    if dist.get_backend() == "nccl" and device.type != "cuda":  # NCCL reduces CUDA tensors only
        import torch

        moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        tensor.copy_(moved.to(device))
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard(items: list) -> list:
    """This process's share of `items` (items r, r+W, r+2W, ... for rank r of W); all of them when not distributed."""
    return list(items)[rank()::world_size()]


def barrier() -> None:
    """Wait until every process gets here (no-op when not distributed)."""
    if launched() and _initialised():
        import torch.distributed as dist

        dist.barrier()


def aggregate_all(contributions):
    """`headprune.scoring.registry.Contributions.aggregate()` over every process's examples: the per-head sums (and the
    example weights of a mean) are all-reduced before dividing. Equals `.aggregate()` when not distributed."""
    total = all_reduce_sum(contributions.values.nan_to_num(0.0).sum(0))  # (L, H)
    if contributions.reduce == "sum":
        return total
    weight = all_reduce_sum(contributions.weights.sum().reshape(1))  # (1,)
    return total / weight.clamp(min=1e-300)
