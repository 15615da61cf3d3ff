"""Single-threaded worker threads for the CPU chunk loop of the fused cross-entropy.

PyTorch parallelises each CPU operator with OpenMP and ends it in a barrier. A chunk of a few
MiB takes microseconds per operator, and when a core is shared with another busy process, a
barrier waits for a scheduler time slice (milliseconds). :func:`run_on_workers` instead runs one
task per thread on ``workers`` threads whose operators are single-threaded: each thread takes
the next chunk when it is done with its own, so a slowed core only does less of the work. The
measurements that keep this module are in ``docs/fused.md``.

The pools are process-wide (a thread pool per worker count, created on first use and reused);
a forked child (a DataLoader worker, say) inherits the pool objects but not their threads, so
they are dropped in the child.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["run_on_workers"]

_POOLS: dict[int, ThreadPoolExecutor] = {}


def _single_threaded_worker() -> None:
    # The first call initialises this thread's OpenMP settings from the global thread count;
    # the second makes this thread's operators single-threaded (OpenMP's thread count is a
    # per-thread setting). run_on_workers restores the caller's count afterwards.
    torch.get_num_threads()
    torch.set_num_threads(1)


def run_on_workers(workers: int, task: Callable[[], None]) -> None:
    """Run ``task`` once on each of ``workers`` single-threaded threads; wait for all of them.

    The caller's ``torch.get_num_threads()`` is the same afterwards; an exception raised by a
    task is re-raised here.
    """
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(
            workers, thread_name_prefix="labelsmooth-ce", initializer=_single_threaded_worker)
    threads = torch.get_num_threads()
    try:
        for future in [pool.submit(task) for _ in range(workers)]:
            future.result()
    finally:
        torch.set_num_threads(threads)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)
