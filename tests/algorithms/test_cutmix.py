"""CutMix on a hand-built State driven by the Engine: composition with LabelSmoothing in either
order, lam equal to the pasted area, reproducible draws, restored batches, bad input."""

from __future__ import annotations

import math

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

from labelsmooth import CutMix, LabelSmoothing, MixUp
from labelsmooth.functional import cutmix_batch
from labelsmooth.trainer import Event, State

NUM_CLASSES = 4


def image_model_and_batch(n: int = 6, spatial: tuple[int, ...] = (7, 9)):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    features = 2 * math.prod(spatial)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, NUM_CLASSES)).double()
    x = torch.randn(n, 2, *spatial, dtype=torch.float64)
    return model, x, torch.randint(0, NUM_CLASSES, (n,))


def hand_paste(x: torch.Tensor, indices: torch.Tensor, bbox: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Paste the box from each partner, one example at a time."""
    mixed = x.clone()
    region = tuple(slice(start, stop) for start, stop in bbox)
    for i, j in enumerate(indices.tolist()):
        mixed[i][(slice(None), *region)] = x[j][(slice(None), *region)]
    return mixed


ORDERS = {
    "smoothing-first": lambda cutmix, smoothing: [smoothing, cutmix],
    "cutmix-first": lambda cutmix, smoothing: [cutmix, smoothing],
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("spatial", [(7, 9), (11,)])
def test_each_order_gives_the_hand_computed_target_and_loss(order: str,
                                                            spatial: tuple[int, ...]) -> None:
    model, x, y = image_model_and_batch(spatial=spatial)
    smoothing = 0.2
    cutmix = CutMix(alpha=1.0, generator=seeded(3))
    step = train_step(ORDERS[order](cutmix, LabelSmoothing(smoothing)), model, (x, y))
    lam, indices, bbox = cutmix.lam, cutmix.indices, cutmix.bbox
    assert lam is not None and indices is not None and bbox is not None and 0 < lam < 1
    mixed_inputs = hand_paste(x, indices, bbox)
    assert torch.equal(step.inputs, mixed_inputs)
    [(weight, target)] = step.components
    expected = hand_mixed_target(y, indices, lam, NUM_CLASSES, smoothing)
    assert weight == 1.0
    assert_close(target, expected)
    assert_close(step.batch_target, expected)
    assert_close(step.loss, reference_loss(model(mixed_inputs), y, indices, lam, smoothing))


def test_both_orders_agree_with_each_other() -> None:
    model, x, y = image_model_and_batch()
    steps = [train_step(ORDERS[o](CutMix(generator=seeded(9)), LabelSmoothing(0.3)), model, (x, y))
             for o in ORDERS]
    assert_close(steps[0].components[0][1], steps[1].components[0][1])
    assert_close(steps[0].loss, steps[1].loss)


@pytest.mark.parametrize("seed", range(8))
def test_lam_is_exactly_the_pasted_area(seed: int) -> None:
    """Count, pixel by pixel, where every example's values came from."""
    n, spatial = 5, (6, 10)
    x = (torch.arange(n, dtype=torch.float64) + 1).view(n, 1, 1, 1).expand(n, 2, *spatial).clone()
    cutmix = CutMix(alpha=1.0, generator=seeded(seed))
    step = train_step([cutmix], torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(120, 3))
                      .double(), (x, torch.arange(n) % 3))
    assert cutmix.indices is not None
    for i, j in enumerate(cutmix.indices.tolist()):
        if i != j:
            pasted = (step.inputs[i, 0] == j + 1).sum().item()
            assert pasted / math.prod(spatial) == cutmix.lam


@pytest.mark.parametrize("order", list(ORDERS))
def test_interpolate_loss_smooths_both_terms(order: str) -> None:
    model, x, y = image_model_and_batch()
    cutmix = CutMix(generator=seeded(4), interpolate_loss=True)
    step = train_step(ORDERS[order](cutmix, LabelSmoothing(0.25)), model, (x, y))
    lam, indices, bbox = cutmix.lam, cutmix.indices, cutmix.bbox
    assert lam is not None and indices is not None and bbox is not None
    [(w_own, t_own), (w_partner, t_partner)] = step.components
    assert w_own == pytest.approx(1 - lam) and w_partner == pytest.approx(lam)
    assert_close(t_own, hand_smooth(y, NUM_CLASSES, 0.25))
    assert_close(t_partner, hand_smooth(y[indices], NUM_CLASSES, 0.25))
    outputs = model(hand_paste(x, indices, bbox))
    assert_close(step.loss, reference_loss(outputs, y, indices, lam, 0.25))


@pytest.mark.parametrize("container", ["tuple", "list"])
def test_batch_restored_after_every_step(container: str) -> None:
    model, x, y = image_model_and_batch()
    x_before, y_before = x.clone(), y.clone()
    cutmix = CutMix(generator=seeded(2))
    batch = (x, y) if container == "tuple" else [x, y]
    boxes = set()
    for _ in range(4):
        step = train_step([cutmix, LabelSmoothing(0.1)], model, batch)
        boxes.add(cutmix.bbox)
        assert step.state.batch[0] is x and step.state.batch[1] is y
        assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert len(boxes) > 1


def test_fixed_generator_reproduces_the_draws() -> None:
    model, x, y = image_model_and_batch()

    def run(seed: int):  # type: ignore[no-untyped-def]
        cutmix = CutMix(generator=seeded(seed))
        out = []
        for _ in range(3):
            train_step([cutmix], model, (x, y))
            assert cutmix.indices is not None
            out.append((cutmix.lam, cutmix.bbox, cutmix.indices.tolist()))
        return out

    state = torch.get_rng_state()
    assert run(1) == run(1)
    assert run(1) != run(2)
    assert torch.equal(torch.get_rng_state(), state)


def test_batch_of_one_is_a_no_op() -> None:
    model, x, y = image_model_and_batch(n=1)
    step = train_step([LabelSmoothing(0.1), CutMix(generator=seeded(0))], model, (x, y))
    assert torch.equal(step.inputs, x)
    assert_close(step.components[0][1], hand_smooth(y, NUM_CLASSES, 0.1))


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"alpha: expected a finite real number > 0, got -0.5"):
        CutMix(alpha=-0.5)
    with pytest.raises(TypeError, match=r"interpolate_loss: expected a bool"):
        CutMix(interpolate_loss="yes")  # type: ignore[arg-type]
    state = State(torch.nn.Identity(), batch=(torch.zeros(4, 8), torch.arange(4)))
    with pytest.raises(ValueError, match=r"inputs: expected a tensor of shape \(N, C, H, W\)"):
        CutMix().apply(Event.BEFORE_FORWARD, state, None)
    state = State(torch.nn.Identity(), batch=(torch.zeros(4, 1, 8), torch.arange(3)))
    with pytest.raises(ValueError, match=r"targets: expected a tensor whose first dimension is "
                                         r"the batch size 4"):
        CutMix().apply(Event.BEFORE_FORWARD, state, None)


@pytest.mark.parametrize("order", list(ORDERS))
def test_trainer_end_to_end(order: str) -> None:
    """The real Trainer: every batch's loss is the hand one from the recorded box and lam."""
    torch.manual_seed(0)
    x, y = torch.randn(18, 2, 5, 6), torch.randint(0, NUM_CLASSES, (18,))
    cutmix = CutMix(generator=seeded(0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, NUM_CLASSES))
    steps = trainer_run(ORDERS[order](cutmix, LabelSmoothing(0.1)), cutmix, model, x, y,
                        batch_size=6)
    assert len(steps) == 3
    for step in steps:
        lam, indices, bbox = step["lam"], step["indices"], step["bbox"]
        (top, bottom), (left, right) = bbox
        assert lam == (bottom - top) * (right - left) / 30
        assert torch.equal(step["seen_inputs"], hand_paste(step["original_inputs"], indices, bbox))
        assert_close(step["loss"], reference_loss(step["outputs"], step["targets"], indices, lam,
                                                  0.1))
        assert step["targets_after"] is step["targets"]
        assert step["inputs_after"] is step["original_inputs"]


def test_mixup_then_cutmix_stack_consistently() -> None:
    """Two mixers in one step: inputs and targets are mixed in the same (list) order, so the
    target of every example is the hand composition of both draws, smoothed once."""
    model, x, y = image_model_and_batch()
    mixup, cutmix = MixUp(alpha=1.0, generator=seeded(1)), CutMix(generator=seeded(2))
    step = train_step([LabelSmoothing(0.1), mixup, cutmix], model, (x, y))
    assert mixup.lam is not None and mixup.indices is not None
    assert cutmix.lam is not None and cutmix.indices is not None and cutmix.bbox is not None
    once = (1 - mixup.lam) * x + mixup.lam * x[mixup.indices]
    assert_close(step.inputs, hand_paste(once, cutmix.indices, cutmix.bbox))
    dense = F.one_hot(y, NUM_CLASSES).double()
    dense = (1 - mixup.lam) * dense + mixup.lam * dense[mixup.indices]
    dense = (1 - cutmix.lam) * dense + cutmix.lam * dense[cutmix.indices]
    assert_close(step.components[0][1], 0.9 * dense + 0.1 / NUM_CLASSES)


@pytest.mark.parametrize("order", list(ORDERS))
def test_per_pixel_targets_get_the_partners_labels_inside_the_box(order: str) -> None:
    """Segmentation: (N, H, W) labels and (N, C, H, W) logits. The training labels are the
    example's own outside the box and its partner's inside, smoothed; the user's labels are not
    changed, and come back at AFTER_LOSS."""
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6, 7, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (5, 6, 7))
    before = labels.clone()
    model = torch.nn.Conv2d(2, NUM_CLASSES, 1).double()
    cutmix = CutMix(alpha=1.0, generator=seeded(5))
    step = train_step(ORDERS[order](cutmix, LabelSmoothing(0.2)), model, (x, labels))
    indices, bbox = cutmix.indices, cutmix.bbox
    assert indices is not None and bbox is not None
    (top, bottom), (left, right) = bbox
    assert 0 < (bottom - top) * (right - left) < 42
    pasted = labels.clone()
    for i, j in enumerate(indices.tolist()):
        pasted[i, top:bottom, left:right] = labels[j, top:bottom, left:right]
    dense = F.one_hot(pasted, NUM_CLASSES).permute(0, 3, 1, 2).double() * 0.8 + 0.2 / NUM_CLASSES
    assert_close(step.batch_target, dense)
    outputs = model(hand_paste(x, indices, bbox))
    assert_close(step.loss, F.cross_entropy(outputs, pasted, label_smoothing=0.2))
    assert step.state.batch[1] is labels and torch.equal(labels, before)


def test_uniform_sampling_is_passed_to_the_functional() -> None:
    model, x, y = image_model_and_batch()
    for uniform in (False, True):
        cutmix = CutMix(uniform_sampling=uniform, generator=seeded(3))
        train_step([cutmix], model, (x, y))
        expected = cutmix_batch(x, y, alpha=1.0, generator=seeded(3), uniform_sampling=uniform)
        assert cutmix.bbox == expected.bbox and cutmix.lam == expected.lam
    assert "uniform_sampling=True" in repr(CutMix(uniform_sampling=True))
    with pytest.raises(TypeError, match="uniform_sampling: expected a bool"):
        CutMix(uniform_sampling=1)  # type: ignore[arg-type]
