"""``LabelSmoothing``: the Trainer algorithm around :func:`~labelsmooth.functional.smooth_labels`.

At ``BEFORE_LOSS`` it sets the smoothing of the batch's
:class:`~labelsmooth.trainer.targets.TrainingTargets` (wrapping the targets first if no other
algorithm has); at ``AFTER_LOSS`` it sets it back to 0, and once nothing else is left the batch
holds the original target object again. Everything after the loss (training metrics, logging,
other algorithms) sees the original targets. The targets stay index targets: the Trainer's
default loss and the project's cross-entropies compute the smoothed loss with the fused kernel,
without a dense ``N x C`` target, while any other loss sees the dense smoothed tensor
``smooth_labels(logits, targets, smoothing)``. It composes with MixUp and CutMix in either order:
every mixed component is smoothed (see :mod:`labelsmooth.trainer.targets`).

The smoothing may follow a schedule: a callable of the training progress ``t`` in ``[0, 1]``
(:mod:`labelsmooth.schedules` has ``linear``, ``cosine`` and ``step``), read at every training
step. ``s`` stays a Python float handed to the loss at each step, outside any compiled model,
so a model under ``torch.compile`` is not recompiled when it changes.

References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from labelsmooth._validation import check_bool, check_int, check_smoothing, fail
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import (
    BatchKey,
    batch_get_item,
    batch_set_item,
    check_batch_key,
    get_logits,
)
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.targets import TrainingTargets
from labelsmooth.trainer.time import TimeUnit

if TYPE_CHECKING:
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["LabelSmoothing", "planned_steps", "schedule_progress"]

Schedule = Callable[[float], float]
# The events LabelSmoothing acts on (a set: ``match`` runs at every event of every step).
_EVENT_SET = frozenset({Event.BEFORE_LOSS, Event.AFTER_LOSS})


def schedule_progress(step: int, total_steps: int) -> float:
    """The training progress of optimizer step ``step`` (0-based) out of ``total_steps``.

    ``t = step / (total_steps - 1)``: 0 at the first step, 1 at the last, as
    :mod:`labelsmooth.schedules` expects; a run of a single step is at 0. Steps past the planned
    end (a run resumed with a longer ``max_duration``) stay at 1.

    Example:
        >>> [schedule_progress(k, 5) for k in range(5)]
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if total_steps <= 1:
        return 0.0
    return min(step / (total_steps - 1), 1.0)


def planned_steps(state: State) -> int:
    """The number of optimizer steps the run is planned for: ``max_duration`` in batches, or
    its epochs times the training dataloader's length.

    Raises:
        ValueError: without a ``max_duration``, or with one in epochs and a dataloader that has
            no ``len()``.
    """
    duration = state.max_duration
    if duration is not None and duration.unit is TimeUnit.BATCH:
        return duration.value
    try:
        per_epoch = len(state.train_dataloader)
    except TypeError:
        per_epoch = None
    if duration is None or per_epoch is None:
        fail("smoothing", "a run of known length for a schedule (max_duration in batches, e.g. "
             "'500ba', or in epochs with a train_dataloader that has a len())",
             f"max_duration={None if duration is None else str(duration)!r} and a "
             f"{type(state.train_dataloader).__name__} train_dataloader")
    return duration.value * per_epoch


class LabelSmoothing(Algorithm):
    """Smooth the targets right before the loss and put the originals back right after it.

    .. math::

        \\tilde y = (1 - s)\\, \\mathrm{onehot}(y) + \\frac{s}{C}

    Args:
        smoothing: ``s`` in ``[0, 1]`` (any finite ``s <= 1`` with ``allow_negative=True``),
            the weight of the uniform distribution, or a schedule:
            a callable ``schedule(t) -> s`` of the training progress ``t`` in ``[0, 1]`` (0 at
            the first optimizer step, 1 at the last of ``max_duration``; see
            :func:`schedule_progress`), such as ``labelsmooth.schedules.cosine(0.1, 0.0)``. A
            number is validated here and on every assignment; a schedule's value is validated
            every time it is read, at each training step. Default: 0.1.
        allow_negative: admit negative smoothing (Wei et al. 2022), from a number or a
            schedule. The loss of a target with negative entries has no minimum (it falls
            without bound as the logits of the other classes go to ``-inf``), so it is usually
            applied after a warm-up of plain cross-entropy, e.g.
            ``schedules.step([0.0, -0.2], [0.5], allow_negative=True)``. Default: False.
        target_key: where the targets are in the batch: an int index, a str key or attribute,
            or a ``(getter, setter)`` pair. Default: ``1`` (``(inputs, targets)`` batches).
        class_dim: the class dimension of the logits. Default: 1.
        ignore_index: a target value whose positions count nothing, or ``None`` (then the
            loss's own ``ignore_index``, -100 by default, applies). Default: ``None``. With the
            project's cross-entropies the loss is
            ``F.cross_entropy(logits, targets, ignore_index=..., label_smoothing=s)`` (the mean
            over the positions not ignored); a dense target has all-zero rows there.

    The logits are ``state.outputs`` when it is a tensor, else ``outputs["logits"]`` or
    ``outputs.logits``.

    With a schedule the run must have a known length: ``max_duration`` in batches, or in
    epochs with a ``train_dataloader`` that has a ``len()``. The value used at each step is
    :attr:`smoothing`; the Trainer logs it as ``smoothing`` in each epoch's training record
    (the value of the epoch's last step).

    A loss that smooths by itself (``SmoothedCrossEntropyLoss(0.1)``,
    ``nn.CrossEntropyLoss(label_smoothing=0.1)``) is refused by ``Trainer.fit``: the targets
    would be smoothed twice.

    Example:
        >>> import torch
        >>> from labelsmooth.trainer import Event, State
        >>> targets = torch.tensor([0, 2])
        >>> state = State(torch.nn.Identity(), batch=(None, targets), outputs=torch.zeros(2, 4))
        >>> algorithm = LabelSmoothing(smoothing=0.2)
        >>> algorithm.apply(Event.BEFORE_LOSS, state, None)
        >>> state.batch[1] * 1  # the index targets, seen as the dense smoothed target
        tensor([[0.8500, 0.0500, 0.0500, 0.0500],
                [0.0500, 0.0500, 0.8500, 0.0500]])
        >>> algorithm.apply(Event.AFTER_LOSS, state, None)
        >>> state.batch[1] is targets
        True

        A schedule is read at each step, from the state's timestamp and planned length:

        >>> from labelsmooth import schedules
        >>> from labelsmooth.trainer.time import Timestamp
        >>> state = State(torch.nn.Identity(), batch=(None, targets), outputs=torch.zeros(2, 4),
        ...               max_duration="5ba")
        >>> algorithm = LabelSmoothing(smoothing=schedules.linear(0.2, 0.0))
        >>> state.timestamp = Timestamp(batch=3)  # the fourth of five steps: t = 0.75
        >>> algorithm.apply(Event.BEFORE_LOSS, state, None)
        >>> round(algorithm.smoothing, 6), round(state.batch[1].smoothing, 6)
        (0.05, 0.05)
        >>> algorithm.apply(Event.AFTER_LOSS, state, None)

    References:
        Wei, Liu, Liu, Liu, Zhang and Liu, "To smooth or not? When label smoothing meets noisy
        labels", ICML 2022 (negative smoothing, after a warm-up of cross-entropy).
    """

    def __init__(self, smoothing: float | Schedule = 0.1, target_key: BatchKey = 1, *,
                 class_dim: int = 1, ignore_index: int | None = None,
                 allow_negative: bool = False) -> None:
        self.allow_negative = check_bool(allow_negative, "allow_negative")
        self.schedule: Schedule | None = None
        self.smoothing = smoothing
        self.target_key = check_batch_key(target_key, "target_key")
        self.class_dim = check_int(class_dim, "class_dim")
        if ignore_index is not None:
            ignore_index = check_int(ignore_index, "ignore_index")
        self.ignore_index = ignore_index

    @property
    def smoothing(self) -> float:
        """The smoothing ``s`` in ``[0, 1]`` (``<= 1`` with ``allow_negative``): the number
        given, or the schedule's value at the most recent training step (``schedule(0)`` before
        the first).

        Assigning a number replaces any schedule; assigning a callable makes it the schedule.
        """
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float | Schedule) -> None:
        if callable(value):
            self.schedule = value
            self._smoothing = self._scheduled(0.0, "at the start")
        else:
            self.schedule = None
            self._smoothing = self._checked(value)

    def _checked(self, value: Any) -> float:
        """``value`` checked as a smoothing this algorithm admits (a negative number without
        ``allow_negative`` is refused with a message that names the opt-in)."""
        return check_smoothing(value, allow_negative=self.allow_negative)

    def _scheduled(self, progress: float, when: str) -> float:
        """The schedule's value at ``progress``, checked to be a real number in ``[0, 1]`` (a
        finite one ``<= 1`` with ``allow_negative``); ``when`` says where training is, for the
        error message."""
        assert self.schedule is not None
        value = self.schedule(progress)
        allowed = "a finite value <= 1" if self.allow_negative else "a value in [0, 1]"
        expected = f"{allowed} from the schedule {when} (progress {progress:.6g})"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            fail("smoothing", expected, repr(value) if isinstance(value, str) else value,
                 error=TypeError)
        number = float(value)
        if number < 0.0 and not self.allow_negative:
            fail("smoothing", f"{expected}; negative smoothing needs allow_negative=True", value)
        if not math.isfinite(number) or number > 1.0:
            fail("smoothing", expected, value)
        return number

    def match(self, event: Event, state: State) -> bool:
        """Run at ``BEFORE_LOSS`` and ``AFTER_LOSS`` only (evaluation is never smoothed)."""
        return event in _EVENT_SET

    def train_metrics(self) -> dict[str, float]:
        """``{"smoothing": s}``, the value of the most recent step, for the training log."""
        return {"smoothing": self._smoothing}

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        """At ``BEFORE_LOSS`` set the smoothing of the batch's training targets; at
        ``AFTER_LOSS`` set it back to 0 (the original targets come back when nothing is left).

        Args:
            event: ``Event.BEFORE_LOSS`` or ``Event.AFTER_LOSS``.
            state: its ``outputs`` hold the logits; its batch holds the targets at
                ``target_key``.
            logger: unused.

        Raises:
            ValueError: for another event, a ``target_key`` missing from the batch, a
                schedule's value outside ``[0, 1]`` (or NaN; negative values are admitted with
                ``allow_negative``), or a schedule in a run of unknown length.
            TypeError: if the outputs hold no logits, or a schedule returns something that is
                not a real number.
        """
        if event == Event.BEFORE_LOSS:
            if self.schedule is not None:
                step, total = state.timestamp.batch, planned_steps(state)
                self._smoothing = self._scheduled(schedule_progress(step, total),
                                                  f"at step {step + 1} of {total}")
            logits = get_logits(state.outputs, argument="state.outputs")
            current = batch_get_item(state.batch, self.target_key, argument="target_key")
            targets = TrainingTargets.of(current, logits, class_dim=self.class_dim,
                                         smoothing=self.smoothing, ignore_index=self.ignore_index,
                                         allow_negative=self.allow_negative)
            state.batch = batch_set_item(state.batch, self.target_key, targets, argument="target_key")
        elif event == Event.AFTER_LOSS:
            current = batch_get_item(state.batch, self.target_key, argument="target_key")
            if isinstance(current, TrainingTargets):
                state.batch = batch_set_item(state.batch, self.target_key,
                                             current.without_smoothing(),
                                             argument="target_key")
        else:
            fail("event", "Event.BEFORE_LOSS or Event.AFTER_LOSS", event)

    def state_dict(self) -> dict[str, Any]:
        """``{"smoothing": s}``, the value in use (a schedule itself is not saved: it is a
        function of the progress, which the checkpoint's timestamp restores)."""
        return {"smoothing": self._smoothing}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the smoothing :meth:`state_dict` saved (validated again); a schedule is
        kept and reads its value at the next step."""
        self._smoothing = self._checked(state["smoothing"])

    def __repr__(self) -> str:
        smoothing = self.schedule if self.schedule is not None else self._smoothing
        negative = ", allow_negative=True" if self.allow_negative else ""
        return f"LabelSmoothing(smoothing={smoothing!r}, target_key={self.target_key!r}{negative})"
