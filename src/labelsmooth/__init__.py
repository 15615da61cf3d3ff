"""labelsmooth: label smoothing for PyTorch.

Exact, fused label-smoothed losses, the functional API (:mod:`labelsmooth.functional`), and the
``LabelSmoothing`` algorithm for an event-driven ``Trainer``.
"""

from __future__ import annotations

from labelsmooth import functional
from labelsmooth.algorithms import CutMix, LabelSmoothing, MixUp, OnlineLabelSmoothing
from labelsmooth.functional import (
    one_hot,
    smooth_binary_labels,
    smooth_labels,
    smoothed_binary_cross_entropy_with_logits,
    smoothed_cross_entropy,
    smoothed_linear_cross_entropy,
    soft_cross_entropy,
)
from labelsmooth.losses import (
    SmoothedBCEWithLogitsLoss,
    SmoothedCrossEntropyLoss,
    SmoothedLinearCrossEntropyLoss,
    SoftCrossEntropyLoss,
)
from labelsmooth.trainer import Algorithm, Callback, Engine, Event, State, Trainer

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Callback",
    "CutMix",
    "Engine",
    "Event",
    "LabelSmoothing",
    "MixUp",
    "OnlineLabelSmoothing",
    "SmoothedBCEWithLogitsLoss",
    "SmoothedCrossEntropyLoss",
    "SmoothedLinearCrossEntropyLoss",
    "SoftCrossEntropyLoss",
    "State",
    "Trainer",
    "__version__",
    "functional",
    "one_hot",
    "smooth_binary_labels",
    "smooth_labels",
    "smoothed_binary_cross_entropy_with_logits",
    "smoothed_cross_entropy",
    "smoothed_linear_cross_entropy",
    "soft_cross_entropy",
]
