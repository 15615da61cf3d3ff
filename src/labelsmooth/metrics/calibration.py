"""Calibration metrics as small pure functions: reliability bins, ECE, Brier score, temperature.

These are the numbers ``labelsmooth run`` reports, and the Trainer's ECE is the same one: both
come from :func:`calibration_histogram`, per-bin sums that add up over batches, so the Trainer
accumulates them on the device and reads them once per log. The functions take probabilities (or
logits, for the temperature) and integer class targets, return tensors or floats, and never
mutate their inputs.

The binning convention is the one of ``torchmetrics.functional.multiclass_calibration_error``:
bin ``b`` of ``B`` equal-width bins holds the confidences in ``[b / B, (b + 1) / B)``; a confidence
of exactly 1 goes to the last bin (torchmetrics gives it a bin of its own, so the two agree
unless a confidence is exactly 1.0).

Why these are written here rather than taken from torchmetrics (1.x), which the project otherwise
prefers: its ``multiclass_calibration_error`` returns the ECE only, its per-bin statistics (which
the reliability diagram needs, and which must be the very bins the ECE is computed from) are a
private helper, and it puts a confidence of exactly 1.0 (a saturated float32 softmax, common for
an unsmoothed model) in a sixteenth bin of its own; it has no multiclass Brier score and no
temperature scaling. So the module keeps to torch, and the tests check the ECE against
torchmetrics wherever the two conventions agree.

References:
    Naeini, Cooper and Hauskrecht (2015), "Obtaining well calibrated probabilities using Bayesian
    binning", AAAI (ECE). Guo, Pleiss, Sun and Weinberger (2017), "On calibration of modern neural
    networks", ICML (reliability diagrams, temperature scaling). Brier (1950), "Verification of
    forecasts expressed in terms of probability", Monthly Weather Review.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from labelsmooth._validation import fail

__all__ = [
    "ReliabilityBins",
    "brier_score",
    "calibration_histogram",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
]


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (all tensors of shape ``(num_bins,)``).

    ``accuracy`` and ``confidence`` are 0 in empty bins (their ``counts`` are 0).
    """

    edges: torch.Tensor
    counts: torch.Tensor
    accuracy: torch.Tensor
    confidence: torch.Tensor

    @classmethod
    def from_histogram(cls, histogram: torch.Tensor) -> ReliabilityBins:
        """The bins of a :func:`calibration_histogram` (or of a sum of several).

        Args:
            histogram: ``(3, num_bins)``: per-bin counts, summed confidences, summed correct.

        Returns:
            The per-bin means, in ``histogram``'s dtype.

        Example:
            >>> ReliabilityBins.from_histogram(torch.tensor([[0.0, 2.0], [0.0, 1.6], [0.0, 1.0]]))
            ... # doctest: +NORMALIZE_WHITESPACE
            ReliabilityBins(edges=tensor([0.0000, 0.5000, 1.0000]), counts=tensor([0., 2.]),
                            accuracy=tensor([0.0000, 0.5000]), confidence=tensor([0.0000, 0.8000]))
        """
        if (not isinstance(histogram, torch.Tensor) or not histogram.is_floating_point()
                or histogram.ndim != 2 or histogram.shape[0] != 3 or histogram.shape[1] < 1):
            fail("histogram", "a floating-point tensor of shape (3, num_bins)", histogram,
                 error=TypeError)
        count, summed_conf, summed_correct = histogram.unbind(0)
        nonempty = count.clamp(min=1)
        edges = torch.linspace(0, 1, histogram.shape[1] + 1, dtype=histogram.dtype,
                               device=histogram.device)
        return cls(edges, count, summed_correct / nonempty, summed_conf / nonempty)

    def expected_calibration_error(self) -> torch.Tensor:
        """``sum_b counts_b / sum(counts) * |accuracy_b - confidence_b|`` (see
        :func:`expected_calibration_error`); NaN when every bin is empty."""
        return (self.counts / self.counts.sum() * (self.accuracy - self.confidence).abs()).sum()


def _check_probs_targets(probs: torch.Tensor, targets: torch.Tensor, argument: str) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        fail(argument, "a floating-point tensor of shape (N, C)", probs, error=TypeError)
    if not isinstance(targets, torch.Tensor) or targets.shape != probs.shape[:1]:
        fail("targets", f"an integer tensor of shape ({probs.shape[0]},)", targets, error=TypeError)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        fail("targets", "an integer tensor of class indices", f"dtype {targets.dtype}", error=TypeError)


def _check_num_bins(num_bins: object) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        fail("num_bins", "a positive int", num_bins)
    return num_bins


def calibration_histogram(probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15,
                          ignore_index: int | None = None) -> torch.Tensor:
    r"""Per-bin sums of the top-1 confidences: the statistics every calibration metric here uses.

    Bin ``b`` of ``num_bins`` equal-width bins holds the examples ``I_b`` whose confidence
    ``max_k p_ik`` lies in ``[b / B, (b + 1) / B)``; a confidence of exactly 1 belongs to the last
    bin ``[(B - 1) / B, 1]``. The histogram's rows are

    .. math::
        \bigl(|I_b|,\ \textstyle\sum_{i \in I_b} \max_k p_{ik},\quad
        \sum_{i \in I_b} [\arg\max_k p_{ik} = y_i]\bigr)_{b}

    so the histogram of a union of batches is the sum of theirs: it can be accumulated on the
    device, batch after batch, with no host synchronisation, and turned into bins
    (:meth:`ReliabilityBins.from_histogram`) or an ECE only when it is read.

    Args:
        probs: ``(N, C)`` predicted probabilities (rows sum to one).
        targets: ``(N,)`` integer class indices.
        num_bins: number of equal-width bins over [0, 1]. Default: 15.
        ignore_index: a target value whose examples count nowhere. Default: ``None`` (none).

    Returns:
        A ``(3, num_bins)`` tensor in ``probs``' dtype, or float32 for a narrower one (counts
        above 2048 are not exact in float16).

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
        >>> calibration_histogram(probs, torch.tensor([0, 0, -1]), num_bins=2, ignore_index=-1)
        tensor([[0.0000, 2.0000],
                [0.0000, 1.6000],
                [0.0000, 1.0000]])
    """
    _check_probs_targets(probs, targets, "probs")
    num_bins = _check_num_bins(num_bins)
    confidence, predicted = probs.max(dim=1)
    return _confidence_histogram(confidence, predicted, targets, num_bins=num_bins,
                                ignore_index=ignore_index)


def _bin_index(confidence: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The bin of each confidence, as int64: ``floor(conf * B)`` puts ``conf`` in
    ``[b / B, (b + 1) / B)`` into bin ``b`` (truncation is the floor, as ``conf >= 0``), and
    ``conf == 1`` is clamped into the last bin."""
    return (confidence * num_bins).long().clamp_(0, num_bins - 1)


def _confidence_histogram(confidence: torch.Tensor, predicted: torch.Tensor, targets: torch.Tensor,
                         *, num_bins: int, ignore_index: int | None) -> torch.Tensor:
    """:func:`calibration_histogram` from the top-1 ``confidence`` and ``predicted`` class of
    each example (``(N,)`` each), for a caller that has them without the probabilities."""
    dtype = torch.promote_types(confidence.dtype, torch.float32)
    confidence = confidence.to(dtype)
    index = _bin_index(confidence, num_bins)
    correct = predicted == targets
    if ignore_index is None:
        count = torch.ones_like(confidence)
    else:
        kept = targets != ignore_index
        count = kept.to(dtype)
        confidence = confidence * count
        correct &= kept
    rows = torch.stack([count, confidence, correct.to(dtype)])
    histogram = torch.zeros(3, num_bins, dtype=dtype, device=confidence.device)
    return histogram.index_add_(1, index, rows)


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15) -> ReliabilityBins:
    """Bin the top-1 confidences into ``num_bins`` equal-width bins over [0, 1].

    For bin ``b`` with examples ``I_b``: ``count_b = |I_b|``,
    ``accuracy_b = mean_{i in I_b} [argmax_k p_ik == y_i]`` and
    ``confidence_b = mean_{i in I_b} max_k p_ik``: the :func:`calibration_histogram` of the
    batch, divided out.

    Args:
        probs: ``(N, C)`` predicted probabilities (rows sum to one).
        targets: ``(N,)`` integer class indices.
        num_bins: number of equal-width bins. Default: 15.

    Returns:
        :class:`ReliabilityBins` with ``edges`` of shape ``(num_bins + 1,)`` and per-bin
        ``counts``, ``accuracy``, ``confidence`` in ``probs``' dtype (float32 for a narrower one).

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> bins = reliability_bins(probs, torch.tensor([0, 0]), num_bins=2)
        >>> bins.counts.tolist(), bins.accuracy.tolist()
        ([0.0, 2.0], [0.0, 0.5])
    """
    return ReliabilityBins.from_histogram(calibration_histogram(probs, targets, num_bins=num_bins))


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15
) -> torch.Tensor:
    r"""Expected calibration error with equal-width bins (top-1, L1), computed from
    :func:`reliability_bins` so that it is exactly the error the reliability diagram shows.

    This is the ECE that ``labelsmooth run`` reports and that the Trainer logs (which
    accumulates the same :func:`calibration_histogram` over batches). It equals
    ``torchmetrics.functional.multiclass_calibration_error(..., norm="l1")`` unless a confidence
    is exactly 1.0, which is kept in the last bin here (torchmetrics puts it in a bin of its own;
    the module docstring says more).

    .. math::
        \mathrm{ECE} = \sum_{b=1}^{B} \frac{|I_b|}{N}\,
        \bigl|\mathrm{acc}(I_b) - \mathrm{conf}(I_b)\bigr|

    Args:
        probs: ``(N, C)`` predicted probabilities.
        targets: ``(N,)`` integer class indices.
        num_bins: number of equal-width bins over [0, 1]. Default: 15.

    Returns:
        A scalar tensor in [0, 1].

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> expected_calibration_error(probs, torch.tensor([0, 0]), num_bins=2)
        tensor(0.3000)
    """
    return reliability_bins(probs, targets, num_bins=num_bins).expected_calibration_error()


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Multiclass Brier score: mean squared distance between the probabilities and the one-hot label.

    .. math::
        \mathrm{BS} = \frac{1}{N} \sum_{i=1}^{N} \sum_{k=1}^{C} (p_{ik} - [k = y_i])^2
        \in [0, 2]

    (Brier's original definition: summed over classes, not averaged.) Hand-written: torchmetrics
    has no multiclass Brier score.

    Args:
        probs: ``(N, C)`` predicted probabilities.
        targets: ``(N,)`` integer class indices.

    Returns:
        A scalar tensor in ``probs``' dtype.

    Example:
        >>> brier_score(torch.tensor([[0.5, 0.5]]), torch.tensor([0]))
        tensor(0.5000)
    """
    _check_probs_targets(probs, targets, "probs")
    # sum_k (p_k - onehot_k)^2 = sum_k p_k^2 - 2 p_y + 1: no one-hot needed.
    p_true = probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return (probs.square().sum(dim=1) - 2 * p_true + 1).mean()


def fit_temperature(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    min_temperature: float = 0.01,
    max_temperature: float = 100.0,
    iterations: int = 60,
) -> float:
    r"""The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    With ``beta = 1 / T`` the NLL ``mean_i [logsumexp_k(beta z_ik) - beta z_iy]`` is convex in
    ``beta`` and its derivative ``mean_i [E_{p(beta)}[z_i] - z_iy]`` increases with ``beta``, so
    the minimiser is the root of that derivative, found here by bisection on ``log beta`` in
    float64. If the NLL keeps falling at ``max_temperature`` or ``min_temperature`` (a separable
    validation set), that bound is returned.

    Args:
        logits: ``(N, C)`` logits of a held-out validation set.
        targets: ``(N,)`` integer class indices.
        min_temperature: lower end of the search, > 0. Default: 0.01.
        max_temperature: upper end of the search. Default: 100.
        iterations: bisection steps; 60 halvings of the log-interval reach float64 precision.

    Returns:
        The fitted temperature as a Python float. ``T > 1`` softens an over-confident model,
        ``T < 1`` sharpens an under-confident one.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> round(fit_temperature(z, torch.tensor([0, 1, 1])), 3)  # 2 of 3 right: p = 2/3
        2.885
    """
    _check_probs_targets(logits, targets, "logits")
    if not 0 < min_temperature < max_temperature:
        fail("min_temperature, max_temperature", "0 < min < max", (min_temperature, max_temperature))
    z = logits.detach().to(torch.float64)
    z_true = z.gather(1, targets.long().unsqueeze(1)).squeeze(1)

    def slope(beta: float) -> float:
        expected = (torch.softmax(beta * z, dim=1) * z).sum(dim=1)
        return float((expected - z_true).mean())

    low, high = -math.log(max_temperature), -math.log(min_temperature)  # bounds on log beta
    if slope(math.exp(high)) <= 0:
        return min_temperature
    if slope(math.exp(low)) >= 0:
        return max_temperature
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if slope(math.exp(middle)) < 0:
            low = middle
        else:
            high = middle
    return math.exp(-0.5 * (low + high))
