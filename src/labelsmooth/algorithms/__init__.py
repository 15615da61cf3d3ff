"""Training algorithms for the :class:`~labelsmooth.trainer.Trainer` (``match`` + ``apply``)."""

from labelsmooth.algorithms.cutmix import CutMix
from labelsmooth.algorithms.label_smoothing import LabelSmoothing
from labelsmooth.algorithms.mixup import MixUp
from labelsmooth.algorithms.online_label_smoothing import OnlineLabelSmoothing

__all__ = ["CutMix", "LabelSmoothing", "MixUp", "OnlineLabelSmoothing"]
