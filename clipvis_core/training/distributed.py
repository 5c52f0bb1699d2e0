"""Process group set-up for ``torchrun`` and the sharding of the sample stream.

``torchrun --nproc_per_node N -m clipvis_core train ...`` sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``; ``init_process_group`` picks nccl on CUDA and gloo on CPU. Without those variables
everything runs as one process and no group is created.

The sample stream is one infinite sequence: the concatenation of per-epoch permutations of the
dataset, each seeded by (seed, epoch). Optimizer step ``s`` consumes entries ``[s*B, (s+1)*B)``
(``B`` = total batch over all processes) and rank ``r`` takes every ``W``-th of them. So the
samples of a step depend only on the step number: resuming needs no sampler state, and any
process count sees the same global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """The torchrun environment (a single process when it is absent)."""
    try:
        return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE / LOCAL_RANK must be integers: start distributed runs with torchrun") from None


def setup(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes; the device this process trains on."""
    info = from_env()
    if device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is visible to this process; use --device cpu")
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return info, dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over processes (identity without a group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any process (all processes must call it)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g).tolist()


def step_indices(num_samples: int, seed: int, step: int, batch_size: int) -> list[tuple[int, int]]:
    """(epoch, dataset index) of the ``batch_size`` global samples of optimizer step ``step``."""
    out: list[tuple[int, int]] = []
    pos = step * batch_size
    epoch, offset = divmod(pos, num_samples)
    while len(out) < batch_size:
        order = epoch_order(num_samples, seed, epoch)
        take = order[offset: offset + batch_size - len(out)]
        out.extend((epoch, i) for i in take)
        epoch, offset = epoch + 1, 0
    return out


class StepShardSampler(torch.utils.data.Sampler):
    """Yields this rank's (epoch, index) pairs from ``start_step`` on, micro-batch by micro-batch.

    Each optimizer step's global batch is split between ranks round-robin (rank r gets entries
    r, r+W, ...), then into ``grad_accum`` consecutive micro-batches.
    """

    def __init__(self, num_samples: int, seed: int, batch_size: int, start_step: int, max_steps: int, info: DistInfo):
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.start_step, self.max_steps, self.info = start_step, max_steps, info

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start_step, self.max_steps):
            yield from step_indices(self.num_samples, self.seed, step, self.batch_size)[self.info.rank::self.info.world_size]

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * (self.batch_size // self.info.world_size)
