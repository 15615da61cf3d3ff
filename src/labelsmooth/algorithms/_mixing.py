"""What MixUp and CutMix share: the event adapter around a batch-mixing function.

See :mod:`labelsmooth.algorithms.mixup` for how mixing composes with label smoothing.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import check_int, fail
from labelsmooth.functional.mixing import MixedBatch, check_alpha, mix_targets
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import (
    BatchKey,
    batch_get_item,
    batch_set_item,
    check_batch_key,
    get_logits,
)
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.targets import TargetComponent, TargetStage, TargetTransform

if TYPE_CHECKING:
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__: list[str] = []

_EVENTS = (Event.BEFORE_FORWARD, Event.AFTER_FORWARD, Event.BEFORE_LOSS, Event.AFTER_LOSS)


def mixing_transform(
    indices: torch.Tensor, lam: float, *, interpolate_loss: bool, num_classes: int,
    class_dim: int, dtype: torch.dtype,
) -> TargetTransform:
    """The MIX-stage target transform for one batch's draws.

    Every component ``(w, t)`` becomes ``(w, (1 - lam) t + lam t[indices])`` (one dense mixed
    target), or with ``interpolate_loss`` the two components ``(w (1 - lam), t)`` and
    ``(w lam, t[indices])``, whose weighted losses add up to the interpolated loss.
    """

    def transform(components: Sequence[TargetComponent]) -> list[TargetComponent]:
        mixed = []
        for weight, target in components:
            permuted = target[indices.to(target.device)]
            if interpolate_loss:
                mixed += [TargetComponent(weight * (1.0 - lam), target),
                          TargetComponent(weight * lam, permuted)]
            else:
                mixed.append(TargetComponent(weight, mix_targets(
                    target, permuted, lam, num_classes=num_classes, class_dim=class_dim,
                    dtype=dtype)))
        return mixed

    return transform


class MixingAlgorithm(Algorithm):
    """Mix the inputs at ``BEFORE_FORWARD``, the targets at ``BEFORE_LOSS``; undo both after.

    Subclasses implement :meth:`mix_batch`. ``lam``, ``indices`` (and ``bbox`` for CutMix) hold
    the draws of the most recent training microbatch, ``None`` before the first.
    """

    def __init__(self, alpha: float, *, interpolate_loss: bool, target_key: BatchKey,
                 input_key: BatchKey, class_dim: int, generator: torch.Generator | None) -> None:
        self.alpha = check_alpha(alpha)
        if not isinstance(interpolate_loss, bool):
            fail("interpolate_loss", "a bool", interpolate_loss, error=TypeError)
        self.interpolate_loss = interpolate_loss
        self.target_key = check_batch_key(target_key, "target_key")
        self.input_key = check_batch_key(input_key, "input_key")
        self.class_dim = check_int(class_dim, "class_dim")
        if generator is not None and not isinstance(generator, torch.Generator):
            fail("generator", "a torch.Generator or None", type(generator).__name__,
                 error=TypeError)
        self.generator = generator
        self.lam: float | None = None
        self.indices: torch.Tensor | None = None
        self._original_inputs: Any = None
        self._drawn_for_loss = False

    @abstractmethod
    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        """Mix one batch with this algorithm's functional (and record any extra draws)."""

    def match(self, event: Event, state: State) -> bool:
        return event in _EVENTS

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        if event == Event.BEFORE_FORWARD:
            inputs = batch_get_item(state.batch, self.input_key, argument="input_key")
            targets = batch_get_item(state.batch, self.target_key, argument="target_key")
            mixed = self.mix_batch(inputs, targets)
            self.lam, self.indices = mixed.lam, mixed.indices
            self._original_inputs = inputs
            self._drawn_for_loss = True
            state.batch = batch_set_item(state.batch, self.input_key, mixed.inputs,
                                         argument="input_key")
        elif event == Event.AFTER_FORWARD:
            # The model has seen the mixed inputs; the batch gets the user's tensor back.
            if self._original_inputs is not None:
                state.batch = batch_set_item(state.batch, self.input_key, self._original_inputs,
                                             argument="input_key")
                self._original_inputs = None
        elif event == Event.BEFORE_LOSS:
            if not self._drawn_for_loss or self.indices is None or self.lam is None:
                fail("event", "Event.BEFORE_FORWARD before Event.BEFORE_LOSS (nothing was drawn "
                     "for this batch)", event, error=RuntimeError)
            logits = get_logits(state.outputs, argument="state.outputs")
            state.add_target_transform(
                self, TargetStage.MIX,
                mixing_transform(self.indices, self.lam, interpolate_loss=self.interpolate_loss,
                                 num_classes=logits.shape[self.class_dim],
                                 class_dim=self.class_dim, dtype=logits.dtype),
                target_key=self.target_key)
        elif event == Event.AFTER_LOSS:
            state.remove_target_transform(self)
            self._drawn_for_loss = False
        else:
            fail("event", f"one of {[e.name for e in _EVENTS]}", event)

    def state_dict(self) -> dict[str, Any]:
        # The generator's state, so that a resumed run draws what the uninterrupted one would.
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.generator is None or set(state) != {"generator"}:
            super().load_state_dict(state)
            return
        # A checkpoint loaded with map_location="cuda" moves the state tensor; set_state takes
        # a CPU ByteTensor for CPU and CUDA generators alike.
        self.generator.set_state(state["generator"].cpu())
