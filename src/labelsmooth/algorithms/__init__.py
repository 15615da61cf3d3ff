"""Training algorithms for the :class:`~labelsmooth.trainer.Trainer` (``match`` + ``apply``)."""

from labelsmooth.algorithms.cutmix import CutMix
from labelsmooth.algorithms.label_smoothing import LabelSmoothing
from labelsmooth.algorithms.mixup import MixUp

__all__ = ["CutMix", "LabelSmoothing", "MixUp"]
