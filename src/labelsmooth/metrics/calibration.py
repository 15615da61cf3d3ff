"""Calibration metrics as small pure functions: reliability bins, ECE, Brier score, temperature.

These are the numbers ``labelsmooth run`` reports. They take probabilities (or logits, for the
temperature) and integer class targets, return tensors or floats, and never mutate their inputs.

The binning convention is the one of ``torchmetrics.functional.multiclass_calibration_error``:
bin ``b`` of ``B`` equal-width bins holds the confidences in ``[b / B, (b + 1) / B)``; a confidence
of exactly 1 goes to the last bin (torchmetrics gives it a bin of its own, so the two agree
unless a confidence is exactly 1.0).

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


def _check_probs_targets(probs: torch.Tensor, targets: torch.Tensor, argument: str) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        fail(argument, "a floating-point tensor of shape (N, C)", probs, error=TypeError)
    if not isinstance(targets, torch.Tensor) or targets.shape != probs.shape[:1]:
        fail("targets", f"an integer tensor of shape ({probs.shape[0]},)", targets, error=TypeError)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        fail("targets", "an integer tensor of class indices", f"dtype {targets.dtype}", error=TypeError)


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15) -> ReliabilityBins:
    """Bin the top-1 confidences into ``num_bins`` equal-width bins over [0, 1].

    For bin ``b`` with examples ``I_b``: ``count_b = |I_b|``,
    ``accuracy_b = mean_{i in I_b} [argmax_k p_ik == y_i]`` and
    ``confidence_b = mean_{i in I_b} max_k p_ik``.

    Args:
        probs: ``(N, C)`` predicted probabilities (rows sum to one).
        targets: ``(N,)`` integer class indices.
        num_bins: number of equal-width bins. Default: 15.

    Returns:
        :class:`ReliabilityBins` with ``edges`` of shape ``(num_bins + 1,)`` and per-bin
        ``counts``, ``accuracy``, ``confidence`` in ``probs``' dtype.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> bins = reliability_bins(probs, torch.tensor([0, 0]), num_bins=2)
        >>> bins.counts.tolist(), bins.accuracy.tolist()
        ([0.0, 2.0], [0.0, 0.5])
    """
    _check_probs_targets(probs, targets, "probs")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        fail("num_bins", "a positive int", num_bins)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).to(probs.dtype)
    # floor(conf * B) puts conf in [b/B, (b+1)/B) into bin b; conf == 1 is clamped into the last bin.
    index = (confidence * num_bins).floor().long().clamp_(0, num_bins - 1)
    count = torch.zeros(num_bins, dtype=probs.dtype, device=probs.device)
    count.index_add_(0, index, torch.ones_like(confidence))
    summed_conf = torch.zeros_like(count).index_add_(0, index, confidence)
    summed_correct = torch.zeros_like(count).index_add_(0, index, correct)
    nonempty = count.clamp(min=1)
    edges = torch.linspace(0, 1, num_bins + 1, dtype=probs.dtype, device=probs.device)
    return ReliabilityBins(edges, count, summed_correct / nonempty, summed_conf / nonempty)


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, *, num_bins: int = 15
) -> torch.Tensor:
    r"""Expected calibration error with equal-width bins (top-1, L1).

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
    bins = reliability_bins(probs, targets, num_bins=num_bins)
    return (bins.counts / bins.counts.sum() * (bins.accuracy - bins.confidence).abs()).sum()


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Multiclass Brier score: mean squared distance between the probabilities and the one-hot label.

    .. math::
        \mathrm{BS} = \frac{1}{N} \sum_{i=1}^{N} \sum_{k=1}^{C} (p_{ik} - [k = y_i])^2
        \in [0, 2]

    (Brier's original definition: summed over classes, not averaged.)

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
