"""Tests for labelsmooth.losses: the modules delegate to the functionals and hold their config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

from labelsmooth import (
    SmoothedBCEWithLogitsLoss,
    SmoothedCrossEntropyLoss,
    SoftCrossEntropyLoss,
    smoothed_cross_entropy,
)


def test_smoothed_cross_entropy_loss_is_a_drop_in_for_pytorch() -> None:
    weight = torch.rand(5) + 0.1
    ours = SmoothedCrossEntropyLoss(0.2, weight=weight, ignore_index=3, reduction="sum")
    theirs = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=3, reduction="sum", label_smoothing=0.2)
    x, y = torch.randn(6, 5, 2), torch.randint(5, (6, 2))
    assert_close(ours(x, y), theirs(x, y))
    assert "weight" in dict(ours.named_buffers())


def test_soft_cross_entropy_loss_class_dim() -> None:
    x, y = torch.randn(4, 3, 6), torch.randint(6, (4, 3))
    module = SoftCrossEntropyLoss(class_dim=-1, reduction="none")
    assert_close(module(x, y), F.cross_entropy(x.movedim(-1, 1), y, reduction="none"))


def test_smoothed_bce_loss() -> None:
    x, t = torch.randn(4, 3), torch.randint(2, (4, 3)).float()
    pos_weight = torch.tensor([1.0, 2.0, 0.5])
    module = SmoothedBCEWithLogitsLoss(0.1, pos_weight=pos_weight)
    assert_close(module(x, t), F.binary_cross_entropy_with_logits(x, t * 0.9 + 0.05, pos_weight=pos_weight))


def test_modules_move_with_to() -> None:
    module = SmoothedCrossEntropyLoss(weight=torch.ones(3)).to(torch.float64)
    assert module.weight is not None and module.weight.dtype == torch.float64


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: SmoothedCrossEntropyLoss(1.2), ValueError, r"smoothing: expected a real number in \[0, 1\], got 1.2"),
        (lambda: SmoothedCrossEntropyLoss(reduction="avg"), ValueError, "reduction: expected one of"),
        (lambda: SoftCrossEntropyLoss(ignore_index=1.5), TypeError, "ignore_index: expected an int, got 1.5"),
        (lambda: SmoothedBCEWithLogitsLoss(-0.5), ValueError, "smoothing: expected a real number"),
    ],
)
def test_bad_configuration(factory, error, message) -> None:
    with pytest.raises(error, match=message):
        factory()


def test_smoothed_cross_entropy_loss_inplace_backward_option() -> None:
    head = torch.nn.Linear(4, 6)
    x, y = torch.randn(5, 4), torch.randint(6, (5,))
    SmoothedCrossEntropyLoss(0.1)(head(x), y).backward()
    expected = head.weight.grad.clone()
    head.zero_grad()
    SmoothedCrossEntropyLoss(0.1, inplace_backward=True)(head(x), y).backward()
    assert_close(head.weight.grad, expected)


def test_smoothed_cross_entropy_loss_with_a_prior_and_negative_smoothing() -> None:
    prior = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, -100])
    criterion = SmoothedCrossEntropyLoss(0.3, prior=prior)
    assert "prior" in criterion.state_dict()
    assert torch.equal(criterion(x, y), smoothed_cross_entropy(x, y, 0.3, prior=prior))
    negative = SmoothedCrossEntropyLoss(-0.5, allow_negative=True, reduction="sum")
    assert torch.equal(negative(x, y),
                       smoothed_cross_entropy(x, y, -0.5, allow_negative=True, reduction="sum"))
    with pytest.raises(ValueError, match=r"smoothing: expected a real number in \[0, 1\]; negative smoothing needs allow_negative=True, got -0.5$"):
        SmoothedCrossEntropyLoss(-0.5)
    with pytest.raises(ValueError, match=r"prior: expected a 1-d probability vector of shape \(C,\), "
                                         r"got shape \(1, 4\)$"):
        SmoothedCrossEntropyLoss(0.1, prior=prior[None])
    with pytest.raises(ValueError, match=r"prior: expected probabilities summing to 1"):
        SmoothedCrossEntropyLoss(0.1, prior=prior * 2)


def test_smoothed_cross_entropy_loss_confidence_penalty() -> None:
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, -100])
    criterion = SmoothedCrossEntropyLoss(0.1, confidence_penalty=0.5, reduction="sum")
    assert torch.equal(criterion(x, y),
                       smoothed_cross_entropy(x, y, 0.1, confidence_penalty=0.5, reduction="sum"))
    with pytest.raises(ValueError, match=r"confidence_penalty: expected a finite real number, "
                                         r"got nan$"):
        SmoothedCrossEntropyLoss(0.1, confidence_penalty=float("nan"))
