"""The Engine runs algorithms in order, reversed on after events (FILO), then the callbacks."""

from __future__ import annotations

import pytest
import torch

from labelsmooth.trainer import Algorithm, Callback, Engine, Event, State


class Recorder(Algorithm):
    def __init__(self, name: str, log: list[tuple[str, str]], events: tuple[Event, ...]) -> None:
        self.name, self.log, self.events = name, log, events

    def match(self, event: Event, state: State) -> bool:
        return event in self.events

    def apply(self, event: Event, state: State, logger: object) -> None:
        self.log.append((self.name, event.value))


class RecordingCallback(Callback):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log

    def before_loss(self, state: State, logger: object) -> None:
        self.log.append(("callback", "before_loss"))

    def after_loss(self, state: State, logger: object) -> None:
        self.log.append(("callback", "after_loss"))


def _engine(log: list[tuple[str, str]]) -> Engine:
    events = (Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.BATCH_END)
    algorithms = [Recorder("first", log, events), Recorder("second", log, events)]
    return Engine(State(torch.nn.Linear(1, 1), algorithms=algorithms,
                        callbacks=[RecordingCallback(log)]))


def test_after_events_run_algorithms_in_reverse_then_callbacks() -> None:
    log: list[tuple[str, str]] = []
    engine = _engine(log)
    engine.run_event(Event.BEFORE_LOSS)
    engine.run_event(Event.AFTER_LOSS)
    engine.run_event(Event.BATCH_END)
    assert log == [
        ("first", "before_loss"), ("second", "before_loss"), ("callback", "before_loss"),
        ("second", "after_loss"), ("first", "after_loss"), ("callback", "after_loss"),
        ("first", "batch_end"), ("second", "batch_end"),
    ]


def test_only_matching_algorithms_run() -> None:
    log: list[tuple[str, str]] = []
    engine = _engine(log)
    assert engine.run_event("fit_start") == []
    assert log == []


def test_run_around_fires_the_after_event_when_the_block_raises() -> None:
    log: list[tuple[str, str]] = []
    engine = _engine(log)
    with pytest.raises(RuntimeError, match="loss failed"), \
            engine.run_around(Event.BEFORE_LOSS, Event.AFTER_LOSS):
        raise RuntimeError("loss failed")
    assert [e for _, e in log].count("after_loss") == 3


def test_unknown_event_raises() -> None:
    with pytest.raises(ValueError, match="not_an_event"):
        _engine([]).run_event("not_an_event")


def test_callback_without_a_handler_is_skipped() -> None:
    log: list[tuple[str, str]] = []
    RecordingCallback(log).run_event(Event.FIT_END, State(torch.nn.Linear(1, 1)), None)
    assert log == []


def test_an_event_with_no_algorithm_and_no_callback_runs_nothing_and_still_checks_its_name() -> None:
    engine = Engine(State(torch.nn.Linear(1, 1)))
    assert engine.run_event(Event.BATCH_END) == [] and engine.run_event("after_loss") == []
    with pytest.raises(ValueError, match="not_an_event"):
        engine.run_event("not_an_event")


def test_a_callback_gets_the_events_it_listens_to_with_the_trainers_state_and_logger() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from labelsmooth.trainer import Trainer

    seen: list[tuple[str, object, object]] = []

    class BatchEnd(Callback):
        def batch_end(self, state: State, logger: object) -> None:
            seen.append(("batch_end", state, logger))

    log: list[tuple[str, str]] = []
    data = DataLoader(TensorDataset(torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])), batch_size=2)
    trainer = Trainer(torch.nn.Linear(2, 2), data, max_duration="1ep", device="cpu",
                      progress_bar=False, callbacks=[BatchEnd()],
                      algorithms=[Recorder("loss", log, (Event.BEFORE_LOSS, Event.AFTER_LOSS))])
    trainer.fit()
    assert seen == [("batch_end", trainer.state, trainer.logger)] * 3
    assert log == [("loss", "before_loss"), ("loss", "after_loss")] * 3
