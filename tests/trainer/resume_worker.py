"""The run of the SIGKILL resume test. Run as a script (from test_resume.py) with a folder, it
trains with checkpoints every 3 batches and SIGKILLs itself at the end of batch 30, before that
batch's checkpoint is written; the test then resumes it, and trains it uninterrupted, with
:func:`build`.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_task

import torch
from tiny_task import make_dataset, make_model
from torch.utils.data import DataLoader

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer import Callback, State

KILL_AT = 30


class KillAt(Callback):
    def batch_end(self, state: State, logger: Any) -> None:
        if state.timestamp.batch == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


def build(folder: Path, *, kill: bool = False, load_path: Path | None = None) -> Trainer:
    # The shuffle draws from the DataLoader's own generator, dropout from the global one.
    model = make_model(seed=0, dropout=0.3)
    loader = DataLoader(make_dataset(40), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    return Trainer(
        model, loader, max_duration="4ep", optimizers=torch.optim.Adam(model.parameters(), lr=0.01),
        algorithms=LabelSmoothing(0.1), callbacks=[KillAt()] if kill else [],
        eval_dataloader=DataLoader(make_dataset(12, seed=1), batch_size=6),
        device="cpu", progress_bar=False, seed=1, save_folder=folder / "checkpoints",
        save_interval="3ba", log_file=folder / "log.jsonl", load_path=load_path)


if __name__ == "__main__":
    build(Path(sys.argv[1]), kill=True).fit()
    raise SystemExit("not killed")
