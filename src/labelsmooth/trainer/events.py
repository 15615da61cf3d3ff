"""Training events: the points in the loop where algorithms and callbacks run.

The names and values follow Composer's, so ``Event.BEFORE_LOSS == "before_loss"``. A training
run fires them in this order (the block inside ``BATCH_START ... BATCH_END`` repeats per
microbatch from ``BEFORE_FORWARD`` to ``AFTER_BACKWARD`` when ``grad_accum > 1``)::

    INIT
    FIT_START
        EPOCH_START
            BEFORE_DATALOADER  AFTER_DATALOADER
            BATCH_START
                BEFORE_FORWARD  AFTER_FORWARD
                BEFORE_LOSS     AFTER_LOSS
                BEFORE_BACKWARD AFTER_BACKWARD
            BATCH_END
            (EVAL_START  EVAL_BATCH_START EVAL_BEFORE_FORWARD EVAL_AFTER_FORWARD EVAL_BATCH_END
             EVAL_END, at each ``eval_interval``)
        EPOCH_END
    FIT_END

Every ``after`` event has a ``before`` partner; the :class:`~labelsmooth.trainer.engine.Engine`
runs algorithms in reverse order on ``after`` events so that nested changes undo first-in,
last-out.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Event"]


class Event(str, Enum):
    """A point in the training loop (a string enum: ``Event.AFTER_LOSS == "after_loss"``).

    Example:
        >>> Event.BEFORE_LOSS.value
        'before_loss'
        >>> Event("after_loss").is_after_event
        True
    """

    INIT = "init"
    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BEFORE_DATALOADER = "before_dataloader"
    AFTER_DATALOADER = "after_dataloader"
    BATCH_START = "batch_start"
    BEFORE_FORWARD = "before_forward"
    AFTER_FORWARD = "after_forward"
    BEFORE_LOSS = "before_loss"
    AFTER_LOSS = "after_loss"
    BEFORE_BACKWARD = "before_backward"
    AFTER_BACKWARD = "after_backward"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    EVAL_START = "eval_start"
    EVAL_BATCH_START = "eval_batch_start"
    EVAL_BEFORE_FORWARD = "eval_before_forward"
    EVAL_AFTER_FORWARD = "eval_after_forward"
    EVAL_BATCH_END = "eval_batch_end"
    EVAL_END = "eval_end"
    FIT_END = "fit_end"

    def __str__(self) -> str:
        return self.value

    @property
    def is_before_event(self) -> bool:
        """``True`` for ``BEFORE_*`` and ``EVAL_BEFORE_*`` events (each has an ``after`` partner)."""
        return self in _BEFORE_EVENTS

    @property
    def is_after_event(self) -> bool:
        """``True`` for ``AFTER_*`` and ``EVAL_AFTER_*`` events (algorithms run in reverse)."""
        return self in _AFTER_EVENTS

    @property
    def is_eval(self) -> bool:
        """``True`` for the events fired by evaluation."""
        return self in _EVAL_EVENTS


# Looked up on every event of every step, so computed once from the names.
_BEFORE_EVENTS = frozenset(e for e in Event if e.value.startswith(("before_", "eval_before_")))
_AFTER_EVENTS = frozenset(e for e in Event if e.value.startswith(("after_", "eval_after_")))
_EVAL_EVENTS = frozenset(e for e in Event if e.value.startswith("eval_"))
