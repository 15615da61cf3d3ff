"""The target-transform stage: transforms apply from the originals in stage order, whatever the
order of registration, and the original target object comes back when the last one leaves."""

from __future__ import annotations

import itertools

import pytest
import torch

from labelsmooth.trainer import State, TargetComponent, TargetStage, map_targets


def _mix(permutation: torch.Tensor, lam: float):  # type: ignore[no-untyped-def]
    """A dense mixing transform, written out by hand for the test."""
    def transform(components):  # type: ignore[no-untyped-def]
        return [TargetComponent(w, (1 - lam) * t + lam * t[permutation]) for w, t in components]
    return transform


def _split(permutation: torch.Tensor, lam: float):  # type: ignore[no-untyped-def]
    """An interpolated-loss mixing transform: two components."""
    def transform(components):  # type: ignore[no-untyped-def]
        return [c for w, t in components
                for c in (TargetComponent(w * (1 - lam), t), TargetComponent(w * lam, t[permutation]))]
    return transform


def _one_hot_state(targets: torch.Tensor, num_classes: int) -> State:
    dense = torch.nn.functional.one_hot(targets, num_classes).double()
    return State(torch.nn.Identity(), batch=[torch.zeros(len(targets), 2), dense])


def _smooth(s: float, num_classes: int):  # type: ignore[no-untyped-def]
    return map_targets(lambda t: (1 - s) * t + s / num_classes)


PERMUTATION = torch.tensor([2, 0, 3, 1])
TARGETS = torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("order", list(itertools.permutations(["mix", "smooth"])))
def test_result_does_not_depend_on_registration_order(order: tuple[str, ...]) -> None:
    state = _one_hot_state(TARGETS, 3)
    original = state.batch[1]
    transforms = {"mix": (TargetStage.MIX, _mix(PERMUTATION, 0.3)),
                  "smooth": (TargetStage.SMOOTH, _smooth(0.1, 3))}
    for name in order:
        stage, fn = transforms[name]
        state.add_target_transform(name, stage, fn)
    y = original
    expected = (1 - 0.3) * ((1 - 0.1) * y + 0.1 / 3) + 0.3 * ((1 - 0.1) * y[PERMUTATION] + 0.1 / 3)
    torch.testing.assert_close(state.batch[1], expected, rtol=1e-12, atol=1e-12)
    assert state.target_transform_owners == ["mix", "smooth"]
    for name in order:
        state.remove_target_transform(name)
    assert state.batch[1] is original
    assert state.target_components is None and state.target_key is None


@pytest.mark.parametrize("order", [("mix", "smooth"), ("smooth", "mix")])
def test_two_components_are_each_smoothed_and_batch_holds_the_first(order: tuple[str, ...]) -> None:
    state = _one_hot_state(TARGETS, 3)
    y = state.batch[1]
    transforms = {"mix": (TargetStage.MIX, _split(PERMUTATION, 0.25)),
                  "smooth": (TargetStage.SMOOTH, _smooth(0.2, 3))}
    for name in order:
        state.add_target_transform(name, *transforms[name])
    components = state.target_components
    assert components is not None and len(components) == 2
    assert [w for w, _ in components] == [0.75, 0.25]
    torch.testing.assert_close(components[0].target, 0.8 * y + 0.2 / 3)
    torch.testing.assert_close(components[1].target, 0.8 * y[PERMUTATION] + 0.2 / 3)
    assert state.batch[1] is components[0].target


def test_removing_one_rematerialises_the_rest_from_the_originals() -> None:
    state = _one_hot_state(TARGETS, 3)
    y = state.batch[1]
    state.add_target_transform("smooth", TargetStage.SMOOTH, _smooth(0.5, 3))
    state.add_target_transform("mix", TargetStage.MIX, _mix(PERMUTATION, 0.5))
    state.remove_target_transform("mix")
    torch.testing.assert_close(state.batch[1], 0.5 * y + 0.5 / 3)
    state.remove_target_transform("smooth")
    assert state.batch[1] is y


def test_registering_again_replaces_and_unknown_owner_removal_is_a_no_op() -> None:
    state = _one_hot_state(TARGETS, 3)
    y = state.batch[1]
    state.remove_target_transform("nobody")
    assert state.batch[1] is y
    state.add_target_transform("a", TargetStage.SMOOTH, _smooth(0.9, 3))
    state.add_target_transform("a", TargetStage.SMOOTH, _smooth(0.3, 3))
    torch.testing.assert_close(state.batch[1], 0.7 * y + 0.1)
    state.remove_target_transform("a")
    assert state.batch[1] is y


def test_tuple_batches_are_rebuilt_and_the_users_tuple_is_untouched() -> None:
    inputs, y = torch.zeros(4, 2), torch.nn.functional.one_hot(TARGETS, 3).float()
    batch = (inputs, y)
    state = State(torch.nn.Identity(), batch=batch)
    state.add_target_transform("s", 1, _smooth(0.1, 3))
    assert state.batch is not batch and batch[1] is y and state.batch[0] is inputs
    state.remove_target_transform("s")
    assert state.batch[1] is y


def test_bad_registrations_raise() -> None:
    state = _one_hot_state(TARGETS, 3)
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute"):
        state.add_target_transform("a", TargetStage.SMOOTH, _smooth(0.1, 3), target_key=5)
    with pytest.raises(ValueError, match="stage: expected a TargetStage"):
        state.add_target_transform("a", 7, _smooth(0.1, 3))
    with pytest.raises(TypeError, match="transform: expected a callable"):
        state.add_target_transform("a", TargetStage.MIX, "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="owner: expected"):
        state.add_target_transform(None, TargetStage.MIX, _smooth(0.1, 3))
    state.add_target_transform("a", TargetStage.SMOOTH, _smooth(0.1, 3))
    with pytest.raises(ValueError, match=r"target_key: expected the key already being transformed \(1\), got 0"):
        state.add_target_transform("b", TargetStage.MIX, _smooth(0.1, 3), target_key=0)


@pytest.mark.parametrize("result", [[], None, [torch.zeros(1)], [(1.0, "y")]])
def test_a_transform_returning_no_components_raises(result: object) -> None:
    state = _one_hot_state(TARGETS, 3)
    with pytest.raises(TypeError, match="target transform of 'bad': expected"):
        state.add_target_transform("bad", TargetStage.MIX, lambda components: result)  # type: ignore[arg-type, return-value]
