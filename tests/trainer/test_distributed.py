"""DDP with 2 gloo processes on CPU, started by torchrun: parameters end identical on both ranks
and equal to one process trained on the same global batches; metrics are reduced across ranks;
rank 0 alone writes checkpoints and the log; ``dist_timeout`` bounds the wait for a stopped
rank."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import Trainer
from labelsmooth.trainer.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GlobalBatches:
    """The global batches of ``DistributedSampler(shuffle=True, seed)`` on ``world_size`` ranks,
    written from its documented rule: epoch ``e`` permutes with ``manual_seed(seed + e)`` and rank
    ``r`` takes every ``world_size``-th index from ``r``, so global batch ``k`` is the ``k``-th
    run of ``world_size * per_rank`` indices. The epoch is counted here, not told."""

    def __init__(self, n: int, per_rank: int, seed: int) -> None:
        self.n, self.size, self.seed, self.epoch = n, per_rank * WORLD_SIZE, seed, 0

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        self.epoch += 1
        for start in range(0, self.n, self.size):
            yield order[start:start + self.size].tolist()

    def __len__(self) -> int:
        return self.n // self.size


def test_two_gloo_processes_match_one_process_on_the_global_batches(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD_SIZE}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    for p0, p1 in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(p0, p1)

    sys.path.insert(0, str(WORKER.parent))
    try:
        from ddp_worker import PER_RANK_BATCH, build
    finally:
        sys.path.remove(str(WORKER.parent))
    data, eval_data = make_dataset(48, dtype=torch.float64), make_dataset(24, seed=1, dtype=torch.float64)
    loader = torch.utils.data.DataLoader(data, batch_sampler=GlobalBatches(48, PER_RANK_BATCH, seed=0))
    single = build(tmp_path / "single", loader=loader, eval_loader=make_loader(eval_data, 24), save=False)
    single.fit()
    for p_single, p_ddp in zip(single.state.model.parameters(), ranks[0]["params"], strict=True):
        torch.testing.assert_close(p_ddp, p_single.detach(), rtol=1e-10, atol=1e-12)

    # Metrics are reduced over both ranks: each rank reports the single process's numbers.
    expected_eval = single.eval()
    for rank in ranks:
        for name, value in expected_eval.items():
            assert abs(rank["eval"][name] - value) < 1e-6, (name, rank["eval"][name], value)
        for mine, theirs in zip(rank["history"][:4], single.history[:4], strict=True):
            assert mine["split"] == theirs["split"] and mine["sample"] == theirs["sample"]
            for name in ("loss", "accuracy", "ece", "nll"):
                if name in theirs:
                    assert abs(mine[name] - theirs[name]) < 1e-6, (name, mine, theirs)

    # Rank 0 alone writes: one log line per epoch and evaluation (2 + 2 in fit, 1 by eval()),
    # one set of checkpoints.
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 5
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["ep1-ba4.pt", "ep2-ba8.pt", "latest.pt"]
    checkpoint = load_checkpoint(folder / "latest.pt")
    assert len(checkpoint["rng"]) == WORLD_SIZE
    for saved, trained in zip(checkpoint["model"].values(), ranks[0]["params"], strict=True):
        assert torch.equal(saved, trained)


def test_dist_timeout_reaches_init_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []

    class Started(Exception):
        pass

    def record(backend: Any, **kwargs: Any) -> None:
        calls.append((backend, kwargs))
        raise Started

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "init_process_group", record)
    for dist_timeout in (7.5, None):
        with pytest.raises(Started):
            Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep",
                    device="cpu", progress_bar=False, dist_timeout=dist_timeout)
    assert calls == [("gloo", {"timeout": datetime.timedelta(seconds=7.5)}), ("gloo", {})]


def test_a_rank_that_never_joins_fails_the_others_after_dist_timeout(tmp_path: Path) -> None:
    # Rank 0 of a world of 2 whose rank 1 never starts: it waits for it in init_process_group.
    worker = WORKER.with_name("ddp_timeout_worker.py")
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    done = subprocess.run([sys.executable, str(worker), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "rank0.json").read_text())
    # PyTorch's default would wait 30 minutes; with dist_timeout=3 rank 0 gives up after 3 s.
    assert 3.0 <= report["waited"] < 30.0, report
    assert "timed out" in report["error"].lower() or "timeout" in report["error"].lower(), report
