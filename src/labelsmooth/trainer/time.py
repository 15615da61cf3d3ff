"""Durations and timestamps: how long to train, and where training is.

A duration is written as Composer writes it: an integer followed by a unit, ``"10ep"`` for ten
epochs or ``"500ba"`` for five hundred optimizer steps (batches). A bare ``int`` means epochs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from labelsmooth._validation import fail

__all__ = ["Duration", "TimeUnit", "Timestamp"]

_DURATION = re.compile(r"^\s*(\d+)\s*(ep|ba)\s*$")
_EXPECTED = "an int number of epochs or a string like '10ep' or '500ba'"


class TimeUnit(str, Enum):
    """The units a :class:`Duration` counts in."""

    EPOCH = "ep"
    BATCH = "ba"


@dataclass(frozen=True)
class Duration:
    """An amount of training: ``value`` epochs or ``value`` batches.

    Example:
        >>> Duration.parse("500ba")
        Duration(value=500, unit=<TimeUnit.BATCH: 'ba'>)
        >>> Duration.parse(3) == Duration.parse("3ep")
        True
    """

    value: int
    unit: TimeUnit

    @classmethod
    def parse(cls, duration: Any, argument: str = "max_duration") -> Duration:
        """Read ``"10ep"``, ``"500ba"`` or an ``int`` of epochs; raise naming ``argument`` otherwise.

        Args:
            duration: the user's value. Must be positive.
            argument: the argument name used in error messages.

        Returns:
            The parsed duration.
        """
        if isinstance(duration, Duration):
            return duration
        if isinstance(duration, bool):
            fail(argument, _EXPECTED, duration, error=TypeError)
        if isinstance(duration, int):
            value, unit = duration, TimeUnit.EPOCH
        elif isinstance(duration, str):
            match = _DURATION.match(duration)
            if match is None:
                fail(argument, _EXPECTED, duration)
            value, unit = int(match.group(1)), TimeUnit(match.group(2))
        else:
            fail(argument, _EXPECTED, duration, error=TypeError)
        if value <= 0:
            fail(argument, "a positive duration", duration)
        return cls(value, unit)

    def __str__(self) -> str:
        return f"{self.value}{self.unit.value}"


@dataclass(frozen=True)
class Timestamp:
    """Where training is: completed epochs, batches and samples, in total and in this epoch.

    Samples count every rank's examples (the global batch), so they agree across processes.
    """

    epoch: int = 0
    batch: int = 0
    sample: int = 0
    batch_in_epoch: int = 0
    sample_in_epoch: int = 0

    def count(self, unit: TimeUnit) -> int:
        """The completed amount of ``unit`` (epochs or batches)."""
        return self.epoch if unit is TimeUnit.EPOCH else self.batch

    def reached(self, duration: Duration) -> bool:
        """Whether ``duration`` has been trained."""
        return self.count(duration.unit) >= duration.value

    def is_multiple_of(self, interval: Duration) -> bool:
        """Whether an interval in ``interval``'s unit ends exactly at this timestamp."""
        amount = self.count(interval.unit)
        return amount > 0 and amount % interval.value == 0

    def to_next_batch(self, samples: int) -> Timestamp:
        """The timestamp after one more batch of ``samples`` examples (as Composer's).

        Example:
            >>> Timestamp(epoch=1, batch=5, sample=40, batch_in_epoch=1, sample_in_epoch=8).to_next_batch(8)
            Timestamp(epoch=1, batch=6, sample=48, batch_in_epoch=2, sample_in_epoch=16)
        """
        # Positional: the Trainer makes one per step, and keywords cost a third more.
        return Timestamp(self.epoch, self.batch + 1, self.sample + samples,
                         self.batch_in_epoch + 1, self.sample_in_epoch + samples)

    def to_next_epoch(self) -> Timestamp:
        """The timestamp at the start of the next epoch (as Composer's).

        Example:
            >>> Timestamp(epoch=1, batch=6, sample=48, batch_in_epoch=2, sample_in_epoch=16).to_next_epoch()
            Timestamp(epoch=2, batch=6, sample=48, batch_in_epoch=0, sample_in_epoch=0)
        """
        return Timestamp(self.epoch + 1, self.batch, self.sample)

    def state_dict(self) -> dict[str, int]:
        """The five counters as a plain dict, for a checkpoint.

        Example:
            >>> Timestamp(epoch=1, batch=4).state_dict()["batch"]
            4
        """
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, int]) -> Timestamp:
        """The timestamp :meth:`state_dict` saved.

        Args:
            state: the dict :meth:`state_dict` returned.

        Returns:
            An equal :class:`Timestamp`.

        Example:
            >>> stamp = Timestamp(epoch=2, batch=9, sample=72)
            >>> Timestamp.from_state_dict(stamp.state_dict()) == stamp
            True
        """
        return cls(**state)
