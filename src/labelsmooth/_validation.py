"""Argument checks at the public boundary, with one message template.

Every public function validates what the user gave it here, so that a mistake surfaces as a
``ValueError`` or ``TypeError`` naming the argument, what was expected and what was received,
rather than as an ``assert``, a silent wrong answer or a device-side crash.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NoReturn

import torch

__all__ = [
    "check_bool",
    "check_class_dim",
    "check_finite_real",
    "check_floating",
    "check_index_dtype",
    "check_int",
    "check_prior",
    "check_reduction",
    "check_sample_smoothing",
    "check_shares",
    "check_smoothing",
    "check_unit_interval",
    "describe",
    "fail",
    "prior_tolerance",
    "shape_str",
]

REDUCTIONS = ("none", "mean", "sum")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def fail(argument: str, expected: str, received: Any, *, error: type[Exception] = ValueError) -> NoReturn:
    """Raise ``error`` with the project's one message template.

    ``received`` is shown as is when it is a string (a description such as ``"dtype
    torch.int64"``; pass ``repr(value)`` to quote a user's string), as shape and dtype when it
    is a tensor, and with ``repr`` otherwise.
    """
    shown = received if isinstance(received, str) else _describe(received)
    raise error(f"{argument}: expected {expected}, got {shown}")


def describe(value: Any) -> str:
    """A short human description of ``value`` for error messages (shape and dtype for tensors)."""
    return _describe(value)


def check_unit_interval(value: Any, argument: str) -> float:
    """Return ``value`` as a float in [0, 1]; raise for anything else (NaN, bool, tensor...).

    Any real number is accepted (``int``, ``float``, numpy scalars, ``Fraction``); a tensor is
    not, since reading its value would be a host-device synchronisation on an accelerator.
    """
    # A plain float or int (the usual case, checked on every step) skips the slower ABC check.
    if type(value) is not float and type(value) is not int and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        shown = repr(value) if isinstance(value, str) else value
        fail(argument, "a real number in [0, 1]", shown, error=TypeError)
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also False for NaN
        fail(argument, "a real number in [0, 1]", value)
    return number


def check_finite_real(value: Any, argument: str) -> float:
    """Return ``value`` as a finite float (a weight such as the confidence penalty's ``beta``);
    raise for anything else (NaN, infinity, bool, tensor...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(argument, "a finite real number", repr(value) if isinstance(value, str) else value,
             error=TypeError)
    number = float(value)
    if not math.isfinite(number):
        fail(argument, "a finite real number", value)
    return number


def check_smoothing(smoothing: Any, argument: str = "smoothing", *,
                    allow_negative: bool = False) -> float:
    """A label smoothing ``s``: a real number in [0, 1] (see :func:`check_unit_interval`), or
    any finite real number ``<= 1`` with ``allow_negative=True`` (negative label smoothing)."""
    if type(smoothing) is float and 0.0 <= smoothing <= 1.0 and type(allow_negative) is bool:
        return smoothing  # the usual case, checked on every step: valid either way
    check_bool(allow_negative, "allow_negative")
    if not allow_negative:
        try:
            return check_unit_interval(smoothing, argument)
        except ValueError:  # a real number outside [0, 1]; a finite negative one gets a hint
            if not -math.inf < float(smoothing) < 0.0:
                raise
        fail(argument, "a real number in [0, 1]; negative smoothing needs allow_negative=True",
             smoothing)
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real):
        shown = repr(smoothing) if isinstance(smoothing, str) else smoothing
        fail(argument, "a real number <= 1", shown, error=TypeError)
    number = float(smoothing)
    if not math.isfinite(number) or number > 1.0:
        fail(argument, "a finite real number <= 1", smoothing)
    return number


def check_bool(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        fail(argument, "a bool", describe(value), error=TypeError)
    return value


def check_sample_smoothing(smoothing: torch.Tensor, shape: tuple[int, ...], *,
                           allow_negative: bool, validate: bool) -> torch.Tensor:
    """Per-sample smoothing: a floating tensor of ``shape``, values in [0, 1] (``<= 1`` with
    ``allow_negative=True``). The range check reads the values (a host synchronisation on an
    accelerator), so it runs only when ``validate`` is true."""
    if not smoothing.is_floating_point():
        fail("smoothing", "a float or a floating-point tensor", f"dtype {smoothing.dtype}",
             error=TypeError)
    if tuple(smoothing.shape) != tuple(shape):
        fail("smoothing", f"a float or one value per sample, shape {shape_str(shape)}",
             f"shape {shape_str(smoothing.shape)}")
    if validate and smoothing.numel():
        values = smoothing.detach().to("cpu", torch.float64)
        low, high = values.min().item(), values.max().item()
        in_range = (bool(torch.isfinite(values).all()) and high <= 1.0
                    and (allow_negative or low >= 0.0))
        if not in_range:
            expected = "finite values <= 1" if allow_negative else "values in [0, 1]"
            if not allow_negative and low < 0.0 and high <= 1.0 and math.isfinite(low):
                expected += "; negative smoothing needs allow_negative=True"
            fail("smoothing", f"per-sample {expected}", f"minimum {low:.6g} and maximum {high:.6g}")
    return smoothing


def check_shares(shares: Any, count: int) -> tuple[float, ...]:
    """Mixing shares: ``count`` real numbers in [0, 1] that sum to 1 (within 1e-6)."""
    if isinstance(shares, torch.Tensor) or not isinstance(shares, Sequence):
        fail("shares", "a sequence of floats", describe(shares), error=TypeError)
    if len(shares) != count:
        fail("shares", f"{count} shares, one per target", f"{len(shares)} shares")
    values = tuple(check_unit_interval(share, "shares") for share in shares)
    if abs(math.fsum(values) - 1.0) > 1e-6:
        fail("shares", "shares summing to 1 (within 1e-06)", f"a sum of {math.fsum(values):.10g}")
    return values


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        fail("reduction", f"one of {REDUCTIONS}", repr(reduction))
    return str(reduction)


def check_floating(tensor: Any, argument: str) -> torch.Tensor:
    """``tensor`` must be a floating-point tensor (logits)."""
    if not isinstance(tensor, torch.Tensor):
        fail(argument, "a torch.Tensor", type(tensor).__name__, error=TypeError)
    if not tensor.is_floating_point():
        fail(argument, "a floating-point tensor (float16, bfloat16, float32 or float64)",
             f"dtype {tensor.dtype}", error=TypeError)
    return tensor


def check_int(value: Any, argument: str, *, minimum: int | None = None) -> int:
    """``value`` must be an integer (not a bool), at least ``minimum`` when given.

    Any integral number is accepted (``int``, numpy integers) and returned as a Python ``int``.
    """
    if type(value) is not int:  # a plain int skips the slower ABC check
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            fail(argument, "an int", value, error=TypeError)
        value = int(value)
    if minimum is not None and value < minimum:
        fail(argument, f"an int >= {minimum}", value)
    return value


def check_index_dtype(tensor: torch.Tensor | torch.dtype, argument: str) -> None:
    """Index targets must be an integer (not boolean) tensor (given, or its dtype)."""
    dtype = tensor if isinstance(tensor, torch.dtype) else tensor.dtype
    if dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
        fail(argument, "an integer tensor of class indices", f"dtype {dtype}", error=TypeError)


def check_class_dim(class_dim: Any, ndim: int, argument: str = "class_dim") -> int:
    """Normalise ``class_dim`` (negative allowed) against a tensor of ``ndim`` dimensions.

    A 1-d tensor is an unbatched ``(C,)`` input, as in ``torch.nn.functional.cross_entropy``: its
    only dimension is the class dimension, so the default ``class_dim=1`` resolves to 0 there.
    """
    class_dim = check_int(class_dim, argument)
    if ndim == 1 and class_dim == 1:
        return 0
    if not -ndim <= class_dim < ndim:
        fail(argument, f"a dimension in [{-ndim}, {ndim - 1}] for a {ndim}-d input", class_dim)
    return class_dim % ndim


def shape_str(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def prior_tolerance(dtype: torch.dtype, num_classes: int) -> float:
    """How far from 1 the sum of a ``(num_classes,)`` probability vector of ``dtype`` may be.

    ``2 * eps * max(1, log2(C))`` with ``eps`` the machine epsilon of ``dtype``, or of float32 if
    that is larger (a prior normalised in float32 and then cast to float64 is accepted): rounding
    each entry moves the sum by at most ``eps / 2``, and a normalisation ``p = c / c.sum()`` adds
    an error that grows with the depth of the summation tree, ``log2(C)``.
    """
    eps = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)
    return 2.0 * eps * max(1.0, math.log2(max(num_classes, 1)))


def check_prior(prior: Any, num_classes: int, argument: str = "prior", *,
                check_values: bool = True) -> torch.Tensor:
    """``prior`` must be a ``(num_classes,)`` probability vector: floating, finite, >= 0, summing
    to 1 within :func:`prior_tolerance`. Reads the values (a host synchronisation on an
    accelerator), so call it once per prior, not per step; ``check_values=False`` checks only the
    type, dtype and shape.
    """
    if not isinstance(prior, torch.Tensor):
        fail(argument, f"a tensor of shape ({num_classes},)", type(prior).__name__, error=TypeError)
    if not prior.is_floating_point():
        fail(argument, "a floating-point probability vector", f"dtype {prior.dtype}", error=TypeError)
    if tuple(prior.shape) != (num_classes,):
        fail(argument, f"a probability vector of shape ({num_classes},)", f"shape {tuple(prior.shape)}")
    if not check_values:
        return prior
    values = prior.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(values).all()):
        fail(argument, "finite probabilities", f"{int((~torch.isfinite(values)).sum())} non-finite entries")
    if bool((values < 0).any()):
        fail(argument, "probabilities >= 0", f"minimum {values.min().item():.6g}")
    total = values.sum().item()
    tolerance = prior_tolerance(prior.dtype, num_classes)
    if abs(total - 1.0) > tolerance:
        fail(argument, f"probabilities summing to 1 (within {tolerance:.3g})", f"a sum of {total:.10g}")
    return prior
