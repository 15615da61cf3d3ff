"""One rank of the DDP test (run by torchrun from test_distributed.py): train, then save what
this rank ended with. Argument: the output folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_task

import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer

PER_RANK_BATCH = 6


def build(output: Path, *, loader: torch.utils.data.DataLoader, eval_loader: torch.utils.data.DataLoader,
          save: bool) -> Trainer:
    """The run, identical on every rank and in the single-process reference (bar the loaders)."""
    model = make_model(seed=0, dtype=torch.float64)
    return Trainer(
        model, loader, max_duration="2ep", seed=0,
        optimizers=torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
        algorithms=[LabelSmoothing(0.1)], eval_dataloader=eval_loader, device="cpu",
        progress_bar=False, save_folder=output / "checkpoints" if save else None,
        log_file=output / "log.jsonl" if save else None,
    )


def main(output: Path) -> None:
    data, eval_data = make_dataset(48, dtype=torch.float64), make_dataset(24, seed=1, dtype=torch.float64)
    # Plain dataloaders: the Trainer gives each rank its DistributedSampler shard.
    trainer = build(output, loader=make_loader(data, PER_RANK_BATCH, shuffle=True),
                    eval_loader=make_loader(eval_data, PER_RANK_BATCH), save=True)
    trainer.fit()
    state = trainer.state
    torch.save({"rank": state.rank, "world_size": state.world_size,
                "params": [p.detach().clone() for p in state.model.parameters()],
                "history": trainer.history, "eval": trainer.eval()},
               output / f"rank{state.rank}.pt")
    trainer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
