r"""Schedules for the smoothing factor: ``s`` as a function of training progress in ``[0, 1]``.

Each factory returns a small frozen object, callable with the fraction of training done
(``0`` at the first step, ``1`` at the last) and returning ``s`` as a Python float:

* :func:`linear`: ``s(t) = a + (b - a) t``;
* :func:`cosine`: ``s(t) = b + (a - b) (1 + cos(pi t)) / 2``, flat at both ends;
* :func:`step`: piecewise constant, ``values[i]`` from ``milestones[i - 1]`` on.

Values are checked once, when the schedule is made: every value a schedule can return lies
between its given values, so a schedule whose values are in ``[0, 1]`` never returns anything
else. Negative smoothing (Wei et al. 2022) is an explicit opt-in, ``allow_negative=True``,
which admits values in ``[-inf, 1]``.

Example:
    >>> from labelsmooth import schedules
    >>> s = schedules.cosine(0.2, 0.0)
    >>> [round(s(t), 4) for t in (0.0, 0.5, 1.0)]
    [0.2, 0.1, 0.0]

References:
    Loshchilov and Hutter (2017), "SGDR: stochastic gradient descent with warm restarts", ICLR
    (the cosine shape). Wei, Liu, Liu, Liu, Zhang and Liu (2022), "To smooth or not? When label
    smoothing meets noisy labels", ICML (negative smoothing).
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from labelsmooth._validation import fail

__all__ = ["CosineSchedule", "LinearSchedule", "StepSchedule", "cosine", "linear", "step"]


def _check_value(value: object, argument: str, allow_negative: bool) -> float:
    expected = "a finite real number <= 1" if allow_negative else "a real number in [0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(argument, expected, repr(value) if isinstance(value, str) else value, error=TypeError)
    number = float(value)
    low = -math.inf if allow_negative else 0.0
    if math.isnan(number) or not low <= number <= 1.0 or math.isinf(number):
        fail(argument, expected, value)
    return number


def _check_progress(progress: object) -> float:
    if isinstance(progress, bool) or not isinstance(progress, numbers.Real):
        fail("progress", "a real number in [0, 1]", repr(progress) if isinstance(progress, str) else progress,
             error=TypeError)
    value = float(progress)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        fail("progress", "a real number in [0, 1]", progress)
    return value


@dataclass(frozen=True)
class LinearSchedule:
    """``s(t) = start + (end - start) t``; made by :func:`linear`."""

    start: float
    end: float

    def __call__(self, progress: float) -> float:
        t = _check_progress(progress)
        return self.start + (self.end - self.start) * t


@dataclass(frozen=True)
class CosineSchedule:
    """``s(t) = end + (start - end) (1 + cos(pi t)) / 2``; made by :func:`cosine`."""

    start: float
    end: float

    def __call__(self, progress: float) -> float:
        t = _check_progress(progress)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class StepSchedule:
    """``values[i]`` for progress in ``[milestones[i - 1], milestones[i])``; made by :func:`step`."""

    values: tuple[float, ...]
    milestones: tuple[float, ...]

    def __call__(self, progress: float) -> float:
        t = _check_progress(progress)
        return self.values[bisect.bisect_right(self.milestones, t)]


def linear(start: float, end: float, *, allow_negative: bool = False) -> LinearSchedule:
    r"""Smoothing that moves linearly from ``start`` (progress 0) to ``end`` (progress 1).

    .. math::
        s(t) = s_0 + (s_1 - s_0)\, t, \qquad t \in [0, 1]

    Args:
        start: ``s`` at progress 0, in ``[0, 1]`` (``<= 1`` with ``allow_negative``).
        end: ``s`` at progress 1, same range.
        allow_negative: admit negative smoothing. Default: False.

    Returns:
        A :class:`LinearSchedule`, called with the progress ``t`` in ``[0, 1]``.

    Example:
        >>> linear(0.0, 0.2)(0.25)
        0.05
    """
    return LinearSchedule(
        _check_value(start, "start", allow_negative), _check_value(end, "end", allow_negative)
    )


def cosine(start: float, end: float, *, allow_negative: bool = False) -> CosineSchedule:
    r"""Smoothing that moves from ``start`` to ``end`` along half a cosine (flat at both ends).

    .. math::
        s(t) = s_1 + (s_0 - s_1)\, \frac{1 + \cos(\pi t)}{2}, \qquad t \in [0, 1]

    Args:
        start: ``s`` at progress 0, in ``[0, 1]`` (``<= 1`` with ``allow_negative``).
        end: ``s`` at progress 1, same range.
        allow_negative: admit negative smoothing. Default: False.

    Returns:
        A :class:`CosineSchedule`, called with the progress ``t`` in ``[0, 1]``.

    Example:
        >>> round(cosine(0.0, 0.2)(0.25), 6)  # 0.2 * (1 - cos(pi / 4)) / 2
        0.029289

    References:
        Loshchilov and Hutter (2017), "SGDR: stochastic gradient descent with warm restarts".
    """
    return CosineSchedule(
        _check_value(start, "start", allow_negative), _check_value(end, "end", allow_negative)
    )


def step(
    values: Sequence[float], milestones: Sequence[float], *, allow_negative: bool = False
) -> StepSchedule:
    r"""Piecewise-constant smoothing: ``values[0]`` until ``milestones[0]``, then ``values[1]``...

    .. math::
        s(t) = v_i \quad \text{for } m_{i-1} \le t < m_i \quad (m_{-1} = 0,\ m_{n} = \infty)

    Args:
        values: ``n + 1`` values, each in ``[0, 1]`` (``<= 1`` with ``allow_negative``).
        milestones: ``n`` strictly increasing progress points in ``(0, 1]``; at a milestone the
            new value applies.
        allow_negative: admit negative smoothing. Default: False.

    Returns:
        A :class:`StepSchedule`, called with the progress ``t`` in ``[0, 1]``.

    Example:
        >>> s = step([0.1, 0.05, 0.0], [0.5, 0.75])
        >>> [s(t) for t in (0.0, 0.5, 0.74, 0.75, 1.0)]
        [0.1, 0.05, 0.05, 0.0, 0.0]
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        fail("values", "a non-empty sequence of real numbers", values, error=TypeError)
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        fail("milestones", "a sequence of real numbers", milestones, error=TypeError)
    if len(milestones) != len(values) - 1:
        fail("milestones", f"{len(values) - 1} milestones (one fewer than values)", f"{len(milestones)}")
    checked = tuple(_check_value(v, f"values[{i}]", allow_negative) for i, v in enumerate(values))
    points: list[float] = []
    for i, milestone in enumerate(milestones):
        if isinstance(milestone, bool) or not isinstance(milestone, numbers.Real):
            fail(f"milestones[{i}]", "a real number in (0, 1]", milestone, error=TypeError)
        point = float(milestone)
        if math.isnan(point) or not 0.0 < point <= 1.0:
            fail(f"milestones[{i}]", "a real number in (0, 1]", milestone)
        if points and point <= points[-1]:
            fail("milestones", "strictly increasing progress points", tuple(milestones))
        points.append(point)
    return StepSchedule(checked, tuple(points))
