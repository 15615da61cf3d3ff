"""Tests for labelsmooth.functional.penalties: entropy and the confidence penalty."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from labelsmooth.functional import confidence_penalty, entropy


def reference_penalty(logits: torch.Tensor, beta: float, class_dim: int = 1) -> torch.Tensor:
    """``beta * sum_k p_k log p_k`` in float64, written from the definition (no log_softmax)."""
    z = logits.double().movedim(class_dim, -1)
    p = z.exp() / z.exp().sum(-1, keepdim=True)
    return beta * (p * p.log()).sum(-1)


def test_hand_computed() -> None:
    # p = (e^2, 1, 1) / (e^2 + 2): H = log(e^2 + 2) - 2 e^2 / (e^2 + 2).
    total = math.exp(2) + 2
    expected = -0.5 * (math.log(total) - 2 * math.exp(2) / total)
    got = confidence_penalty(torch.tensor([[2.0, 0.0, 0.0]]), 0.5)
    assert abs(got.item() - expected) < 1e-6
    assert_close(entropy(torch.zeros(3, 7)), torch.full((3,), math.log(7)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_float64_formula(dtype: torch.dtype, reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(6, 11, 4, generator=g)).to(dtype)
    expected = reference_penalty(logits, 0.7)
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]
    got = confidence_penalty(logits, 0.7, reduction=reduction)
    assert got.dtype == dtype
    assert_close(got, expected, dtype)


def test_half_precision_large_logits_stay_finite() -> None:
    # exp(100) overflows float16 (and float32 beyond 88): the entropy must come from log_softmax.
    logits = torch.tensor([[100.0, 0.0, -100.0], [60000.0, 60000.0, 0.0]], dtype=torch.float16)
    got = entropy(logits)
    assert torch.isfinite(got).all()
    assert_close(got, torch.tensor([0.0, math.log(2)], dtype=torch.float16))


def test_class_dim_moves_and_1d_input() -> None:
    logits = torch.randn(3, 5, 7, dtype=torch.float64)
    moved = logits.movedim(1, -1)
    assert_close(confidence_penalty(moved, 2.0, class_dim=-1, reduction="none"),
                 confidence_penalty(logits, 2.0, reduction="none"))
    assert_close(confidence_penalty(logits[0, :, 0], 2.0), reference_penalty(logits[0, :, 0].unsqueeze(0), 2.0)[0])


def test_masked_class_contributes_nothing_and_gradient_is_finite() -> None:
    logits = torch.tensor([[1.0, float("-inf"), 0.5]], requires_grad=True)
    confidence_penalty(logits, 1.0).backward()
    expected = reference_penalty(torch.tensor([[1.0, 0.5]]), 1.0)
    assert_close(confidence_penalty(logits.detach(), 1.0), expected[0])
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1] == 0


def test_gradcheck_and_gradient_formula() -> None:
    logits = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: confidence_penalty(z, 0.3, reduction="sum"), (logits,))
    # d/dz_k [beta sum_j p_j log p_j] = beta p_k (log p_k + H)
    (grad,) = torch.autograd.grad(confidence_penalty(logits, 0.3, reduction="sum"), logits)
    p = logits.detach().softmax(1)
    h = -(p * p.log()).sum(1, keepdim=True)
    assert_close(grad, 0.3 * p * (p.log() + h))


def test_beta_zero_is_zero_and_sign_flips() -> None:
    logits = torch.randn(5, 4)
    assert confidence_penalty(logits, 0.0).item() == 0.0
    assert_close(confidence_penalty(logits, -1.0), -confidence_penalty(logits, 1.0))
    assert confidence_penalty(logits, 1.0).item() <= 0


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"beta": float("nan")}, ValueError, "beta: expected a finite real number, got nan"),
    ({"beta": True}, TypeError, "beta: expected a finite real number, got True"),
    ({"beta": torch.tensor(0.1)}, TypeError, "beta: expected a finite real number, got a tensor"),
    ({"beta": 0.1, "reduction": "avg"}, ValueError, "reduction: expected one of"),
    ({"beta": 0.1, "class_dim": 2}, ValueError, "class_dim: expected a dimension in [-2, 1]"),
])
def test_bad_arguments_give_one_line(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        confidence_penalty(torch.randn(3, 4), **kwargs)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_integer_logits_refused() -> None:
    with pytest.raises(TypeError, match=r"^logits: expected a floating-point tensor"):
        confidence_penalty(torch.ones(2, 3, dtype=torch.long), 0.1)
