"""Tests for labelsmooth.functional.linear_cross_entropy against the materialised PyTorch loss."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from labelsmooth import SmoothedLinearCrossEntropyLoss
from labelsmooth.functional import plan_chunk_rows, smoothed_linear_cross_entropy


def make_case(shape: tuple[int, ...], hidden: int, classes: int, dtype: torch.dtype, *,
              ignore: bool = True, bias: bool = True):
    x = torch.randn(*shape, hidden, dtype=torch.float64).to(dtype)
    w = (torch.randn(classes, hidden, dtype=torch.float64) / hidden ** 0.5 * 3).to(dtype)
    b = torch.randn(classes, dtype=torch.float64).to(dtype) if bias else None
    y = torch.randint(classes, shape)
    if ignore and y.numel() > 1:
        y.view(-1)[::4] = -100
    return x, w, b, y


def reference(x, w, b, y, smoothing, reduction, weight=None, ignore_index=-100):
    """F.cross_entropy of the materialised logits (in the inputs' dtype)."""
    logits = F.linear(x, w, b).reshape(-1, w.shape[0])
    weight = None if weight is None else weight.to(x.dtype)
    loss = F.cross_entropy(logits, y.reshape(-1), weight=weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=smoothing)
    return loss.reshape(y.shape) if reduction == "none" else loss


def loss_and_grads(fn, x, w, b, y, grad_out=None, **kwargs):
    leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    bias = leaves[2] if b is not None else None
    loss = fn(leaves[0], leaves[1], bias, y, **kwargs)
    weights = torch.ones_like(loss) if grad_out is None else grad_out
    grads = torch.autograd.grad((loss * weights).sum(), leaves)
    return loss.detach(), grads


def ours(x, w, b, y, smoothing, reduction, **kwargs):
    return smoothed_linear_cross_entropy(x, w, y, smoothing, linear_bias=b, reduction=reduction,
                                         **kwargs)


# Every reduction, weights and ignore_index with smoothing 0.1 on a 3-d input; smoothing 0
# and 1 and a 2-d input on a few of them.
GRID = [((3, 7), *case, 0.1) for case in itertools.product(
    [None, "weight"], [False, True], ["mean", "sum", "none"])]
GRID += [((13,), "weight", True, reduction, s) for reduction in ("mean", "none") for s in (0.0, 1.0)]


@pytest.mark.parametrize(("shape", "weighted", "ignore", "reduction", "smoothing"), GRID)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_three_gradients_match_pytorch(shape, weighted, ignore, reduction, smoothing,
                                                 dtype) -> None:
    x, w, b, y = make_case(shape, 16, 37, dtype, ignore=ignore)
    weight = torch.rand(37, dtype=dtype) + 0.1 if weighted else None
    grad_out = torch.rand(shape, dtype=dtype) if reduction == "none" else torch.tensor(0.7, dtype=dtype)
    # chunk 5 leaves a ragged last chunk; the float64 reference is PyTorch's own loss.
    got, got_grads = loss_and_grads(ours, x, w, b, y, grad_out, smoothing=smoothing,
                                    reduction=reduction, weight=weight, chunk_size=5)
    want, want_grads = loss_and_grads(reference, x.double(), w.double(), b.double(), y,
                                      grad_out.double(), smoothing=smoothing,
                                      reduction=reduction, weight=weight)
    assert got.dtype == dtype and got.shape == want.shape
    assert_close(got, want, dtype, what="loss")
    for name, g, r in zip(("input", "linear_weight", "linear_bias"), got_grads, want_grads, strict=True):
        assert g.dtype == dtype
        assert_close(g, r, dtype, what=f"grad of {name}")


@pytest.mark.parametrize("chunk_size", [1, 4, 12, 13, 100, None])
def test_chunk_boundaries_do_not_change_the_result(chunk_size) -> None:
    x, w, b, y = make_case((12,), 8, 29, torch.float64)
    got, got_grads = loss_and_grads(ours, x, w, b, y, smoothing=0.2, reduction="mean",
                                    chunk_size=chunk_size)
    want, want_grads = loss_and_grads(reference, x, w, b, y, smoothing=0.2, reduction="mean")
    assert_close(got, want)
    for g, r in zip(got_grads, want_grads, strict=True):
        assert_close(g, r)


def test_without_bias_and_with_frozen_weight() -> None:
    x, w, _, y = make_case((2, 9), 8, 31, torch.float64, bias=False)
    xs = x.clone().requires_grad_()
    loss = smoothed_linear_cross_entropy(xs, w, y, 0.1, chunk_size=4)
    loss.backward()
    xr = x.clone().requires_grad_()
    reference(xr, w, None, y, 0.1, "mean").backward()
    assert_close(loss, reference(x, w, None, y, 0.1, "mean"))
    assert_close(xs.grad, xr.grad)


def test_no_grad_gives_the_loss_only() -> None:
    x, w, b, y = make_case((10,), 8, 31, torch.float32)
    with torch.no_grad():
        loss = smoothed_linear_cross_entropy(x.requires_grad_(), w, y, 0.1, linear_bias=b)
    assert not loss.requires_grad
    assert_close(loss, reference(x.detach(), w, b, y, 0.1, "mean"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_against_float64(dtype) -> None:
    x, w, b, y = make_case((64,), 32, 301, dtype)
    got, got_grads = loss_and_grads(ours, x, w, b, y, smoothing=0.1, reduction="mean",
                                    chunk_size=16)
    want, want_grads = loss_and_grads(reference, x.double(), w.double(), b.double(), y,
                                      smoothing=0.1, reduction="mean")
    assert got.dtype == dtype
    # Within one rounding of the float64 loss (half an ulp, plus float32 accumulation).
    ulp = torch.finfo(dtype).eps * 2.0 ** torch.floor(torch.log2(want.abs()))
    assert abs(got.double() - want).item() <= ulp.item()
    relative = (got_grads[1].double() - want_grads[1]).norm() / want_grads[1].norm()
    assert relative.item() <= 1e-2
    for g, r in zip(got_grads, want_grads, strict=True):
        assert g.dtype == dtype
        assert_close(g, r.to(dtype), dtype)


def test_num_items_in_batch_makes_accumulated_micro_batches_exact() -> None:
    x, w, b, y = make_case((20,), 8, 23, torch.float64)
    count = int((y != -100).sum())
    full, full_grads = loss_and_grads(reference, x, w, b, y, smoothing=0.1, reduction="mean")
    halves = [loss_and_grads(ours, x[part], w, b, y[part], smoothing=0.1, reduction="mean",
                             num_items_in_batch=torch.tensor(count))
              for part in (slice(0, 9), slice(9, 20))]
    assert_close(halves[0][0] + halves[1][0], full)
    assert_close(torch.cat([halves[0][1][0], halves[1][1][0]]), full_grads[0])
    for k in (1, 2):
        assert_close(halves[0][1][k] + halves[1][1][k], full_grads[k])
    as_int, _ = loss_and_grads(ours, x, w, b, y, smoothing=0.1, reduction="mean",
                               num_items_in_batch=7)
    assert_close(as_int, reference(x, w, b, y, 0.1, "sum") / 7)


def test_all_ignored_mean_is_nan_with_zero_gradients() -> None:
    x, w, b, _ = make_case((6,), 8, 11, torch.float32)
    y = torch.full((6,), -100)
    loss, grads = loss_and_grads(ours, x, w, b, y, smoothing=0.1, reduction="mean")
    want, want_grads = loss_and_grads(reference, x, w, b, y, smoothing=0.1, reduction="mean")
    assert torch.isnan(loss) and torch.isnan(want)
    for g, r in zip(grads, want_grads, strict=True):
        assert torch.equal(g, torch.zeros_like(g)) and torch.equal(r, torch.zeros_like(r))


def test_second_backward_after_a_scaled_one_is_refused() -> None:
    x, w, _, y = make_case((6,), 8, 11, torch.float32)
    xs = x.requires_grad_()
    loss = smoothed_linear_cross_entropy(xs, w, y, 0.1)
    (2 * loss).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


class _LargestTensor(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_holds_more_than_a_chunk_of_logits() -> None:
    rows, hidden, classes, chunk = 256, 4, 500, 16
    x, w, b, y = make_case((rows,), hidden, classes, torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    recorder = _LargestTensor()
    with recorder:
        smoothed_linear_cross_entropy(x, w, y, 0.1, linear_bias=b, chunk_size=chunk).backward()
    # The largest tensors are one chunk of logits (chunk x C) and the weight's gradient.
    assert recorder.largest == max(chunk * classes, classes * hidden)
    assert recorder.largest < rows * classes // 10


def test_plan_chunk_rows() -> None:
    rows = plan_chunk_rows(4096, 32000, 1024)
    assert rows * 32000 <= (4096 + 32000) * 1024 // 4 and rows % 8 == 0
    assert plan_chunk_rows(10, 100, 4) == 10
    assert plan_chunk_rows(4096, 32000, 1024, share=2) > rows


def test_module_matches_functional() -> None:
    x, w, b, y = make_case((2, 5), 8, 19, torch.float64)
    weight = torch.rand(19, dtype=torch.float64)
    criterion = SmoothedLinearCrossEntropyLoss(0.2, weight=weight, reduction="sum", chunk_size=3)
    got = criterion(x, w, y, linear_bias=b)
    assert_close(got, reference(x, w, b, y, 0.2, "sum", weight=weight))
    assert "weight" in dict(criterion.named_buffers())


BAD = [
    (lambda x, w, y: dict(input=x, linear_weight=w[:, :3], target=y), ValueError,
     r"linear_weight: expected shape \(C, 8\) to match input's last dimension"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y[:3]), ValueError,
     r"target: expected class indices of shape \(6,\)"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, linear_bias=torch.zeros(5)),
     ValueError, r"linear_bias: expected None or a tensor of shape \(11,\), got shape \(5,\)"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y.clone().fill_(11)), ValueError,
     r"target: expected class indices in \[0, 11\) or ignore_index=-100, got 11"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, smoothing=1.5), ValueError,
     r"smoothing: expected a real number in \[0, 1\], got 1.5"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, num_items_in_batch=0), ValueError,
     r"num_items_in_batch: expected an int >= 1, got 0"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y,
                          num_items_in_batch=torch.tensor(-2.0)), ValueError,
     r"num_items_in_batch: expected an int or a 0-d real tensor > 0, got a tensor holding -2"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, reduction="sum",
                          num_items_in_batch=4), ValueError, r"num_items_in_batch: expected None"),
    (lambda x, w, y: dict(input=x, linear_weight=w.double(), target=y), TypeError,
     r"linear_weight: expected input's dtype torch.float32"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y.float()), TypeError,
     r"target: expected an integer tensor"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, chunk_size=0), ValueError,
     r"chunk_size: expected an int >= 1, got 0"),
    (lambda x, w, y: dict(input=x, linear_weight=w, target=y, weight=torch.ones(3)), ValueError,
     r"weight: expected a 1-d tensor of 11 class weights"),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD)
def test_bad_input_gets_one_clear_line(make, error, message) -> None:
    x, w, _, y = make_case((6,), 8, 11, torch.float32, ignore=False)
    with pytest.raises(error, match=message) as info:
        smoothed_linear_cross_entropy(**make(x, w, y))
    assert "\n" not in str(info.value)
