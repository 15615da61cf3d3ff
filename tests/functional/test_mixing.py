"""Tests for labelsmooth.functional.mixing: mixup_batch, cutmix_batch, mix_targets and the
generator-driven Beta sampler they draw ``lam`` from."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from labelsmooth.functional import (
    MixedBatch,
    cutmix_batch,
    mix_targets,
    mixup_batch,
    one_hot,
    paste_box,
    smooth_labels,
)
from labelsmooth.functional.mixing import _sample_beta, _sample_beta_scalar


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# The Beta sampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.2), (1.0, 1.0), (2.0, 2.0), (0.5, 3.0), (4.0, 0.7)])
def test_beta_draws_match_scipy_beta(a: float, b: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    n = 20_000
    draws = _sample_beta(a, b, n, generator=seeded(1234))
    assert draws.dtype == torch.float64 and draws.shape == (n,)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    mean, var = stats.beta.stats(a, b, moments="mv")
    # Mean within 5 standard errors; the variance loosely (10 %).
    assert abs(draws.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert draws.var().item() == pytest.approx(float(var), rel=0.1)
    # The whole distribution: a Kolmogorov-Smirnov test at a fixed seed (deterministic), which
    # a wrong sampler (e.g. a missing boost for a < 1) fails by many orders of magnitude.
    assert stats.kstest(draws.numpy(), "beta", args=(a, b)).pvalue > 1e-3


def test_beta_sampler_rejects_a_wrong_distribution() -> None:
    """The KS check above can fail: Beta(0.2, 0.2) draws are far from Beta(1, 1)."""
    stats = pytest.importorskip("scipy.stats")
    draws = _sample_beta(0.2, 0.2, 20_000, generator=seeded(1234))
    assert stats.kstest(draws.numpy(), "beta", args=(1.0, 1.0)).pvalue < 1e-10


def test_beta_sampler_stays_finite_for_tiny_alpha() -> None:
    # U^(1/a) underflows float64 for a = 0.005; the log-space computation must not produce 0/0.
    draws = _sample_beta(0.005, 0.005, 2_000, generator=seeded(0))
    assert bool(torch.isfinite(draws).all())
    # Almost all the mass sits at the ends, on both sides.
    assert 0.4 < (draws > 0.5).double().mean().item() < 0.6
    assert ((draws < 1e-6) | (draws > 1 - 1e-6)).double().mean().item() > 0.9


def test_beta_sampler_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first = _sample_beta(0.3, 0.3, 100, generator=seeded(7))
    second = _sample_beta(0.3, 0.3, 100, generator=seeded(7))
    assert torch.equal(first, second)
    assert not torch.equal(first, _sample_beta(0.3, 0.3, 100, generator=seeded(8)))
    assert torch.equal(torch.get_rng_state(), state)


def scalar_draws(a: float, b: float, n: int, seed: int) -> torch.Tensor:
    """``n`` successive one-value draws from one seeded generator, as the algorithms make them."""
    generator = seeded(seed)
    return torch.tensor([_sample_beta_scalar(a, b, generator=generator) for _ in range(n)],
                        dtype=torch.float64)


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.2), (1.0, 1.0), (2.0, 2.0), (0.5, 3.0), (4.0, 0.7)])
def test_scalar_beta_draws_match_scipy_beta(a: float, b: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    n = 5_000
    draws = scalar_draws(a, b, n, seed=99)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    mean, var = stats.beta.stats(a, b, moments="mv")
    assert abs(draws.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert draws.var().item() == pytest.approx(float(var), rel=0.15)
    assert stats.kstest(draws.numpy(), "beta", args=(a, b)).pvalue > 1e-3
    # and the test can fail: the same draws are far from another Beta
    assert stats.kstest(draws.numpy(), "beta", args=(a + 1.0, b)).pvalue < 1e-6


def test_scalar_beta_moments_without_scipy() -> None:
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)); 5 standard errors of the mean, and
    # of the variance (its standard error from the fourth central moment of Beta(a, a)).
    a, n = 0.2, 20_000
    draws = scalar_draws(a, a, n, seed=3)
    var = 1.0 / (4.0 * (2.0 * a + 1.0))
    kurtosis_excess = -6.0 / (2.0 * a + 3.0)
    fourth = (kurtosis_excess + 3.0) * var**2
    assert abs(draws.mean().item() - 0.5) < 5 * math.sqrt(var / n)
    assert abs(draws.var().item() - var) < 5 * math.sqrt((fourth - var**2) / n)


def test_scalar_beta_stays_finite_for_tiny_alpha() -> None:
    draws = scalar_draws(0.005, 0.005, 2_000, seed=0)
    assert bool(torch.isfinite(draws).all())
    assert 0.4 < (draws > 0.5).double().mean().item() < 0.6
    assert ((draws < 1e-6) | (draws > 1 - 1e-6)).double().mean().item() > 0.9


def test_scalar_beta_reproducible_from_the_generator_state() -> None:
    state = torch.get_rng_state()
    generator = seeded(7)
    first = [_sample_beta_scalar(0.3, 0.3, generator=generator) for _ in range(5)]
    saved = generator.get_state()
    later = [_sample_beta_scalar(0.3, 0.3, generator=generator) for _ in range(5)]
    again = seeded(7)
    assert [_sample_beta_scalar(0.3, 0.3, generator=again) for _ in range(10)] == first + later
    restored = torch.Generator().manual_seed(123)
    restored.set_state(saved)
    assert [_sample_beta_scalar(0.3, 0.3, generator=restored) for _ in range(5)] == later
    assert first != [_sample_beta_scalar(0.3, 0.3, generator=seeded(8)) for _ in range(5)]
    assert torch.equal(torch.get_rng_state(), state)


def test_scalar_beta_without_a_generator_follows_torch_manual_seed() -> None:
    torch.manual_seed(5)
    first = _sample_beta_scalar(0.4, 0.4)
    torch.manual_seed(5)
    assert _sample_beta_scalar(0.4, 0.4) == first


# ---------------------------------------------------------------------------------------------
# mixup_batch
# ---------------------------------------------------------------------------------------------


def test_mixup_matches_the_formula_with_given_lam_and_indices() -> None:
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4])
    indices = torch.tensor([3, 0, 4, 1, 2])
    out = mixup_batch(x, y, lam=0.3, indices=indices)
    assert isinstance(out, MixedBatch)
    assert_close(out.inputs, 0.7 * x + 0.3 * x[[3, 0, 4, 1, 2]])
    assert out.targets is y
    assert torch.equal(out.permuted_targets, torch.tensor([3, 0, 4, 1, 2]))
    assert out.lam == 0.3 and torch.equal(out.indices, indices) and out.bbox is None


def test_mixup_returns_what_it_drew() -> None:
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.arange(8)
    out = mixup_batch(x, y, alpha=0.4, generator=seeded(3))
    assert 0.0 <= out.lam <= 1.0
    assert torch.equal(out.indices.sort().values, torch.arange(8))
    assert_close(out.inputs, (1 - out.lam) * x + out.lam * x[out.indices])
    assert torch.equal(out.permuted_targets, y[out.indices])


def test_mixup_draws_lam_from_beta_alpha_alpha() -> None:
    """Unfolded, the lam of successive batches follows Beta(alpha, alpha)."""
    stats = pytest.importorskip("scipy.stats")
    generator = seeded(11)
    x, y = torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)
    lams = [mixup_batch(x, y, alpha=0.2, generator=generator, lam_at_most_half=False).lam
            for _ in range(2_000)]
    assert stats.kstest(lams, "beta", args=(0.2, 0.2)).pvalue > 1e-3


def test_mixup_folds_the_draw_to_at_most_one_half_by_default() -> None:
    """Composer's rule: lam = min(z, 1 - z) for the same draw z; a given lam is kept."""
    x, y = torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)
    raw = [mixup_batch(x, y, alpha=0.2, generator=seeded(s), lam_at_most_half=False).lam
           for s in range(40)]
    folded = [mixup_batch(x, y, alpha=0.2, generator=seeded(s)).lam for s in range(40)]
    assert folded == [min(z, 1 - z) for z in raw]
    assert any(z > 0.5 for z in raw) and all(lam <= 0.5 for lam in folded)
    assert mixup_batch(x, y, lam=0.9).lam == 0.9
    with pytest.raises(TypeError, match="lam_at_most_half: expected a bool, got 1"):
        mixup_batch(x, y, lam_at_most_half=1)  # type: ignore[arg-type]


def test_cutmix_uniform_sampling_pastes_every_pixel_equally_often() -> None:
    """A side of 6 on a length of 10: with uniform sampling each position is inside the box
    with probability 6 / 15 = 0.4; centring the box uniformly pastes the middle more often
    (0.6) than the last position (0.3)."""
    x, y = torch.zeros(2, 1, 10), torch.arange(2)

    def coverage(uniform: bool) -> torch.Tensor:
        generator, hits = seeded(0), torch.zeros(10)
        for _ in range(3_000):
            ((start, stop),) = cutmix_batch(x, y, lam=0.6, generator=generator,
                                            uniform_sampling=uniform).bbox
            hits[start:stop] += 1
        return hits / 3_000

    uniform = coverage(True)
    assert torch.all((uniform - 0.4).abs() < 0.05), uniform
    centred = coverage(False)
    assert abs(centred[5] - 0.6) < 0.05 and abs(centred[9] - 0.3) < 0.05, centred
    with pytest.raises(TypeError, match="uniform_sampling: expected a bool"):
        cutmix_batch(x, y, uniform_sampling="yes")  # type: ignore[arg-type]


def test_paste_box_copies_the_partner_inside_the_box_only() -> None:
    labels = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    before = labels.clone()
    pasted = paste_box(labels, labels.flip(0), ((1, 3), (0, 2)))
    expected = labels.clone()
    for i in range(2):
        for row in range(3):
            for col in range(4):
                if 1 <= row < 3 and 0 <= col < 2:
                    expected[i, row, col] = labels[1 - i, row, col]
    assert torch.equal(pasted, expected) and torch.equal(labels, before)


def test_mixup_fixed_generator_reproduces_draws_and_leaves_global_rng_alone() -> None:
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    state = torch.get_rng_state()
    first = mixup_batch(x, y, generator=seeded(5))
    second = mixup_batch(x, y, generator=seeded(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert first.lam == second.lam
    assert torch.equal(first.indices, second.indices)
    assert torch.equal(first.inputs, second.inputs)
    other = mixup_batch(x, y, generator=seeded(6))
    assert other.lam != first.lam


def test_mixup_without_generator_follows_torch_manual_seed() -> None:
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    torch.manual_seed(123)
    first = mixup_batch(x, y)
    torch.manual_seed(123)
    second = mixup_batch(x, y)
    assert first.lam == second.lam and torch.equal(first.indices, second.indices)


def test_mixup_does_not_mutate_inputs_and_keeps_autograd() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    x_before, y_before = x.detach().clone(), y.clone()
    out = mixup_batch(x, y, lam=0.25, indices=torch.tensor([1, 2, 3, 0]))
    out.inputs.sum().backward()
    assert torch.equal(x.detach(), x_before) and torch.equal(y, y_before)
    # Each example appears once with weight 0.75 and once (as a partner) with weight 0.25.
    assert_close(x.grad, torch.ones(4, 3))


def test_mixup_batch_of_one_is_a_no_op() -> None:
    x, y = torch.randn(1, 5), torch.tensor([2])
    out = mixup_batch(x, y, alpha=1.0, generator=seeded(0))
    assert torch.equal(out.inputs, x)
    assert torch.equal(out.permuted_targets, y)
    assert_close(mix_targets(y, out.permuted_targets, out.lam, num_classes=4, smoothing=0.1),
                 smooth_labels(torch.zeros(1, 4), y, 0.1))


def test_mixup_empty_batch() -> None:
    out = mixup_batch(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), generator=seeded(0))
    assert out.inputs.shape == (0, 3) and out.indices.shape == (0,)


# ---------------------------------------------------------------------------------------------
# cutmix_batch
# ---------------------------------------------------------------------------------------------


def labelled_batch(n: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """Example i holds the value i + 1 everywhere, so a pixel tells where it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, *([1] * len(spatial))).expand(
        n, 2, *spatial).clone()


@pytest.mark.parametrize("spatial", [(7, 9), (13,), (1, 1), (5, 4, 3)])
@pytest.mark.parametrize("seed", range(12))
def test_cutmix_lam_is_exactly_the_pasted_area(spatial: tuple[int, ...], seed: int) -> None:
    n = 6
    x = labelled_batch(n, spatial)
    out = cutmix_batch(x, torch.arange(n), alpha=1.0, generator=seeded(seed))
    region = (slice(None), slice(None), *(slice(a, b) for a, b in out.bbox))
    expected = x.clone()
    expected[region] = x[out.indices][region]
    assert torch.equal(out.inputs, expected)
    # Count the pixels that came from the partner, independently of the box arithmetic.
    partner_value = (out.indices.float() + 1).view(n, 1, *([1] * len(spatial)))
    for i in range(n):
        if out.indices[i] == i:
            continue
        pasted = (out.inputs[i, 0] == partner_value[i, 0]).sum().item()
        assert pasted / math.prod(spatial) == out.lam
    # Every pair lies inside the input.
    for (start, stop), size in zip(out.bbox, spatial, strict=True):
        assert 0 <= start <= stop <= size


def test_cutmix_clipping_corrects_lam() -> None:
    """A requested area of 1/2 comes back smaller whenever the box hits the border."""
    x = torch.zeros(2, 1, 10, 10)
    lams = {cutmix_batch(x, torch.arange(2), lam=0.49, generator=seeded(s)).lam for s in range(50)}
    assert 0.49 in lams  # side round(10 * 0.7) = 7, unclipped: 49 / 100
    assert any(lam < 0.49 for lam in lams)
    assert all(lam <= 0.49 for lam in lams)


def test_cutmix_with_given_bbox_and_indices() -> None:
    x = torch.randn(3, 2, 4, 5)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    out = cutmix_batch(x, y, bbox=((1, 3), (0, 5)), indices=torch.tensor([2, 0, 1]))
    assert out.lam == 10 / 20
    assert out.bbox == ((1, 3), (0, 5))
    assert torch.equal(out.inputs[:, :, 1:3], x[[2, 0, 1]][:, :, 1:3])
    assert torch.equal(out.inputs[:, :, [0, 3]], x[:, :, [0, 3]])
    assert torch.equal(out.permuted_targets, y[[2, 0, 1]])


def test_cutmix_sequences_and_integer_images() -> None:
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    x_before = x.clone()
    out = cutmix_batch(x, torch.arange(4), generator=seeded(2))
    assert out.inputs.dtype == torch.uint8 and torch.equal(x, x_before)
    seq = torch.randn(4, 3, 20)
    out = cutmix_batch(seq, torch.arange(4), bbox=((5, 9),), indices=torch.tensor([1, 0, 3, 2]))
    assert out.lam == 4 / 20
    assert torch.equal(out.inputs[:, :, 5:9], seq[[1, 0, 3, 2], :, 5:9])


def test_cutmix_fixed_generator_reproduces_draws() -> None:
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8)
    state = torch.get_rng_state()
    first = cutmix_batch(x, y, generator=seeded(9))
    second = cutmix_batch(x, y, generator=seeded(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert (first.lam, first.bbox) == (second.lam, second.bbox)
    assert torch.equal(first.indices, second.indices) and torch.equal(first.inputs, second.inputs)
    boxes = {cutmix_batch(x, y, generator=seeded(s)).bbox for s in range(10)}
    assert len(boxes) > 1


def test_cutmix_does_not_mutate_inputs() -> None:
    x, y = torch.randn(4, 3, 6, 6), torch.arange(4)
    x_before = x.clone()
    out = cutmix_batch(x, y, lam=0.5, generator=seeded(0))
    assert torch.equal(x, x_before) and out.inputs.data_ptr() != x.data_ptr()


def test_cutmix_batch_of_one_is_a_no_op() -> None:
    x = torch.randn(1, 3, 5, 5)
    out = cutmix_batch(x, torch.tensor([1]), generator=seeded(0))
    assert torch.equal(out.inputs, x) and torch.equal(out.permuted_targets, torch.tensor([1]))


# ---------------------------------------------------------------------------------------------
# mix_targets
# ---------------------------------------------------------------------------------------------


def hand_mixed_target(y: torch.Tensor, y_perm: torch.Tensor, lam: float, num_classes: int,
                      smoothing: float) -> torch.Tensor:
    """``(1 - lam) smooth(y) + lam smooth(y_perm)`` in float64 from ``F.one_hot``."""
    def smooth(t: torch.Tensor) -> torch.Tensor:
        dense = torch.nn.functional.one_hot(t, num_classes).double().movedim(-1, 1)
        return (1 - smoothing) * dense + smoothing / num_classes
    return (1 - lam) * smooth(y) + lam * smooth(y_perm)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shape", [(6,), (4, 3, 2)])
def test_mix_targets_index_targets_match_hand_formula(smoothing: float, lam: float,
                                                      shape: tuple[int, ...]) -> None:
    num_classes = 5
    y = torch.randint(0, num_classes, shape)
    y_perm = y[torch.randperm(shape[0])]
    mixed = mix_targets(y, y_perm, lam, num_classes=num_classes, smoothing=smoothing,
                        dtype=torch.float64)
    assert_close(mixed, hand_mixed_target(y, y_perm, lam, num_classes, smoothing))
    assert_close(mixed.sum(1), torch.ones(shape, dtype=torch.float64))


def test_mix_targets_smoothing_and_mixing_commute() -> None:
    """Smoothing after mixing (the dense mixed target) equals mixing smoothed targets."""
    y, y_perm = torch.tensor([0, 1, 2, 3]), torch.tensor([2, 0, 3, 1])
    mixed_then_smoothed = smooth_labels(torch.zeros(4, 4), mix_targets(y, y_perm, 0.35,
                                        num_classes=4), 0.2)
    smoothed_then_mixed = mix_targets(y, y_perm, 0.35, num_classes=4, smoothing=0.2)
    assert_close(smoothed_then_mixed, mixed_then_smoothed)


def test_mix_targets_dense_equals_index_and_class_dim_moves() -> None:
    y = torch.randint(0, 3, (5, 4))
    y_perm = y.flip(0)
    from_index = mix_targets(y, y_perm, 0.4, num_classes=3, smoothing=0.1)
    dense, dense_perm = one_hot(y, 3), one_hot(y_perm, 3)
    assert_close(mix_targets(dense, dense_perm, 0.4, num_classes=3, smoothing=0.1), from_index)
    last = mix_targets(y, y_perm, 0.4, num_classes=3, smoothing=0.1, class_dim=-1)
    assert_close(last, from_index.movedim(1, -1))
    assert from_index.dtype == torch.float32
    assert mix_targets(dense.double(), dense_perm.double(), 0.4, num_classes=3).dtype == torch.float64


def test_mix_targets_does_not_mutate() -> None:
    y = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    y_before = y.clone()
    mix_targets(y, y.flip(0), 0.5, num_classes=2, smoothing=0.3)
    assert torch.equal(y, y_before)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

X4, Y4 = torch.zeros(4, 1, 4, 4), torch.arange(4)


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
@pytest.mark.parametrize(("alpha", "error"), [(0.0, ValueError), (-1.0, ValueError),
                                              (math.nan, ValueError), (math.inf, ValueError),
                                              (True, TypeError), ("0.2", TypeError)])
def test_bad_alpha(fn, alpha, error) -> None:
    with pytest.raises(error, match=r"alpha: expected a finite real number > 0, got"):
        fn(X4, Y4, alpha=alpha)


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
@pytest.mark.parametrize("lam", [-0.1, 1.5, math.nan])
def test_bad_lam(fn, lam) -> None:
    with pytest.raises(ValueError, match=r"lam: expected a real number in \[0, 1\], got"):
        fn(X4, Y4, lam=lam)
    with pytest.raises(ValueError, match=r"lam: expected"):
        mix_targets(Y4, Y4, lam, num_classes=4)


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
@pytest.mark.parametrize(("indices", "error", "message"), [
    (torch.tensor([0, 0, 1, 2]), ValueError, r"indices: expected a permutation of range\(4\), "
                                             r"got \[0, 0, 1, 2\]"),
    (torch.tensor([0, 1, 2, 4]), ValueError, r"a permutation of range\(4\)"),
    (torch.tensor([0, 1, 2]), ValueError, r"a permutation of range\(4\), shape \(4,\)"),
    (torch.tensor([[0, 1, 2, 3]]), ValueError, r"a permutation"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, r"indices: expected an integer tensor"),
    ([0, 1, 2, 3], TypeError, r"indices: expected a torch.Tensor, got list"),
])
def test_bad_indices(fn, indices, error, message) -> None:
    with pytest.raises(error, match=message):
        fn(X4, Y4, indices=indices)


@pytest.mark.parametrize(("bbox", "error"), [
    (((0, 5), (0, 2)), ValueError),  # past the bottom
    (((-1, 2), (0, 2)), ValueError),  # before the top
    (((3, 2), (0, 2)), ValueError),  # start after stop
    (((0, 2),), ValueError),  # one pair for two spatial dimensions
    (((0, 2.0), (0, 2)), TypeError),
    ((0, 2, 0, 2), ValueError),  # flat, not pairs
    (((0, 2), 3), TypeError),
])
def test_bad_bbox(bbox, error) -> None:
    with pytest.raises(error, match=r"bbox: expected 2 \(start, stop\) int pairs .* \(4, 4\), got"):
        cutmix_batch(X4, Y4, bbox=bbox)


def test_lam_and_bbox_together_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"lam: expected None when bbox is given"):
        cutmix_batch(X4, Y4, lam=0.5, bbox=((0, 2), (0, 2)))


def test_bad_tensors() -> None:
    with pytest.raises(TypeError, match=r"inputs: expected a floating-point tensor"):
        mixup_batch(X4.long(), Y4)
    with pytest.raises(ValueError, match=r"inputs: expected a tensor of shape \(N, C, H, W\) or "
                                         r"\(N, C, L\)"):
        cutmix_batch(torch.zeros(4, 5), Y4)
    with pytest.raises(ValueError, match=r"targets: expected a tensor whose first dimension is "
                                         r"the batch size 4"):
        mixup_batch(X4, torch.arange(3))
    with pytest.raises(TypeError, match=r"generator: expected a torch.Generator or None"):
        mixup_batch(X4, Y4, generator=0)
    with pytest.raises(TypeError, match=r"inputs: expected a torch.Tensor, got list"):
        cutmix_batch([1.0], Y4)


def test_bad_mix_targets_arguments() -> None:
    with pytest.raises(ValueError, match=r"permuted_targets: expected targets of the same shape"):
        mix_targets(Y4, Y4[:3], 0.5, num_classes=4)
    with pytest.raises(ValueError, match=r"permuted_targets: expected .* same shape and kind"):
        mix_targets(Y4, one_hot(Y4, 4), 0.5, num_classes=4)
    with pytest.raises(ValueError, match=r"num_classes: expected an int >= 1, got 0"):
        mix_targets(Y4, Y4, 0.5, num_classes=0)
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 3\)"):
        mix_targets(Y4, Y4, 0.5, num_classes=3)
    with pytest.raises(ValueError, match=r"smoothing: expected a real number in \[0, 1\]"):
        mix_targets(Y4, Y4, 0.5, num_classes=4, smoothing=1.5)
    with pytest.raises(ValueError, match=r"targets: expected dense targets with 4 classes"):
        mix_targets(torch.zeros(4, 3), torch.zeros(4, 3), 0.5, num_classes=4)
    with pytest.raises(TypeError, match=r"dtype: expected a floating dtype"):
        mix_targets(Y4, Y4, 0.5, num_classes=4, dtype=torch.int64)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
def test_cuda_inputs_with_a_cpu_or_cuda_generator(generator_device: str) -> None:
    x = torch.randn(8, 3, 6, 6, device="cuda")
    y = torch.randint(0, 4, (8,), device="cuda")

    def draw(seed: int) -> tuple[MixedBatch, MixedBatch]:
        generator = torch.Generator(device=generator_device).manual_seed(seed)
        return (mixup_batch(x, y, generator=generator), cutmix_batch(x, y, generator=generator))

    (mixed, cut), (mixed_again, cut_again) = draw(0), draw(0)
    assert mixed.indices.device == x.device and cut.indices.device == x.device
    assert mixed.lam == mixed_again.lam and torch.equal(mixed.indices, mixed_again.indices)
    assert cut.bbox == cut_again.bbox and torch.equal(cut.inputs, cut_again.inputs)
    assert_close(mixed.inputs, (1 - mixed.lam) * x + mixed.lam * x[mixed.indices])
    target = mix_targets(y, mixed.permuted_targets, mixed.lam, num_classes=4, smoothing=0.1)
    assert target.device == x.device
    assert_close(target.sum(1), torch.ones(8, device="cuda"))


def test_docstring_examples_run_and_exports_exist() -> None:
    import doctest

    import labelsmooth.functional.mixing as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
    assert all(hasattr(module, name) for name in module.__all__)


def test_results_unpack_as_four_values_and_carry_the_draws() -> None:
    x, y = torch.randn(6, 3, 4, 4), torch.arange(6) % 3
    gen = torch.Generator().manual_seed(3)
    for out in (mixup_batch(x, y, generator=gen), cutmix_batch(x, y, generator=gen)):
        mixed, targets, permuted, lam = out
        assert targets is y and torch.equal(permuted, y[out.indices])
        assert sorted(out.indices.tolist()) == list(range(6))
        assert lam == out.lam and mixed is out.inputs
    assert mixup_batch(x, y, generator=gen).bbox is None
    assert cutmix_batch(x, y, generator=gen).bbox is not None
