"""A rich progress bar over the whole run: batches done, epoch, and the latest loss."""

from __future__ import annotations

from typing import Any

from labelsmooth.trainer._optional import import_optional

__all__ = ["ProgressBar"]


class ProgressBar:
    """Shows training progress on rank 0 (``labelsmooth[trainer]`` provides rich).

    Args:
        total: the number of batches in the run, or ``None`` if unknown.
        completed: batches already done (after a resume).
    """

    def __init__(self, total: int | None, completed: int = 0) -> None:
        progress = import_optional("rich.progress", purpose="The Trainer's progress bar")
        self._progress = progress.Progress(
            progress.TextColumn("[bold]{task.description}"),
            progress.BarColumn(),
            progress.MofNCompleteColumn(),
            progress.TextColumn("loss {task.fields[loss]}"),
            progress.TimeElapsedColumn(),
            progress.TimeRemainingColumn(),
        )
        self._task: Any = self._progress.add_task("train", total=total, completed=completed, loss="-")
        self._progress.start()

    def update(self, *, epoch: int, completed: int, loss: float) -> None:
        """Show ``completed`` batches done, in epoch ``epoch`` (0-based), and the latest loss."""
        self._progress.update(self._task, description=f"epoch {epoch + 1}", completed=completed,
                              loss=f"{loss:.4f}")

    def stop(self) -> None:
        self._progress.stop()
