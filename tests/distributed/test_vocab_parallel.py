"""Vocabulary-parallel label smoothing on 2 and 4 gloo processes (torchrun, CPU): every rank's
loss and gradients equal the single-process PyTorch loss of the full logits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vocab_problem import CASES, CLASSES, WIDTHS, problem, shard

WORKER = Path(__file__).with_name("vocab_parallel_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=[2, 4], ids=["2-ranks", "4-ranks"])
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    world = request.param
    folder = tmp_path_factory.mktemp(f"vocab{world}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER),
               str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return world, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]


def reference(p: dict[str, torch.Tensor], kind: str, weighted: bool, reduction: str,
              smoothing: float):
    """F.cross_entropy on the full logits in one process: the loss and the full gradients."""
    weight = p["weight"] if weighted else None
    leaves = ([p["logits"].clone().requires_grad_()] if kind == "logits" else
              [p[k].clone().requires_grad_() for k in ("input", "linear_weight", "linear_bias")])
    logits = leaves[0] if kind == "logits" else F.linear(*leaves)
    loss = F.cross_entropy(logits.reshape(-1, CLASSES), p["target"].reshape(-1), weight=weight,
                           reduction=reduction, label_smoothing=smoothing)
    loss = loss.reshape(p["target"].shape) if reduction == "none" else loss
    grad_out = p["grad_none"] if reduction == "none" else p["grad_scalar"]
    grads = torch.autograd.grad((loss * grad_out).sum(), leaves)
    return loss.detach(), grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("weighted", "reduction", "smoothing"), CASES)
def test_every_rank_matches_the_single_process_loss(ranks, dtype, weighted, reduction,
                                                    smoothing) -> None:
    world, saved = ranks
    p = problem(getattr(torch, dtype))
    # Logits sharded by class: each rank's gradient is its slice of the full gradient.
    want, (want_grad,) = reference(p, "logits", weighted, reduction, smoothing)
    key = f"logits-{weighted}-{reduction}-{smoothing}"
    for rank in range(world):
        loss, grad = saved[rank][dtype][key]
        assert_close(loss, want, what=f"loss on rank {rank}")
        assert_close(grad, want_grad[..., shard(world, rank)], what=f"grad on rank {rank}")
    # The linear head sharded by vocabulary rows: the full input gradient on every rank.
    want, (grad_x, grad_w, grad_b) = reference(p, "linear", weighted, reduction, smoothing)
    key = f"linear-{weighted}-{reduction}-{smoothing}"
    for rank in range(world):
        loss, gx, gw, gb = saved[rank][dtype][key]
        mine = shard(world, rank)
        assert_close(loss, want, what=f"linear loss on rank {rank}")
        assert_close(gx, grad_x, what=f"input grad on rank {rank}")
        assert_close(gw, grad_w[mine], what=f"weight grad on rank {rank}")
        assert_close(gb, grad_b[mine], what=f"bias grad on rank {rank}")


def test_bad_input_raises_the_same_line_on_every_rank(ranks) -> None:
    world, saved = ranks
    errors = [s["errors"] for s in saved]
    assert all(e == errors[0] for e in errors)
    assert errors[0]["rows"].startswith(
        "local_logits: expected the same number of rows (tokens) on every rank of the group, "
        f"got rows per rank [14, {', '.join(['15'] * (world - 1))}]")
    assert errors[0]["weight"] == (f"weight: expected a 1-d tensor of the {CLASSES} global class "
                                   "weights, got shape (5,)")
    assert errors[0]["target"].startswith(f"target: expected class indices in [0, {CLASSES})")


def megatron_loss_per_rank(logits: torch.Tensor, target: torch.Tensor, smoothing: float,
                           widths: list[int]) -> list[torch.Tensor]:
    """Megatron-LM's vocab-parallel smoothed loss (mean over rows), as each rank computes it.

    Written from its formula: global log-probabilities of the rank's own ``K`` classes, the
    smoothing rescaled to ``s * K / (K - 1)`` and the mean log-probability over those ``K``.
    """
    log_probs = torch.log_softmax(logits, -1)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    losses, start = [], 0
    for k in widths:
        local = log_probs[..., start:start + k]
        scaled = smoothing * k / (k - 1)
        losses.append(((1 - scaled) * nll - scaled * local.mean(-1)).mean())
        start += k
    return losses


def test_megatron_formula_needs_the_global_class_count() -> None:
    p = problem()
    logits, target = p["logits"].reshape(-1, CLASSES), p["target"].reshape(-1).clamp(min=0)
    s = 0.1
    # One rank: Megatron's convention is PyTorch's with the smoothing rescaled by C / (C - 1).
    (single,) = megatron_loss_per_rank(logits, target, s, WIDTHS[1])
    assert_close(single, F.cross_entropy(logits, target, label_smoothing=s * CLASSES / (CLASSES - 1)))
    # Two ranks: each rank's loss differs from the single-device one, and from the other rank's.
    first, second = megatron_loss_per_rank(logits, target, s, WIDTHS[2])
    assert abs(first - single) > 1e-3 and abs(second - single) > 1e-3
    assert abs(first - second) > 1e-3
