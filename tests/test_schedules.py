"""Tests for labelsmooth.schedules: linear, cosine and step schedules of the smoothing factor."""

from __future__ import annotations

import math
import pickle

import pytest

from labelsmooth import schedules


def test_linear_hand_computed() -> None:
    s = schedules.linear(0.1, 0.3)
    assert [s(t) for t in (0.0, 0.5, 1.0)] == pytest.approx([0.1, 0.2, 0.3], abs=1e-15)
    assert schedules.linear(0.2, 0.0)(0.75) == pytest.approx(0.05, abs=1e-15)
    assert schedules.linear(0.4, 0.4)(0.3) == 0.4


def test_cosine_hand_computed() -> None:
    s = schedules.cosine(0.2, 0.0)
    # 0.2 * (1 + cos(pi / 4)) / 2 = 0.1 * (1 + sqrt(2) / 2)
    assert s(0.25) == pytest.approx(0.1 * (1 + math.sqrt(2) / 2), abs=1e-15)
    assert [s(t) for t in (0.0, 0.5, 1.0)] == pytest.approx([0.2, 0.1, 0.0], abs=1e-15)
    rising = schedules.cosine(0.0, 0.2)
    assert rising(1 / 3) == pytest.approx(0.2 * (1 - 0.5) / 2, abs=1e-15)  # cos(pi / 3) = 1/2


def test_step_hand_computed_boundaries() -> None:
    s = schedules.step([0.1, 0.05, 0.0], [0.5, 0.75])
    assert [s(t) for t in (0.0, 0.4999, 0.5, 0.7, 0.75, 1.0)] == [0.1, 0.1, 0.05, 0.05, 0.0, 0.0]
    assert schedules.step([0.3], [])(0.9) == 0.3
    assert schedules.step([0.1, 0.2], [1.0])(1.0) == 0.2


def test_values_stay_between_the_given_ends() -> None:
    for make in (schedules.linear, schedules.cosine):
        s = make(0.0, 1.0)
        points = [s(i / 1000) for i in range(1001)]
        assert all(0.0 <= v <= 1.0 for v in points)
        assert points == sorted(points)


def test_negative_smoothing_is_an_explicit_opt_in() -> None:
    with pytest.raises(ValueError, match=r"^start: expected a real number in \[0, 1\], got -0.5$"):
        schedules.linear(-0.5, 0.0)
    s = schedules.linear(-0.5, 0.5, allow_negative=True)
    assert s(0.25) == pytest.approx(-0.25)
    assert schedules.step([-2.0, 0.2], [0.5], allow_negative=True)(0.1) == -2.0
    with pytest.raises(ValueError, match=r"^end: expected a finite real number <= 1, got 1.5$"):
        schedules.cosine(-1.0, 1.5, allow_negative=True)
    with pytest.raises(ValueError, match=r"^start: expected a finite real number <= 1, got -inf$"):
        schedules.linear(float("-inf"), 0.0, allow_negative=True)


def test_schedules_are_comparable_and_picklable() -> None:
    s = schedules.step([0.1, 0.0], [0.5])
    assert pickle.loads(pickle.dumps(s)) == s
    assert schedules.cosine(0.1, 0.0) == schedules.cosine(0.1, 0)
    assert repr(schedules.linear(0.1, 0.0)) == "LinearSchedule(start=0.1, end=0.0)"


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: schedules.linear(1.2, 0.0), ValueError, "start: expected a real number in [0, 1], got 1.2"),
    (lambda: schedules.cosine(0.1, float("nan")), ValueError, "end: expected a real number in [0, 1], got nan"),
    (lambda: schedules.linear("0.1", 0.0), TypeError, "start: expected a real number in [0, 1], got '0.1'"),
    (lambda: schedules.linear(True, 0.0), TypeError, "start: expected a real number in [0, 1], got True"),
    (lambda: schedules.step([0.1, 0.2, 0.3], [0.6, 0.4]), ValueError, "milestones: expected strictly increasing progress points, got (0.6, 0.4)"),
    (lambda: schedules.step([0.1, 0.2, 0.3], [0.5, 0.5]), ValueError, "milestones: expected strictly increasing progress points, got (0.5, 0.5)"),
    (lambda: schedules.step([0.1, 0.2], [0.5, 0.7]), ValueError, "milestones: expected 1 milestones (one fewer than values), got 2"),
    (lambda: schedules.step([0.1, 0.2], [0.0]), ValueError, "milestones[0]: expected a real number in (0, 1], got 0.0"),
    (lambda: schedules.step([0.1, 0.2], [1.5]), ValueError, "milestones[0]: expected a real number in (0, 1], got 1.5"),
    (lambda: schedules.step([0.1, 2.0], [0.5]), ValueError, "values[1]: expected a real number in [0, 1], got 2.0"),
    (lambda: schedules.step([], []), TypeError, "values: expected a non-empty sequence of real numbers, got []"),
    (lambda: schedules.step(0.1, []), TypeError, "values: expected a non-empty sequence of real numbers, got 0.1"),
    (lambda: schedules.linear(0.1, 0.0)(1.5), ValueError, "progress: expected a real number in [0, 1], got 1.5"),
    (lambda: schedules.cosine(0.1, 0.0)(-0.1), ValueError, "progress: expected a real number in [0, 1], got -0.1"),
    (lambda: schedules.step([0.1], [])(float("nan")), ValueError, "progress: expected a real number in [0, 1], got nan"),
    (lambda: schedules.step([0.1], [])(None), TypeError, "progress: expected a real number in [0, 1], got None"),
])
def test_bad_arguments_give_one_line(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message
