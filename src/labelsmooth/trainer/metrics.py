"""Classification metrics for the Trainer, accumulated on the device and read when logged.

- ``accuracy``: the fraction of positions whose arg-max logit is the target class.
- ``ece``: the expected calibration error with 15 equal-width confidence bins,
  ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` (Guo et al., 2017): exactly
  :func:`labelsmooth.metrics.expected_calibration_error`, the ECE ``labelsmooth run`` reports
  (a confidence of exactly 1.0 is in the last bin).
- ``nll``: the *unsmoothed* negative log-likelihood ``-log softmax(z)_y``, so that runs with and
  without label smoothing are compared on the same scale (the training ``loss`` is smoothed).
- ``loss`` (training only): the mean of the loss that was optimised, weighted by examples.

Index targets ``(N, *)`` skip positions equal to ``ignore_index``; dense targets ``(N, C, *)``
count as their arg-max for accuracy and calibration and as distributions for the NLL.

Every metric is a ratio of sums that add up over batches, so an update is a few tensor
operations on the device into one small running-sum tensor (the
:func:`~labelsmooth.metrics.calibration_histogram`, the summed NLL, the summed loss), with no
host synchronisation; :meth:`ClassificationMetrics.compute` reads it once, after summing it
across ranks under torch.distributed. The sums are kept in float64 (float32 on devices
without it), so that an epoch of float32 batch sums loses no digits the logged values show.

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from labelsmooth._validation import fail, shape_str
from labelsmooth.functional import soft_cross_entropy
from labelsmooth.metrics import ReliabilityBins, calibration_histogram

__all__ = ["ClassificationMetrics"]

ECE_BINS = 15
# Layout of the running sums: the (3, ECE_BINS) histogram, then the summed NLL, the summed
# example-weighted loss and the examples the loss was averaged over.
_NLL, _LOSS, _LOSS_WEIGHT = 3 * ECE_BINS, 3 * ECE_BINS + 1, 3 * ECE_BINS + 2
_SIZE = 3 * ECE_BINS + 3


def _flatten(logits: torch.Tensor, targets: torch.Tensor, class_dim: int
             ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Logits as ``(M, C)`` float32 rows, targets as ``(M,)`` indices or ``(M, C)`` rows."""
    dim = class_dim % logits.ndim
    num_classes = logits.shape[dim]
    rows = logits.detach().float()
    if logits.ndim != 2 or dim != 1:
        rows = rows.movedim(dim, -1).reshape(-1, num_classes)
    if targets.is_floating_point() and targets.shape == logits.shape:
        dense = targets.detach().float()
        if logits.ndim != 2 or dim != 1:
            dense = dense.movedim(dim, -1).reshape(-1, num_classes)
        return rows, dense, True
    expected = logits.shape[:dim] + logits.shape[dim + 1:]
    if targets.shape != expected or targets.is_floating_point():
        fail("targets", f"class indices of shape {shape_str(expected)} or dense targets of shape "
             f"{shape_str(logits.shape)} for logits of shape {shape_str(logits.shape)}", targets)
    return rows, targets.reshape(-1), False


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class ClassificationMetrics:
    """Accuracy, ECE (15 bins), unsmoothed NLL and optionally the mean loss, across batches.

    Args:
        device: where the running sums live (the logits' device).
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
        self.device = torch.device(device)
        self.class_dim = class_dim
        self.ignore_index = ignore_index
        self.track_loss = track_loss
        self.num_classes: int | None = None
        self._sums = torch.zeros(_SIZE, dtype=_sum_dtype(self.device), device=self.device)
        self._updated = False

    def update(self, logits: torch.Tensor, targets: torch.Tensor, *,
               loss: torch.Tensor | None = None) -> None:
        """Add a batch: ``logits`` ``(N, C, *)`` and the original ``targets``; ``loss`` is the
        batch's mean training loss (weighted by ``N`` when averaged)."""
        num_classes = logits.shape[self.class_dim]
        if self.num_classes is None:
            self.num_classes = num_classes
        elif num_classes != self.num_classes:
            fail("logits", f"{self.num_classes} classes, as in earlier batches", num_classes)
        if self.track_loss and loss is None:
            fail("loss", "the batch's training loss (track_loss=True)", loss, error=TypeError)
        rows, flat_targets, dense = _flatten(logits, targets, self.class_dim)
        # The unsmoothed NLL is the library's own cross-entropy for either kind of target
        # (ignored positions add 0, and count nowhere in the histogram).
        nll = soft_cross_entropy(rows, flat_targets, ignore_index=self.ignore_index,
                                 reduction="sum")
        labels = flat_targets.argmax(dim=-1) if dense else flat_targets
        histogram = calibration_histogram(rows.softmax(dim=-1), labels, num_bins=ECE_BINS,
                                          ignore_index=None if dense else self.ignore_index)
        sums = self._sums
        sums[:_NLL].add_(histogram.view(-1))
        sums[_NLL].add_(nll)
        if loss is not None and self.track_loss:
            sums[_LOSS].add_(loss.detach().float() * logits.shape[0])
            sums[_LOSS_WEIGHT].add_(logits.shape[0])
        self._updated = True

    def compute(self) -> dict[str, float]:
        """The metrics over every batch since the last :meth:`reset` (summed across ranks);
        empty before the first update."""
        if not self._updated:
            return {}
        sums = self._sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        bins = ReliabilityBins.from_histogram(sums[:_NLL].view(3, ECE_BINS))
        count = bins.counts.sum()
        values = {
            "accuracy": sums[2 * ECE_BINS:_NLL].sum() / count,
            "ece": bins.expected_calibration_error(),
            "nll": sums[_NLL] / count,
        }
        if self.track_loss:
            values = {"loss": sums[_LOSS] / sums[_LOSS_WEIGHT], **values}
        results = torch.stack(list(values.values())).tolist()  # the one host synchronisation
        return dict(zip(values, results, strict=True))

    def reset(self) -> None:
        """Forget every batch (keep the number of classes)."""
        self._sums.zero_()
        self._updated = False
