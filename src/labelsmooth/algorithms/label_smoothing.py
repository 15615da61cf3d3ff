"""``LabelSmoothing``: the Trainer algorithm around :func:`~labelsmooth.functional.smooth_labels`.

At ``BEFORE_LOSS`` it registers a smoothing transform with the State's target-transform stage
(:attr:`~labelsmooth.trainer.targets.TargetStage.SMOOTH`), which writes
``smooth_labels(logits, targets, smoothing)`` into the batch; at ``AFTER_LOSS`` it removes it,
and the State writes the original target object back. Everything after the loss (training
metrics, logging, other algorithms) sees the original targets. Because it goes through the
target-transform stage, it composes with mixing algorithms in either order: every mixed
component is smoothed (see :mod:`labelsmooth.trainer.targets`).

References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelsmooth._validation import check_int, check_smoothing, fail
from labelsmooth.functional import smooth_labels
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import BatchKey, check_batch_key, get_logits
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.targets import TargetStage, map_targets

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
        ignore_index: a target value whose positions get an all-zero target (so they add
            nothing to a dense loss), or ``None``. Default: ``None``.

    The logits are ``state.outputs`` when it is a tensor, else ``outputs["logits"]`` or
    ``outputs.logits``.

    Example:
        >>> import torch
        >>> from labelsmooth.trainer import Event, State
        >>> targets = torch.tensor([0, 2])
        >>> state = State(torch.nn.Identity(), batch=(None, targets), outputs=torch.zeros(2, 4))
        >>> algorithm = LabelSmoothing(smoothing=0.2)
        >>> algorithm.apply(Event.BEFORE_LOSS, state, None)
        >>> state.batch[1]
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
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        if event == Event.BEFORE_LOSS:
            logits = get_logits(state.outputs, argument="state.outputs")
            smoothing, class_dim, ignore_index = self.smoothing, self.class_dim, self.ignore_index
            state.add_target_transform(
                self, TargetStage.SMOOTH,
                map_targets(lambda targets: smooth_labels(
                    logits, targets, smoothing, class_dim=class_dim, ignore_index=ignore_index)),
                target_key=self.target_key)
        elif event == Event.AFTER_LOSS:
            state.remove_target_transform(self)
        else:
            fail("event", "Event.BEFORE_LOSS or Event.AFTER_LOSS", event)

    def state_dict(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothing = state["smoothing"]

    def __repr__(self) -> str:
        return f"LabelSmoothing(smoothing={self.smoothing}, target_key={self.target_key!r})"
