"""Where metrics go: an in-memory history and, on rank 0, a JSON-lines file.

Each call to :meth:`Logger.log_metrics` makes one record: the current epoch, batch and sample
counts followed by the metrics. The Trainer logs one ``"split": "train"`` record per epoch and
one ``"split": "eval"`` record per evaluation. The file is appended to, so a resumed run
continues the same log: :meth:`Logger.drop_records_after` first removes the records written
after the checkpoint it resumes from, so that no step is logged twice. Non-finite values are
written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import fail

if TYPE_CHECKING:
    from labelsmooth.trainer.state import State
    from labelsmooth.trainer.time import Timestamp

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
        log_file: a JSON-lines file to append to on rank 0, or ``None``; created (with its
            folder) if missing, so that a path that cannot be written is refused here, before
            any training. Default: ``None``.

    Raises:
        ValueError: if ``log_file`` cannot be opened for appending (one line with the reason).

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
        if self.log_file is not None and state.rank == 0:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file.open("a", encoding="utf-8").close()
            except OSError as error:
                fail("log_file", "a file this process can append to",
                     f"{str(self.log_file)!r} ({error.strerror or error})")

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

    def drop_records_after(self, timestamp: Timestamp) -> int:
        """Remove the records at the end of ``log_file`` logged after ``timestamp``.

        A run resumed from a checkpoint repeats the steps that followed it; their first
        records (and a last line cut short by a killed process) are removed, so that each step
        is logged once. Records are compared by ``(batch, epoch)``: the end-of-epoch record of
        a checkpoint's last batch carries the next epoch. Only the trailing run of such records
        is removed, so earlier runs appended to the same file are kept. The file is rewritten
        atomically; nothing happens on ranks other than 0 or without a ``log_file``.

        Returns:
            How many lines were removed.
        """
        if self.log_file is None or self.state.rank != 0 or not self.log_file.is_file():
            return 0
        text = self.log_file.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        keep = len(lines)
        if keep and not lines[-1].endswith("\n"):
            keep -= 1  # a record cut short when the process was killed
        limit = (timestamp.batch, timestamp.epoch)
        while keep:
            try:
                record = json.loads(lines[keep - 1])
                logged = (int(record["batch"]), int(record["epoch"]))
            except (ValueError, KeyError, TypeError):
                break
            if logged <= limit:
                break
            keep -= 1
        if keep == len(lines):
            return 0
        temporary = self.log_file.with_name(f".{self.log_file.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text("".join(lines[:keep]), encoding="utf-8")
            os.replace(temporary, self.log_file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        return len(lines) - keep
