"""MixUp on a hand-built State driven by the Engine: composition with LabelSmoothing in either
order, interpolate_loss, reproducible draws, restored batches, bad input."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from mixing_steps import (
    hand_mixed_target,
    hand_smooth,
    reference_loss,
    seeded,
    train_step,
    trainer_run,
)

import labelsmooth.algorithms.cutmix
import labelsmooth.algorithms.mixup
from labelsmooth import LabelSmoothing, MixUp, Trainer
from labelsmooth.trainer import Callback, Event, State, TrainingTargets

NUM_CLASSES = 5


def model_and_batch(n: int = 8) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, NUM_CLASSES).double()
    return model, torch.randn(n, 6, dtype=torch.float64), torch.randint(0, NUM_CLASSES, (n,))


ORDERS = {
    "smoothing-first": lambda mixup, smoothing: [smoothing, mixup],
    "mixup-first": lambda mixup, smoothing: [mixup, smoothing],
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("smoothing", [0.1, 0.4])
def test_each_order_gives_the_hand_computed_target_and_loss(order: str, smoothing: float) -> None:
    model, x, y = model_and_batch()
    mixup = MixUp(alpha=1.0, generator=seeded(3))
    step = train_step(ORDERS[order](mixup, LabelSmoothing(smoothing)), model, (x, y))
    lam, indices = mixup.lam, mixup.indices
    assert lam is not None and indices is not None and 0 < lam < 1
    # The model saw (1 - lam) x + lam x[indices].
    assert_close(step.inputs, (1 - lam) * x + lam * x[indices])
    # One component, the mixed smoothed target, which is also what the batch held.
    [(weight, target)] = step.components
    expected = hand_mixed_target(y, indices, lam, NUM_CLASSES, smoothing)
    assert weight == 1.0
    assert_close(target, expected)
    assert_close(step.batch_target, expected)
    outputs = model((1 - lam) * x + lam * x[indices])
    assert_close(step.loss, reference_loss(outputs, y, indices, lam, smoothing))


def test_both_orders_agree_with_each_other() -> None:
    model, x, y = model_and_batch()
    steps = [train_step(ORDERS[order](MixUp(alpha=0.5, generator=seeded(9)), LabelSmoothing(0.2)),
                        model, (x, y)) for order in ORDERS]
    assert_close(steps[0].components[0][1], steps[1].components[0][1])
    assert_close(steps[0].loss, steps[1].loss)


@pytest.mark.parametrize("order", list(ORDERS))
def test_interpolate_loss_smooths_both_terms(order: str) -> None:
    model, x, y = model_and_batch()
    smoothing = 0.3
    mixup = MixUp(alpha=1.0, interpolate_loss=True, generator=seeded(4))
    step = train_step(ORDERS[order](mixup, LabelSmoothing(smoothing)), model, (x, y))
    lam, indices = mixup.lam, mixup.indices
    assert lam is not None and indices is not None
    [(w_own, t_own), (w_partner, t_partner)] = step.components
    assert w_own == pytest.approx(1 - lam) and w_partner == pytest.approx(lam)
    assert_close(t_own, hand_smooth(y, NUM_CLASSES, smoothing))
    assert_close(t_partner, hand_smooth(y[indices], NUM_CLASSES, smoothing))
    # The loss is (1 - lam) CE_s(out, y) + lam CE_s(out, y[indices]) with PyTorch's smoothing.
    outputs = model((1 - lam) * x + lam * x[indices])
    assert_close(step.loss, reference_loss(outputs, y, indices, lam, smoothing))


def test_interpolate_loss_without_smoothing_keeps_index_targets() -> None:
    model, x, y = model_and_batch()
    mixup = MixUp(alpha=1.0, interpolate_loss=True, generator=seeded(4))
    step = train_step([mixup], model, (x, y))
    assert mixup.indices is not None
    [(_, t_own), (_, t_partner)] = step.components
    assert isinstance(t_own, TrainingTargets) and isinstance(t_partner, TrainingTargets)
    assert t_own.targets is y and torch.equal(t_partner.targets, y[mixup.indices])
    assert t_own.smoothing == t_partner.smoothing == 0.0


def test_without_smoothing_the_target_is_plain_mixup() -> None:
    model, x, y = model_and_batch()
    mixup = MixUp(alpha=0.2, generator=seeded(1))
    step = train_step([mixup], model, (x, y))
    assert mixup.lam is not None and mixup.indices is not None
    assert_close(step.components[0][1],
                 hand_mixed_target(y, mixup.indices, mixup.lam, NUM_CLASSES, 0.0))


@pytest.mark.parametrize("container", ["tuple", "list", "dict"])
def test_batch_restored_after_every_step(container: str) -> None:
    model, x, y = model_and_batch()
    x_before, y_before = x.clone(), y.clone()
    input_key, target_key = (0, 1) if container != "dict" else ("x", "y")
    mixup = MixUp(alpha=1.0, target_key=target_key, input_key=input_key, generator=seeded(2))
    smoothing = LabelSmoothing(0.1, target_key=target_key)
    batch = {"tuple": (x, y), "list": [x, y], "dict": {"x": x, "y": y}}[container]
    draws = []
    for _ in range(3):
        step = train_step([smoothing, mixup], model, batch, input_key=input_key,
                          target_key=target_key)
        draws.append((mixup.lam, mixup.indices))
        assert step.state.batch_get_item(input_key) is x
        assert step.state.batch_get_item(target_key) is y
        if container != "tuple":  # the user's own container, changed in place and put back
            assert step.state.batch is batch
        assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert len({lam for lam, _ in draws}) == 3  # a fresh draw every step


def test_fixed_generator_reproduces_the_draws() -> None:
    model, x, y = model_and_batch()

    def run(seed: int) -> list[tuple[float | None, list[int]]]:
        mixup = MixUp(alpha=0.4, generator=seeded(seed))
        out = []
        for _ in range(3):
            train_step([LabelSmoothing(0.1), mixup], model, (x, y))
            assert mixup.indices is not None
            out.append((mixup.lam, mixup.indices.tolist()))
        return out

    state = torch.get_rng_state()
    assert run(7) == run(7)
    assert run(7) != run(8)
    assert torch.equal(torch.get_rng_state(), state)


def test_state_dict_resumes_the_generator() -> None:
    model, x, y = model_and_batch()
    mixup = MixUp(generator=seeded(5))
    train_step([mixup], model, (x, y))
    saved = mixup.state_dict()
    train_step([mixup], model, (x, y))
    expected = (mixup.lam, mixup.indices)
    resumed = MixUp(generator=seeded(0))
    resumed.load_state_dict(saved)
    train_step([resumed], model, (x, y))
    assert resumed.lam == expected[0] and torch.equal(resumed.indices, expected[1])
    assert MixUp().state_dict() == {}
    with pytest.raises(ValueError, match=r"state: expected an empty dict"):
        MixUp().load_state_dict(saved)


def test_batch_of_one_is_a_no_op() -> None:
    model, x, y = model_and_batch(1)
    step = train_step([MixUp(alpha=1.0, generator=seeded(0)), LabelSmoothing(0.1)], model, (x, y))
    assert torch.equal(step.inputs, x)
    assert_close(step.components[0][1], hand_smooth(y, NUM_CLASSES, 0.1))


def test_matches_training_events_only() -> None:
    mixup, state = MixUp(), State(torch.nn.Identity())
    assert {e for e in Event if mixup.match(e, state)} == {
        Event.BEFORE_FORWARD, Event.AFTER_FORWARD, Event.BEFORE_LOSS, Event.AFTER_LOSS}


def test_before_loss_without_a_draw_is_an_error() -> None:
    state = State(torch.nn.Identity(), batch=(torch.zeros(2, 3), torch.tensor([0, 1])),
                  outputs=torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match=r"event: expected Event.BEFORE_FORWARD before "
                                           r"Event.BEFORE_LOSS"):
        MixUp().apply(Event.BEFORE_LOSS, state, None)


def test_class_dim_for_sequence_outputs() -> None:
    """Per-position targets (N, L) with logits (N, L, C): classes on the last dimension."""
    x, y = torch.randn(4, 7, 3, dtype=torch.float64), torch.randint(0, 3, (4, 7))
    mixup = MixUp(alpha=1.0, class_dim=-1, generator=seeded(1))
    step = train_step([LabelSmoothing(0.2, class_dim=-1), mixup], torch.nn.Identity(), (x, y))
    assert mixup.lam is not None and mixup.indices is not None
    expected = ((1 - mixup.lam) * hand_smooth(y, 3, 0.2)
                + mixup.lam * hand_smooth(y[mixup.indices], 3, 0.2))
    assert_close(step.components[0][1], expected)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha": 0.0}, ValueError, r"alpha: expected a finite real number > 0, got 0.0"),
    ({"alpha": -1}, ValueError, r"alpha: expected a finite real number > 0"),
    ({"alpha": float("nan")}, ValueError, r"alpha: expected a finite real number > 0"),
    ({"interpolate_loss": 1}, TypeError, r"interpolate_loss: expected a bool, got 1"),
    ({"target_key": 1.5}, TypeError, r"target_key: expected an int index"),
    ({"input_key": None}, TypeError, r"input_key: expected an int index"),
    ({"generator": 3}, TypeError, r"generator: expected a torch.Generator or None, got int"),
])
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MixUp(**kwargs)  # type: ignore[arg-type]


def test_float_inputs_required() -> None:
    state = State(torch.nn.Identity(), batch=(torch.zeros(2, 3, dtype=torch.long),
                                              torch.tensor([0, 1])))
    with pytest.raises(TypeError, match=r"inputs: expected a floating-point tensor"):
        MixUp().apply(Event.BEFORE_FORWARD, state, None)


@pytest.mark.parametrize("module", [labelsmooth.algorithms.mixup, labelsmooth.algorithms.cutmix])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_same_loss_as_plain_cross_entropy_when_lam_is_zero() -> None:
    """A degenerate check with an independent reference: lam = 0 leaves plain label smoothing."""
    model, x, y = model_and_batch()
    mixup = MixUp(alpha=1.0, generator=seeded(0))
    mixup.mix_batch = lambda inputs, targets: labelsmooth.functional.mixup_batch(  # type: ignore[method-assign]
        inputs, targets, lam=0.0, generator=seeded(0))
    step = train_step([mixup, LabelSmoothing(0.1)], model, (x, y))
    assert_close(step.loss, F.cross_entropy(model(x), y, label_smoothing=0.1))


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("interpolate_loss", [False, True])
def test_trainer_end_to_end(order: str, interpolate_loss: bool) -> None:
    """The real Trainer, with gradient accumulation: every microbatch's loss is the hand one."""
    torch.manual_seed(0)
    x, y = torch.randn(24, 6), torch.randint(0, NUM_CLASSES, (24,))
    mixup = MixUp(alpha=1.0, interpolate_loss=interpolate_loss, generator=seeded(0))
    steps = trainer_run(ORDERS[order](mixup, LabelSmoothing(0.2)), mixup,
                        torch.nn.Linear(6, NUM_CLASSES), x, y, batch_size=8, grad_accum=2)
    assert len(steps) == 6  # 3 batches of 2 microbatches
    for step in steps:
        lam, indices = step["lam"], step["indices"]
        original = step["original_inputs"]
        assert_close(step["seen_inputs"], (1 - lam) * original + lam * original[indices])
        assert_close(step["loss"], reference_loss(step["outputs"], step["targets"], indices, lam,
                                                  0.2))
        assert step["targets_after"] is step["targets"] and step["inputs_after"] is original
    assert len({step["lam"] for step in steps}) == len(steps)


def test_missing_keys_are_named() -> None:
    state = State(torch.nn.Identity(), batch={"x": torch.zeros(2, 3), "y": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match=r"input_key: expected an index, key or attribute of the "
                                         r"batch \(a dict with keys \['x', 'y'\]\), got 0"):
        MixUp(target_key="y").apply(Event.BEFORE_FORWARD, state, None)
    with pytest.raises(ValueError, match=r"target_key: expected an index, key or attribute"):
        MixUp(input_key="x", target_key="labels").apply(Event.BEFORE_FORWARD, state, None)


class _CrashAfter(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state: State, logger: object) -> None:
        if state.timestamp.batch == self.batch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("with_generator", [True, False])
def test_trainer_resume_draws_what_an_uninterrupted_run_draws(tmp_path: Path,
                                                              with_generator: bool) -> None:
    """Crash after batch 3, resume from the checkpoint of batch 2 with a differently seeded
    generator: the final weights equal the uninterrupted run's (the generator's state, or the
    global RNG the Trainer checkpoints, comes back)."""
    from tiny_task import make_dataset, make_loader, make_model

    def run(folder: Path, seed: int, *, crash: bool = False, load: Path | None = None) -> Trainer:
        model = make_model(seed=0)
        mixup = MixUp(alpha=0.4, generator=seeded(seed) if with_generator else None)
        trainer = Trainer(model, make_loader(make_dataset(40), 8), max_duration="2ep",
                          optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
                          algorithms=[LabelSmoothing(0.1), mixup],
                          callbacks=[_CrashAfter(3)] if crash else [], device="cpu",
                          progress_bar=False, seed=seed, save_folder=folder, save_interval="2ba",
                          load_path=load)
        if crash:
            with pytest.raises(KeyboardInterrupt):
                trainer.fit()
        else:
            trainer.fit()
        return trainer

    reference = run(tmp_path / "a", 1)
    run(tmp_path / "b", 1, crash=True)
    resumed = run(tmp_path / "c", 9, load=tmp_path / "b" / "ep0-ba2.pt")
    for expected, actual in zip(reference.state.model.state_dict().values(),
                                resumed.state.model.state_dict().values(), strict=True):
        assert torch.equal(actual, expected)


@pytest.mark.parametrize("lam_at_most_half", [True, False])
def test_a_model_that_is_always_right_logs_training_accuracy_one(lam_at_most_half: bool) -> None:
    """Inputs are scaled one-hot labels and the model is the identity, so on a mixed input it
    predicts the label with the larger share. With lam folded to at most 1/2 (Composer's rule)
    that is always the original label; with the raw Beta draw it is the partner's about half
    of the time."""
    num_classes = 4
    y = torch.arange(64) % num_classes
    x = 10.0 * F.one_hot(y, num_classes).float()
    model = torch.nn.Linear(num_classes, num_classes, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(num_classes))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8,
                                         shuffle=True, generator=seeded(0))
    mixup = MixUp(alpha=0.2, lam_at_most_half=lam_at_most_half, generator=seeded(1))
    trainer = Trainer(model, loader, max_duration="1ep", algorithms=[mixup, LabelSmoothing(0.1)],
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.0), device="cpu",
                      progress_bar=False)
    trainer.fit()
    [record] = [r for r in trainer.history if r["split"] == "train"]
    if lam_at_most_half:
        assert record["accuracy"] == 1.0
    else:
        assert record["accuracy"] < 0.9
