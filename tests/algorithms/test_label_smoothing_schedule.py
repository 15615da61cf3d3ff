"""LabelSmoothing with a schedule: the value at every step and in the log, the loss it gives,
the refusals (a value outside [0, 1] or NaN, a run of unknown length), no recompilation of a
compiled model as s changes, a checkpoint keeps the schedule."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer, schedules
from labelsmooth.algorithms.label_smoothing import schedule_progress
from labelsmooth.trainer import Callback, Event, State, TrainingTargets


class _Watch(Callback):
    """At each step: the smoothing in the batch's training targets and the loss PyTorch gives
    for it (computed before the Trainer's loss, from the same logits)."""

    def __init__(self) -> None:
        self.smoothing: list[float] = []
        self.expected: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def before_loss(self, state: State, logger: Any) -> None:
        targets = state.batch[1]
        assert isinstance(targets, TrainingTargets)
        self.smoothing.append(targets.smoothing)
        self.expected.append(F.cross_entropy(state.outputs.detach(), targets.targets,
                                             label_smoothing=targets.smoothing))

    def after_loss(self, state: State, logger: Any) -> None:
        if len(self.losses) < len(self.expected):  # not when the loss (or BEFORE_LOSS) raised
            self.losses.append(state.loss.detach())  # type: ignore[union-attr]


def _fit(algorithm: LabelSmoothing, *, model: torch.nn.Module | None = None,
         loader: Any = None, duration: str = "2ep") -> tuple[Trainer, _Watch]:
    watch = _Watch()
    trainer = Trainer(model if model is not None else make_model(),
                      loader if loader is not None else make_loader(make_dataset(32), 8),
                      max_duration=duration, algorithms=[algorithm], callbacks=[watch],
                      device="cpu", progress_bar=False)
    trainer.fit()
    return trainer, watch


def test_progress_runs_from_zero_at_the_first_step_to_one_at_the_last() -> None:
    assert [schedule_progress(k, 5) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule_progress(0, 1) == 0.0
    assert schedule_progress(9, 5) == 1.0


def test_a_linear_schedule_is_read_at_every_step_and_logged_each_epoch() -> None:
    algorithm = LabelSmoothing(smoothing=schedules.linear(0.3, 0.0))
    trainer, watch = _fit(algorithm)  # 2 epochs of 4 batches: 8 steps, t = k / 7
    expected = [0.3 * (1 - k / 7) for k in range(8)]
    assert watch.smoothing == pytest.approx(expected, abs=1e-15)
    torch.testing.assert_close(torch.stack(watch.losses), torch.stack(watch.expected))
    train = [r for r in trainer.history if r["split"] == "train"]
    assert [r["smoothing"] for r in train] == pytest.approx([expected[3], expected[7]], abs=1e-15)
    assert algorithm.smoothing == expected[7]


def test_a_step_schedule_in_batches_switches_at_its_milestone() -> None:
    algorithm = LabelSmoothing(smoothing=schedules.step([0.2, 0.0], [0.5]))
    _, watch = _fit(algorithm, duration="5ba")  # t = 0, 0.25, 0.5, 0.75, 1
    assert watch.smoothing == [0.2, 0.2, 0.0, 0.0, 0.0]


def test_a_constant_smoothing_is_logged_too() -> None:
    trainer, watch = _fit(LabelSmoothing(0.1), duration="1ep")
    assert watch.smoothing == [0.1] * 4
    assert trainer.history[-1]["smoothing"] == 0.1


@pytest.mark.parametrize(("bad", "shown"), [(1.5, ", got 1.5"), (math.nan, ", got nan"),
                                            (-0.25, "; negative smoothing needs allow_negative=True, got -0.25")])
def test_a_schedule_value_outside_zero_one_stops_training_naming_the_step(bad: float, shown: str) -> None:
    algorithm = LabelSmoothing(smoothing=lambda t: 0.1 if t < 0.5 else bad)
    with pytest.raises(ValueError, match=rf"^smoothing: expected a value in \[0, 1\] from the "
                       rf"schedule at step 5 of 8 \(progress 0.571429\){shown}$"):
        _fit(algorithm)


def test_a_schedule_is_checked_at_the_start_and_must_return_a_number() -> None:
    with pytest.raises(ValueError, match=r"^smoothing: expected a value in \[0, 1\] from the "
                       r"schedule at the start \(progress 0\), got 2.0$"):
        LabelSmoothing(smoothing=lambda t: 2.0)
    with pytest.raises(TypeError, match=r"^smoothing: expected a value in \[0, 1\] from the "
                       r"schedule at the start \(progress 0\), got '0.1'$"):
        LabelSmoothing(smoothing=lambda t: "0.1")  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match=r"^smoothing: expected a value in \[0, 1\] from the schedule"):
        LabelSmoothing(smoothing=schedules.linear(-0.5, 0.0, allow_negative=True))


def test_a_schedule_needs_a_run_of_known_length() -> None:
    data = make_dataset(16)

    class Batches:  # an iterable of batches without a len()
        def __iter__(self) -> Iterator[Any]:
            return iter(make_loader(data, 8))

    with pytest.raises(ValueError, match=r"^smoothing: expected a run of known length for a "
                       r"schedule .*, got max_duration='2ep' and a Batches train_dataloader$"):
        _fit(LabelSmoothing(smoothing=schedules.cosine(0.1, 0.0)), loader=Batches())
    # In batches, the loader's length is not needed.
    _, watch = _fit(LabelSmoothing(smoothing=schedules.cosine(0.1, 0.0)), loader=Batches(),
                    duration="3ba")
    assert watch.smoothing == pytest.approx([0.1, 0.05, 0.0], abs=1e-15)


def test_a_compiled_model_is_not_recompiled_as_the_smoothing_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    from torch._dynamo.utils import counters

    counters.clear()
    model = torch.compile(make_model(), backend="eager")
    _, watch = _fit(LabelSmoothing(smoothing=schedules.linear(0.2, 0.0)), model=model)
    assert len(set(watch.smoothing)) == 8  # a new s at every step...
    assert counters["stats"]["unique_graphs"] == 1  # ...and one graph, compiled once
    torch._dynamo.reset()


def test_a_checkpoint_keeps_the_schedule_and_its_current_value() -> None:
    schedule = schedules.linear(0.2, 0.0)
    algorithm = LabelSmoothing(smoothing=schedule)
    state = State(torch.nn.Identity(), batch=(None, torch.tensor([0, 1])),
                  outputs=torch.zeros(2, 2), max_duration="3ba")
    state.timestamp = state.timestamp.__class__(batch=1)
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert algorithm.state_dict() == {"smoothing": pytest.approx(0.1, abs=1e-15)}
    restored = LabelSmoothing(smoothing=schedule)
    restored.load_state_dict(algorithm.state_dict())
    assert restored.schedule is schedule and restored.smoothing == algorithm.smoothing
    assert repr(restored) == ("LabelSmoothing(smoothing=LinearSchedule(start=0.2, end=0.0), "
                              "target_key=1)")
    restored.smoothing = 0.3  # a number replaces the schedule
    assert restored.schedule is None and restored.smoothing == 0.3


def _dense_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """float64 ``CE((1 - s) onehot(y) + s / C)``, the dense target written out."""
    target = (1 - smoothing) * F.one_hot(targets, logits.shape[1]).double() + smoothing / logits.shape[1]
    return -(target * logits.double().log_softmax(dim=1)).sum(dim=1).mean()


class _Batches(Callback):
    """The logits and index targets of every step (before the loss)."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_loss(self, state: State, logger: Any) -> None:
        targets = state.batch[1]
        assert isinstance(targets, TrainingTargets)
        self.seen.append((state.outputs.detach().clone(), targets.targets))


@pytest.mark.parametrize("dense", [False, True], ids=["fused", "dense-user-loss"])
def test_a_warm_up_then_negative_smoothing_gives_the_dense_formula_at_every_step(dense: bool) -> None:
    algorithm = LabelSmoothing(schedules.step([0.0, -0.3], [0.5], allow_negative=True), allow_negative=True)
    batches, watch = _Batches(), _Watch()
    losses: list[torch.Tensor] = []

    def dense_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()  # the dense smoothed tensor
        losses.append(loss.detach())
        return loss

    trainer = Trainer(make_model(), make_loader(make_dataset(32), 8), max_duration="2ep",
                      algorithms=[algorithm], callbacks=[batches, watch], device="cpu",
                      progress_bar=False, **({"loss_fn": dense_loss} if dense else {}))
    trainer.fit()
    assert watch.smoothing == [0.0] * 4 + [-0.3] * 4  # 8 steps, t = k / 7: t >= 0.5 from k = 4
    expected = [_dense_loss(logits, y, s) for (logits, y), s in zip(batches.seen, watch.smoothing, strict=True)]
    got = losses if dense else watch.losses
    assert_close(torch.stack(got), torch.stack(expected).float())
    assert all(math.isfinite(float(loss)) for loss in got)


def test_a_negative_schedule_value_is_refused_without_the_opt_in_at_the_start() -> None:
    with pytest.raises(ValueError, match=r"^smoothing: expected a value in \[0, 1\] from the schedule "
                       r"at the start \(progress 0\); negative smoothing needs allow_negative=True, got -0.5$"):
        LabelSmoothing(smoothing=schedules.linear(-0.5, 0.0, allow_negative=True))
    algorithm = LabelSmoothing(smoothing=schedules.linear(-0.5, 0.0, allow_negative=True), allow_negative=True)
    assert algorithm.smoothing == -0.5
    with pytest.raises(ValueError, match=r"^smoothing: expected a finite value <= 1 from the schedule at "
                       r"the start \(progress 0\), got 1.5$"):
        LabelSmoothing(smoothing=lambda t: 1.5, allow_negative=True)
