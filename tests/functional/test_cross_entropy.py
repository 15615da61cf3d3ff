"""Tests for labelsmooth.functional.cross_entropy against PyTorch and a float64 dense formula."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from labelsmooth.functional import (
    mixed_smoothed_cross_entropy,
    smooth_labels,
    smoothed_binary_cross_entropy_with_logits,
    smoothed_cross_entropy,
    soft_cross_entropy,
)

SHAPES = [(8, 5), (3, 7, 4), (2, 3, 2, 5), (1, 1), (5,)]


def make_case(shape: tuple[int, ...], dtype: torch.dtype, *, ignore: bool, class_dim: int = 1):
    """Logits with classes on dim 1 (dim 0 for 1-d), index targets, a few ignored when asked."""
    logits = (3 * torch.randn(shape, dtype=torch.float64)).to(dtype)
    cdim = 0 if len(shape) == 1 else 1
    num_classes = shape[cdim]
    index_shape = shape[:cdim] + shape[cdim + 1:]
    target = torch.randint(num_classes, index_shape)
    if ignore and target.numel() > 1:
        target.view(-1)[:: 3] = -100
    return logits, target, num_classes


def dense_reference(logits: torch.Tensor, target: torch.Tensor, smoothing: float, weight, reduction: str,
                    ignore_index: int = -100) -> torch.Tensor:
    """The label-smoothed loss from the dense target, in float64, class dim 1 (or 0 if 1-d)."""
    cdim = 0 if logits.ndim == 1 else 1
    x = logits.double()
    num_classes = x.shape[cdim]
    ignored = target == ignore_index
    safe = target.masked_fill(ignored, 0)
    dense = F.one_hot(safe, num_classes).double().movedim(-1, cdim) * (1 - smoothing) + smoothing / num_classes
    w = torch.ones(num_classes, dtype=torch.float64) if weight is None else weight.double()
    w_shape = [1] * x.ndim
    w_shape[cdim] = num_classes
    per_position = -(dense * w.view(w_shape) * torch.log_softmax(x, cdim)).sum(cdim)
    per_position = per_position.masked_fill(ignored, 0)
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return per_position.sum()
    return per_position.sum() / w[safe].masked_fill(ignored, 0).sum()


GRID = list(itertools.product(SHAPES, [None, "weight"], [False, True], ["mean", "sum", "none"]))


@pytest.mark.parametrize(("shape", "weighted", "ignore", "reduction"), GRID)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_pytorch_value_and_gradient(shape, weighted, ignore, reduction, dtype) -> None:
    logits, target, num_classes = make_case(shape, dtype, ignore=ignore)
    weight = torch.rand(num_classes, dtype=dtype) + 0.1 if weighted else None
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = smoothed_cross_entropy(ours_in, target, 0.15, weight=weight, reduction=reduction)
    ref = F.cross_entropy(ref_in, target, weight=weight, reduction=reduction, label_smoothing=0.15)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert_close(ours, ref, dtype)
    assert_close(ours, dense_reference(logits, target, 0.15, weight, reduction).to(dtype), dtype)
    grad_out = torch.rand_like(ref)
    (ours * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    assert_close(ours_in.grad, ref_in.grad, dtype)


@pytest.mark.parametrize("class_dim", [-1, 2, 3])
def test_class_dim_moves(class_dim: int) -> None:
    logits, target, _ = make_case((2, 5, 3, 4), torch.float64, ignore=True)
    expected = smoothed_cross_entropy(logits, target, 0.2, reduction="none")
    moved = logits.movedim(1, class_dim)
    assert_close(smoothed_cross_entropy(moved, target, 0.2, class_dim=class_dim, reduction="none"), expected)
    assert_close(soft_cross_entropy(moved, target, class_dim=class_dim, reduction="none"),
                 F.cross_entropy(logits, target, reduction="none"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_batch_matches_pytorch(reduction: str, weighted: bool) -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    target = torch.full((4,), -100)
    weight = torch.rand(5) if weighted else None
    ours = smoothed_cross_entropy(logits, target, 0.1, weight=weight, reduction=reduction)
    ref = F.cross_entropy(logits, target, weight=weight, reduction=reduction, label_smoothing=0.1)
    assert_close(ours, ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_matches_pytorch(reduction: str) -> None:
    logits = torch.randn(0, 5, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    ours = smoothed_cross_entropy(logits, target, 0.1, reduction=reduction)
    ref = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
    assert ours.shape == ref.shape
    assert_close(ours, ref)
    assert_close(soft_cross_entropy(logits, target, reduction=reduction),
                 F.cross_entropy(logits, target, reduction=reduction))


def test_gradcheck_float64() -> None:
    logits = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(6, (4, 3))
    target[0, 1] = -100
    weight = torch.rand(6, dtype=torch.float64) + 0.5
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda x, r=reduction: smoothed_cross_entropy(x, target, 0.3, weight=weight, reduction=r),
            (logits,))


def test_smoothing_zero_is_plain_cross_entropy() -> None:
    logits, target, _ = make_case((6, 9), torch.float64, ignore=True)
    assert_close(smoothed_cross_entropy(logits, target, 0.0), F.cross_entropy(logits, target))


def test_smoothing_one_is_uniform_target() -> None:
    logits = torch.randn(6, 9, dtype=torch.float64)
    target = torch.randint(9, (6,))
    uniform = torch.full((6, 9), 1 / 9, dtype=torch.float64)
    assert_close(smoothed_cross_entropy(logits, target, 1.0), F.cross_entropy(logits, uniform))


def test_hand_computed_case() -> None:
    # Two classes, logits (0, ln 3): p = (1/4, 3/4). Target 0, s = 0.5: dense target (3/4, 1/4).
    # loss = -(3/4 ln 1/4 + 1/4 ln 3/4) = (3/2) ln 2 + (1/4) ln 4 - (1/4) ln 3 = 2 ln 2 - (1/4) ln 3.
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0, dtype=torch.float64))]], dtype=torch.float64)
    loss = smoothed_cross_entropy(logits, torch.tensor([0]), 0.5)
    expected = 2 * torch.log(torch.tensor(2.0, dtype=torch.float64)) - 0.25 * torch.log(
        torch.tensor(3.0, dtype=torch.float64))
    assert_close(loss, expected)


def test_dense_targets_path() -> None:
    logits = torch.randn(5, 4, dtype=torch.float64)
    soft = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1)
    expected = F.cross_entropy(logits, 0.8 * soft + 0.05)
    assert_close(smoothed_cross_entropy(logits, soft, 0.2), expected)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 3, 0]), 4).double()
    assert_close(smoothed_cross_entropy(logits, onehot, 0.2),
                 F.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0]), label_smoothing=0.2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    logits = torch.randn(16, 50, dtype=torch.float32).to(dtype)
    target = torch.randint(50, (16,))
    x = logits.clone().requires_grad_()
    loss = smoothed_cross_entropy(x, target, 0.1)
    assert loss.dtype == dtype
    reference = F.cross_entropy(logits.double(), target, label_smoothing=0.1)
    assert_close(loss, reference.to(dtype), dtype)
    loss.backward()
    assert x.grad is not None and x.grad.dtype == dtype
    x64 = logits.double().requires_grad_()
    F.cross_entropy(x64, target, label_smoothing=0.1).backward()
    assert x64.grad is not None
    assert_close(x.grad, x64.grad.to(dtype), dtype)


def test_float16_large_vocabulary_is_finite_where_pytorch_overflows() -> None:
    logits = torch.randn(4, 32000).half()
    target = torch.randint(32000, (4,))
    pytorch = F.cross_entropy(logits, target, label_smoothing=0.1)
    assert torch.isinf(pytorch)  # PyTorch sums -log p over 32000 classes in float16 and overflows.
    ours = smoothed_cross_entropy(logits, target, 0.1)
    assert torch.isfinite(ours)
    reference = F.cross_entropy(logits.float(), target, label_smoothing=0.1)
    assert_close(ours, reference.half(), torch.float16)


@given(
    batch=st.integers(0, 4), classes=st.integers(1, 6), extra=st.lists(st.integers(1, 3), max_size=2),
    smoothing=st.floats(0.0, 1.0), reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(), seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_property_matches_pytorch(batch, classes, extra, smoothing, reduction, weighted, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *extra, generator=gen, dtype=torch.float64)
    target = torch.randint(-1, classes, (batch, *extra), generator=gen)
    weight = torch.rand(classes, generator=gen, dtype=torch.float64) if weighted else None
    ours = smoothed_cross_entropy(logits, target, smoothing, weight=weight, ignore_index=-1,
                                  reduction=reduction)
    ref = F.cross_entropy(logits, target, weight=weight, ignore_index=-1, reduction=reduction,
                          label_smoothing=smoothing)
    assert_close(ours, ref)


# --- soft_cross_entropy ------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_soft_cross_entropy_both_paths_match_pytorch(reduction: str, weighted: bool) -> None:
    logits, target, num_classes = make_case((6, 4, 3), torch.float64, ignore=True)
    weight = torch.rand(num_classes, dtype=torch.float64) if weighted else None
    assert_close(soft_cross_entropy(logits, target, weight=weight, reduction=reduction),
                 F.cross_entropy(logits, target, weight=weight, reduction=reduction))
    soft = torch.softmax(torch.randn(6, 4, 3, dtype=torch.float64), 1)
    assert_close(soft_cross_entropy(logits, soft, weight=weight, reduction=reduction),
                 F.cross_entropy(logits, soft, weight=weight, reduction=reduction))


def test_soft_cross_entropy_weighted_mean_normalisation_differs_by_path() -> None:
    """Index targets: weighted average (divide by sum w[y]); dense targets: divide by N."""
    logits = torch.randn(3, 2, dtype=torch.float64)
    target = torch.tensor([0, 1, 1])
    weight = torch.tensor([1.0, 3.0], dtype=torch.float64)
    per_example = -torch.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1) * weight[target]
    index_mean = soft_cross_entropy(logits, target, weight=weight)
    dense_mean = soft_cross_entropy(logits, F.one_hot(target, 2).double(), weight=weight)
    assert_close(index_mean, per_example.sum() / 7.0)
    assert_close(dense_mean, per_example.sum() / 3.0)


def test_soft_cross_entropy_of_smoothed_labels_equals_smoothed_loss_without_ignores() -> None:
    logits = torch.randn(5, 7, 2, dtype=torch.float64)
    target = torch.randint(7, (5, 2))
    dense = smooth_labels(logits, target, 0.1)
    assert_close(soft_cross_entropy(logits, dense), smoothed_cross_entropy(logits, target, 0.1))


def test_soft_cross_entropy_ignored_rows_add_nothing_but_count() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = torch.tensor([0, -100, 2, 1])
    dense = smooth_labels(logits, target, 0.1, ignore_index=-100)
    kept = target != -100
    total = smoothed_cross_entropy(logits, target, 0.1, reduction="sum")
    assert_close(soft_cross_entropy(logits, dense, reduction="sum"), total)
    assert_close(soft_cross_entropy(logits, dense), total / 4)
    assert_close(smoothed_cross_entropy(logits, target, 0.1), total / kept.sum())


# --- binary ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smoothed_bce_matches_formula(reduction: str) -> None:
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(2, (6, 3)).bool()
    weight = torch.rand(6, 1, dtype=torch.float64)
    pos_weight = torch.rand(3, dtype=torch.float64) + 0.5
    ours = smoothed_binary_cross_entropy_with_logits(logits, target, 0.2, weight=weight,
                                                     pos_weight=pos_weight, reduction=reduction)
    t = target.double() * 0.8 + 0.1
    log_sig, log_one_minus = F.logsigmoid(logits), F.logsigmoid(-logits)
    per = -weight * (pos_weight * t * log_sig + (1 - t) * log_one_minus)
    expected = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    assert_close(ours, expected)


def test_smoothed_bce_zero_smoothing_is_plain_bce() -> None:
    logits = torch.randn(5, 4)
    target = torch.rand(5, 4).round()
    assert_close(smoothed_binary_cross_entropy_with_logits(logits, target, 0.0),
                 F.binary_cross_entropy_with_logits(logits, target))


def test_smoothed_bce_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"target: expected the input's shape \(2, 3\), got shape \(2, 4\)"):
        smoothed_binary_cross_entropy_with_logits(torch.randn(2, 3), torch.rand(2, 4))


# --- bad input ---------------------------------------------------------------------------------

def test_bad_reduction() -> None:
    with pytest.raises(ValueError, match=r"reduction: expected one of \('none', 'mean', 'sum'\), got 'avg'"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="avg")


def test_bad_weight() -> None:
    with pytest.raises(ValueError, match=r"weight: expected a 1-d tensor of 3 class weights, got shape \(4,\)"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), weight=torch.ones(4))
    with pytest.raises(TypeError, match="weight: expected a floating-point tensor"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), weight=torch.ones(3, dtype=torch.long))


def test_out_of_range_target_on_cpu() -> None:
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 3\) or ignore_index=-100, "
                                         r"got 5 at position \(1,\)"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"got -7 at position \(0, 1\)"):
        soft_cross_entropy(torch.randn(1, 3, 2), torch.tensor([[0, -7]]))


def test_integer_logits_rejected() -> None:
    with pytest.raises(TypeError, match="input: expected a floating-point tensor"):
        smoothed_cross_entropy(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]))


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"target: expected class indices of shape \(2, 4\).*got shape \(2, 5\)"):
        smoothed_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long))


def test_inputs_not_modified() -> None:
    logits = torch.randn(4, 3)
    target = torch.tensor([0, -100, 2, 1])
    saved = logits.clone(), target.clone()
    smoothed_cross_entropy(logits, target, 0.1)
    assert torch.equal(logits, saved[0]) and torch.equal(target, saved[1])
    # The gradient path too (it writes an N x C buffer), through a non-leaf, with a weight.
    leaf, weight = logits.clone().requires_grad_(), torch.rand(3) + 0.5
    saved_weight = weight.clone()
    for reduction in ("mean", "none"):
        head = leaf * 2
        saved_head = head.detach().clone()
        smoothed_cross_entropy(head, target, 0.1, weight=weight, reduction=reduction).sum().backward()
        assert torch.equal(head.detach(), saved_head)
    assert torch.equal(weight, saved_weight) and torch.equal(leaf.detach(), saved[0])
    assert torch.equal(target, saved[1])


# --- inplace_backward through the public function --------------------------------------------

def test_inplace_backward_through_a_linear_head_matches_pytorch() -> None:
    hidden = torch.randn(16, 8, dtype=torch.float64)
    head = torch.nn.Linear(8, 300, dtype=torch.float64)
    target = torch.randint(300, (16,))
    target[3] = -100
    reference_hidden = hidden.clone().requires_grad_()
    F.cross_entropy(head(reference_hidden), target, label_smoothing=0.1).backward()
    reference_grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    ours_hidden = hidden.clone().requires_grad_()
    logits = head(ours_hidden)
    loss = smoothed_cross_entropy(logits, target, 0.1, inplace_backward=True)
    assert_close(loss, F.cross_entropy(head(hidden), target, label_smoothing=0.1))
    loss.backward()
    assert_close(ours_hidden.grad, reference_hidden.grad)
    for ours, ref in zip((p.grad for p in head.parameters()), reference_grads, strict=True):
        assert_close(ours, ref)


def test_inplace_backward_refuses_a_leaf() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    with pytest.raises(ValueError, match="inplace_backward: expected logits produced by an operation"):
        smoothed_cross_entropy(logits, torch.tensor([0, 1, 2, 3]), 0.1, inplace_backward=True)


def test_inplace_backward_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="inplace_backward: expected a bool, got 1"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), inplace_backward=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inplace_backward: expected a bool, got 'yes'"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.rand(2, 3), inplace_backward="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("input_dtype", "weight_dtype"), [(torch.float64, torch.float32),
                                                           (torch.float32, torch.float64)])
@pytest.mark.parametrize("dense", [False, True])
def test_weight_in_another_dtype_is_cast_to_the_input_dtype(input_dtype, weight_dtype, dense) -> None:
    # smoothed_cross_entropy's index path already accepts any floating weight; every path must
    # give the loss in the input's dtype, as the loss a weight of the input's dtype gives.
    logits = torch.randn(6, 4, dtype=input_dtype)
    target = torch.randint(4, (6,))
    if dense:
        target = torch.softmax(torch.randn(6, 4, dtype=input_dtype), 1)
    weight = torch.rand(4, dtype=torch.float64) + 0.5
    for loss in (soft_cross_entropy, smoothed_cross_entropy):
        got = loss(logits, target, weight=weight.to(weight_dtype))
        assert got.dtype == input_dtype
        assert_close(got, loss(logits, target, weight=weight.to(weight_dtype).to(input_dtype)))
    assert_close(soft_cross_entropy(logits, target, weight=weight.to(weight_dtype)),
                 F.cross_entropy(logits, target, weight=weight.to(weight_dtype).to(input_dtype)))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_targets_on_another_device_are_moved_to_the_input(reduction: str) -> None:
    # meta logits stand in for an accelerator's, with the targets left on the CPU (a common
    # slip): every loss follows smooth_labels, which moves them, instead of failing inside.
    logits = torch.empty(4, 5, device="meta")
    index, dense = torch.tensor([0, 4, -100, 2]), torch.rand(4, 5)
    for loss in (
        smoothed_cross_entropy(logits, index, reduction=reduction),
        smoothed_cross_entropy(logits, dense, reduction=reduction),
        soft_cross_entropy(logits, index, reduction=reduction),
        soft_cross_entropy(logits, dense, reduction=reduction),
    ):
        assert loss.device.type == "meta"
        assert loss.shape == ((4,) if reduction == "none" else ())
    binary = smoothed_binary_cross_entropy_with_logits(logits, torch.ones(4, 5), reduction=reduction)
    assert binary.device.type == "meta" and binary.shape == ((4, 5) if reduction == "none" else ())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("class_dim", [1, -1])
@pytest.mark.parametrize("size", [(3, 5, 4, 6), (4, 40, 24, 24)], ids=["tiny", "fused"])
def test_spatial_inputs_match_pytorch_through_the_public_function(reduction, class_dim, size):
    # Tiny problems run PyTorch's own loss, larger ones the fused kernel: both behind the
    # class-dimension move and the reshape of "none".
    from labelsmooth._ops import plan

    rows = size[0] * size[2] * size[3]
    expected = "native" if size == (3, 5, 4, 6) else "chunked"
    assert plan(rows, size[1], torch.float32, torch.device("cpu")).strategy == expected
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(*size, generator=generator)
    target = torch.randint(0, size[1], (size[0], *size[2:]), generator=generator)
    target[0, 0, :2] = -100
    weight = torch.rand(size[1], generator=generator) + 0.5
    x = logits if class_dim == 1 else logits.movedim(1, -1)
    x = x.clone().requires_grad_()
    got = smoothed_cross_entropy(x, target, 0.3, weight=weight, reduction=reduction,
                                 class_dim=class_dim)
    (got_grad,) = torch.autograd.grad(got.sum(), x)
    reference = logits.double().requires_grad_()
    want = F.cross_entropy(reference, target, weight=weight.double(), reduction=reduction,
                           label_smoothing=0.3)
    (want_grad,) = torch.autograd.grad(want.sum(), reference)
    assert got.shape == want.shape
    assert_close(got, want, torch.float32, what="loss")
    assert_close(got_grad if class_dim == 1 else got_grad.movedim(-1, 1), want_grad,
                 torch.float32, what="gradient")


# Priors, per-sample and negative smoothing, mixed targets.

def prior_reference(logits, target, smoothing, prior, *, weight=None, reduction="mean",
                    ignore_index=-100):
    """float64 ``-sum_c w_c t_c log p_c``, ``t = (1 - s) onehot + s q``, classes on dim 1; a
    per-sample ``s`` of shape ``(N,)`` is the same at every position of its sample."""
    x = logits.double()
    num_classes = x.shape[1]
    q = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64) if prior is None \
        else prior.double()
    w = torch.ones(num_classes, dtype=torch.float64) if weight is None else weight.double()
    view = [1] * x.ndim
    view[1] = num_classes
    s = torch.as_tensor(smoothing, dtype=torch.float64)
    if s.ndim:
        s = s.reshape([-1] + [1] * (x.ndim - 1))
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    hot = F.one_hot(safe, num_classes).movedim(-1, 1).double()
    t = ((1 - s) * hot + s * q.reshape(view)) * valid.unsqueeze(1)
    rows = -(t * w.reshape(view) * torch.log_softmax(x, 1)).sum(1)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / (w[safe] * valid).sum()


def _random_prior(num_classes: int, seed: int = 0) -> torch.Tensor:
    raw = torch.rand(num_classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return raw / raw.sum()


@pytest.mark.parametrize("shape", [(8, 5), (3, 7, 4), (2, 3, 2, 5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("per_sample", [False, True], ids=["float", "per_sample"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_prior_and_per_sample_smoothing_match_the_dense_formula(shape, reduction, per_sample, weighted):
    torch.manual_seed(0)
    logits, target, num_classes = make_case(shape, torch.float64, ignore=True)
    prior = _random_prior(num_classes)
    smoothing = torch.rand(shape[0], dtype=torch.float64) if per_sample else 0.3
    weight = torch.rand(num_classes, dtype=torch.float64) + 0.1 if weighted else None
    x = logits.clone().requires_grad_()
    got = smoothed_cross_entropy(x, target, smoothing, prior=prior, weight=weight, reduction=reduction)
    reference_x = logits.clone().requires_grad_()
    want = prior_reference(reference_x, target, smoothing, prior, weight=weight, reduction=reduction)
    assert_close(got, want, what="loss")
    got.sum().backward()
    want.sum().backward()
    assert_close(x.grad, reference_x.grad, what="gradient")


@pytest.mark.parametrize("smoothing", [-0.5, -2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_negative_smoothing_matches_the_dense_formula(smoothing, dtype):
    torch.manual_seed(1)
    logits, target, _ = make_case((64, 300), dtype, ignore=True)
    x = logits.clone().requires_grad_()
    got = smoothed_cross_entropy(x, target, smoothing, allow_negative=True)
    got.backward()
    reference_x = logits.double().requires_grad_()
    want = prior_reference(reference_x, target, smoothing, None)
    want.backward()
    assert_close(got, want, dtype, what="loss")
    assert_close(x.grad, reference_x.grad, dtype, what="gradient")


def test_class_dim_moves_with_a_prior_and_per_sample_smoothing():
    torch.manual_seed(2)
    logits, target, num_classes = make_case((3, 7, 4), torch.float64, ignore=True)
    prior, smoothing = _random_prior(num_classes), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    want = smoothed_cross_entropy(logits, target, smoothing, prior=prior, reduction="none")
    moved = smoothed_cross_entropy(logits.movedim(1, -1), target, smoothing, prior=prior,
                                   reduction="none", class_dim=-1)
    assert_close(moved, want)


def test_dense_targets_with_a_prior_and_per_sample_smoothing_equal_index_targets():
    torch.manual_seed(3)
    logits, target, num_classes = make_case((6, 5), torch.float64, ignore=False)
    prior, smoothing = _random_prior(num_classes), torch.linspace(0, 1, 6, dtype=torch.float64)
    dense = F.one_hot(target, num_classes).double()
    assert_close(smoothed_cross_entropy(logits, dense, smoothing, prior=prior),
                 smoothed_cross_entropy(logits, target, smoothing, prior=prior))


def test_smoothing_one_trains_on_the_prior_alone():
    torch.manual_seed(4)
    logits, target, num_classes = make_case((5, 6), torch.float64, ignore=False)
    prior = _random_prior(num_classes)
    want = -(prior * torch.log_softmax(logits, 1)).sum(1).mean()
    assert_close(smoothed_cross_entropy(logits, target, 1.0, prior=prior), want)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_mixed_equals_the_share_weighted_sum_of_its_components(reduction, inplace):
    torch.manual_seed(5)
    logits, target, num_classes = make_case((3, 9, 4), torch.float64, ignore=True)
    partner = target[torch.tensor([2, 0, 1])]
    partner[0, 0] = target[0, 0] if target[0, 0] != -100 else 1  # the same class in both
    prior = _random_prior(num_classes)
    weight = torch.rand(num_classes, dtype=torch.float64) + 0.1
    options = dict(prior=prior, weight=weight, reduction=reduction)
    leaf = logits.clone().requires_grad_()
    got = mixed_smoothed_cross_entropy(leaf * 1 if inplace else leaf, [target, partner], [0.7, 0.3],
                                       0.2, inplace_backward=inplace, **options)
    got.sum().backward()
    reference_x = logits.clone().requires_grad_()
    want = (0.7 * prior_reference(reference_x, target, 0.2, prior, weight=weight, reduction=reduction)
            + 0.3 * prior_reference(reference_x, partner, 0.2, prior, weight=weight,
                                    reduction=reduction))
    want.sum().backward()
    assert_close(got, want, what="loss")
    assert_close(leaf.grad, reference_x.grad, what="gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_small_mixed_problem_matches_the_dense_formula(reduction, dtype):
    """Few classes: PyTorch's own loss per component (weighted, ignored positions, three shares)
    against the float64 dense formula of each component."""
    torch.manual_seed(8)
    logits, target, num_classes = make_case((6, 9, 4), dtype, ignore=True)
    parts = [target, target[torch.tensor([3, 0, 5, 1, 2, 4])], target.flip(1)]
    weight = torch.rand(num_classes, dtype=dtype) + 0.1
    x = logits.clone().requires_grad_()
    got = mixed_smoothed_cross_entropy(x, parts, [0.5, 0.3, 0.2], 0.2, weight=weight,
                                       reduction=reduction)
    got.sum().backward()
    reference_x = logits.double().requires_grad_()
    want = sum(share * prior_reference(reference_x, part, 0.2, None, weight=weight,
                                       reduction=reduction)
               for share, part in zip((0.5, 0.3, 0.2), parts, strict=True))
    want.sum().backward()
    assert_close(got, want, dtype, what="loss")
    assert_close(x.grad, reference_x.grad, dtype, what="gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mixed_equals_pytorch_on_the_dense_mixed_target(dtype):
    torch.manual_seed(6)
    logits, target, _ = make_case((300, 400), dtype, ignore=False)
    partner = target.flip(0)
    x = logits.clone().requires_grad_()
    got = mixed_smoothed_cross_entropy(x, [target, partner], [0.6, 0.4], 0.1)
    got.backward()
    dense = sum(share * smooth_labels(logits.double(), part, 0.1)
                for share, part in ((0.6, target), (0.4, partner)))
    reference_x = logits.double().requires_grad_()
    want = F.cross_entropy(reference_x, dense)
    want.backward()
    assert_close(got, want, dtype, what="loss")
    assert_close(x.grad, reference_x.grad, dtype, what="gradient")


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"prior": torch.tensor([0.5, 0.6, -0.1])}, ValueError, r"prior: expected probabilities >= 0, got minimum -0.1$"),
    ({"prior": torch.tensor([0.5, 0.2, 0.2])}, ValueError, r"prior: expected probabilities summing to 1 \(within .*\), got a sum of 0.9000000"),
    ({"prior": torch.tensor([0.5, 0.5])}, ValueError, r"prior: expected a probability vector of shape \(3,\), got shape \(2,\)$"),
    ({"prior": torch.tensor([1, 0, 0])}, TypeError, r"prior: expected a floating-point probability vector, got dtype torch.int64$"),
    ({"smoothing": torch.tensor([0.1, 0.2])}, ValueError, r"smoothing: expected a float or one value per sample, shape \(4,\), got shape \(2,\)$"),
    ({"smoothing": torch.tensor([0.1, 0.2, 1.5, -0.1])}, ValueError, r"smoothing: expected per-sample values in \[0, 1\], got minimum -0.1 and maximum 1.5$"),
    ({"smoothing": torch.tensor([0.1, 0.2, 0.3, -0.1])}, ValueError, r"smoothing: expected per-sample values in \[0, 1\]; negative smoothing needs allow_negative=True, got minimum -0.1 and maximum 0.3$"),
    ({"smoothing": torch.tensor([0.1, 0.2, 1.5, -0.1]), "allow_negative": True}, ValueError, r"smoothing: expected per-sample finite values <= 1, got minimum -0.1 and maximum 1.5$"),
    ({"smoothing": torch.tensor([1, 0, 0, 0])}, TypeError, r"smoothing: expected a float or a floating-point tensor, got dtype torch.int64$"),
    ({"smoothing": -0.5}, ValueError, r"smoothing: expected a real number in \[0, 1\]; negative smoothing needs allow_negative=True, got -0.5$"),
    ({"smoothing": 1.5, "allow_negative": True}, ValueError, r"smoothing: expected a finite real number <= 1, got 1.5$"),
    ({"allow_negative": 1}, TypeError, r"allow_negative: expected a bool, got 1$"),
])
def test_bad_prior_and_smoothing_one_line_each(kwargs, error, message):
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    options = {"smoothing": 0.1, **kwargs}
    for call in (lambda: smoothed_cross_entropy(logits, target, **options),
                 lambda: mixed_smoothed_cross_entropy(logits, [target, target.flip(0)], [0.5, 0.5],
                                                      **options),
                 lambda: smooth_labels(logits, target, **options)):
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("targets", "shares", "error", "message"), [
    (2, [0.6, 0.3], ValueError, r"shares: expected shares summing to 1 \(within 1e-06\), got a sum of 0.9$"),
    (2, [1.0], ValueError, r"shares: expected 2 shares, one per target, got 1 shares$"),
    (2, [1.5, -0.5], ValueError, r"shares: expected a real number in \[0, 1\], got 1.5$"),
    (2, torch.tensor([0.5, 0.5]), TypeError, r"shares: expected a sequence of floats, got a tensor"),
    (0, [], TypeError, r"targets: expected a non-empty sequence of index tensors, got \[\]$"),
])
def test_bad_mixed_targets_and_shares_one_line_each(targets, shares, error, message):
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(error, match=message):
        mixed_smoothed_cross_entropy(logits, [target] * targets, shares)


def test_mixed_targets_of_different_shapes_are_refused():
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"targets: expected tensors of one shape \(4,\), got shape \(3,\)$"):
        mixed_smoothed_cross_entropy(logits, [torch.zeros(4, dtype=torch.long),
                                              torch.zeros(3, dtype=torch.long)], [0.5, 0.5])


def _penalty_composition(logits, target, smoothing, beta, *, class_dim=1, **options):
    """``smoothed_cross_entropy + confidence_penalty`` of the non-ignored positions, float64."""
    from labelsmooth.functional import confidence_penalty

    reduction = options.get("reduction", "mean")
    loss = smoothed_cross_entropy(logits, target, smoothing, class_dim=class_dim, **options)
    rows = logits.movedim(class_dim, -1).reshape(-1, logits.shape[class_dim])
    valid = target.reshape(-1) != -100
    per_row = confidence_penalty(rows, beta, reduction="none")
    counted = torch.where(valid, per_row, 0.0)
    if reduction == "none":
        return loss + counted.reshape(target.shape)
    return loss + (counted.sum() if reduction == "sum" else counted.sum() / valid.sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("class_dim", [1, -1])
@pytest.mark.parametrize("per_sample", [False, True], ids=["float", "per_sample"])
def test_confidence_penalty_equals_the_composition(reduction, class_dim, per_sample):
    torch.manual_seed(8)
    logits, target, num_classes = make_case((6, 40, 5), torch.float64, ignore=True)
    if class_dim == -1:
        logits = logits.movedim(1, -1).contiguous()
    smoothing = torch.rand(6, dtype=torch.float64) if per_sample else 0.2
    options = dict(weight=torch.rand(num_classes, dtype=torch.float64) + 0.1,
                   prior=_random_prior(num_classes), reduction=reduction)
    leaf = logits.clone().requires_grad_()
    got = smoothed_cross_entropy(leaf, target, smoothing, class_dim=class_dim,
                                 confidence_penalty=0.9, **options)
    got.sum().backward()
    reference_x = logits.clone().requires_grad_()
    want = _penalty_composition(reference_x, target, smoothing, 0.9, class_dim=class_dim,
                                **options)
    want.sum().backward()
    assert_close(got, want, what="loss")
    assert_close(leaf.grad, reference_x.grad, what="gradient")


def test_confidence_penalty_on_mixed_targets_adds_each_components_penalty():
    torch.manual_seed(9)
    logits, target, _ = make_case((7, 300), torch.float32, ignore=True)
    partner = target.flip(0)
    leaf = logits.clone().requires_grad_()
    got = mixed_smoothed_cross_entropy(leaf, [target, partner], [0.6, 0.4], 0.1,
                                       confidence_penalty=1.5)
    got.backward()
    reference_x = logits.double().requires_grad_()
    want = (0.6 * _penalty_composition(reference_x, target, 0.1, 1.5)
            + 0.4 * _penalty_composition(reference_x, partner, 0.1, 1.5))
    want.backward()
    assert_close(got, want, torch.float32, what="loss")
    assert_close(leaf.grad, reference_x.grad, torch.float32, what="gradient")


def test_confidence_penalty_with_dense_targets_counts_every_position():
    from labelsmooth.functional import confidence_penalty

    torch.manual_seed(10)
    logits, target, num_classes = make_case((5, 4), torch.float64, ignore=False)
    dense = F.one_hot(target, num_classes).double()
    got = smoothed_cross_entropy(logits, dense, 0.1, confidence_penalty=0.5)
    want = smoothed_cross_entropy(logits, target, 0.1) + confidence_penalty(logits, 0.5)
    assert_close(got, want)


@pytest.mark.parametrize(("beta", "error", "message"), [
    (float("nan"), ValueError, r"confidence_penalty: expected a finite real number, got nan$"),
    (float("inf"), ValueError, r"confidence_penalty: expected a finite real number, got inf$"),
    ("0.1", TypeError, r"confidence_penalty: expected a finite real number, got '0.1'$"),
    (True, TypeError, r"confidence_penalty: expected a finite real number, got True$"),
    (torch.tensor(0.1), TypeError, r"confidence_penalty: expected a finite real number, got"),
])
def test_bad_confidence_penalty_one_line(beta, error, message):
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    for call in (lambda: smoothed_cross_entropy(logits, target, confidence_penalty=beta),
                 lambda: mixed_smoothed_cross_entropy(logits, [target, target.flip(0)],
                                                      [0.5, 0.5], confidence_penalty=beta)):
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)


def _graph_nodes(loss: torch.Tensor) -> int:
    """The autograd nodes behind ``loss`` (each one a backward kernel call)."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(64, 10), (6, 5, 3, 2)], ids=["rows", "spatial"])
@pytest.mark.parametrize("case", ["plain", "ignored", "ignore_index_in_range", "weight", "out_of_range"])
def test_the_small_problem_loss_is_pytorchs_with_fewer_backward_nodes(reduction, shape, case) -> None:
    """A small CPU problem (one PyTorch's own loss computes faster than the fused pass) equals
    ``F.cross_entropy(..., label_smoothing=s)`` in float64, value and gradient; with no ignored
    position and no class weight it is composed of fewer autograd nodes than PyTorch's (the
    point of it), and otherwise it is PyTorch's loss itself."""
    from labelsmooth._ops import plan

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    options: dict = {"reduction": reduction}
    if case == "ignored":
        target.view(-1)[::3] = -100
    if case == "ignore_index_in_range":
        options["ignore_index"] = 1
    if case == "weight":
        options["weight"] = torch.rand(shape[1], generator=generator, dtype=torch.float64)
    rows = logits.numel() // shape[1]
    assert plan(rows, shape[1], logits.dtype, logits.device).strategy == "native"
    if case == "out_of_range":
        target.view(-1)[4] = shape[1]
        with pytest.raises(ValueError, match=rf"target: expected class indices in \[0, {shape[1]}\)"):
            smoothed_cross_entropy(logits, target, 0.2, **options)
        return
    loss = smoothed_cross_entropy(logits, target, 0.2, **options)
    expected = F.cross_entropy(logits, target, label_smoothing=0.2, **options)
    assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    assert_close(grad, expected_grad)
    if case == "plain":
        assert _graph_nodes(loss) < _graph_nodes(expected)
    else:
        assert _graph_nodes(loss) == _graph_nodes(expected)


def test_the_small_problem_loss_reads_the_targets_range_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One min/max read of the targets per call (the loss needs it to know that no position is
    ignored; the range check takes it from PyTorch's own), not one for the check and one more
    for the loss; a mixed target reads each component once."""
    reads: list[torch.Tensor] = []
    aminmax = torch.aminmax

    def counting(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        reads.append(tensor)
        return aminmax(tensor, *args, **kwargs)

    logits = torch.randn(16, 5, requires_grad=True)
    target, partner = torch.randint(0, 5, (16,)), torch.randint(0, 5, (16,))
    monkeypatch.setattr(torch, "aminmax", counting)
    loss = smoothed_cross_entropy(logits, target, 0.1)
    assert len(reads) == 1
    mixed = mixed_smoothed_cross_entropy(logits, [target, partner], [0.7, 0.3], 0.1)
    assert len(reads) == 3
    monkeypatch.undo()
    assert_close(loss, F.cross_entropy(logits, target, label_smoothing=0.1))
    assert_close(mixed, 0.7 * F.cross_entropy(logits, target, label_smoothing=0.1)
                 + 0.3 * F.cross_entropy(logits, partner, label_smoothing=0.1))
