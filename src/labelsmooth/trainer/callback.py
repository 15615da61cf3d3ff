"""Callbacks: code that observes every event without changing the training math.

A callback defines methods named after event values (``fit_start``, ``batch_end``,
``after_loss``...), each taking ``(state, logger)``; :meth:`Callback.run_event` dispatches to
them. The Engine runs callbacks after the algorithms of the same event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelsmooth._validation import fail

if TYPE_CHECKING:
    from labelsmooth.trainer.events import Event
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["Callback"]


class Callback:
    """Base class of callbacks: override the methods named after the events you need.

    Example:
        >>> class PrintLoss(Callback):
        ...     def after_loss(self, state, logger):
        ...         print(float(state.loss))
    """

    def run_event(self, event: Event, state: State, logger: Logger | None) -> None:
        """Call the method named after ``event.value`` if this callback defines one."""
        handler = getattr(self, event._value_, None)  # ``_value_``: a plain attribute, unlike ``value``
        if callable(handler):
            handler(state, logger)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; by default there is nothing, so a non-empty
        ``state`` (a checkpoint of a different callback) raises."""
        if state:
            fail("state", f"an empty dict ({type(self).__name__} saves nothing)", state)
