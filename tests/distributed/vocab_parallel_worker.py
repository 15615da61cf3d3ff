"""One rank of the vocabulary-parallel tests (run by torchrun from test_vocab_parallel.py).

Argument: the output folder. Each rank runs every case on its slice of the classes and saves
its losses and gradients; the test compares them with the single-process PyTorch loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.distributed as dist
from vocab_problem import CASES, CHUNK, problem, shard

from labelsmooth.distributed import (
    vocab_parallel_smoothed_cross_entropy,
    vocab_parallel_smoothed_linear_cross_entropy,
)


def grad_output(p: dict[str, torch.Tensor], reduction: str) -> torch.Tensor:
    return p["grad_none"] if reduction == "none" else p["grad_scalar"]


def run_cases(rank: int, world: int, dtype: torch.dtype) -> dict[str, object]:
    p = problem(dtype)
    mine = shard(world, rank)
    results: dict[str, object] = {}
    for weighted, reduction, smoothing in CASES:
        weight = p["weight"] if weighted else None
        local = p["logits"][..., mine].clone().requires_grad_()
        loss = vocab_parallel_smoothed_cross_entropy(local, p["target"], smoothing, weight=weight,
                                                     reduction=reduction)
        (loss * grad_output(p, reduction)).sum().backward()
        results[f"logits-{weighted}-{reduction}-{smoothing}"] = (loss.detach(), local.grad)

        x = p["input"].clone().requires_grad_()
        w = p["linear_weight"][mine].clone().requires_grad_()
        b = p["linear_bias"][mine].clone().requires_grad_()
        loss = vocab_parallel_smoothed_linear_cross_entropy(
            x, w, p["target"], smoothing, local_linear_bias=b, weight=weight, reduction=reduction,
            chunk_size=CHUNK)
        (loss * grad_output(p, reduction)).sum().backward()
        results[f"linear-{weighted}-{reduction}-{smoothing}"] = (loss.detach(), x.grad, w.grad,
                                                                 b.grad)
    return results


def bad_inputs(rank: int, world: int) -> dict[str, str]:
    """The one-line errors every rank raises, recorded as text."""
    p = problem()
    mine = shard(world, rank)
    errors = {}
    attempts = {
        # Rank 0 drops a row: the shards no longer describe one batch.
        "rows": lambda: vocab_parallel_smoothed_cross_entropy(
            p["logits"][..., mine].reshape(-1, mine.stop - mine.start)[rank == 0:],
            p["target"].reshape(-1)[rank == 0:]),
        "weight": lambda: vocab_parallel_smoothed_cross_entropy(
            p["logits"][..., mine], p["target"], 0.1, weight=p["weight"][:5]),
        "target": lambda: vocab_parallel_smoothed_cross_entropy(
            p["logits"][..., mine], p["target"].clamp(min=0) + 23),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except (ValueError, TypeError) as error:
            errors[name] = str(error)
    return errors


def main(output: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    saved = {"float64": run_cases(rank, world, torch.float64),
             "float32": run_cases(rank, world, torch.float32),
             "errors": bad_inputs(rank, world)}
    torch.save(saved, output / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
