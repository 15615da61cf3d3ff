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
        self._shown_at = -math.inf
        self._latest: tuple[int, int, torch.Tensor | None] | None = None
        self._task: Any = self._progress.add_task("train", total=total, completed=completed, loss="-")
        self._progress.start()

    def update(self, *, epoch: int, completed: int, loss: torch.Tensor | None) -> None:
        """Show ``completed`` batches done, in epoch ``epoch`` (0-based), and the latest loss.

        The bar is redrawn ``REFRESH_PER_SECOND`` times a second, so it is updated (and the loss,
        which on a GPU means waiting for the device, is read) at most that often, not after
        every batch; :meth:`stop` shows the last values.
        """
        self._latest = (epoch, completed, loss)
        now = monotonic()
        if now - self._shown_at >= 1.0 / REFRESH_PER_SECOND:
            self._shown_at = now
            self._show()

    def _show(self) -> None:
        if self._latest is None:
            return
        epoch, completed, loss = self._latest
        self._latest = None
        self._progress.update(self._task, description=f"epoch {epoch + 1}", completed=completed,
                              loss="-" if loss is None else f"{float(loss):.4f}")

    def stop(self) -> None:
        """Draw the bar a last time, with the latest values, and release the terminal."""
        self._show()
        self._progress.stop()
