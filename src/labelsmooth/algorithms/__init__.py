"""Training algorithms for the :class:`~labelsmooth.trainer.Trainer` (``match`` + ``apply``)."""

from labelsmooth.algorithms.label_smoothing import LabelSmoothing

__all__ = ["LabelSmoothing"]
