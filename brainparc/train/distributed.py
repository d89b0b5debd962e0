"""The torchrun contract and data loaders that are reproducible per epoch and rank.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; the CUDA device is ``cuda:LOCAL_RANK`` — never the global
rank (the multi-node trap).  Loaders always use a ``DistributedSampler`` (one replica when not distributed), so the
shuffling order is a function of ``(seed, epoch)`` and a resumed run sees the same order; the trainer calls
``set_epoch`` on the sampler and on the dataset every epoch (the reference never did, §7 item 9).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from brainparc.train.data import seed_worker

__all__ = ["DistEnv", "init_distributed", "make_loader"]


@dataclass(frozen=True)
class DistEnv:
    """Rank information of this process (defaults: a single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (torchrun); missing variables mean a single process."""
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def init_distributed(env: DistEnv, backend: str | None = None, timeout_min: float = 30.0) -> torch.device:
    """Initialise the process group when ``env`` is distributed (NCCL on CUDA, else Gloo); return this rank's device."""
    device = env.device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend or ("nccl" if device.type == "cuda" else "gloo"),
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(minutes=timeout_min),
        )
    return device


#: Resident memory of one DataLoader worker holding a subject's volumes (measured ~1 GB for the 1 mm roots).
WORKER_BYTES = 1 << 30
#: Resident memory of one training rank (brainparc-lite on the CPU peaked at ~7 GB).
RANK_BYTES = 7 << 30


def loader_workers(world_size: int = 1, cpus: int | None = None, available_bytes: int | None = None) -> int:
    """DataLoader workers per rank that this machine can carry: one CPU per rank stays for the training itself, and
    ranks plus workers must fit in the available memory (at most 4 per rank)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if available_bytes is None:
        available_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    by_cpu = cpus // max(world_size, 1) - 1
    by_memory = (available_bytes // max(world_size, 1) - RANK_BYTES) // WORKER_BYTES
    return int(max(0, min(4, by_cpu, by_memory)))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    env: DistEnv | None = None,
    *,
    workers: int = 4,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch, rank)``.

    Workers are not persistent, so ``dataset.set_epoch`` in the main process reaches them; each rank's worker seeds
    derive from ``seed + rank`` (:func:`brainparc.train.data.seed_worker`).
    """
    env = env or DistEnv()
    sampler = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed + env.rank),
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
