"""Process-group set-up for ``torchrun`` (gloo on CPU, NCCL on CUDA) and the few collectives the
trainer needs. A single process needs no process group; every helper degrades to a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "DistEnv":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group when world > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"--device {device} requested but CUDA is not available")
            device = f"cuda:{local}" if world > 1 else device
            torch.cuda.set_device(torch.device(device))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return cls(rank, world, local, device)

    def sum(self, values: list[float]) -> list[float]:
        """Sum floats across ranks (float64, so token counts stay exact)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
