"""Durations are parsed from Composer's strings; bad ones raise naming the argument."""

from __future__ import annotations

import pytest

from labelsmooth.trainer import Duration, Timestamp, TimeUnit


@pytest.mark.parametrize(("text", "value", "unit"), [
    ("10ep", 10, TimeUnit.EPOCH), ("500ba", 500, TimeUnit.BATCH), (" 3 ep ", 3, TimeUnit.EPOCH),
    (7, 7, TimeUnit.EPOCH),
])
def test_parse(text: object, value: int, unit: TimeUnit) -> None:
    assert Duration.parse(text) == Duration(value, unit)


@pytest.mark.parametrize("text", ["10 epochs", "ep", "1.5ep", "10tok", "", "-3ep", "10EP"])
def test_unknown_duration_string_raises(text: str) -> None:
    with pytest.raises(ValueError, match=r"max_duration: expected .*'10ep' or '500ba', got"):
        Duration.parse(text)


@pytest.mark.parametrize("value", [0, "0ba", -1])
def test_non_positive_duration_raises(value: object) -> None:
    with pytest.raises(ValueError, match="max_duration: expected a positive duration"):
        Duration.parse(value)


@pytest.mark.parametrize("value", [1.0, True, None, [1]])
def test_wrong_type_raises(value: object) -> None:
    with pytest.raises(TypeError, match="eval_interval: expected an int number of epochs"):
        Duration.parse(value, "eval_interval")


def test_timestamp_reached_and_intervals() -> None:
    stamp = Timestamp(epoch=2, batch=20)
    assert stamp.reached(Duration.parse("2ep")) and not stamp.reached(Duration.parse("3ep"))
    assert stamp.reached(Duration.parse("20ba")) and not stamp.reached(Duration.parse("21ba"))
    assert stamp.is_multiple_of(Duration.parse("5ba")) and not stamp.is_multiple_of(Duration.parse("3ba"))
    assert not Timestamp().is_multiple_of(Duration.parse("1ep"))
    assert Timestamp.from_state_dict(stamp.state_dict()) == stamp


def test_timestamps_count_batches_and_epochs_as_composers_do() -> None:
    """Two epochs of three batches of four: the in-epoch counters restart at each epoch, the
    totals run on (by hand)."""
    stamp = Timestamp()
    for _ in range(2):
        for _ in range(3):
            stamp = stamp.to_next_batch(4)
        assert (stamp.batch_in_epoch, stamp.sample_in_epoch) == (3, 12)
        stamp = stamp.to_next_epoch()
    assert stamp == Timestamp(epoch=2, batch=6, sample=24, batch_in_epoch=0, sample_in_epoch=0)
