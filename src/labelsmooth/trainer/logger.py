"""Where metrics go: an in-memory history and, on rank 0, a JSON-lines file.

Each call to :meth:`Logger.log_metrics` makes one record: the current epoch, batch and sample
counts followed by the metrics. The Trainer logs one ``"split": "train"`` record per epoch and
one ``"split": "eval"`` record per evaluation. The file is appended to, so a resumed run
continues the same log. Non-finite values are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from labelsmooth.trainer.state import State

__all__ = ["Logger"]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Logger:
    """Records metrics with the state's timestamp.

    Args:
        state: whose timestamp and rank stamp the records.
        log_file: a JSON-lines file to append to on rank 0, or ``None``. Default: ``None``.

    Attributes:
        history: every record logged by this process, oldest first.

    Example:
        >>> from labelsmooth.trainer.state import State
        >>> logger = Logger(State(torch.nn.Linear(1, 1)))
        >>> logger.log_metrics({"split": "train", "loss": torch.tensor(0.5)})
        >>> logger.history
        [{'epoch': 0, 'batch': 0, 'sample': 0, 'split': 'train', 'loss': 0.5}]
    """

    def __init__(self, state: State, *, log_file: str | os.PathLike[str] | None = None) -> None:
        self.state = state
        self.log_file = None if log_file is None else Path(log_file)
        self.history: list[dict[str, Any]] = []

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (tensors become numbers) stamped with the current timestamp."""
        timestamp = self.state.timestamp
        record = {"epoch": timestamp.epoch, "batch": timestamp.batch, "sample": timestamp.sample}
        record.update({key: _plain(value) for key, value in metrics.items()})
        self.history.append(record)
        if self.log_file is not None and self.state.rank == 0:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
