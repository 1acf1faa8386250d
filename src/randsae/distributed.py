"""torch.distributed under `torchrun`: which rank this process is, and sums across ranks.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op on one process.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch."""
        return batch.tensor_split(self.size)[self.rank] if self.distributed else batch

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over ranks, in place (and returned)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


_ALONE: list[bool] = []  # inside `alone()`: this rank works by itself


@contextmanager
def joined_world(device: torch.device) -> Iterator[World]:
    """The process group that torchrun describes (gloo on CPU, NCCL on GPU), left on exit; or a world of
    one. On a GPU each rank takes the device of its LOCAL_RANK. Inside an outer `joined_world` (a study that
    deals its work across the ranks) the outer group is used and left to it; inside `alone()`, a world of one
    on this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda" and size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if size <= 1 or _ALONE:
        yield World(device=device)
        return
    rank = int(os.environ["RANK"])
    if dist.is_initialized():
        yield World(rank, size, device)
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield World(rank, size, device)
    finally:
        dist.destroy_process_group()


@contextmanager
def alone() -> Iterator[None]:
    """A block in which this rank does a unit of work by itself: `joined_world` gives a world of one."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


def gather_to(world: World, tensor: torch.Tensor, owner: int, sizes: list[int]) -> torch.Tensor | None:
    """On `owner`, the rows of every rank's `tensor` in rank order (rank r holds `sizes[r]` rows); None on the
    other ranks. Rows are padded to the largest share for the collective, then cut back."""
    if not world.distributed:
        return tensor
    most = max(sizes)
    padded = torch.zeros((most, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(world.size)] if world.rank == owner else None
    dist.gather(padded, parts, dst=owner)
    if parts is None:
        return None
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def any_rank(world: World, flag: bool) -> bool:
    """Whether `flag` holds on any rank."""
    if not world.distributed:
        return flag
    value = torch.tensor([int(flag)], device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
