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


@contextmanager
def joined_world(device: torch.device) -> Iterator[World]:
    """The process group that torchrun describes (gloo on CPU, NCCL on GPU), left on exit; or a world of
    one. On a GPU each rank takes the device of its LOCAL_RANK."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World(device=device)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield World(rank, size, device)
    finally:
        dist.destroy_process_group()
