"""Classification metrics for the Trainer, computed with torchmetrics on the original targets.

- ``accuracy``: the fraction of positions whose arg-max logit is the target class.
- ``ece``: the expected calibration error with 15 equal-width confidence bins,
  ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` (Guo et al., 2017).
- ``nll``: the *unsmoothed* negative log-likelihood ``-log softmax(z)_y``, so that runs with and
  without label smoothing are compared on the same scale (the training ``loss`` is smoothed).
- ``loss`` (training only): the mean of the loss that was optimised, weighted by examples.

Index targets ``(N, *)`` skip positions equal to ``ignore_index``; dense targets ``(N, C, *)``
count as their arg-max for accuracy and calibration and as distributions for the NLL. Under
torch.distributed, torchmetrics reduces every metric across ranks when it is computed.
torchmetrics is imported when the first metrics object is built (``labelsmooth[trainer]``).

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

from typing import Any

import torch

from labelsmooth._optional import import_optional
from labelsmooth._validation import fail, shape_str
from labelsmooth.functional import soft_cross_entropy

__all__ = ["ClassificationMetrics"]

ECE_BINS = 15


def _flatten(logits: torch.Tensor, targets: torch.Tensor, class_dim: int
             ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Logits as ``(M, C)`` float32 rows, targets as ``(M,)`` indices or ``(M, C)`` rows."""
    dim = class_dim % logits.ndim
    num_classes = logits.shape[dim]
    rows = logits.detach().float().movedim(dim, -1).reshape(-1, num_classes)
    if targets.is_floating_point() and targets.shape == logits.shape:
        dense = targets.detach().float().movedim(dim, -1).reshape(-1, num_classes)
        return rows, dense, True
    expected = logits.shape[:dim] + logits.shape[dim + 1:]
    if targets.shape != expected or targets.is_floating_point():
        fail("targets", f"class indices of shape {shape_str(expected)} or dense targets of shape "
             f"{shape_str(logits.shape)} for logits of shape {shape_str(logits.shape)}", targets)
    return rows, targets.reshape(-1), False


class _WeightedMean:
    """``sum(w x) / sum(w)`` over every update, reduced across ranks when computed.

    torchmetrics' ``MeanMetric`` checks every update for NaN with ``if nans.any()``, a host sync
    on a GPU after every microbatch, and its ``nan_strategy="disable"`` (no check) drops the
    weights. Two ``SumMetric`` states without the check do the same sums with no sync; a NaN
    value then makes the mean NaN instead of being dropped with a warning.
    """

    def __init__(self, torchmetrics: Any, device: torch.device) -> None:
        self._total = torchmetrics.SumMetric(nan_strategy="disable").to(device)
        self._weight = torchmetrics.SumMetric(nan_strategy="disable").to(device)

    def update(self, value: torch.Tensor, weight: torch.Tensor | float) -> None:
        self._total.update(value * weight)
        self._weight.update(weight)

    def compute(self) -> torch.Tensor:
        return self._total.compute() / self._weight.compute()

    def reset(self) -> None:
        self._total.reset()
        self._weight.reset()


class ClassificationMetrics:
    """Accuracy, ECE (15 bins), unsmoothed NLL and optionally the mean loss, across batches.

    Args:
        device: where the metric states live.
        class_dim: the class dimension of the logits. Default: 1.
        ignore_index: index-target value to skip. Default: -100 (PyTorch's).
        track_loss: also average the training loss passed to :meth:`update`. Default: ``False``.

    Example:
        >>> metrics = ClassificationMetrics(device="cpu")
        >>> metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> metrics.compute()["accuracy"]
        0.5
    """

    def __init__(self, *, device: torch.device | str, class_dim: int = 1, ignore_index: int = -100,
                 track_loss: bool = False) -> None:
        self._torchmetrics = import_optional("torchmetrics", extra="trainer", purpose="the Trainer's metrics")
        self.device = torch.device(device)
        self.class_dim = class_dim
        self.ignore_index = ignore_index
        self.track_loss = track_loss
        self.num_classes: int | None = None
        self._metrics: dict[str, Any] = {}

    def _build(self, num_classes: int) -> None:
        tm = self._torchmetrics
        self.num_classes = num_classes
        self._metrics = {"loss": _WeightedMean(tm, self.device)} if self.track_loss else {}
        self._metrics |= {
            "accuracy": tm.classification.MulticlassAccuracy(
                num_classes, average="micro", ignore_index=self.ignore_index).to(self.device),
            "ece": tm.classification.MulticlassCalibrationError(
                num_classes, n_bins=ECE_BINS, norm="l1", ignore_index=self.ignore_index,
            ).to(self.device),
            "nll": _WeightedMean(tm, self.device),
        }

    def update(self, logits: torch.Tensor, targets: torch.Tensor, *,
               loss: torch.Tensor | None = None) -> None:
        """Add a batch: ``logits`` ``(N, C, *)`` and the original ``targets``; ``loss`` is the
        batch's mean training loss (weighted by ``N`` when averaged)."""
        num_classes = logits.shape[self.class_dim]
        if self.num_classes is None:
            self._build(num_classes)
        elif num_classes != self.num_classes:
            fail("logits", f"{self.num_classes} classes, as in earlier batches", num_classes)
        rows, flat_targets, dense = _flatten(logits, targets, self.class_dim)
        probabilities = rows.softmax(dim=-1)
        # The unsmoothed NLL is the library's own cross-entropy, per position, for either kind of
        # target (ignored positions give 0 and get weight 0 in the mean).
        nll = soft_cross_entropy(rows, flat_targets, ignore_index=self.ignore_index,
                                 reduction="none")
        if dense:
            labels = flat_targets.argmax(dim=-1)
            weight = torch.ones_like(nll)
        else:
            labels = flat_targets
            weight = (labels != self.ignore_index).float()
        self._metrics["accuracy"].update(probabilities, labels)
        self._metrics["ece"].update(probabilities, labels)
        self._metrics["nll"].update(nll, weight)
        if self.track_loss:
            if loss is None:
                fail("loss", "the batch's training loss (track_loss=True)", loss, error=TypeError)
            self._metrics["loss"].update(loss.detach().float(), logits.shape[0])

    def compute(self) -> dict[str, float]:
        """The metrics over every batch since the last :meth:`reset` (reduced across ranks);
        empty before the first update."""
        return {name: float(metric.compute()) for name, metric in self._metrics.items()}

    def reset(self) -> None:
        """Forget every batch (keep the number of classes)."""
        for metric in self._metrics.values():
            metric.reset()
