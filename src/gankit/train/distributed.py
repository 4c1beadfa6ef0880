"""Data parallelism without ``DistributedDataParallel``.

GAN phases update different networks, run a network forward without updating it (D inside the G
phase) and differentiate through gradients (penalties); DDP's reducer handles none of these
gracefully. Like StyleGAN2-ADA we keep plain modules and, after each phase's backward, average
that phase's gradients over processes with one coalesced all-reduce. Parameters start identical
(broadcast from rank 0) and buffers (batch-norm statistics, spectral-norm vectors) are broadcast
from rank 0 after every step, so every rank holds the same weights throughout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _coalesced(tensors: list[torch.Tensor], op: str) -> None:
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    if op == "mean":
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
    else:
        dist.broadcast(flat, 0)
    off = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[off:off + n].view_as(t))
        off += n


def allreduce_grads(module: nn.Module) -> None:
    """Average the gradients of ``module`` over processes (missing grads count as zero)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    _coalesced([p.grad for p in params], "mean")


@torch.no_grad()
def broadcast_state(module: nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and/or floating buffers to every process."""
    ts = [] if buffers_only else [p.data for p in module.parameters()]
    ts += [b for b in module.buffers() if torch.is_floating_point(b)]
    _coalesced(ts, "broadcast")
    ints = [b for b in module.buffers() if not torch.is_floating_point(b)]
    for b in ints:  # e.g. BN's num_batches_tracked
        dist.broadcast(b, 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown(ok: bool = True) -> None:
    """Leave the process group (if joined) before the interpreter exits: a gloo group left to
    the interpreter's teardown, or torn down while a peer still talks, can abort the process
    ("terminate called without an active exception"). ``ok``: this process finished normally,
    so the others are expected at a final barrier."""
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()  # leave together: a peer closing its side early can abort the other
        dist.destroy_process_group()
