"""The target-transform stage: how algorithms that change targets compose, in any order.

Label smoothing, MixUp and CutMix all rewrite the targets right before the loss and must put the
originals back right after it. Done naively (each algorithm overwrites whatever target it finds
and restores whatever it saved), the result depends on the order the user listed them in:
with ``[LabelSmoothing, MixUp]`` the permuted half of a mixed target is left unsmoothed, and a
second loss term computed after the targets were restored is unsmoothed too.

Here no algorithm writes the targets itself. Each one *registers a transform* with the
:class:`~labelsmooth.trainer.state.State`, and the State derives the training target:

1. At ``BEFORE_LOSS`` an algorithm calls
   ``state.add_target_transform(owner, stage, transform, target_key=...)``. The first
   registration of a microbatch saves the original target (the very object in the batch).
2. On every registration the State *re-materialises* the target from the **original**: it
   starts from the components ``[TargetComponent(1.0, original)]`` and applies every
   registered transform in order of its :class:`TargetStage` (ties in registration order),
   then writes the first component's target into the batch.
3. At ``AFTER_LOSS`` each algorithm calls ``state.remove_target_transform(owner)``. When none
   remain, the original object is written back; otherwise the target is re-materialised from
   the remaining transforms.

Because every materialisation starts from the originals and the order is fixed by stage, the
training target does not depend on the order of the user's algorithm list, nor on the order in
which they registered. The stages are:

- :attr:`TargetStage.MIX` (0): mixing algorithms (MixUp, CutMix). A mixing transform may turn
  ``[(1, y)]`` into one dense mixed target ``[(1, (1 - lam) y + lam y_perm)]``, or, for an
  interpolated loss, into two components ``[(1 - lam, y), (lam, y_perm)]``.
- :attr:`TargetStage.SMOOTH` (1): label smoothing maps every component's target to
  ``(1 - s) onehot(t) + s / C``. Smoothing is affine and keeps rows summing to one, so smoothing
  a mixed target equals mixing smoothed targets: ``smooth((1 - lam) y + lam y') =
  (1 - lam) smooth(y) + lam smooth(y')``.

The loss is ``sum_k w_k * loss_fn(outputs, t_k)`` over the components ``(w_k, t_k)``; with the
usual single component of weight one it is plain ``loss_fn(outputs, batch_target)``. From
``BEFORE_LOSS`` to the loss the batch holds the first component's target.

Writing a new target-changing algorithm takes three lines: in ``apply`` at ``BEFORE_LOSS``,
``state.add_target_transform(self, TargetStage.MIX, transform, target_key=self.target_key)``
(use :func:`map_targets` for a transform that acts on each target alone); at ``AFTER_LOSS``,
``state.remove_target_transform(self)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import torch

from labelsmooth._validation import fail
from labelsmooth.trainer.batch import BatchKey, batch_get_item, batch_set_item

__all__ = [
    "TargetComponent",
    "TargetPipeline",
    "TargetStage",
    "TargetTransform",
    "map_targets",
]


class TargetStage(IntEnum):
    """When a target transform runs, relative to the others: lower stages run first."""

    MIX = 0
    SMOOTH = 1


class TargetComponent(NamedTuple):
    """One term of the training target: the loss adds ``weight * loss_fn(outputs, target)``."""

    weight: float | torch.Tensor
    target: torch.Tensor


TargetTransform = Callable[[Sequence[TargetComponent]], Sequence[TargetComponent]]


def map_targets(fn: Callable[[torch.Tensor], torch.Tensor]) -> TargetTransform:
    """A target transform that applies ``fn`` to the target of every component, keeping weights.

    Args:
        fn: maps one target tensor to its transformed version (e.g. smoothing it).

    Returns:
        A transform to pass to :meth:`State.add_target_transform
        <labelsmooth.trainer.state.State.add_target_transform>`.

    Example:
        >>> double = map_targets(lambda t: 2 * t)
        >>> double([TargetComponent(1.0, torch.tensor([1.0]))])
        [TargetComponent(weight=1.0, target=tensor([2.]))]
    """

    def transform(components: Sequence[TargetComponent]) -> list[TargetComponent]:
        return [TargetComponent(weight, fn(target)) for weight, target in components]

    return transform


@dataclass
class _Registration:
    owner: object
    stage: TargetStage
    order: int
    transform: TargetTransform


def _as_components(result: Any, owner: object) -> tuple[TargetComponent, ...]:
    if not isinstance(result, Sequence) or len(result) == 0:
        fail(f"target transform of {owner!r}", "a non-empty sequence of (weight, target) pairs",
             type(result).__name__, error=TypeError)
    components = []
    for item in result:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
            fail(f"target transform of {owner!r}", "(weight, target tensor) pairs",
                 type(item).__name__, error=TypeError)
        components.append(TargetComponent(item[0], item[1]))
    return tuple(components)


class TargetPipeline:
    """The target transforms registered for the current microbatch (kept by the State).

    Use it through :meth:`State.add_target_transform
    <labelsmooth.trainer.state.State.add_target_transform>` and :meth:`State.remove_target_transform
    <labelsmooth.trainer.state.State.remove_target_transform>`; see the module docstring.
    """

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []
        self._order = itertools.count()
        self._target_key: BatchKey | None = None
        self._original: Any = None
        self._components: tuple[TargetComponent, ...] | None = None

    @property
    def active(self) -> bool:
        """Whether any transform is registered."""
        return bool(self._registrations)

    @property
    def owners(self) -> list[object]:
        """The owners with a registered transform, in the order they run."""
        return [registration.owner for registration in self._sorted()]

    @property
    def target_key(self) -> BatchKey | None:
        """Where the transformed target lives in the batch (``None`` when inactive)."""
        return self._target_key

    @property
    def original(self) -> Any:
        """The original target object saved at the first registration (``None`` when inactive)."""
        return self._original

    @property
    def components(self) -> tuple[TargetComponent, ...] | None:
        """The materialised components, or ``None`` when no transform is registered."""
        return self._components

    def _sorted(self) -> list[_Registration]:
        return sorted(self._registrations, key=lambda r: (r.stage, r.order))

    def add(self, batch: Any, owner: object, stage: TargetStage | int, transform: TargetTransform,
            target_key: BatchKey) -> Any:
        """Register ``owner``'s transform (replacing an earlier one of ``owner``) and
        re-materialise; return the updated batch."""
        if owner is None:
            fail("owner", "the object registering the transform", owner, error=TypeError)
        if not isinstance(stage, TargetStage):
            try:
                stage = TargetStage(stage)
            except ValueError:
                fail("stage", f"a TargetStage ({[s.name for s in TargetStage]})", stage)
        if not callable(transform):
            fail("transform", "a callable mapping target components to target components",
                 transform, error=TypeError)
        if self._registrations:
            if target_key != self._target_key:
                fail("target_key", f"the key already being transformed ({self._target_key!r})",
                     target_key)
        else:
            self._original = batch_get_item(batch, target_key, argument="target_key")
            self._target_key = target_key
        previous = [r for r in self._registrations if r.owner is owner]
        order = previous[0].order if previous else next(self._order)
        self._registrations = [r for r in self._registrations if r.owner is not owner]
        self._registrations.append(_Registration(owner, stage, order, transform))
        return self._materialise(batch)

    def remove(self, batch: Any, owner: object) -> Any:
        """Unregister ``owner``'s transform (a no-op if it has none); return the updated batch.

        When the last transform goes, the original target object is written back.
        """
        if not any(r.owner is owner for r in self._registrations):
            return batch
        self._registrations = [r for r in self._registrations if r.owner is not owner]
        if self._registrations:
            return self._materialise(batch)
        assert self._target_key is not None  # set by the first registration
        batch = batch_set_item(batch, self._target_key, self._original, argument="target_key")
        self._target_key, self._original, self._components = None, None, None
        return batch

    def _materialise(self, batch: Any) -> Any:
        components: tuple[TargetComponent, ...] = (TargetComponent(1.0, self._original),)
        for registration in self._sorted():
            components = _as_components(registration.transform(components), registration.owner)
        self._components = components
        assert self._target_key is not None  # set by the first registration
        return batch_set_item(batch, self._target_key, components[0].target, argument="target_key")
