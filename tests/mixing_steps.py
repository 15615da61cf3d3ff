"""Shared by test_mixup.py and test_cutmix.py: one training step driven through the Engine, and
hand computations of the mixed inputs, targets and loss from what an algorithm recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth.functional import soft_cross_entropy
from labelsmooth.trainer import Algorithm, Engine, Event, State


class Step:
    """What one step saw: the model's inputs, the target components, the loss, the state."""

    def __init__(self, state: State, inputs: torch.Tensor, components: list[tuple[Any, torch.Tensor]],
                 batch_target: torch.Tensor, loss: torch.Tensor) -> None:
        self.state, self.inputs, self.components = state, inputs, components
        self.batch_target, self.loss = batch_target, loss


def train_step(algorithms: Sequence[Algorithm], model: torch.nn.Module, batch: Any, *,
               input_key: Any = 0, target_key: Any = 1) -> Step:
    """Fire the events of one training step as the Trainer does; the loss is
    ``sum_k w_k * soft_cross_entropy(outputs, t_k)`` over the State's target components."""
    state = State(model, algorithms=list(algorithms), batch=batch)
    engine = Engine(state)
    seen: dict[str, Any] = {}
    with engine.run_around(Event.BEFORE_FORWARD, Event.AFTER_FORWARD):
        seen["inputs"] = state.batch_get_item(input_key)
        state.outputs = model(seen["inputs"])
    with engine.run_around(Event.BEFORE_LOSS, Event.AFTER_LOSS):
        components = state.target_components
        if components is None:
            components = ((1.0, state.batch_get_item(target_key)),)
        seen["components"] = [(w, t.clone()) for w, t in components]
        seen["batch_target"] = state.batch_get_item(target_key).clone()
        state.loss = sum(w * soft_cross_entropy(state.outputs, t) for w, t in components)
    return Step(state, seen["inputs"], seen["components"], seen["batch_target"], state.loss)


def hand_smooth(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(1 - s) onehot(y) + s / C`` in float64 from ``F.one_hot``."""
    return F.one_hot(targets, num_classes).double() * (1 - smoothing) + smoothing / num_classes


def hand_mixed_target(targets: torch.Tensor, indices: torch.Tensor, lam: float, num_classes: int,
                      smoothing: float) -> torch.Tensor:
    """The issue's rule: ``(1 - lam) smooth(y) + lam smooth(y[indices])``."""
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
