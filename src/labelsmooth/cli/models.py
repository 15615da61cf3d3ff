"""Small classifiers for the command: an MLP and a CNN (1-D for signals, 2-D for images).

Each model is ``head(features(x))`` with ``head`` a single ``nn.Linear``, so the penultimate
activations are ``features(x)`` and the class templates are ``head.weight``'s rows (what the
penultimate-layer picture needs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from labelsmooth._validation import fail

__all__ = ["DEFAULT_MODEL", "MODELS", "Classifier", "build_model"]

MODELS = ("mlp", "cnn")
# The MLP reaches ~70% on MNIST-1D where a CNN reaches ~95% (Greydanus 2020); on 8x8 digits
# an MLP is already at ~97% and is the quicker choice.
DEFAULT_MODEL = {"mnist1d": "cnn", "digits": "mlp"}


class Classifier(nn.Module):
    """``head(features(x))``: a feature extractor and one linear layer of class templates."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))


def _mlp(input_shape: tuple[int, ...], width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
    )


def _cnn(input_shape: tuple[int, ...], width: int) -> nn.Sequential:
    spatial = input_shape[1:]
    if len(spatial) == 1:
        conv: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv1d
        pool: type[nn.MaxPool1d] | type[nn.MaxPool2d] = nn.MaxPool1d
    else:
        conv, pool = nn.Conv2d, nn.MaxPool2d
    channels = input_shape[0]
    body = nn.Sequential(
        conv(channels, 32, 5 if len(spatial) == 1 else 3, padding="same"),
        nn.ReLU(),
        pool(2),
        conv(32, 64, 3, padding="same"),
        nn.ReLU(),
        pool(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = body(torch.zeros(1, *input_shape)).shape[1]
    return nn.Sequential(*body, nn.Linear(flat, width), nn.ReLU())


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, width: int = 128) -> Classifier:
    """Build model ``name`` (``"mlp"`` or ``"cnn"``) for inputs of shape ``(channels, *spatial)``.

    Args:
        name: one of :data:`MODELS`.
        input_shape: one example's shape, ``(1, 40)`` for MNIST-1D or ``(1, 8, 8)`` for digits.
        num_classes: the head's output size.
        width: size of the penultimate layer. Default: 128.

    Returns:
        A :class:`Classifier`.

    Example:
        >>> model = build_model("cnn", input_shape=(1, 40), num_classes=10)
        >>> model(torch.zeros(2, 1, 40)).shape
        torch.Size([2, 10])
    """
    if name == "mlp":
        features = _mlp(input_shape, width)
    elif name == "cnn":
        if len(input_shape) not in (2, 3):
            fail("input_shape", "(channels, length) or (channels, height, width)", input_shape)
        features = _cnn(input_shape, width)
    else:
        fail("model", f"one of {', '.join(MODELS)}", repr(name))
    return Classifier(features, nn.Linear(width, num_classes))
