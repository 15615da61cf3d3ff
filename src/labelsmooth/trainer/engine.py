"""The Engine runs algorithms and callbacks at each event, in a composable order.

Algorithms run in the order they were given, and in *reverse* order on ``after`` events
(``AFTER_LOSS``, ``AFTER_FORWARD``...): first in, last out, so that when two algorithms each
change something at ``BEFORE_X`` and undo it at ``AFTER_X``, the undos nest correctly. Callbacks
run after the algorithms, in the order given.

:meth:`Engine.run_around` pairs a ``before`` and an ``after`` event around a block of code and
fires the ``after`` event even if the block (or the ``before`` event) raises, so that an
algorithm that changed the targets at ``BEFORE_LOSS`` always gets to restore them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from labelsmooth.trainer.events import Event

if TYPE_CHECKING:
    from labelsmooth.trainer.algorithm import Algorithm
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["Engine"]


class Engine:
    """Fires events on a :class:`~labelsmooth.trainer.state.State`.

    Args:
        state: the state whose ``algorithms`` and ``callbacks`` run.
        logger: passed to every algorithm and callback. Default: ``None``.

    Example:
        >>> import torch
        >>> from labelsmooth.trainer.state import State
        >>> Engine(State(torch.nn.Linear(1, 1))).run_event("fit_start")
        []
    """

    def __init__(self, state: State, logger: Logger | None = None) -> None:
        self.state = state
        self.logger = logger

    def run_event(self, event: Event | str) -> list[Algorithm]:
        """Run the algorithms that match ``event`` (reversed on ``after`` events), then every
        callback. Returns the algorithms that ran, in the order they ran.

        Fired on every step, so with no algorithm and no callback it returns at once.
        """
        event = event if isinstance(event, Event) else Event(event)
        state = self.state
        if not state.algorithms:
            algorithms: list[Algorithm] = []
        else:
            algorithms = [a for a in state.algorithms if a.match(event, state)]
            if algorithms and event.is_after_event:
                algorithms.reverse()
            for algorithm in algorithms:
                algorithm.apply(event, state, self.logger)
        for callback in state.callbacks:
            callback.run_event(event, state, self.logger)
        return algorithms

    @contextmanager
    def run_around(self, before: Event, after: Event) -> Iterator[None]:
        """Fire ``before``, run the block, and fire ``after`` even if either raised."""
        try:
            self.run_event(before)
            yield
        finally:
            self.run_event(after)
