"""Multi-process training and prediction with PyTorch's own engine, launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for every process; without them
(a plain ``microdiff`` call) everything here is a no-op for a world of one. The process
group uses NCCL when the processes drive CUDA GPUs and gloo on CPU.

How training stays exact across world sizes: every rank builds the same *global* batch of
step ``s`` (seeded by ``(train.seed, s)``) and the same diffusion noise for it, then keeps
its own contiguous slice; DistributedDataParallel averages the gradients, which is the
gradient of the global batch mean. So 2 processes with batch 8 train the same weights as 1
process with batch 8 (up to float rounding), and a checkpoint resumes under any world size.
The run folder must be on a file system every rank sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (``n`` divisible by the world size)."""
        if n % self.size:
            raise ConfigError(f"{n} is not divisible by the {self.size} processes; "
                              f"choose a batch size that is a multiple of {self.size}")
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Each value's mean over the ranks (one collective; a non-finite value anywhere
        makes the mean non-finite everywhere)."""
        if not self.distributed:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return dict(zip(values, (t / self.size).tolist(), strict=True))


def world_from_env() -> World:
    """The :class:`World` that ``torchrun`` describes in the environment (one process if none)."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from None


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def start(device: str = "auto", timeout_min: float = 120.0) -> tuple[World, bool]:
    """Join the process group ``torchrun`` set up (NCCL for CUDA, gloo on CPU) and pin this
    rank's GPU. Returns the world and whether this call created the group (then the caller
    calls :func:`stop`). ``device``: the config's ``train.device`` (``auto``, ``cpu``, ``cuda``)."""
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        return world, False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    return world, True


def stop(created: bool) -> None:
    """Leave the process group if :func:`start` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, world: World) -> torch.device:
    """``cuda`` becomes this rank's GPU (``cuda:LOCAL_RANK``) in a multi-process run."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device
