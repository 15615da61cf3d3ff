"""ECE, reliability bins, Brier score and temperature scaling against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from labelsmooth.metrics import (
    ReliabilityBins,
    brier_score,
    calibration_histogram,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def _random_probs(n: int, c: int, seed: int, spread: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = spread * torch.randn(n, c, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, c, (n,), generator=generator)
    return logits.softmax(dim=1), targets


def _numpy_bins(probs: np.ndarray, targets: np.ndarray, num_bins: int) -> tuple[list, list, list]:
    """A plain loop over bins [b/B, (b+1)/B), the last one closed at 1."""
    counts, accuracy, confidence = [], [], []
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        inside = [i for i in range(len(top)) if low <= top[i] < high or (b == num_bins - 1 and top[i] == 1.0)]
        counts.append(len(inside))
        accuracy.append(sum(correct[i] for i in inside) / len(inside) if inside else 0.0)
        confidence.append(sum(top[i] for i in inside) / len(inside) if inside else 0.0)
    return counts, accuracy, confidence


@pytest.mark.parametrize(("n", "c", "seed"), [(1, 3, 0), (7, 2, 1), (500, 10, 2), (2000, 5, 3)])
def test_ece_matches_torchmetrics(n: int, c: int, seed: int) -> None:
    probs, targets = _random_probs(n, c, seed)
    assert probs.max() < 1.0  # torchmetrics gives confidence == 1 a bin of its own
    ours = expected_calibration_error(probs, targets, num_bins=15)
    reference = multiclass_calibration_error(probs, targets, num_classes=c, n_bins=15, norm="l1")
    torch.testing.assert_close(ours, reference.to(ours.dtype), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("num_bins", [1, 4, 15])
def test_reliability_bins_match_a_numpy_loop(num_bins: int) -> None:
    probs, targets = _random_probs(300, 4, seed=num_bins)
    probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=probs.dtype)  # confidence exactly 1
    bins = reliability_bins(probs, targets, num_bins=num_bins)
    counts, accuracy, confidence = _numpy_bins(probs.numpy(), targets.numpy(), num_bins)
    assert bins.counts.tolist() == counts
    np.testing.assert_allclose(bins.accuracy.numpy(), accuracy, rtol=1e-12)
    np.testing.assert_allclose(bins.confidence.numpy(), confidence, rtol=1e-12)
    np.testing.assert_allclose(bins.edges.numpy(), np.linspace(0, 1, num_bins + 1))


def test_ece_hand_computed() -> None:
    # Two bins. Bin 1 holds confidences 0.9 (right) and 0.7 (wrong): |1/2 - 0.8| = 0.3.
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    ece = expected_calibration_error(probs, torch.tensor([0, 0]), num_bins=2)
    assert math.isclose(float(ece), 0.3, rel_tol=1e-12)


def _numpy_brier(probs: np.ndarray, targets: np.ndarray) -> float:
    total = 0.0
    for i in range(probs.shape[0]):
        for k in range(probs.shape[1]):
            total += (probs[i, k] - (1.0 if k == targets[i] else 0.0)) ** 2
    return total / probs.shape[0]


@pytest.mark.parametrize(("n", "c"), [(1, 2), (50, 3), (200, 10)])
def test_brier_matches_a_numpy_loop(n: int, c: int) -> None:
    probs, targets = _random_probs(n, c, seed=n + c)
    assert math.isclose(float(brier_score(probs, targets)), _numpy_brier(probs.numpy(), targets.numpy()),
                        rel_tol=1e-12)


def test_brier_extremes() -> None:
    targets = torch.tensor([0, 2, 1])
    perfect = F.one_hot(targets, 4).double()
    assert float(brier_score(perfect, targets)) == 0.0
    uniform = torch.full((3, 4), 0.25, dtype=torch.float64)
    assert math.isclose(float(brier_score(uniform, targets)), 1 - 1 / 4)
    wrong = F.one_hot(torch.tensor([1, 0, 0]), 4).double()
    assert math.isclose(float(brier_score(wrong, targets)), 2.0)


def _nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, targets))


def test_fitted_temperature_minimises_nll_over_a_grid() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(400, 6, generator=generator)
    targets = torch.randint(0, 6, (400,), generator=generator)
    targets[:200] = logits[:200].argmax(dim=1)  # half right, so the optimum is interior
    fitted = fit_temperature(logits, targets)
    best_on_grid = min(_nll(logits, targets, t) for t in np.geomspace(0.05, 20, 4000))
    assert _nll(logits, targets, fitted) <= best_on_grid + 1e-9
    assert 0.05 < fitted < 20


def test_fitted_temperature_recovers_the_generating_temperature() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(20000, 5, generator=generator, dtype=torch.float64)
    true_temperature = 2.0
    targets = torch.multinomial((logits / true_temperature).softmax(dim=1), 1, generator=generator).squeeze(1)
    assert abs(fit_temperature(logits, targets) - true_temperature) < 0.1


def test_fitted_temperature_hand_case_and_bounds() -> None:
    # Logit margin 2, right 2 of 3 times: the best p(right) is 2/3, so 2 / T = log 2.
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    assert math.isclose(fit_temperature(logits, torch.tensor([0, 1, 1])), 2 / math.log(2), rel_tol=1e-9)
    # Every prediction right: the NLL falls all the way to T -> 0, so the lower bound comes back.
    assert fit_temperature(logits, torch.tensor([0, 1, 0]), min_temperature=0.1) == 0.1
    # Every prediction wrong: the NLL falls as T grows, so the upper bound comes back.
    assert fit_temperature(logits, torch.tensor([1, 0, 1]), max_temperature=50.0) == 50.0


def test_bad_inputs_name_the_argument() -> None:
    probs = torch.full((2, 3), 1 / 3)
    with pytest.raises(TypeError, match=r"^probs: expected a floating-point tensor of shape \(N, C\)"):
        expected_calibration_error(probs[0], torch.tensor([0]))
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor of shape \(2,\)"):
        brier_score(probs, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor of class indices"):
        brier_score(probs, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^num_bins: expected a positive int, got 0"):
        reliability_bins(probs, torch.tensor([0, 1]), num_bins=0)


def test_inputs_are_not_modified() -> None:
    probs, targets = _random_probs(20, 3, seed=5)
    before = probs.clone(), targets.clone()
    expected_calibration_error(probs, targets)
    brier_score(probs, targets)
    fit_temperature(probs.log(), targets)
    assert torch.equal(probs, before[0]) and torch.equal(targets, before[1])


def test_ece_with_confidences_of_exactly_one_matches_a_numpy_loop() -> None:
    # Saturated float32 softmax rows (confidence exactly 1.0) are common for an unsmoothed model;
    # they belong to the last bin [14/15, 1], which torchmetrics would not check.
    probs, targets = _random_probs(400, 6, seed=9, spread=20.0)
    probs = probs.float()
    probs[:40] = F.one_hot(probs[:40].argmax(dim=1), 6).float()
    assert int((probs.max(dim=1).values == 1.0).sum()) >= 40
    counts, accuracy, confidence = _numpy_bins(probs.double().numpy(), targets.numpy(), 15)
    reference = sum(n / 400 * abs(a - c) for n, a, c in zip(counts, accuracy, confidence, strict=True))
    assert float(expected_calibration_error(probs, targets, num_bins=15)) == pytest.approx(reference, rel=1e-6)


def test_histograms_of_batches_add_up_to_the_histogram_of_their_union() -> None:
    probs, targets = _random_probs(700, 5, seed=4)
    probs[:30] = F.one_hot(targets[:30], 5).double()  # confidence exactly 1, right
    whole = calibration_histogram(probs, targets, num_bins=15)
    parts = sum(calibration_histogram(probs[rows], targets[rows], num_bins=15)
                for rows in (slice(0, 13), slice(13, 400), slice(400, 700)))
    assert isinstance(parts, torch.Tensor)
    assert torch.equal(parts[0], whole[0]) and torch.equal(parts[2], whole[2])  # counts are exact
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)
    counts, accuracy, confidence = _numpy_bins(probs.numpy(), targets.numpy(), 15)
    assert whole[0].tolist() == counts
    np.testing.assert_allclose(whole[2].numpy(), np.multiply(accuracy, counts), rtol=1e-12)
    np.testing.assert_allclose(whole[1].numpy(), np.multiply(confidence, counts), rtol=1e-12)
    bins = ReliabilityBins.from_histogram(parts)
    torch.testing.assert_close(bins.expected_calibration_error(),
                               expected_calibration_error(probs, targets, num_bins=15),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_ignored_targets_count_nowhere(ignore_index: int) -> None:
    """Also when ``ignore_index`` is a class the model predicts (a padding class 0)."""
    probs, targets = _random_probs(200, 4, seed=6, spread=6.0)
    ignored = torch.arange(200) % 3 == 0
    targets = targets.masked_fill(ignored, ignore_index)
    got = calibration_histogram(probs, targets, num_bins=10, ignore_index=ignore_index)
    kept = targets != ignore_index
    assert int((probs[ignored].argmax(dim=1) == 0).sum()) > 0
    torch.testing.assert_close(got, calibration_histogram(probs[kept], targets[kept], num_bins=10),
                               rtol=1e-12, atol=1e-12)


def test_histogram_dtypes_and_bad_histograms() -> None:
    probs, targets = _random_probs(50, 3, seed=8)
    half = calibration_histogram(probs.half(), targets)
    assert half.dtype == torch.float32 and half[0].sum() == 50
    with pytest.raises(TypeError, match=r"^histogram: expected a floating-point tensor of shape \(3, num_bins\)"):
        ReliabilityBins.from_histogram(torch.zeros(2, 15))
    with pytest.raises(ValueError, match=r"^num_bins: expected a positive int, got 0"):
        calibration_histogram(probs, targets, num_bins=0)
