"""TrainingTargets: the dense view equals the smoothed, mixed formula in any order; the loss from
the index targets equals PyTorch's; the Trainer never builds a dense target for its
cross-entropies, refuses double smoothing, and takes batches given as objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from mixing_steps import hand_smooth, seeded

from labelsmooth import (
    LabelSmoothing,
    MixUp,
    SmoothedBCEWithLogitsLoss,
    SmoothedCrossEntropyLoss,
    SoftCrossEntropyLoss,
    Trainer,
    smoothed_cross_entropy,
    soft_cross_entropy,
)
from labelsmooth._ops import planning
from labelsmooth.trainer import Callback, State, TrainingTargets
from labelsmooth.trainer.targets import Mix

C = 5
Y = torch.tensor([0, 1, 4, 2, 1, 3])
PERMUTATION = torch.tensor([2, 0, 5, 1, 3, 4])


def _logits(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(len(Y), C, generator=seeded(0), dtype=dtype)


def test_the_dense_view_is_the_formula_whatever_the_order() -> None:
    logits, mix = _logits(), Mix(PERMUTATION, 0.3)
    smooth_then_mix = TrainingTargets.of(Y, logits).replace(smoothing=0.2).with_mix(mix)
    mix_then_smooth = TrainingTargets.of(Y, logits).with_mix(mix).replace(smoothing=0.2)
    expected = 0.7 * hand_smooth(Y, C, 0.2) + 0.3 * hand_smooth(Y[PERMUTATION], C, 0.2)
    assert_close(smooth_then_mix.dense(), expected)
    assert_close(mix_then_smooth.dense(), expected)
    assert type(smooth_then_mix.dense()) is torch.Tensor
    assert isinstance(smooth_then_mix, torch.Tensor) and smooth_then_mix.shape == logits.shape


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_loss_from_index_targets_is_pytorchs_interpolated_loss(reduction: str) -> None:
    """Value and gradient against F.cross_entropy(label_smoothing=s), weighted by lam."""
    weight = torch.rand(C, generator=seeded(1), dtype=torch.float64) + 0.5
    logits = _logits().requires_grad_()
    target = TrainingTargets.of(Y, logits).replace(smoothing=0.1).with_mix(Mix(PERMUTATION, 0.25))
    loss = target.cross_entropy(logits, weight=weight, reduction=reduction)
    reference = logits.detach().clone().requires_grad_()
    expected = (0.75 * F.cross_entropy(reference, Y, weight, label_smoothing=0.1, reduction=reduction)
                + 0.25 * F.cross_entropy(reference, Y[PERMUTATION], weight, label_smoothing=0.1,
                                         reduction=reduction))
    assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
    assert_close(grad, expected_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, 4])
def test_the_unmixed_loss_of_a_small_batch_is_pytorchs_smoothed_loss(
        reduction: str, ignore_index: int | None) -> None:
    """One index target, a small batch: value and gradient against
    F.cross_entropy(label_smoothing=s) and the float64 dense target."""
    logits = _logits().requires_grad_()
    target = TrainingTargets.of(Y, logits, smoothing=0.1, ignore_index=ignore_index)
    loss = target.cross_entropy(logits, reduction=reduction)
    reference = logits.detach().clone().requires_grad_()
    ignore = -100 if ignore_index is None else ignore_index
    expected = F.cross_entropy(reference, Y, ignore_index=ignore, label_smoothing=0.1,
                               reduction=reduction)
    assert_close(loss, expected)
    kept = (Y != ignore).double()
    dense_rows = -(hand_smooth(Y, C, 0.1) * reference.detach().log_softmax(1)).sum(1) * kept
    dense = {"none": dense_rows, "sum": dense_rows.sum(), "mean": dense_rows.sum() / kept.sum()}
    assert_close(loss.detach(), dense[reduction])
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
    assert_close(grad, expected_grad)


def test_the_unmixed_loss_refuses_what_its_target_does_not_fit() -> None:
    logits = _logits()
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 3\)"):
        TrainingTargets.of(Y, logits, smoothing=0.1).cross_entropy(logits[:, :3])
    with pytest.raises(ValueError, match="reduction: expected one of"):
        TrainingTargets.of(Y, logits, smoothing=0.1).cross_entropy(logits, reduction="avg")
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 5\)"):
        TrainingTargets.of(torch.tensor([0, 1, 5, 2, 1, 3]), logits, smoothing=0.1).cross_entropy(logits)


def test_the_loss_equals_the_dense_loss_and_torch_ops_see_the_dense_target() -> None:
    logits = _logits()
    target = TrainingTargets.of(Y, logits).replace(smoothing=0.3).with_mix(Mix(PERMUTATION, 0.4))
    dense = 0.6 * hand_smooth(Y, C, 0.3) + 0.4 * hand_smooth(Y[PERMUTATION], C, 0.3)
    assert_close(target.cross_entropy(logits), F.cross_entropy(logits, dense))
    # A loss written for probabilities gets them: F.cross_entropy, soft_cross_entropy, by hand.
    assert_close(F.cross_entropy(logits, target), F.cross_entropy(logits, dense))
    assert_close(soft_cross_entropy(logits, target), F.cross_entropy(logits, dense))
    assert_close(-(target * logits.log_softmax(1)).sum(1).mean(), F.cross_entropy(logits, dense))
    assert_close(target.sum(1), torch.ones(len(Y), dtype=torch.float64))


def test_two_mixes_split_every_component() -> None:
    logits, second = _logits(), torch.tensor([1, 2, 3, 4, 5, 0])
    target = (TrainingTargets.of(Y, logits).with_mix(Mix(PERMUTATION, 0.25))
              .with_mix(Mix(second, 0.5)).replace(smoothing=0.1))
    onehot = F.one_hot(Y, C).double()
    once = 0.75 * onehot + 0.25 * onehot[PERMUTATION]
    twice = 0.5 * once + 0.5 * once[second]
    assert_close(target.dense(), 0.9 * twice + 0.1 / C)
    assert [weight for weight, _ in target.components()] == [0.375, 0.375, 0.125, 0.125]


def test_a_box_pastes_per_pixel_labels_instead_of_mixing() -> None:
    labels = torch.randint(C, (3, 4, 6), generator=seeded(2))
    logits = torch.randn(3, C, 4, 6, dtype=torch.float64)
    indices, box = torch.tensor([2, 0, 1]), ((1, 3), (2, 5))
    target = TrainingTargets.of(labels, logits).with_mix(Mix(indices, 0.25, box)).replace(smoothing=0.1)
    pasted = labels.clone()
    pasted[:, 1:3, 2:5] = labels[indices][:, 1:3, 2:5]
    [(weight, part)] = target.components()
    assert weight == 1.0 and torch.equal(part, pasted)
    assert_close(target.cross_entropy(logits), F.cross_entropy(logits, pasted, label_smoothing=0.1))


def test_taking_the_parts_out_gives_back_the_original_object() -> None:
    logits, mix = _logits(), Mix(PERMUTATION, 0.3)
    target = TrainingTargets.of(Y, logits).replace(smoothing=0.2).with_mix(mix)
    assert TrainingTargets.of(target, logits) is target
    assert target.without_mix(mix).replace(smoothing=0.0).simplified() is Y
    assert target.replace(smoothing=0.0).simplified().mixes == (mix,)
    assert target.without_mix(mix).simplified().smoothing == 0.2
    assert target.without_mix(Mix(PERMUTATION, 0.3)).mixes == (mix,)  # another mix, equal values


def test_of_builds_one_object_with_the_smoothing_and_the_mix_given() -> None:
    logits, mix = _logits(), Mix(PERMUTATION, 0.3)
    expected = 0.7 * hand_smooth(Y, C, 0.2) + 0.3 * hand_smooth(Y[PERMUTATION], C, 0.2)
    smoothed = TrainingTargets.of(Y, logits, smoothing=0.2, ignore_index=-1)
    assert (smoothed.targets, smoothed.smoothing, smoothed.mixes, smoothed.ignore_index) == (Y, 0.2, (), -1)
    mixed = TrainingTargets.of(smoothed, logits, mix=mix)
    assert (mixed.smoothing, mixed.mixes, mixed.ignore_index) == (0.2, (mix,), -1)
    assert_close(mixed.dense(), expected)
    # Mixing first, then smoothing: the same target.
    assert_close(TrainingTargets.of(TrainingTargets.of(Y, logits, mix=mix), logits, smoothing=0.2)
                 .dense(), expected)
    with pytest.raises(ValueError, match="smoothing: expected a real number in"):
        TrainingTargets.of(Y, logits, smoothing=1.5)


def test_without_smoothing_gives_back_the_original_object_when_nothing_else_is_left() -> None:
    logits, mix = _logits(), Mix(PERMUTATION, 0.3)
    assert TrainingTargets.of(Y, logits, smoothing=0.2).without_smoothing() is Y
    left = TrainingTargets.of(Y, logits, smoothing=0.2, mix=mix).without_smoothing()
    assert (left.smoothing, left.mixes) == (0.0, (mix,))
    assert_close(left.dense(), 0.7 * hand_smooth(Y, C, 0.0) + 0.3 * hand_smooth(Y[PERMUTATION], C, 0.0))


def test_targets_that_do_not_fit_the_logits_are_refused() -> None:
    with pytest.raises(ValueError, match=r"targets: expected class indices of shape \(6,\)"):
        TrainingTargets.of(torch.zeros(6, 2, 2, dtype=torch.long), _logits())
    with pytest.raises(ValueError, match="smoothing: expected a real number in"):
        TrainingTargets.of(Y, _logits()).replace(smoothing=2.0)


# -- in the Trainer ------------------------------------------------------------------------------

def _data(n: int = 16) -> torch.utils.data.DataLoader:
    generator = seeded(3)
    dataset = torch.utils.data.TensorDataset(torch.randn(n, 4, generator=generator),
                                             torch.randint(C, (n,), generator=generator))
    return torch.utils.data.DataLoader(dataset, batch_size=8)


class _CheckLoss(Callback):
    """At AFTER_LOSS: the original targets are back and the loss is the hand one."""

    def __init__(self, smoothing: float, mixup: MixUp | None = None) -> None:
        self.smoothing, self.mixup, self.checked = smoothing, mixup, 0

    def after_dataloader(self, state: State, logger: Any) -> None:
        self.targets = state.batch[1]

    def after_loss(self, state: State, logger: Any) -> None:
        y, out, s = state.batch[1], state.outputs, self.smoothing
        assert y is self.targets
        expected = F.cross_entropy(out, y, label_smoothing=s)
        if self.mixup is not None:
            lam, indices = self.mixup.lam, self.mixup.indices
            expected = (1 - lam) * expected + lam * F.cross_entropy(out, y[indices], label_smoothing=s)
        assert_close(state.loss, expected)
        self.checked += 1


LOSSES = {
    "default": {},
    "F.cross_entropy": {"loss_fn": F.cross_entropy},
    "SoftCrossEntropyLoss": {"loss_fn": SoftCrossEntropyLoss()},
    "SmoothedCrossEntropyLoss(0)": {"loss_fn": SmoothedCrossEntropyLoss(0.0)},
    "nn.CrossEntropyLoss": {"loss_fn": torch.nn.CrossEntropyLoss()},
}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("with_mixup", [False, True])
def test_the_trainer_never_builds_a_dense_target_for_a_cross_entropy(
        loss: str, with_mixup: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: TrainingTargets) -> torch.Tensor:
        raise AssertionError("a dense target was built")

    monkeypatch.setattr(TrainingTargets, "dense", refuse)
    mixup = MixUp(alpha=1.0, generator=seeded(4)) if with_mixup else None
    check = _CheckLoss(0.1, mixup)
    algorithms: list[Any] = [mixup, LabelSmoothing(0.1)] if mixup is not None else [LabelSmoothing(0.1)]
    Trainer(torch.nn.Linear(4, C), _data(), max_duration="1ep", algorithms=algorithms,
            callbacks=[check], device="cpu", progress_bar=False, **LOSSES[loss]).fit()
    assert check.checked == 2


def test_a_loss_of_its_own_gets_the_dense_smoothed_mixed_target() -> None:
    seen = []

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets.clone())
        return -(targets * outputs.log_softmax(1)).sum(1).mean()

    mixup = MixUp(alpha=1.0, generator=seeded(5))
    check = _CheckLoss(0.2, mixup)
    Trainer(torch.nn.Linear(4, C), _data(), max_duration="1ep", loss_fn=loss_fn,
            algorithms=[LabelSmoothing(0.2), mixup], callbacks=[check], device="cpu",
            progress_bar=False).fit()
    assert check.checked == 2 and all(t.shape == (8, C) for t in seen)
    assert all(type(t) is torch.Tensor for t in seen)


def test_interpolate_loss_calls_a_loss_of_its_own_once_per_component() -> None:
    """A loss that is not linear in the target (squared cross-entropy): interpolated, it is
    ``(1 - lam) L(out, smooth(y)) + lam L(out, smooth(y[indices]))``."""
    def squared(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(outputs, targets) ** 2

    mixup = MixUp(alpha=1.0, interpolate_loss=True, generator=seeded(6))

    class Check(Callback):
        checked = 0

        def after_loss(self, state: State, logger: Any) -> None:
            y, out = state.batch[1], state.outputs
            lam, indices = mixup.lam, mixup.indices
            expected = ((1 - lam) * F.cross_entropy(out, y, label_smoothing=0.1) ** 2
                        + lam * F.cross_entropy(out, y[indices], label_smoothing=0.1) ** 2)
            assert_close(state.loss, expected)
            assert state.batch[1] is y and not isinstance(y, TrainingTargets)
            Check.checked += 1

    Trainer(torch.nn.Linear(4, C), _data(), max_duration="1ep", loss_fn=squared,
            algorithms=[mixup, LabelSmoothing(0.1)], callbacks=[Check()], device="cpu",
            progress_bar=False).fit()
    assert Check.checked == 2


@pytest.mark.parametrize("loss_fn", [SmoothedCrossEntropyLoss(0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                                     smoothed_cross_entropy, SmoothedBCEWithLogitsLoss(0.1)])
def test_label_smoothing_with_a_loss_that_smooths_by_itself_is_refused(loss_fn: Any) -> None:
    model = torch.nn.Linear(4, C)
    before = [p.clone() for p in model.parameters()]
    trainer = Trainer(model, _data(), max_duration="1ep", loss_fn=loss_fn,
                      algorithms=[LabelSmoothing(0.1)], device="cpu", progress_bar=False)
    with pytest.raises(ValueError, match=r"^loss_fn: expected a loss that does not smooth by itself "
                                         r"when LabelSmoothing is among the algorithms .*, got .*"
                                         r"which smooths by 0.1$"):
        trainer.fit()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    # Without LabelSmoothing the same loss trains.
    Trainer(torch.nn.Linear(4, C), _data(), max_duration="1ba", loss_fn=loss_fn if not isinstance(
        loss_fn, SmoothedBCEWithLogitsLoss) else SmoothedCrossEntropyLoss(0.1), device="cpu",
        progress_bar=False).fit()


@dataclass
class _Batch:
    images: torch.Tensor
    labels: torch.Tensor


class _BatchModel(torch.nn.Module):
    """Composer's protocol on a batch object: forward(batch) and loss(outputs, batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, C)

    def forward(self, batch: _Batch) -> torch.Tensor:
        return self.net(batch.images)

    def loss(self, outputs: torch.Tensor, batch: _Batch) -> torch.Tensor:
        return soft_cross_entropy(outputs, batch.labels)


def test_a_batch_given_as_an_object_with_attributes_trains_end_to_end() -> None:
    generator = seeded(7)
    batches = [_Batch(torch.randn(8, 4, generator=generator), torch.randint(C, (8,), generator=generator))
               for _ in range(2)]
    originals = [(b.images, b.labels, b.images.clone(), b.labels.clone()) for b in batches]
    mixup = MixUp(alpha=1.0, input_key="images", target_key="labels", generator=seeded(8))

    class Check(Callback):
        checked = 0

        def after_dataloader(self, state: State, logger: Any) -> None:
            self.labels = state.batch.labels

        def after_loss(self, state: State, logger: Any) -> None:
            y, out, lam, indices = state.batch.labels, state.outputs, mixup.lam, mixup.indices
            assert y is self.labels
            expected = ((1 - lam) * F.cross_entropy(out, y, label_smoothing=0.1)
                        + lam * F.cross_entropy(out, y[indices], label_smoothing=0.1))
            assert_close(state.loss, expected)
            Check.checked += 1

    trainer = Trainer(_BatchModel(), batches, max_duration="1ep", target_key="labels",
                      algorithms=[LabelSmoothing(0.1, target_key="labels"), mixup],
                      callbacks=[Check()], device="cpu", progress_bar=False)
    trainer.fit()
    assert Check.checked == 2
    for batch, (images, labels, images_before, labels_before) in zip(batches, originals, strict=True):
        assert batch.images is images and batch.labels is labels
        assert torch.equal(images, images_before) and torch.equal(labels, labels_before)
    assert trainer.history[-1]["split"] == "train"


def _count_fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of the fused kernel's entry point made by the functional losses."""
    import labelsmooth.functional.cross_entropy as functional_ce

    calls = [0]
    original = functional_ce.fused_smoothed_cross_entropy

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(functional_ce, "fused_smoothed_cross_entropy", spy)
    return calls


@pytest.mark.parametrize("classes", [C, 12000])
@pytest.mark.parametrize("mixes", [1, 2])
def test_a_mixed_smoothed_loss_is_one_fused_call_equal_to_the_float64_dense_target(
        mixes: int, classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss and gradient against ``-sum t log_softmax`` with the dense mixed target ``t`` built by
    hand in float64 (a class may be both an example's and its partner's). Where the plan runs
    the chunked pass, the whole mix is one call of it; a problem small enough for PyTorch's own
    loss is one ``F.cross_entropy`` per component instead, with the same values."""
    calls = _count_fused_calls(monkeypatch)
    logits = torch.randn(len(Y), classes, generator=seeded(0)).requires_grad_()
    target = TrainingTargets.of(Y, logits).replace(smoothing=0.1).with_mix(Mix(PERMUTATION, 0.3))
    dense = 0.7 * hand_smooth(Y, classes, 0.1) + 0.3 * hand_smooth(Y[PERMUTATION], classes, 0.1)
    if mixes == 2:
        second = torch.tensor([1, 0, 3, 2, 5, 4])
        target = target.with_mix(Mix(second, 0.4))
        dense = 0.6 * dense + 0.4 * dense[second]
    loss = target.cross_entropy(logits)
    loss.backward()
    chunked = planning.plan(len(Y), classes, torch.float32, logits.device).strategy == "chunked"
    assert calls[0] == (1 if chunked else 0)
    reference = logits.detach().double().requires_grad_()
    expected = -(dense.double() * reference.log_softmax(1)).sum(1).mean()
    expected.backward()
    assert_close(loss, expected, torch.float32, what="loss")
    assert_close(logits.grad, reference.grad, torch.float32, what="gradient")


def test_the_trainer_runs_mixup_with_label_smoothing_as_one_fused_call_per_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fused_calls(monkeypatch)
    mixup = MixUp(alpha=1.0, generator=seeded(7))
    check = _CheckLoss(0.1, mixup)
    # 8 x 12000 logits per batch: more than PyTorch's own loss takes (the chunked pass runs).
    Trainer(torch.nn.Linear(4, 12000), _data(), max_duration="1ep",
            algorithms=[LabelSmoothing(0.1), mixup], callbacks=[check], device="cpu",
            progress_bar=False).fit()
    assert check.checked == 2 and calls[0] == 2
