"""What MixUp and CutMix share: the event adapter around a batch-mixing function.

Inputs are mixed at ``BEFORE_FORWARD`` and the user's input tensor goes back at
``AFTER_FORWARD``. At ``BEFORE_LOSS`` the algorithm adds its :class:`~labelsmooth.trainer.targets.Mix`
to the batch's :class:`~labelsmooth.trainer.targets.TrainingTargets` (wrapping the targets first
if no other algorithm has), and takes it out again at ``AFTER_LOSS``: the targets stay index
targets, and the training target ``sum_k w_k smooth_s(y_k)`` is one pure function of the targets,
the mixes and the smoothing, whatever order the algorithms run in.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import check_int, fail
from labelsmooth.functional.mixing import Box, MixedBatch, check_alpha, check_generator
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import (
    BatchKey,
    batch_get_item,
    batch_set_item,
    check_batch_key,
    get_logits,
)
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.targets import Mix, TrainingTargets

if TYPE_CHECKING:
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__: list[str] = []

_EVENTS = (Event.BEFORE_FORWARD, Event.AFTER_FORWARD, Event.BEFORE_LOSS, Event.AFTER_LOSS)
_EVENT_SET = frozenset(_EVENTS)  # for match, which runs at every event of every step


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
        self.generator = check_generator(generator)
        self.lam: float | None = None
        self.indices: torch.Tensor | None = None
        self._original_inputs: Any = None
        self._drawn_for_loss = False
        self._mix: Mix | None = None

    @abstractmethod
    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        """Mix one batch with this algorithm's functional (and record any extra draws).

        Args:
            inputs: the batch's inputs at ``input_key``.
            targets: the batch's targets at ``target_key``.

        Returns:
            The functional's :class:`~labelsmooth.functional.MixedBatch`.
        """

    def label_box(self, targets: torch.Tensor) -> Box | None:
        """The box to paste the partner's labels into, for per-pixel ``targets``; ``None`` (the
        default) mixes whole labels by ``lam``."""
        return None

    def match(self, event: Event, state: State) -> bool:
        """Run at the training forward and loss events (evaluation batches are never mixed)."""
        return event in _EVENT_SET

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        """Mix or restore the inputs (``BEFORE_FORWARD`` / ``AFTER_FORWARD``), add this batch's
        mix to the training targets or take it out (``BEFORE_LOSS`` / ``AFTER_LOSS``).

        Args:
            event: one of the four events :meth:`match` accepts.
            state: the batch holds the inputs at ``input_key`` and the targets at
                ``target_key``; ``outputs`` holds the logits at ``BEFORE_LOSS``.
            logger: unused.

        Raises:
            RuntimeError: at ``BEFORE_LOSS`` when nothing was drawn at ``BEFORE_FORWARD``.
            ValueError: for another event, or a key missing from the batch.
        """
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
            current = batch_get_item(state.batch, self.target_key, argument="target_key")
            original = current.targets if isinstance(current, TrainingTargets) else current
            self._mix = Mix(self.indices, self.lam, self.label_box(original), self.interpolate_loss)
            targets = TrainingTargets.of(current, logits, class_dim=self.class_dim, mix=self._mix)
            state.batch = batch_set_item(state.batch, self.target_key, targets, argument="target_key")
        elif event == Event.AFTER_LOSS:
            current = batch_get_item(state.batch, self.target_key, argument="target_key")
            if isinstance(current, TrainingTargets) and self._mix is not None:
                state.batch = batch_set_item(state.batch, self.target_key,
                                             current.without_mix(self._mix).simplified(),
                                             argument="target_key")
            self._mix = None
            self._drawn_for_loss = False
        else:
            fail("event", f"one of {[e.name for e in _EVENTS]}", event)

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": state}`` when a generator was given, else ``{}``."""
        # The generator's state, so that a resumed run draws what the uninterrupted one would.
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state :meth:`state_dict` saved, so draws continue as before."""
        if self.generator is None or set(state) != {"generator"}:
            super().load_state_dict(state)
            return
        # A checkpoint loaded with map_location="cuda" moves the state tensor; set_state takes
        # a CPU ByteTensor for CPU and CUDA generators alike.
        self.generator.set_state(state["generator"].cpu())
