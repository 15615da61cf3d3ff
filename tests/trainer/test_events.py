"""Event names and values follow Composer's; after events are those with a before partner."""

from __future__ import annotations

from labelsmooth.trainer import Event

# Composer's names, written out by hand: each value is the lower-case name.
COMPOSER_EVENTS = [
    "INIT", "FIT_START", "EPOCH_START", "BEFORE_DATALOADER", "AFTER_DATALOADER", "BATCH_START",
    "BEFORE_FORWARD", "AFTER_FORWARD", "BEFORE_LOSS", "AFTER_LOSS", "BEFORE_BACKWARD",
    "AFTER_BACKWARD", "BATCH_END", "EPOCH_END", "EVAL_START", "EVAL_BATCH_START",
    "EVAL_BEFORE_FORWARD", "EVAL_AFTER_FORWARD", "EVAL_BATCH_END", "EVAL_END", "FIT_END",
]


def test_names_and_values_match_composer() -> None:
    for name in COMPOSER_EVENTS:
        assert Event[name].value == name.lower()
        assert Event[name] == name.lower()
        assert str(Event[name]) == name.lower()


def test_every_after_event_has_a_before_partner() -> None:
    after = {e for e in Event if e.is_after_event}
    assert after == {Event.AFTER_DATALOADER, Event.AFTER_FORWARD, Event.AFTER_LOSS,
                     Event.AFTER_BACKWARD, Event.EVAL_AFTER_FORWARD}
    for event in after:
        assert Event(event.value.replace("after", "before")).is_before_event


def test_eval_events() -> None:
    assert {e for e in Event if e.is_eval} == {
        Event.EVAL_START, Event.EVAL_BATCH_START, Event.EVAL_BEFORE_FORWARD,
        Event.EVAL_AFTER_FORWARD, Event.EVAL_BATCH_END, Event.EVAL_END}
