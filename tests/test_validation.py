"""The shared argument checks of ``labelsmooth._validation``."""

from fractions import Fraction

import pytest
import torch

from labelsmooth._validation import check_finite_real


@pytest.mark.parametrize("value, expected", [(0, 0.0), (-2, -2.0), (0.25, 0.25),
                                             (Fraction(1, 4), 0.25)])
def test_check_finite_real_returns_a_float(value: object, expected: float) -> None:
    result = check_finite_real(value, "beta")
    assert type(result) is float and result == expected


@pytest.mark.parametrize("value, error, message", [
    (float("nan"), ValueError, r"^weight: expected a finite real number, got nan$"),
    (float("-inf"), ValueError, r"^weight: expected a finite real number, got -inf$"),
    (True, TypeError, r"^weight: expected a finite real number, got True$"),
    ("1", TypeError, r"^weight: expected a finite real number, got '1'$"),
    (torch.tensor(1.0), TypeError, r"^weight: expected a finite real number, got a tensor of shape"),
])
def test_check_finite_real_refuses(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_finite_real(value, "weight")
