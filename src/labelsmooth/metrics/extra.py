r"""Calibration measures beyond top-label ECE, and bootstrap confidence intervals for any metric.

* :func:`adaptive_calibration_error`: top-label ECE with equal-mass bins (each bin holds the same
  number of predictions), less sensitive than equal-width bins to confidences crowding near 1.
* :func:`classwise_calibration_error`: the calibration of every class probability, not only the
  top one, averaged over classes.
* :func:`bootstrap_interval`: a percentile bootstrap interval for any metric of
  ``(outputs, targets)``, drawing with an injectable ``torch.Generator``.

Pure functions of tensors (only torch needed); inputs are never modified.

References:
    Nixon, Dusenberry, Zhang, Jerfel and Tran (2019), "Measuring calibration in deep learning",
    CVPR workshops (adaptive, equal-mass binning). Kull, Perello-Nieto, Kängsepp, Silva Filho, Song
    and Flach (2019), "Beyond temperature scaling: obtaining well-calibrated multiclass
    probabilities with Dirichlet calibration", NeurIPS (classwise ECE). Efron and Tibshirani
    (1993), "An introduction to the bootstrap", Chapman & Hall (percentile intervals).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from labelsmooth._validation import check_int, describe, fail

__all__ = [
    "BootstrapInterval",
    "adaptive_calibration_error",
    "bootstrap_interval",
    "classwise_calibration_error",
]


def _check_probs_targets(probs: Any, targets: Any) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        fail("probs", "a floating-point tensor of shape (N, C)", probs, error=TypeError)
    if probs.shape[0] == 0:
        fail("probs", "at least one row", probs)
    if not isinstance(targets, torch.Tensor) or targets.shape != probs.shape[:1]:
        fail("targets", f"an integer tensor of shape ({probs.shape[0]},)", targets, error=TypeError)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        fail("targets", "an integer tensor of class indices", f"dtype {targets.dtype}", error=TypeError)


def _binned_gap(
    confidence: torch.Tensor, outcome: torch.Tensor, index: torch.Tensor, num_bins: int
) -> torch.Tensor:
    """``sum_b |I_b| / N * |mean(outcome, I_b) - mean(confidence, I_b)|`` for bins given by ``index``.

    ``|I_b| * |mean_o - mean_c| = |sum_o - sum_c|``, so the per-bin means are never formed and
    empty bins contribute 0. Sums in float64 so the result does not depend on the order of N terms.
    """
    gap = torch.zeros(num_bins, dtype=torch.float64, device=confidence.device)
    gap.index_add_(0, index, outcome.to(torch.float64) - confidence.to(torch.float64))
    return gap.abs().sum() / confidence.shape[0]


def adaptive_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15
) -> torch.Tensor:
    r"""Top-label expected calibration error with equal-mass (adaptive) bins.

    The ``N`` top-1 confidences are sorted (ties kept in input order) and cut into ``B``
    consecutive bins of ``floor(N / B)`` examples, the first ``N mod B`` bins one more (the split
    of ``numpy.array_split``); then, as for the equal-width ECE,

    .. math::
        \mathrm{ECE}_{\mathrm{adaptive}} = \sum_{b=1}^{B} \frac{|I_b|}{N}\,
        \bigl|\mathrm{acc}(I_b) - \mathrm{conf}(I_b)\bigr|

    Args:
        probs: ``(N, C)`` predicted probabilities, ``N >= 1``.
        targets: ``(N,)`` integer class indices.
        num_bins: ``B``, the number of bins, >= 1. Default: 15. With ``N < B`` some bins are empty.

    Returns:
        A float64 scalar tensor in ``[0, 1]``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> # bins {0.6, 0.7}: 1 of 2 right, |0.5 - 0.65|; {0.8, 0.9}: 2 of 2 right, |1 - 0.85|
        >>> adaptive_calibration_error(probs, torch.tensor([0, 0, 0, 1]), num_bins=2)
        tensor(0.1500, dtype=torch.float64)

    References:
        Nixon et al. (2019), "Measuring calibration in deep learning".
    """
    _check_probs_targets(probs, targets)
    num_bins = check_int(num_bins, "num_bins", minimum=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted == targets
    count = confidence.shape[0]
    sizes = torch.full((num_bins,), count // num_bins, device=probs.device)
    sizes[: count % num_bins] += 1
    bin_of_rank = torch.repeat_interleave(torch.arange(num_bins, device=probs.device), sizes)
    order = torch.argsort(confidence, stable=True)
    index = torch.empty_like(order)
    index[order] = bin_of_rank
    return _binned_gap(confidence, correct, index, num_bins)


def classwise_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15
) -> torch.Tensor:
    r"""Classwise expected calibration error: the calibration of every class probability.

    For each class ``k`` the probabilities ``p_ik`` are put into ``B`` equal-width bins over
    ``[0, 1]`` (bin ``b`` holds ``[b / B, (b + 1) / B)``, a probability of exactly 1 the last
    bin), and the frequency of ``y_i = k`` in each bin is compared with the mean ``p_ik``:

    .. math::
        \mathrm{cwECE} = \frac{1}{C} \sum_{k=1}^{C} \sum_{b=1}^{B} \frac{|I_{kb}|}{N}\,
        \Bigl|\frac{1}{|I_{kb}|}\sum_{i \in I_{kb}} [y_i = k]
        - \frac{1}{|I_{kb}|}\sum_{i \in I_{kb}} p_{ik}\Bigr|

    Each class term is the binary calibration error of ``p_k`` against ``y = k``
    (``torchmetrics.functional.binary_calibration_error``).

    Args:
        probs: ``(N, C)`` predicted probabilities, ``N >= 1``.
        targets: ``(N,)`` integer class indices in ``[0, C)``.
        num_bins: ``B``, >= 1. Default: 15.

    Returns:
        A float64 scalar tensor in ``[0, 1]``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
        >>> # class 0: bin [0.5,1) holds 0.9, 0.6, both class 0: |2 - 1.5| / 2 = 0.25
        >>> # class 1: bin [0,0.5) holds 0.1, 0.4, neither class 1: |0 - 0.5| / 2 = 0.25
        >>> classwise_calibration_error(probs, torch.tensor([0, 0]), num_bins=2)
        tensor(0.2500, dtype=torch.float64)

    References:
        Kull et al. (2019), "Beyond temperature scaling". Nixon et al. (2019).
    """
    _check_probs_targets(probs, targets)
    num_bins = check_int(num_bins, "num_bins", minimum=1)
    count, num_classes = probs.shape
    if bool(((targets < 0) | (targets >= num_classes)).any()):
        fail("targets", f"class indices in [0, {num_classes})",
             f"values in [{targets.min().item()}, {targets.max().item()}]")
    is_class = torch.zeros(count, num_classes, dtype=torch.float64, device=probs.device)
    is_class.scatter_(1, targets.long().unsqueeze(1), 1.0)
    index = (probs * num_bins).floor().long().clamp_(0, num_bins - 1)
    # One bin range per class: class k's bins are k * B ... k * B + B - 1.
    offset = torch.arange(num_classes, device=probs.device) * num_bins
    # _binned_gap divides by its N * C entries: the 1 / C of the mean over classes and the 1 / N.
    return _binned_gap(probs.reshape(-1), is_class.reshape(-1), (index + offset).reshape(-1),
                       num_bins * num_classes)


class BootstrapInterval(NamedTuple):
    """A metric on the full data and its percentile bootstrap interval.

    ``samples`` holds the metric on each of the ``num_samples`` resamples, so other statistics
    (a standard error, another level) can be taken without resampling again.
    """

    estimate: float
    low: float
    high: float
    samples: torch.Tensor


def _as_float(value: Any, metric: Callable[..., Any]) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    fail("metric", "a function returning a scalar (a float or a 1-element tensor)",
         f"{getattr(metric, '__name__', 'a function')} returning {describe(value)}", error=TypeError)


def bootstrap_interval(
    metric: Callable[[torch.Tensor, torch.Tensor], Any],
    outputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_samples: int = 1000,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
) -> BootstrapInterval:
    r"""Percentile bootstrap confidence interval of ``metric(outputs, targets)``.

    Resample ``N`` rows with replacement ``num_samples`` times, evaluate the metric on each
    resample, and report the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    (linear interpolation, as ``numpy.percentile``). All resample indices are drawn at once, as
    ``torch.randint(N, (num_samples, N), generator=generator)`` on ``outputs``' device, so the
    same generator state gives the same interval.

    Args:
        metric: a function of ``(outputs, targets)`` returning a scalar, e.g. ``lambda p, y:
            expected_calibration_error(p, y)`` or an accuracy.
        outputs: ``(N, ...)`` probabilities or logits, rows are examples, ``N >= 1``.
        targets: ``(N, ...)`` targets, resampled with the same rows.
        num_samples: resamples, >= 1. Default: 1000.
        confidence: the interval's level, in ``(0, 1)``. Default: 0.95.
        generator: the ``torch.Generator`` to draw from. Default: torch's global generator.

    Returns:
        :class:`BootstrapInterval` ``(estimate, low, high, samples)``: the metric on the full
        data, the interval's ends, and the ``(num_samples,)`` float64 resampled values.

    Example:
        >>> def accuracy(p, y):
        ...     return (p.argmax(1) == y).double().mean()
        >>> p, y = torch.eye(4).repeat(25, 1), torch.arange(4).repeat(25)
        >>> y[:20] = 0  # 15 of the 100 predictions are now wrong
        >>> result = bootstrap_interval(accuracy, p, y, generator=torch.Generator().manual_seed(0))
        >>> result.estimate, result.low < result.estimate < result.high
        (0.85, True)

    References:
        Efron and Tibshirani (1993), "An introduction to the bootstrap", ch. 13.
    """
    if not callable(metric):
        fail("metric", "a function of (outputs, targets)", metric, error=TypeError)
    if not isinstance(outputs, torch.Tensor) or outputs.ndim == 0 or outputs.shape[0] == 0:
        fail("outputs", "a tensor with at least one row", outputs, error=TypeError)
    if not isinstance(targets, torch.Tensor) or targets.shape[:1] != outputs.shape[:1]:
        fail("targets", f"a tensor with {outputs.shape[0]} rows, like outputs", targets, error=TypeError)
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not (
        0.0 < float(confidence) < 1.0
    ):
        fail("confidence", "a real number in (0, 1)", confidence)
    if generator is not None and not isinstance(generator, torch.Generator):
        fail("generator", "a torch.Generator or None", generator, error=TypeError)
    count = outputs.shape[0]
    estimate = _as_float(metric(outputs, targets), metric)
    rows = torch.randint(count, (num_samples, count), generator=generator, device=outputs.device)
    samples = torch.tensor(
        [_as_float(metric(outputs[r], targets[r]), metric) for r in rows], dtype=torch.float64
    )
    tail = (1.0 - float(confidence)) / 2
    low, high = torch.quantile(samples, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return BootstrapInterval(estimate, low, high, samples)
