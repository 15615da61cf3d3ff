"""A rich progress bar over the whole run: batches done, epoch, and the latest loss."""

from __future__ import annotations

import math
from time import monotonic
from typing import Any

import torch

from labelsmooth._optional import import_optional

__all__ = ["ProgressBar"]

REFRESH_PER_SECOND = 10


class ProgressBar:
    """Shows training progress on rank 0 (``labelsmooth[trainer]`` provides rich).

    Args:
        total: the number of batches in the run, or ``None`` if unknown.
        completed: batches already done (after a resume).
    """

    def __init__(self, total: int | None, completed: int = 0) -> None:
        progress = import_optional("rich.progress", extra="trainer", purpose="the Trainer's progress bar")
        self._progress = progress.Progress(
            progress.TextColumn("[bold]{task.description}"),
            progress.BarColumn(),
            progress.MofNCompleteColumn(),
            progress.TextColumn("loss {task.fields[loss]}"),
            progress.TimeElapsedColumn(),
            progress.TimeRemainingColumn(),
            refresh_per_second=REFRESH_PER_SECOND,
        )
        self._loss_read_at = -math.inf
        self._task: Any = self._progress.add_task("train", total=total, completed=completed, loss="-")
        self._progress.start()

    def update(self, *, epoch: int, completed: int, loss: torch.Tensor | None) -> None:
        """Show ``completed`` batches done, in epoch ``epoch`` (0-based), and the latest loss.

        Reading a loss that lives on a GPU waits for the device, so the loss shown is read at
        most as often as the bar is redrawn (``REFRESH_PER_SECOND``), not after every batch.
        """
        fields: dict[str, Any] = {}
        now = monotonic()
        if now - self._loss_read_at >= 1.0 / REFRESH_PER_SECOND:
            fields["loss"] = "-" if loss is None else f"{float(loss):.4f}"
            self._loss_read_at = now
        self._progress.update(self._task, description=f"epoch {epoch + 1}", completed=completed,
                              **fields)

    def stop(self) -> None:
        """Draw the bar a last time and release the terminal."""
        self._progress.stop()
