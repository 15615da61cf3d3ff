"""Tests for labelsmooth.functional.smoothing: one_hot, smooth_labels, smooth_binary_labels."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from helpers import HostSyncRecorder, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from labelsmooth.functional import (
    mixed_smoothed_cross_entropy,
    one_hot,
    smooth_binary_labels,
    smooth_labels,
    smoothed_cross_entropy,
)


def seed_smooth_labels(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The definition of label smoothing, written the way Composer's ``smooth_labels`` computes it.

    Index targets are one-hot encoded with ``F.one_hot`` (int64), the class axis moved to dim 1,
    then ``targets * (1. - smoothing) + smoothing / n_classes``.
    """
    if target.dim() == logits.dim() - 1:
        target = F.one_hot(target, logits.shape[1]).movedim(-1, 1)
    return target * (1.0 - smoothing) + smoothing / logits.shape[1]


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 6, 5), (1, 1), (2, 10, 3)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.37, 1.0])
def test_smooth_labels_equals_seed_definition_exactly(shape: tuple[int, ...], smoothing: float) -> None:
    logits = torch.randn(shape)
    num_classes = shape[1]
    index = torch.randint(num_classes, (shape[0], *shape[2:]))
    expected = seed_smooth_labels(logits, index, smoothing)
    assert torch.equal(smooth_labels(logits, index, smoothing), expected)
    dense = F.one_hot(index, num_classes).movedim(-1, 1).float()
    assert torch.equal(smooth_labels(logits, dense, smoothing), seed_smooth_labels(logits, dense, smoothing))


def test_smooth_labels_hand_computed() -> None:
    out = smooth_labels(torch.zeros(2, 4), torch.tensor([0, 3]), smoothing=0.2)
    expected = torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]])
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_smooth_labels_keeps_logits_dtype(dtype: torch.dtype) -> None:
    logits = torch.randn(5, 3, dtype=dtype)
    out = smooth_labels(logits, torch.tensor([0, 1, 2, 0, 1]), 0.1)
    assert out.dtype == dtype
    reference = F.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).double() * 0.9 + 0.1 / 3
    assert_close(out, reference.to(dtype), dtype)


def test_smooth_labels_soft_targets_are_smoothed_as_distributions() -> None:
    logits = torch.randn(4, 6)
    soft = torch.softmax(torch.randn(4, 6), dim=1)
    out = smooth_labels(logits, soft, 0.3)
    assert_close(out, 0.7 * soft + 0.05)
    assert_close(out.sum(1), torch.ones(4))


def test_smoothing_extremes() -> None:
    logits = torch.randn(6, 4)
    y = torch.randint(4, (6,))
    assert torch.equal(smooth_labels(logits, y, 0.0), F.one_hot(y, 4).float())
    assert torch.equal(smooth_labels(logits, y, 1.0), torch.full((6, 4), 0.25))


@given(
    batch=st.integers(1, 5), classes=st.integers(1, 7), extra=st.lists(st.integers(1, 3), max_size=2),
    smoothing=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_rows_sum_to_one_and_class_axis_moves(
    batch: int, classes: int, extra: list[int], smoothing: float, seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *extra, generator=gen, dtype=torch.float64)
    y = torch.randint(classes, (batch, *extra), generator=gen)
    out = smooth_labels(logits, y, smoothing)
    assert_close(out.sum(1), torch.ones(batch, *extra, dtype=torch.float64))
    last = smooth_labels(logits.movedim(1, -1), y, smoothing, class_dim=-1)
    assert torch.equal(last.movedim(-1, 1), out)


def test_ignore_index_rows_are_zero() -> None:
    logits = torch.randn(2, 3, 2, 2)
    y = torch.tensor([[[0, 255], [2, 1]], [[255, 255], [1, 0]]])
    out = smooth_labels(logits, y, 0.1, ignore_index=255)
    ignored = (y == 255).unsqueeze(1).expand_as(out)
    assert torch.all(out[ignored] == 0)
    assert_close(out.sum(1)[y != 255], torch.ones(int((y != 255).sum())))
    kept = y != 255
    reference = seed_smooth_labels(logits, y.masked_fill(~kept, 0), 0.1)
    assert torch.equal(out.movedim(1, -1)[kept], reference.movedim(1, -1)[kept])


def test_inputs_are_not_modified() -> None:
    logits = torch.randn(4, 3)
    y = torch.tensor([0, -1, 2, 1])
    logits_copy, y_copy = logits.clone(), y.clone()
    smooth_labels(logits, y, 0.1, ignore_index=-1)
    assert torch.equal(logits, logits_copy) and torch.equal(y, y_copy)


def test_one_hot_class_dim_and_ignore_index() -> None:
    y = torch.tensor([[1, 0], [-100, 2]])
    out = one_hot(y, 3, class_dim=-1, ignore_index=-100, dtype=torch.float64)
    expected = torch.tensor(
        [[[0, 1, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 1]]], dtype=torch.float64)
    assert torch.equal(out, expected)
    assert torch.equal(one_hot(y.clamp(min=0), 3), F.one_hot(y.clamp(min=0), 3).movedim(-1, 1).float())


def test_one_hot_scalar_target() -> None:
    assert torch.equal(one_hot(torch.tensor(2), 4), torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_smooth_binary_labels_keras_convention() -> None:
    t = torch.tensor([1.0, 0.0, 0.5])
    assert_close(smooth_binary_labels(t, 0.2), torch.tensor([0.9, 0.1, 0.5]))
    out = smooth_binary_labels(torch.tensor([True, False]), 0.1)
    assert out.dtype == torch.get_default_dtype()
    assert_close(out, torch.tensor([0.95, 0.05]))


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_smoothing_value(smoothing: float) -> None:
    hint = "; negative smoothing needs allow_negative=True" if smoothing < 0 else ""
    with pytest.raises(ValueError, match=rf"^smoothing: expected a real number in \[0, 1\]{hint}, got {smoothing}$"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0, 1]), smoothing)


@pytest.mark.parametrize("smoothing", [True, "0.1"])
def test_bad_smoothing_type(smoothing: object) -> None:
    with pytest.raises(TypeError, match="smoothing: expected a real number"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0, 1]), smoothing)  # type: ignore[arg-type]


def test_a_smoothing_tensor_needs_one_value_per_sample() -> None:
    with pytest.raises(ValueError, match=r"smoothing: expected a float or one value per sample, "
                                         r"shape \(2,\), got shape \(\)$"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor(0.1))


def test_out_of_range_index() -> None:
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 3\), got 3 at position \(1,\)"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"or ignore_index=-1, got -2"):
        smooth_labels(torch.randn(2, 3), torch.tensor([-1, -2]), ignore_index=-1)


def test_shape_mismatch_shows_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"targets: expected class indices of shape \(4,\) or dense targets "
                                         r"of shape \(4, 3\).*got shape \(5,\)"):
        smooth_labels(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_dense_wrong_class_count() -> None:
    with pytest.raises(ValueError, match=r"targets: expected dense targets with 3 classes on dim 1.*got 4 classes"):
        smooth_labels(torch.randn(4, 3), torch.rand(4, 4))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_floating_logits(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match="logits: expected a floating-point tensor"):
        smooth_labels(torch.zeros(2, 3, dtype=dtype), torch.tensor([0, 1]))


def test_float_index_targets_rejected() -> None:
    with pytest.raises(TypeError, match=r"targets: expected an integer tensor of class indices, got dtype torch\.float32"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0.0, 1.0]))


def test_one_hot_bad_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes: expected an int >= 1, got 0"):
        one_hot(torch.tensor([0]), 0)


def test_bad_class_dim() -> None:
    with pytest.raises(ValueError, match=r"class_dim: expected a dimension in \[-2, 1\] for a 2-d input, got 2"):
        smooth_labels(torch.randn(2, 3), torch.tensor([0, 1]), class_dim=2)


def test_empty_batch() -> None:
    out = smooth_labels(torch.randn(0, 3), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 3)


def test_smoothing_accepts_any_real_number() -> None:
    # numpy scalars (what a config loaded through numpy or pandas holds) and fractions are real
    # numbers: they give what the equal Python float gives.
    np = pytest.importorskip("numpy")
    logits, targets = torch.randn(3, 4), torch.tensor([0, 3, 1])
    expected = smooth_labels(logits, targets, 0.25)
    for smoothing in (np.float64(0.25), np.float32(0.25), Fraction(1, 4)):
        assert torch.equal(smooth_labels(logits, targets, smoothing), expected)
    assert torch.equal(smooth_labels(logits, targets, np.int64(1)), smooth_labels(logits, targets, 1.0))


def test_integer_options_accept_numpy_integers() -> None:
    np = pytest.importorskip("numpy")
    targets = torch.tensor([0, 2, -1])
    assert torch.equal(one_hot(targets, np.int64(3), ignore_index=np.int32(-1)),
                       one_hot(targets, 3, ignore_index=-1))
    assert torch.equal(smooth_labels(torch.randn(3, 4), targets.abs(), class_dim=np.int64(-1)),
                       smooth_labels(torch.randn(3, 4), targets.abs(), class_dim=-1))


@pytest.mark.parametrize("ignore_index", [None, -1])
def test_no_host_sync_on_an_accelerator(ignore_index: int | None) -> None:
    # meta tensors stand in for CUDA ones: any host-to-device copy or value read is recorded.
    logits = torch.empty(4, 5, device="meta")
    targets = torch.empty(4, dtype=torch.long, device="meta")
    with HostSyncRecorder() as recorder:
        smooth_labels(logits, targets, 0.1, ignore_index=ignore_index)
        one_hot(targets, 5, ignore_index=ignore_index)
    assert recorder.syncs == []


def test_out_of_range_index_of_a_narrow_dtype_is_not_taken_for_ignore_index() -> None:
    # In uint8, -6 wraps to 250: the check must compare the values the losses use (int64).
    targets = torch.tensor([250, 1], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 5\) or ignore_index=-6, got 250"):
        smooth_labels(torch.randn(2, 5), targets, ignore_index=-6)
    with pytest.raises(ValueError, match=r"got 250 at position \(0,\)"):
        one_hot(targets, 5, ignore_index=-6)


# --- priors, per-sample and negative smoothing -----------------------------------------------

def test_smooth_labels_with_a_prior_hand_computed() -> None:
    prior = torch.tensor([0.5, 0.25, 0.25, 0.0])
    got = smooth_labels(torch.zeros(2, 4), torch.tensor([3, 0]), 0.4, prior=prior)
    # (1 - 0.4) onehot + 0.4 q: q scaled by 0.4 is (0.2, 0.1, 0.1, 0).
    assert_close(got, torch.tensor([[0.2, 0.1, 0.1, 0.6], [0.8, 0.1, 0.1, 0.0]]))


def test_smooth_labels_negative_hand_computed() -> None:
    """s = -0.5 over 3 classes: the true class 1.5 - 1/6 = 4/3, the others -1/6; rows sum to 1."""
    got = smooth_labels(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([1]), -0.5,
                        allow_negative=True)
    assert_close(got, torch.tensor([[-1 / 6, 4 / 3, -1 / 6]], dtype=torch.float64))


@pytest.mark.parametrize("class_dim", [1, -1])
def test_per_sample_smoothing_and_prior_over_positions(class_dim: int) -> None:
    """Each sample's ``s`` holds at every one of its positions; ignored positions are zero."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(5, (3, 4), generator=generator)
    target[0, 1] = -100
    raw = torch.rand(5, generator=generator, dtype=torch.float64)
    prior = raw / raw.sum()
    smoothing = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    logits = torch.zeros(3, 5, 4, dtype=torch.float64)
    if class_dim == -1:
        logits = logits.movedim(1, -1)
    got = smooth_labels(logits, target, smoothing, prior=prior, class_dim=class_dim,
                        ignore_index=-100)
    hot = F.one_hot(target.clamp(min=0), 5).double()  # (3, 4, 5)
    want = (1 - smoothing.view(3, 1, 1)) * hot + smoothing.view(3, 1, 1) * prior
    want[0, 1] = 0.0
    assert_close(got if class_dim == -1 else got.movedim(1, -1), want)


def test_dense_targets_with_a_prior_and_per_sample_smoothing() -> None:
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    prior = torch.tensor([0.2, 0.2, 0.6])
    got = smooth_labels(torch.zeros(2, 3), soft, torch.tensor([0.5, 0.0]), prior=prior)
    assert_close(got, torch.tensor([[0.35, 0.35, 0.3], [0.0, 0.0, 1.0]]))
    assert_close(got.sum(1), torch.ones(2))


def test_a_uniform_prior_equals_no_prior() -> None:
    target = torch.tensor([0, 3, 2])
    got = smooth_labels(torch.zeros(3, 4), target, 0.2, prior=torch.full((4,), 0.25))
    assert_close(got, smooth_labels(torch.zeros(3, 4), target, 0.2))


def test_a_prior_and_per_sample_smoothing_on_an_accelerator_need_no_host_sync() -> None:
    logits = torch.empty(4, 5, device="meta")
    targets = torch.empty(4, dtype=torch.long, device="meta")
    prior = torch.empty(5, device="meta")
    smoothing = torch.empty(4, device="meta")
    with HostSyncRecorder() as recorder:
        smooth_labels(logits, targets, smoothing, prior=prior)
        smoothed_cross_entropy(logits, targets, smoothing, prior=prior)
        mixed_smoothed_cross_entropy(logits, [targets, targets], [0.5, 0.5], smoothing, prior=prior)
    assert recorder.syncs == []
