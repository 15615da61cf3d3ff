"""Running on more than one process: torchrun's environment, the process group, samplers.

Launch with ``torchrun --nproc_per_node N script.py``; torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The Trainer then starts the default process
group (``gloo`` on CPU, ``nccl`` on CUDA), wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel`, and gives each rank its shard of the data
through a :class:`~torch.utils.data.DistributedSampler` whose epoch it sets every epoch. A
dataloader of batch size ``B`` on ``N`` processes trains on global batches of ``N * B``
examples; DDP averages the gradients, so the update equals one process's on that global batch.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from torch.utils.data.sampler import BatchSampler

from labelsmooth._validation import fail

__all__ = [
    "all_gather_object",
    "all_ranks_agree",
    "barrier",
    "distributed_dataloader",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "resolve_device",
]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def _launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: Any) -> torch.device:
    """``"auto"``: this rank's CUDA device if there is one, else the CPU; else ``device`` itself.

    Raises:
        ValueError: for a device this machine does not have (CUDA on a CPU-only build or
            machine, a CUDA index past the last GPU) or one that holds no data to train on
            (``"meta"``).
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        fail("device", "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device", device)
    if resolved.type == "meta":
        fail("device", "a device that holds data ('auto', 'cpu', 'cuda'...; a meta tensor has "
             "no values to train on)", repr(str(device)))
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            fail("device", "'auto' or 'cpu' (CUDA is not available here: no GPU, or a CPU-only "
                 f"build of torch {torch.__version__})", repr(str(device)))
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            fail("device", f"a CUDA index below {torch.cuda.device_count()} (the GPUs here)",
                 repr(str(device)))
    return resolved


def init_distributed(device: torch.device, *, timeout: float | None = None) -> bool:
    """Start the default process group if torchrun launched several processes and none exists.

    Args:
        device: this rank's device (``nccl`` for CUDA, else ``gloo``).
        timeout: seconds a collective waits for the other ranks before failing; ``None`` keeps
            PyTorch's default (30 minutes).

    Returns:
        Whether this call started it (then the caller should destroy it when done).
    """
    if _active() or _launched_world_size() <= 1:
        return False
    if not dist.is_available():
        fail("WORLD_SIZE", "1 (this torch build has no torch.distributed)", _launched_world_size())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if timeout is None:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return True


def distributed_dataloader(dataloader: Any, *, argument: str, shuffle_seed: int) -> Any:
    """Return a dataloader that yields this rank's shard of ``dataloader``'s batches.

    A dataloader that already has a :class:`DistributedSampler` is returned as it is. A plain
    :class:`DataLoader` with a random or sequential sampler is rebuilt (the user's object is
    not changed) with a ``DistributedSampler(shuffle=<was random>, seed=shuffle_seed,
    drop_last=<dataloader's drop_last>)`` and otherwise the same settings.
    """
    if get_world_size() == 1:
        return dataloader
    if not isinstance(dataloader, DataLoader):
        fail(argument, "a torch DataLoader when training on several processes",
             type(dataloader).__name__, error=TypeError)
    sampler = dataloader.sampler
    if isinstance(sampler, DistributedSampler):
        return dataloader
    if (not isinstance(sampler, (RandomSampler, SequentialSampler))
            or type(dataloader.batch_sampler) is not BatchSampler or dataloader.batch_size is None):
        fail(argument, "a DataLoader with a DistributedSampler, or with shuffle=True/False and a "
             "batch_size (so that one can be made for it)", f"a DataLoader with {type(sampler).__name__}")
    shard: DistributedSampler[Any] = DistributedSampler(
        dataloader.dataset, shuffle=isinstance(sampler, RandomSampler), seed=shuffle_seed,
        drop_last=dataloader.drop_last)
    return DataLoader(
        dataloader.dataset, batch_size=dataloader.batch_size, sampler=shard,
        num_workers=dataloader.num_workers, collate_fn=dataloader.collate_fn,
        pin_memory=dataloader.pin_memory, drop_last=dataloader.drop_last,
        timeout=dataloader.timeout, worker_init_fn=dataloader.worker_init_fn,
        multiprocessing_context=dataloader.multiprocessing_context,
        prefetch_factor=dataloader.prefetch_factor if dataloader.num_workers > 0 else None,
        persistent_workers=dataloader.persistent_workers,
    )


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` on one process)."""
    if not _active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on every rank (one all-reduce; free on one process)."""
    if not _active():
        return flag
    value = torch.tensor(1 if flag else 0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def barrier() -> None:
    """Wait for every rank (a no-op on one process)."""
    if _active():
        dist.barrier()
