"""LabelSmoothing: the functional result, match/apply on a hand-built State, bad input.

The end-to-end training runs are in tests/trainer/test_trainer.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from labelsmooth import LabelSmoothing
from labelsmooth.trainer import Event, State, TrainingTargets


def _reference(logits: torch.Tensor, targets: torch.Tensor, s: float) -> torch.Tensor:
    """The label smoothing formula in float64: (1 - s) * onehot + s / C."""
    num_classes = logits.shape[1]
    return F.one_hot(targets, num_classes).double() * (1 - s) + s / num_classes


def test_the_batch_holds_index_targets_that_read_as_the_smoothed_formula() -> None:
    logits, targets = torch.randn(6, 5), torch.tensor([0, 4, 2, 2, 1, 3])
    state = State(torch.nn.Identity(), batch=(torch.randn(6, 3), targets), outputs=logits)
    LabelSmoothing(smoothing=0.3).apply(Event.BEFORE_LOSS, state, None)
    held = state.batch[1]
    assert isinstance(held, TrainingTargets) and held.targets is targets and held.smoothing == 0.3
    assert held._dense is None  # nothing dense until an operation asks for it
    torch.testing.assert_close(held.double(), _reference(logits, targets, 0.3))
    assert held.dtype == logits.dtype and held.shape == logits.shape


def test_match_only_before_and_after_loss() -> None:
    algorithm, state = LabelSmoothing(), State(torch.nn.Identity())
    assert {e for e in Event if algorithm.match(e, state)} == {Event.BEFORE_LOSS, Event.AFTER_LOSS}


def test_apply_then_undo_restores_the_same_object() -> None:
    targets = torch.tensor([1, 0, 2])
    inputs = torch.randn(3, 4)
    state = State(torch.nn.Identity(), batch=(inputs, targets), outputs=torch.randn(3, 3))
    algorithm = LabelSmoothing(smoothing=0.1)
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    loss = F.cross_entropy(state.outputs, state.batch[1])
    torch.testing.assert_close(loss, F.cross_entropy(state.outputs, targets, label_smoothing=0.1))
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert state.batch[1] is targets and state.batch[0] is inputs
    assert targets.tolist() == [1, 0, 2]


@pytest.mark.parametrize("outputs_kind", ["dict", "attribute"])
def test_logits_found_in_dicts_and_attributes_with_a_str_target_key(outputs_kind: str) -> None:
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    outputs = {"logits": logits} if outputs_kind == "dict" else SimpleNamespace(logits=logits)
    batch = {"x": torch.zeros(4, 2), "labels": targets}
    state = State(torch.nn.Identity(), batch=batch, outputs=outputs)
    algorithm = LabelSmoothing(smoothing=0.2, target_key="labels")
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    torch.testing.assert_close(batch["labels"].double(), _reference(logits, targets, 0.2))
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert batch["labels"] is targets


def test_class_dim_and_ignore_index() -> None:
    logits = torch.randn(2, 5, 3)  # (N, L, C): classes last
    targets = torch.tensor([[0, 1, -1, 2, 0], [2, 2, 1, -1, 0]])
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    LabelSmoothing(0.3, class_dim=-1, ignore_index=-1).apply(Event.BEFORE_LOSS, state, None)
    smoothed = state.batch[1]
    assert smoothed.shape == (2, 5, 3)
    ignored = targets == -1
    assert torch.all(smoothed[ignored] == 0)
    expected = F.one_hot(targets.clamp(min=0), 3).float() * 0.7 + 0.1
    torch.testing.assert_close(smoothed[~ignored], expected[~ignored])


def test_ignore_index_gives_pytorchs_mean_and_zero_dense_rows() -> None:
    """The loss from the index targets is PyTorch's per-valid-position smoothed mean; the dense
    view has all-zero rows at the ignored positions."""
    logits = torch.randn(6, 4, dtype=torch.float64)
    targets = torch.tensor([0, 1, -100, 3, -100, 2])
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    LabelSmoothing(0.1, ignore_index=-100).apply(Event.BEFORE_LOSS, state, None)
    torch_loss = F.cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(state.batch[1].cross_entropy(logits), torch_loss)
    assert torch.all(state.batch[1][targets == -100] == 0)


def test_smoothing_is_validated_and_can_change_between_steps() -> None:
    algorithm = LabelSmoothing(0.1)
    algorithm.smoothing = 0.5
    targets = torch.tensor([0, 1])
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=torch.zeros(2, 2))
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    torch.testing.assert_close(state.batch[1], torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    assert algorithm.state_dict() == {"smoothing": 0.5}
    restored = LabelSmoothing()
    restored.load_state_dict(algorithm.state_dict())
    assert restored.smoothing == 0.5
    with pytest.raises(ValueError, match=r"smoothing: expected a real number in \[0, 1\], got 1.5"):
        algorithm.smoothing = 1.5


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"smoothing": -0.1}, ValueError, "smoothing: expected a real number in"),
    ({"smoothing": float("nan")}, ValueError, "smoothing: expected a real number in"),
    ({"smoothing": "0.1"}, TypeError, "smoothing: expected a real number in"),
    ({"target_key": 1.0}, TypeError, "target_key: expected an int index"),
    ({"class_dim": "1"}, TypeError, "class_dim: expected an int"),
    ({"ignore_index": 0.5}, TypeError, "ignore_index: expected an int"),
])
def test_bad_construction_raises(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        LabelSmoothing(**kwargs)  # type: ignore[arg-type]


def test_missing_target_key_raises() -> None:
    state = State(torch.nn.Identity(), batch=(torch.zeros(2, 2), torch.tensor([0, 1])),
                  outputs=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute of the batch"):
        LabelSmoothing(target_key=2).apply(Event.BEFORE_LOSS, state, None)
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute"):
        LabelSmoothing(target_key="labels").apply(Event.BEFORE_LOSS, state, None)


def test_outputs_with_no_logits_raise() -> None:
    state = State(torch.nn.Identity(), batch=(None, torch.tensor([0])), outputs={"scores": torch.zeros(1, 2)})
    with pytest.raises(TypeError, match=r"state\.outputs: expected a logits tensor"):
        LabelSmoothing().apply(Event.BEFORE_LOSS, state, None)
    assert not isinstance(state.batch[1], TrainingTargets)


def test_end_to_end_smoothing_caps_the_models_confidence() -> None:
    """Trained to fit, an unsmoothed model's top probability goes towards 1, while a smoothed
    one's stays at most near its target's top value ``1 - s + s / C`` (0.8 here)."""
    from tiny_task import NUM_CLASSES, make_dataset, make_loader, make_model

    from labelsmooth import Trainer

    data = make_dataset(128)
    confidence = {}
    for smoothing in (0.0, 0.3):
        model = make_model(seed=0)
        Trainer(model, make_loader(data, 32, shuffle=True), max_duration="25ep", seed=0,
                optimizers=torch.optim.Adam(model.parameters(), lr=0.03),
                algorithms=[LabelSmoothing(smoothing)], device="cpu", progress_bar=False).fit()
        with torch.no_grad():
            confidence[smoothing] = model(data.tensors[0]).softmax(dim=1).max(dim=1).values.mean().item()
    target_confidence = 1 - 0.3 + 0.3 / NUM_CLASSES
    assert confidence[0.0] > 0.95
    assert confidence[0.3] < target_confidence + 0.02, confidence


def test_negative_smoothing_needs_the_opt_in_and_reads_as_the_formula() -> None:
    with pytest.raises(ValueError, match=r"^smoothing: expected a real number in \[0, 1\]; negative "
                       r"smoothing needs allow_negative=True, got -0.2$"):
        LabelSmoothing(-0.2)
    algorithm = LabelSmoothing(-0.2, allow_negative=True)
    logits, targets = torch.randn(4, 5, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 4, 2, 2])
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    held = state.batch[1]
    assert isinstance(held, TrainingTargets) and held.smoothing == -0.2
    reference = _reference(logits, targets, -0.2)  # 1.04 on the label, -0.04 elsewhere
    torch.testing.assert_close(held.double(), reference)
    expected = -(reference * logits.double().log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(held.cross_entropy(logits).double(), expected)
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert state.batch[1] is targets
    restored = LabelSmoothing(allow_negative=True)
    restored.load_state_dict(algorithm.state_dict())
    assert restored.smoothing == -0.2
    with pytest.raises(ValueError, match=r"negative smoothing needs allow_negative=True, got -0\.2$"):
        LabelSmoothing().load_state_dict(algorithm.state_dict())
    with pytest.raises(ValueError, match=r"^smoothing: expected a finite real number <= 1, got 1.5$"):
        algorithm.smoothing = 1.5
    with pytest.raises(ValueError, match=r"^smoothing: expected a finite real number <= 1, got -inf$"):
        algorithm.smoothing = -math.inf
    with pytest.raises(TypeError, match=r"^allow_negative: expected a bool, got 1$"):
        LabelSmoothing(-0.2, allow_negative=1)  # type: ignore[arg-type]


def test_training_targets_take_a_negative_smoothing_only_with_the_opt_in() -> None:
    logits, targets = torch.zeros(2, 4), torch.tensor([1, 3])
    with pytest.raises(ValueError, match=r"^smoothing: expected a real number in \[0, 1\]; negative smoothing needs allow_negative=True, got -0.1$"):
        TrainingTargets.of(targets, logits, smoothing=-0.1)
    held = TrainingTargets.of(targets, logits).replace(smoothing=-0.1, allow_negative=True)
    torch.testing.assert_close(held.double(), _reference(logits, targets, -0.1))
