"""One rank of the OnlineLabelSmoothing DDP test (run by torchrun from
test_online_label_smoothing.py): count this rank's shard, swap at the epoch end (which sums the
statistics across ranks), save the matrix. Argument: the output folder."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from labelsmooth import OnlineLabelSmoothing
from labelsmooth.trainer import Event, State


def shards() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two ranks' logits and targets, two batches each, float64: confident enough that most
    examples are classified correctly, and a class whose examples differ between ranks."""
    generator = torch.Generator().manual_seed(7)
    parts = []
    for _ in range(2):
        targets = torch.randint(0, 4, (12,), generator=generator)
        logits = torch.randn(12, 4, generator=generator, dtype=torch.float64)
        logits[torch.arange(12), targets] += 1.5
        parts.append((logits, targets))
    return parts


def run_epoch(logits: torch.Tensor, targets: torch.Tensor, *, world_size: int) -> torch.Tensor:
    """One epoch of two batches over ``logits``; the matrix after the swap."""
    algorithm = OnlineLabelSmoothing(alpha=0.5, num_classes=4)
    state = State(torch.nn.Identity(), world_size=world_size)
    for batch in torch.arange(len(targets)).chunk(2):
        state.batch, state.outputs = (None, targets[batch]), logits[batch]
        algorithm.apply(Event.BEFORE_LOSS, state, None)
        algorithm.apply(Event.AFTER_LOSS, state, None)
    algorithm.apply(Event.EPOCH_END, state, None)
    assert algorithm.soft_labels is not None
    return algorithm.soft_labels


def main(output: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    logits, targets = shards()[rank]
    torch.save(run_epoch(logits, targets, world_size=2), output / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
