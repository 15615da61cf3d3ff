"""The algorithm protocol: ``match`` decides when to run, ``apply`` changes the state.

An algorithm is a thin event adapter around a pure function (label smoothing around
:func:`~labelsmooth.functional.smooth_labels`). It holds configuration, leaves the batch as it
found it, and saves whatever must survive a checkpoint in :meth:`Algorithm.state_dict`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from labelsmooth._validation import fail

if TYPE_CHECKING:
    from labelsmooth.trainer.events import Event
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["Algorithm"]


class Algorithm(ABC):
    """Base class of training algorithms run by the :class:`~labelsmooth.trainer.engine.Engine`.

    Subclasses implement :meth:`match` and :meth:`apply`, and, if they hold state that changes
    during training (a schedule, a counter), :meth:`state_dict` and :meth:`load_state_dict`.

    Example:
        >>> from labelsmooth.trainer.events import Event
        >>> class CountSteps(Algorithm):
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def match(self, event, state):
        ...         return event == Event.BATCH_END
        ...     def apply(self, event, state, logger):
        ...         self.steps += 1
        >>> CountSteps().match(Event.BATCH_END, None)
        True
    """

    @abstractmethod
    def match(self, event: Event, state: State) -> bool:
        """Whether to run at ``event`` given ``state``."""

    @abstractmethod
    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        """Run: read and change ``state``; ``logger`` may record metrics."""

    def train_metrics(self) -> dict[str, float]:
        """Values added to each epoch's training record (e.g. a scheduled hyperparameter's
        current value); none by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this algorithm (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; by default there is nothing, so a non-empty
        ``state`` (a checkpoint of a different algorithm) raises."""
        if state:
            fail("state", f"an empty dict ({type(self).__name__} saves nothing)", state)
