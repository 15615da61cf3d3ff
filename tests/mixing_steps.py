"""Shared by test_mixup.py and test_cutmix.py: one training step driven through the Engine, and
hand computations of the mixed inputs, targets and loss from what an algorithm recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth.functional import soft_cross_entropy
from labelsmooth.trainer import Algorithm, Callback, Engine, Event, State, Trainer, TrainingTargets


class Step:
    """What one step saw: the model's inputs, the loss terms, the batch's target, the loss."""

    def __init__(self, state: State, inputs: torch.Tensor, components: list[tuple[Any, torch.Tensor]],
                 batch_target: torch.Tensor, loss: torch.Tensor) -> None:
        self.state, self.inputs, self.components = state, inputs, components
        self.batch_target, self.loss = batch_target, loss


def train_step(algorithms: Sequence[Algorithm], model: torch.nn.Module, batch: Any, *,
               input_key: Any = 0, target_key: Any = 1) -> Step:
    """Fire the events of one training step as the Trainer does, with its default loss.

    ``components`` are the loss terms: ``[(1.0, the batch's target)]``, or with an interpolated
    loss one unmixed training target per mixed component, with its weight. ``batch_target`` is
    the dense target the batch held (a plain tensor).
    """
    state = State(model, algorithms=list(algorithms), batch=batch)
    engine = Engine(state)
    seen: dict[str, Any] = {}
    with engine.run_around(Event.BEFORE_FORWARD, Event.AFTER_FORWARD):
        seen["inputs"] = state.batch_get_item(input_key)
        state.outputs = model(seen["inputs"])
    with engine.run_around(Event.BEFORE_LOSS, Event.AFTER_LOSS):
        target = state.batch_get_item(target_key)
        seen["batch_target"] = target.clone()
        if isinstance(target, TrainingTargets):
            seen["components"] = target.terms() if target.interpolate else [(1.0, target)]
            state.loss = target.cross_entropy(state.outputs)
        else:
            seen["components"] = [(1.0, target)]
            state.loss = soft_cross_entropy(state.outputs, target)
    return Step(state, seen["inputs"], seen["components"], seen["batch_target"], state.loss)


def hand_smooth(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(1 - s) onehot(y) + s / C`` in float64 from ``F.one_hot``."""
    return F.one_hot(targets, num_classes).double() * (1 - smoothing) + smoothing / num_classes


def hand_mixed_target(targets: torch.Tensor, indices: torch.Tensor, lam: float, num_classes: int,
                      smoothing: float) -> torch.Tensor:
    """``(1 - lam) smooth(y) + lam smooth(y[indices])`` in float64."""
    return ((1 - lam) * hand_smooth(targets, num_classes, smoothing)
            + lam * hand_smooth(targets[indices], num_classes, smoothing))


def reference_loss(outputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, lam: float,
                   smoothing: float) -> torch.Tensor:
    """PyTorch's own label-smoothed cross-entropy, interpolated between the two targets.

    Cross-entropy is linear in the target, so this is also the loss of the mixed dense target.
    """
    return ((1 - lam) * F.cross_entropy(outputs, targets, label_smoothing=smoothing)
            + lam * F.cross_entropy(outputs, targets[indices], label_smoothing=smoothing))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _SeenInputs(torch.nn.Module):
    """Wraps a model and keeps the inputs of its last call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.last_inputs: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.last_inputs = inputs.detach().clone()
        return self.model(inputs)


def trainer_run(algorithms: Sequence[Algorithm], mixer: Any, model: torch.nn.Module,
                x: torch.Tensor, y: torch.Tensor, *, batch_size: int, grad_accum: int = 1
                ) -> list[dict[str, Any]]:
    """Train with the real Trainer and record, per microbatch, what went into the loss.

    Each record holds the batch's original inputs and targets (as the dataloader gave them), the
    inputs the model saw, the outputs, the loss, ``mixer``'s draws, and the targets the batch
    held after ``AFTER_LOSS``.
    """
    class Record(Callback):
        def __init__(self) -> None:
            self.steps: list[dict[str, Any]] = []

        def before_forward(self, state: State, logger: Any) -> None:
            # Callbacks run after the algorithms, so the batch is mixed already; the mixer
            # keeps the originals until AFTER_FORWARD, and so does this record.
            self.current: dict[str, Any] = {"targets": state.batch[1]}

        def after_forward(self, state: State, logger: Any) -> None:
            self.current["original_inputs"] = state.batch[0]

        def after_loss(self, state: State, logger: Any) -> None:
            self.current.update(
                seen_inputs=wrapped.last_inputs, outputs=state.outputs.detach().clone(),
                loss=state.loss.detach().clone(), lam=mixer.lam, indices=mixer.indices,
                bbox=getattr(mixer, "bbox", None), targets_after=state.batch[1],
                inputs_after=state.batch[0])
            self.steps.append(self.current)

    wrapped, record = _SeenInputs(model), Record()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=batch_size)
    trainer = Trainer(wrapped, loader, max_duration="1ep", algorithms=list(algorithms),
                      callbacks=[record], optimizers=torch.optim.SGD(wrapped.parameters(), lr=0.1),
                      device="cpu", progress_bar=False, grad_accum=grad_accum)
    trainer.fit()
    return record.steps
