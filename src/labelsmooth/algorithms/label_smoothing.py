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

References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelsmooth._validation import check_int, check_smoothing, fail
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

if TYPE_CHECKING:
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["LabelSmoothing"]


class LabelSmoothing(Algorithm):
    """Smooth the targets right before the loss and put the originals back right after it.

    .. math::

        \\tilde y = (1 - s)\\, \\mathrm{onehot}(y) + \\frac{s}{C}

    Args:
        smoothing: ``s`` in ``[0, 1]``, the weight of the uniform distribution. Default: 0.1.
            Validated here and on every assignment, so a schedule may change it between steps.
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
    """

    def __init__(self, smoothing: float = 0.1, target_key: BatchKey = 1, *, class_dim: int = 1,
                 ignore_index: int | None = None) -> None:
        self.smoothing = smoothing
        self.target_key = check_batch_key(target_key, "target_key")
        self.class_dim = check_int(class_dim, "class_dim")
        if ignore_index is not None:
            ignore_index = check_int(ignore_index, "ignore_index")
        self.ignore_index = ignore_index

    @property
    def smoothing(self) -> float:
        """The smoothing ``s`` in ``[0, 1]`` used from the next ``BEFORE_LOSS`` on."""
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self._smoothing = check_smoothing(value)

    def match(self, event: Event, state: State) -> bool:
        """Run at ``BEFORE_LOSS`` and ``AFTER_LOSS`` only (evaluation is never smoothed)."""
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        """At ``BEFORE_LOSS`` set the smoothing of the batch's training targets; at
        ``AFTER_LOSS`` set it back to 0 (the original targets come back when nothing is left).

        Args:
            event: ``Event.BEFORE_LOSS`` or ``Event.AFTER_LOSS``.
            state: its ``outputs`` hold the logits; its batch holds the targets at
                ``target_key``.
            logger: unused.

        Raises:
            ValueError: for another event, or a ``target_key`` missing from the batch.
            TypeError: if the outputs hold no logits.
        """
        if event == Event.BEFORE_LOSS:
            logits = get_logits(state.outputs, argument="state.outputs")
            current = batch_get_item(state.batch, self.target_key, argument="target_key")
            targets = TrainingTargets.of(current, logits, class_dim=self.class_dim,
                                         smoothing=self.smoothing, ignore_index=self.ignore_index)
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
        """``{"smoothing": s}``: a schedule's current value survives a checkpoint."""
        return {"smoothing": self.smoothing}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the smoothing :meth:`state_dict` saved (validated again)."""
        self.smoothing = state["smoothing"]

    def __repr__(self) -> str:
        return f"LabelSmoothing(smoothing={self.smoothing}, target_key={self.target_key!r})"
