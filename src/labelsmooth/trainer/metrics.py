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

Every metric is a ratio of sums that add up over batches: per confidence bin, the examples,
their summed confidence, correct predictions and NLL (the
:func:`~labelsmooth.metrics.calibration_histogram` with the NLL beside it), and the summed
loss, kept in one small tensor on the device. An update keeps the batch's logits, targets and
loss (on the CPU the batch's own tensors, which must then not be written to in place until they
are added up; elsewhere copies); once ``BUFFER_ELEMENTS`` logits are kept (or at
:meth:`ClassificationMetrics.compute`), they are concatenated and added to the sums in one go,
so the thirty or so small operations of the metrics run once per many small batches instead of
once per batch, and never wait for the device. On the CPU an update runs no tensor operation but
detaching the logits (and a loss that requires grad): a copy there would cost more than the
rest of the update.
:meth:`ClassificationMetrics.compute` reads the sums once, after summing them across ranks
under torch.distributed. The sums are kept in float64 (float32 on devices
without it), so that an epoch of float32 batch sums loses no digits the logged values show.

References:
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from labelsmooth._validation import check_int, fail
from labelsmooth.functional._targets import check_target_range, classify_targets
from labelsmooth.metrics.calibration import _bin_index

__all__ = ["ClassificationMetrics"]

ECE_BINS = 15
# Logits kept before they are added to the running sums (see ClassificationMetrics.update).
BUFFER_ELEMENTS = 2**20
# Layout of the running sums: a (_ROWS, ECE_BINS + 1) table, each bin's sums of the examples'
# _row_values, then the summed example-weighted loss and the examples it was averaged over. The
# last bin is a spare one that no metric reads: ignored positions are added there.
_ROWS = 4
_TABLE = _ROWS * (ECE_BINS + 1)
_LOSS, _LOSS_WEIGHT = _TABLE, _TABLE + 1


def _as_rows(logits: torch.Tensor, targets: torch.Tensor, dim: int, dense: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits as ``(M, C)`` rows, targets as ``(M,)`` indices or ``(M, C)`` rows, in their own
    dtypes (the inputs themselves for ``(N, C)`` logits)."""
    if logits.ndim == 2 and dim == 1:
        return logits, targets
    num_classes = logits.shape[dim]
    rows = logits.movedim(dim, -1).reshape(-1, num_classes)
    if dense:
        return rows, targets.movedim(dim, -1).reshape(-1, num_classes)
    return rows, targets.reshape(-1)


def _row_values(confidence: torch.Tensor, correct: torch.Tensor, nll: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
    """Each example's ``(1, confidence, correct, NLL)`` in ``dtype``: ``(4, M)`` from ``(M, 1)``
    columns (``torch.stack`` promotes them all to the ones' dtype)."""
    ones = torch.ones_like(confidence, dtype=dtype)
    return torch.stack([ones, confidence, correct, nll]).view(_ROWS, -1)


def _index_rows(rows: torch.Tensor, labels: torch.Tensor, ignore_index: int, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's confidence bin ``(M,)`` and :func:`_row_values` ``(4, M)`` in ``dtype``, for
    ``(M, C)`` logits and ``(M,)`` int64 labels, from one pass of ``exp`` over the rows.

    With ``m = max_k z_k`` and ``S = sum_k exp(z_k - m)``: ``-log softmax(z)_y = log S - (z_y - m)``
    and the largest probability is ``exp(m - m) / S = 1 / S``, the value ``softmax`` gives.
    Positions whose label is ``ignore_index`` (any value outside ``[0, C)`` when the range was
    checked elsewhere) go to the spare bin ``ECE_BINS``, which no metric reads.
    """
    labels = labels.unsqueeze(1)
    top, predicted = rows.max(dim=1, keepdim=True)
    shifted = rows - top
    ignored = labels == ignore_index
    picked = shifted.gather(1, labels.masked_fill(ignored, 0))
    sum_exp = shifted.exp_().sum(dim=1, keepdim=True)
    nll = sum_exp.log().sub_(picked)
    confidence = sum_exp.reciprocal_()
    bins = _bin_index(confidence, ECE_BINS).masked_fill_(ignored, ECE_BINS)
    return bins.view(-1), _row_values(confidence, predicted == labels, nll, dtype)


def _dense_rows(rows: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_index_rows` for dense ``(M, C)`` targets: correct against their arg-max, and the
    NLL of the distribution, ``-sum_k t_k log softmax(z)_k``."""
    confidence, predicted = rows.softmax(dim=1).max(dim=1, keepdim=True)
    nll = F.cross_entropy(rows, targets, reduction="none").unsqueeze(1)
    correct = predicted == targets.argmax(dim=1, keepdim=True)
    return _bin_index(confidence, ECE_BINS).view(-1), _row_values(confidence, correct, nll, dtype)


# A batch kept until the metrics add it to their sums: its logits (detached) and targets, and the
# version counters they had then (PyTorch bumps a tensor's on every in-place write).
_Kept = tuple[torch.Tensor, torch.Tensor, int, int]


def _check_unchanged(kept: list[_Kept]) -> None:
    """Refuse kept batches written to in place since they were kept."""
    if any(logits._version != logits_version or targets._version != targets_version
           for logits, targets, logits_version, targets_version in kept):
        fail("logits", "the logits and targets given to ClassificationMetrics.update left "
             "unchanged until they are added to the sums (on the CPU the metrics keep them, not "
             "copies)", "tensors written to in place after the update")


def _ratio(total: float, count: float) -> float:
    """``total / count``, NaN when nothing was counted (as ``0 / 0`` is for tensors)."""
    return total / count if count else math.nan


def _metrics_from_sums(sums: list[float], track_loss: bool) -> dict[str, float]:
    """The metrics from the running sums, read to the host (and summed across ranks).

    With ``n_b`` examples, summed confidence ``c_b`` and summed correct ``a_b`` in bin ``b``,
    and ``n = sum_b n_b``, the ECE ``sum_b n_b / n * |a_b / n_b - c_b / n_b|`` is
    ``sum_b |a_b - c_b| / n`` (an empty bin adds 0 either way): a handful of float64 operations
    on the host, where the same formula over tensors would be a dozen small device operations.
    The spare last bin is left out.
    """
    counts, confidences, corrects, nlls = (sums[row * (ECE_BINS + 1):row * (ECE_BINS + 1) + ECE_BINS]
                                           for row in range(_ROWS))
    count = math.fsum(counts)
    values = {
        "accuracy": _ratio(math.fsum(corrects), count),
        "ece": _ratio(math.fsum(abs(a - c) for a, c in zip(corrects, confidences, strict=True)),
                      count),
        "nll": _ratio(math.fsum(nlls), count),
    }
    if track_loss:
        values = {"loss": _ratio(sums[_LOSS], sums[_LOSS_WEIGHT]), **values}
    return values


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class ClassificationMetrics:
    """Accuracy, ECE (15 bins), unsmoothed NLL and optionally the mean loss, across batches.

    Args:
        device: where the running sums live (the logits' device).
        class_dim: the class dimension of the logits. Default: 1.
        ignore_index: index-target value to skip. Default: -100 (PyTorch's).
        track_loss: also average the training loss passed to :meth:`update`. Default: ``False``.
        validate_args: check that index targets are in range, as the library's losses do
            (``None``: on the CPU only,
            where it costs no device synchronisation; ``False``: never, for targets a loss has
            already checked). Default: ``None``.
        buffer_elements: how many logits to keep before adding them to the running sums; a batch
            with more is added at once. Default: :data:`BUFFER_ELEMENTS` (``2**20``, 4 MiB of
            float32).

    Example:
        >>> metrics = ClassificationMetrics(device="cpu")
        >>> metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        >>> metrics.compute()["accuracy"]
        0.5
    """

    def __init__(self, *, device: torch.device | str, class_dim: int = 1, ignore_index: int = -100,
                 track_loss: bool = False, validate_args: bool | None = None,
                 buffer_elements: int = BUFFER_ELEMENTS) -> None:
        self.device = torch.device(device)
        self.class_dim = class_dim
        self.ignore_index = ignore_index
        self.track_loss = track_loss
        self.validate_args = validate_args
        self.num_classes: int | None = None
        self._sums = torch.zeros(_LOSS_WEIGHT + 1, dtype=_sum_dtype(self.device), device=self.device)
        # Views of the running sums, so that a flush indexes nothing.
        self._table, self._loss = self._sums[:_TABLE].view(_ROWS, ECE_BINS + 1), self._sums[_LOSS]
        self._loss_weight = 0
        self._updated = False
        self.buffer_elements = check_int(buffer_elements, "buffer_elements", minimum=1)
        self._on_cpu = self.device.type == "cpu"
        self._kept: list[_Kept] = []
        self._kept_losses: list[torch.Tensor] = []
        self._kept_loss_weights: list[int] = []
        self._kept_elements = 0
        self._kept_dense = False
        # The shapes and targets' dtype of the last batch checked, and whether its targets were
        # dense: a training loop sends batches of one shape, checked once.
        self._checked: tuple[torch.Size, torch.Size, torch.dtype] | None = None
        self._dense = False

    def update(self, logits: torch.Tensor, targets: torch.Tensor, *,
               loss: torch.Tensor | None = None) -> None:
        """Add a batch: ``logits`` ``(N, C, *)`` and the original ``targets``; ``loss`` is the
        batch's mean training loss (weighted by ``N`` when averaged).

        The batch is kept until ``buffer_elements`` logits are kept, then all of them are added
        to the running sums at once. On the CPU the batch's own tensors are kept (detached), and
        must not be written to in place before they are added (that is refused then, naming
        it); on other devices copies are kept (an accelerator's outputs may live in memory that
        the next step reuses, as with CUDA graphs).
        """
        shapes = ((logits.shape, targets.shape, targets.dtype)
                  if isinstance(targets, torch.Tensor) else None)
        if shapes is None or shapes != self._checked:
            self._dense = self._check_shapes(logits, targets)
            self._checked = shapes
        if self.track_loss and (not isinstance(loss, torch.Tensor) or loss.ndim != 0):
            fail("loss", "the batch's training loss, a scalar tensor (track_loss=True)", loss,
                 error=TypeError)
        dense = self._dense
        if not dense and self.validate_args is not False:
            check_target_range(targets, logits.shape[self.class_dim], self.ignore_index,
                               validate_args=self.validate_args)
        if self._kept and dense != self._kept_dense:
            self._flush()
        logits = logits.detach()
        if not self._on_cpu:  # an accelerator's outputs may be overwritten by the next step
            logits, targets = logits.clone(), targets.clone()
        self._kept.append((logits, targets, logits._version, targets._version))
        self._kept_dense = dense
        self._kept_elements += logits.numel()
        if loss is not None and self.track_loss:
            examples = logits.shape[0]
            self._kept_losses.append(loss.detach() if loss.requires_grad else loss)
            self._kept_loss_weights.append(examples)
            self._loss_weight += examples
        self._updated = True
        if self._kept_elements >= self.buffer_elements:
            self._flush()

    def _check_shapes(self, logits: torch.Tensor, targets: torch.Tensor) -> bool:
        """Check a batch's class count (the same in every batch) and targets; return whether
        the targets are dense."""
        dim = self.class_dim % logits.ndim
        num_classes = logits.shape[dim]
        if num_classes != self.num_classes:
            if self.num_classes is not None:
                fail("logits", f"{self.num_classes} classes, as in earlier batches", num_classes)
            self.num_classes = num_classes
        return classify_targets(logits, targets, dim)[0] == "dense"

    def _flush(self) -> None:
        """Add the kept batches to the running sums: a handful of operations for all of them."""
        if not self._kept:
            return
        kept, dense, dim = self._kept, self._kept_dense, self.class_dim
        self._kept, self._kept_elements = [], 0
        _check_unchanged(kept)
        pairs = [_as_rows(logits, targets, dim % logits.ndim, dense)
                 for logits, targets, _, _ in kept]
        rows = torch.cat([rows for rows, _ in pairs]).float()
        targets = torch.cat([targets for _, targets in pairs])
        if self._kept_losses:
            self._add_losses()
        dtype = self._sums.dtype
        bins, values = (_dense_rows(rows, targets.detach().float(), dtype) if dense
                        else _index_rows(rows, targets.long(), self.ignore_index, dtype))
        self._table.index_add_(1, bins, values)

    def _add_losses(self) -> None:
        """Add the example-weighted sum of the kept batch losses to the sums, in their dtype."""
        losses, weights = torch.stack(self._kept_losses), self._kept_loss_weights
        self._kept_losses, self._kept_loss_weights = [], []
        dtype = self._sums.dtype
        if weights.count(weights[0]) == len(weights):  # batches of one size: a sum, scaled
            self._loss.add_(losses.sum(dtype=dtype), alpha=weights[0])
        else:
            self._loss.add_(losses.to(dtype) @ torch.tensor(weights, dtype=dtype, device=self.device))

    def compute(self) -> dict[str, float]:
        """The metrics over every batch since the last :meth:`reset` (summed across ranks);
        empty before the first update."""
        if not self._updated:
            return {}
        self._flush()
        if dist.is_available() and dist.is_initialized():
            sums = self._sums.clone()
            sums[_LOSS_WEIGHT] = self._loss_weight
            dist.all_reduce(sums)
            values = sums.tolist()  # the one host synchronisation
        else:
            values = self._sums.tolist()
            values[_LOSS_WEIGHT] = self._loss_weight
        return _metrics_from_sums(values, self.track_loss)

    def reset(self) -> None:
        """Forget every batch (keep the number of classes)."""
        self._sums.zero_()
        self._kept, self._kept_elements = [], 0
        self._kept_losses, self._kept_loss_weights = [], []
        self._loss_weight = 0
        self._updated = False
