"""Tests for labelsmooth.metrics.extra: adaptive and classwise ECE, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close
from torchmetrics.functional.classification import binary_calibration_error

from labelsmooth.metrics.extra import (
    adaptive_calibration_error,
    bootstrap_interval,
    classwise_calibration_error,
)


def numpy_adaptive_ece(probs: np.ndarray, targets: np.ndarray, num_bins: int) -> float:
    """Equal-mass ECE written from its definition: sort, ``np.array_split``, weighted gaps."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for part in np.array_split(order, num_bins):
        if len(part):
            gap = (predicted[part] == targets[part]).mean() - confidence[part].mean()
            total += len(part) / len(order) * abs(gap)
    return total


def random_probs(n: int, c: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).softmax(1)
    return probs, torch.randint(c, (n,), generator=g)


def test_adaptive_hand_computed() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    targets = torch.tensor([0, 0, 0, 1, 1])
    # sorted confidences 0.55 (wrong), 0.6 (right), 0.7 (wrong) | 0.8 (right), 0.9 (right)
    expected = 3 / 5 * abs(1 / 3 - (0.55 + 0.6 + 0.7) / 3) + 2 / 5 * abs(1 - 0.85)
    assert_close(adaptive_calibration_error(probs, targets, num_bins=2), torch.tensor(expected, dtype=torch.float64),
                 torch.float32)
    # one bin: |accuracy - mean confidence|
    assert_close(adaptive_calibration_error(probs, targets, num_bins=1), torch.tensor(abs(3 / 5 - 0.71), dtype=torch.float64),
                 torch.float32)


@pytest.mark.parametrize(("n", "c", "bins"), [(8, 3, 5), (100, 10, 15), (7, 4, 10), (333, 5, 7)])
def test_adaptive_matches_numpy_definition(n: int, c: int, bins: int) -> None:
    probs, targets = random_probs(n, c, seed=n)
    got = adaptive_calibration_error(probs, targets, num_bins=bins)
    assert_close(got, torch.tensor(numpy_adaptive_ece(probs.numpy(), targets.numpy(), bins), dtype=torch.float64))


def test_classwise_hand_computed() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]])
    targets = torch.tensor([0, 2, 1])
    # 2 bins per class. class 0: [0,.5) {0.1, 0.4} no hits: |0 - 0.5|; [.5,1) {0.7} hit: |1 - 0.7|
    # class 1: [0,.5) {0.2, 0.35} one hit: |1 - 0.55|; [.5,1) {0.8} no hit: 0.8
    # class 2: [0,.5) {0.1, 0.1, 0.25} one hit: |1 - 0.45|
    expected = ((0.5 + 0.3) + (0.45 + 0.8) + 0.55) / 3 / 3
    assert_close(classwise_calibration_error(probs, targets, num_bins=2),
                 torch.tensor(expected, dtype=torch.float64), torch.float32)


@pytest.mark.parametrize(("n", "c", "bins"), [(200, 3, 15), (500, 10, 10), (64, 2, 5)])
def test_classwise_equals_mean_of_torchmetrics_binary_calibration_error(n: int, c: int, bins: int) -> None:
    probs, targets = random_probs(n, c, seed=c, scale=2.0)
    probs = probs.float()
    expected = torch.stack([
        binary_calibration_error(probs[:, k], (targets == k).long(), n_bins=bins, norm="l1") for k in range(c)
    ]).mean()
    assert_close(classwise_calibration_error(probs, targets, num_bins=bins).float(), expected)


def test_perfectly_calibrated_and_over_confident_cases() -> None:
    # confidence 0.75 and 3 of every 4 right: calibrated, both measures 0
    probs = torch.tensor([[0.75, 0.25]]).repeat(8, 1)
    targets = torch.tensor([0, 0, 0, 1] * 2)
    assert adaptive_calibration_error(probs, targets, num_bins=1).item() == pytest.approx(0, abs=1e-12)
    # equal-mass bins split tied confidences in input order: bins (right, right), (right, wrong)...
    assert adaptive_calibration_error(probs, targets, num_bins=4).item() == pytest.approx(0.25)
    assert classwise_calibration_error(probs, targets, num_bins=4).item() == pytest.approx(0, abs=1e-12)
    # one-hot predictions, half wrong: every class off by 0.5 in its bins
    probs = torch.eye(2).repeat(4, 1)
    targets = torch.tensor([0, 1, 1, 0] * 2)
    assert adaptive_calibration_error(probs, targets, num_bins=3).item() == pytest.approx(0.5)
    assert classwise_calibration_error(probs, targets, num_bins=3).item() == pytest.approx(0.5)


def test_bootstrap_matches_independent_resampling_and_percentiles() -> None:
    probs, targets = random_probs(60, 4, seed=3)

    def accuracy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (p.argmax(1) == y).double().mean()

    result = bootstrap_interval(accuracy, probs, targets, num_samples=200, confidence=0.9,
                                generator=torch.Generator().manual_seed(7))
    rows = torch.randint(60, (200, 60), generator=torch.Generator().manual_seed(7)).numpy()
    correct = (probs.argmax(1) == targets).numpy()
    samples = correct[rows].mean(1)
    assert result.estimate == pytest.approx(correct.mean(), abs=1e-15)
    assert result.samples.shape == (200,)
    np.testing.assert_allclose(result.samples.numpy(), samples, rtol=0, atol=1e-15)
    low, high = np.percentile(samples, [5, 95])
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-12)


def test_bootstrap_is_reproducible_and_narrows_with_more_data() -> None:
    def ece(p: torch.Tensor, y: torch.Tensor) -> float:
        return float(adaptive_calibration_error(p, y, num_bins=5))

    small = random_probs(50, 3, seed=1)
    large = random_probs(1000, 3, seed=1)
    first = bootstrap_interval(ece, *small, num_samples=50, generator=torch.Generator().manual_seed(0))
    again = bootstrap_interval(ece, *small, num_samples=50, generator=torch.Generator().manual_seed(0))
    assert first.low == again.low and first.high == again.high and torch.equal(first.samples, again.samples)
    wide = bootstrap_interval(ece, *large, num_samples=50, generator=torch.Generator().manual_seed(0))
    assert wide.high - wide.low < first.high - first.low
    assert first.low <= first.high


def test_inputs_are_not_modified() -> None:
    probs, targets = random_probs(30, 4, seed=5)
    before = (probs.clone(), targets.clone())
    adaptive_calibration_error(probs, targets)
    classwise_calibration_error(probs, targets)
    bootstrap_interval(lambda p, y: p.sum(), probs, targets, num_samples=5)
    assert torch.equal(probs, before[0]) and torch.equal(targets, before[1])


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: adaptive_calibration_error(torch.rand(4), torch.zeros(4, dtype=torch.long)), TypeError,
     "probs: expected a floating-point tensor of shape (N, C), got a tensor of shape (4,)"),
    (lambda: adaptive_calibration_error(torch.rand(0, 3), torch.zeros(0, dtype=torch.long)), ValueError,
     "probs: expected at least one row"),
    (lambda: adaptive_calibration_error(torch.rand(4, 3), torch.zeros(5, dtype=torch.long)), TypeError,
     "targets: expected an integer tensor of shape (4,), got a tensor of shape (5,)"),
    (lambda: classwise_calibration_error(torch.rand(4, 3), torch.zeros(4)), TypeError,
     "targets: expected an integer tensor of class indices, got dtype torch.float32"),
    (lambda: classwise_calibration_error(torch.rand(2, 3), torch.tensor([0, 3])), ValueError,
     "targets: expected class indices in [0, 3), got values in [0, 3]"),
    (lambda: classwise_calibration_error(torch.rand(2, 3), torch.tensor([0, 1]), num_bins=0), ValueError,
     "num_bins: expected an int >= 1, got 0"),
    (lambda: bootstrap_interval(None, torch.rand(3, 2), torch.zeros(3)), TypeError,
     "metric: expected a function of (outputs, targets), got None"),
    (lambda: bootstrap_interval(lambda p, y: p, torch.rand(3, 2), torch.zeros(3), num_samples=2), TypeError,
     "metric: expected a function returning a scalar (a float or a 1-element tensor), got <lambda> returning a tensor of shape (3, 2)"),
    (lambda: bootstrap_interval(lambda p, y: 0.0, torch.rand(3, 2), torch.zeros(4)), TypeError,
     "targets: expected a tensor with 3 rows, like outputs"),
    (lambda: bootstrap_interval(lambda p, y: 0.0, torch.rand(3, 2), torch.zeros(3), confidence=1.0), ValueError,
     "confidence: expected a real number in (0, 1), got 1.0"),
    (lambda: bootstrap_interval(lambda p, y: 0.0, torch.rand(3, 2), torch.zeros(3), num_samples=0), ValueError,
     "num_samples: expected an int >= 1, got 0"),
    (lambda: bootstrap_interval(lambda p, y: 0.0, torch.rand(3, 2), torch.zeros(3), generator=0), TypeError,
     "generator: expected a torch.Generator or None, got 0"),
])
def test_bad_arguments_give_one_line(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
