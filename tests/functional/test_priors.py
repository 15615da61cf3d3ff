"""Tests for labelsmooth.functional.priors and the reusable prior check of _validation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from labelsmooth._validation import check_prior
from labelsmooth.functional import class_prior, confusion_prior, similarity_prior


def test_class_prior_hand_computed() -> None:
    targets = torch.tensor([[2, 2, 0], [2, -100, 1]])
    assert_close(class_prior(targets, 4, dtype=torch.float64), torch.tensor([1, 1, 3, 0], dtype=torch.float64) / 5)
    # Lidstone: (n_k + 0.5) / (5 + 0.5 * 4)
    expected = torch.tensor([1.5, 1.5, 3.5, 0.5], dtype=torch.float64) / 7
    got = class_prior(targets, 4, smoothing=0.5, dtype=torch.float64)
    assert_close(got, expected)
    assert (got > 0).all()
    assert class_prior(targets, 4).dtype == torch.float32


def test_class_prior_custom_ignore_index_and_uniform_limit() -> None:
    targets = torch.tensor([0, 3, 3, 1])
    assert_close(class_prior(targets, 4, ignore_index=3), torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert_close(class_prior(targets, 4, smoothing=1e12, dtype=torch.float64),
                 torch.full((4,), 0.25, dtype=torch.float64))
    # every target ignored: the pseudo-counts alone give the uniform prior
    assert_close(class_prior(torch.tensor([-100]), 5, smoothing=1.0), torch.full((5,), 0.2))


def test_class_prior_passes_check_prior() -> None:
    targets = torch.randint(1000, (5000,), generator=torch.Generator().manual_seed(0))
    check_prior(class_prior(targets, 1000, smoothing=0.1), 1000)


def test_similarity_prior_hand_computed() -> None:
    s = torch.tensor([[5.0, 1.0, 0.0], [math.log(3), -7.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    e = math.e
    expected = torch.tensor([[0, e / (e + 1), 1 / (e + 1)], [0.75, 0, 0.25], [0.5, 0.5, 0]], dtype=torch.float64)
    assert_close(similarity_prior(s), expected)
    # T = 0.5 squares the ratios of row 1: 9 : 1
    assert_close(similarity_prior(s, temperature=0.5)[1], torch.tensor([0.9, 0, 0.1], dtype=torch.float64))


def test_similarity_prior_rows_are_priors_and_dtype_kept() -> None:
    emb = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    prior = similarity_prior(emb @ emb.T, temperature=0.1)
    assert prior.dtype == torch.float32 and prior.diagonal().eq(0).all()
    for row in prior:
        check_prior(row, 50)
    assert similarity_prior(torch.randn(4, 4).half()).dtype == torch.float16


def test_confusion_prior_hand_computed() -> None:
    m = torch.tensor([[8, 2, 0], [1, 9, 3], [0, 0, 10]])
    with pytest.raises(ValueError, match=r"^confusion: expected an off-diagonal count in every row .*got row 2 without one$"):
        confusion_prior(m)
    expected = torch.tensor([[0, 3 / 4, 1 / 4], [2 / 6, 0, 4 / 6], [1 / 2, 1 / 2, 0]])
    assert_close(confusion_prior(m, smoothing=1.0), expected)
    assert_close(confusion_prior(m[:2, :2]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: class_prior(torch.tensor([0.0, 1.0]), 2), TypeError, "targets: expected an integer tensor of class indices, got dtype torch.float32"),
    (lambda: class_prior(torch.tensor([0, 5]), 3), ValueError, "targets: expected class indices in [0, 3) or ignore_index=-100, got a target 5"),
    (lambda: class_prior(torch.tensor([0, -1]), 3), ValueError, "targets: expected class indices in [0, 3) or ignore_index=-100, got a target -1"),
    (lambda: class_prior(torch.tensor([-100]), 3), ValueError, "targets: expected at least one target that is not ignore_index"),
    (lambda: class_prior(torch.tensor([0]), 0), ValueError, "num_classes: expected an int >= 1, got 0"),
    (lambda: class_prior(torch.tensor([0]), 2, smoothing=-1), ValueError, "smoothing: expected a finite real number >= 0, got -1"),
    (lambda: class_prior(torch.tensor([0]), 2, dtype=torch.int64), TypeError, "dtype: expected a floating-point torch.dtype"),
    (lambda: similarity_prior(torch.randn(3, 4)), ValueError, "similarity: expected a square (C, C) matrix with C >= 2, got a tensor of shape (3, 4)"),
    (lambda: similarity_prior(torch.randn(1, 1)), ValueError, "similarity: expected a square (C, C) matrix with C >= 2"),
    (lambda: similarity_prior(torch.tensor([[0.0, float("nan")], [0.0, 0.0]])), ValueError, "similarity: expected finite values, got 1 non-finite entries"),
    (lambda: similarity_prior(torch.randn(3, 3), temperature=0), ValueError, "temperature: expected a finite real number > 0, got 0"),
    (lambda: similarity_prior(torch.eye(3, dtype=torch.long)), TypeError, "similarity: expected a floating-point tensor"),
    (lambda: confusion_prior(torch.tensor([[1, -2], [3, 0]])), ValueError, "confusion: expected counts >= 0, got minimum -2"),
])
def test_bad_arguments_give_one_line(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_check_prior_accepts_normalised_vectors_of_every_dtype() -> None:
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        for num_classes in (1, 7, 1000, 50257):
            counts = torch.rand(num_classes, generator=g).to(dtype)
            prior = counts / counts.sum()
            assert check_prior(prior, num_classes) is prior
            check_prior(torch.softmax(torch.randn(num_classes, generator=g), 0).to(dtype), num_classes)


@pytest.mark.parametrize(("prior", "message"), [
    (torch.tensor([0.5, 0.6, -0.1]), "prior: expected probabilities >= 0, got minimum -0.1"),
    (torch.tensor([0.5, 0.5, 0.01]), "prior: expected probabilities summing to 1 (within 3.78e-07), got a sum of 1.01"),
    (torch.tensor([0.5, 0.5]), "prior: expected a probability vector of shape (3,), got shape (2,)"),
    (torch.full((1, 3), 1 / 3), "prior: expected a probability vector of shape (3,), got shape (1, 3)"),
    (torch.tensor([0.5, float("nan"), 0.5]), "prior: expected finite probabilities, got 1 non-finite entries"),
])
def test_check_prior_refuses_in_one_line(prior: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_prior(prior, 3)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_check_prior_type_errors_and_argument_name() -> None:
    with pytest.raises(TypeError, match=r"^prior: expected a tensor of shape \(3,\), got list$"):
        check_prior([1 / 3] * 3, 3)
    with pytest.raises(TypeError, match=r"^label_prior: expected a floating-point probability vector, got dtype torch.int64$"):
        check_prior(torch.tensor([0, 1, 0]), 3, "label_prior")
