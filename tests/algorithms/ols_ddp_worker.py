"""One rank of the OnlineLabelSmoothing DDP tests (run by torchrun from
test_online_label_smoothing.py). First, count this rank's shard and swap at the epoch end (which
sums the statistics across ranks); then train with the Trainer, uninterrupted and stopped
mid-epoch then resumed. Saves the matrix and what each run ended with. Argument: the output
folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_task

import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import OnlineLabelSmoothing, Trainer
from labelsmooth.trainer import Callback, Event, State


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


class StopAt(Callback):
    """Interrupt training at the end of a batch, on every rank, as Ctrl-C would."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state: State, logger: Any) -> None:
        if state.timestamp.batch == self.batch:
            raise KeyboardInterrupt


def train(folder: Path, *, stop_at: int | None = None, load_path: Path | None = None) -> dict[str, Any]:
    """Two epochs of 6 steps (4 examples per rank per step), checkpoints every 4 steps."""
    algorithm = OnlineLabelSmoothing(alpha=0.5)
    model = make_model(seed=0)
    trainer = Trainer(model, make_loader(make_dataset(48), 4, shuffle=True), max_duration="2ep",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.3), seed=0,
                      algorithms=[algorithm], device="cpu", progress_bar=False,
                      callbacks=None if stop_at is None else StopAt(stop_at),
                      save_folder=folder, save_interval="4ba", load_path=load_path)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        pass
    return {"params": [p.detach().clone() for p in model.parameters()],
            "soft_labels": algorithm.soft_labels}


def main(output: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    logits, targets = shards()[rank]
    torch.save(run_epoch(logits, targets, world_size=2), output / f"rank{rank}.pt")
    reference = train(output / "reference")
    train(output / "run", stop_at=10)  # the newest checkpoint: step 8, mid-epoch 2
    resumed = train(output / "run", load_path=output / "run" / "ep1-ba8.pt")
    torch.save({"reference": reference, "resumed": resumed}, output / f"resume{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
