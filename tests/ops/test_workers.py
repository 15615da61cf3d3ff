"""The worker threads of the fused loss's chunk loop: single-threaded, caller's settings kept."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from labelsmooth._ops import _workers


def test_each_worker_runs_the_task_once_single_threaded_off_the_calling_thread():
    seen = []
    lock = threading.Lock()

    def task():
        with lock:
            seen.append((threading.get_ident(), torch.get_num_threads()))

    threads = torch.get_num_threads()
    _workers.run_on_workers(3, task)
    assert len(seen) == 3
    assert all(count == 1 for _, count in seen)
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert torch.get_num_threads() == threads


def test_a_failing_task_raises_in_the_caller_and_keeps_its_thread_count():
    def task():
        raise ValueError("boom")

    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="boom"):
        _workers.run_on_workers(2, task)
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_without_the_parents_pools():
    _workers.run_on_workers(2, lambda: None)
    assert _workers._POOLS
    pid = os.fork()
    if pid == 0:  # the child: its pools are gone, and new work still runs
        try:
            ok = not _workers._POOLS
            _workers.run_on_workers(2, lambda: None)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
