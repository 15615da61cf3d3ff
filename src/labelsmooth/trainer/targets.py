"""Training targets that stay index targets until someone asks for a tensor.

``LabelSmoothing``, ``MixUp`` and ``CutMix`` change what the loss trains on. Each of them writes
into the batch, at ``BEFORE_LOSS``, a :class:`TrainingTargets`: the user's targets ``y``, the
smoothing ``s`` and the mixes drawn for this batch. The target it stands for is one pure
function of those quantities,

.. math::

    t = \\sum_k w_k\\, \\mathrm{smooth}_s(y_k), \\qquad \\mathrm{smooth}_s(y) = (1 - s)\\, y + s / C,

over the components ``(w_k, y_k)``: ``[(1, y)]`` unmixed, ``[(1 - lam, y), (lam, y[indices])]``
after MixUp or CutMix (every component splits again for a second mix), and for CutMix on
per-pixel targets ``[(1, y with the partner's labels pasted inside the box)]``. Because the
result depends only on ``(y, mixes, s)``, it does not matter in which order the algorithms add
their part, and at ``AFTER_LOSS`` each one takes its own part out again; the batch holds the
user's original target object once nothing is left.

The target can be read in two ways:

- :meth:`TrainingTargets.cross_entropy` computes the loss from the index targets with the fused
  kernel, ``sum_k w_k * smoothed_cross_entropy(logits, y_k, s)``: cross-entropy is linear in the
  target, so this is the loss of ``t`` without ever building the dense ``N x C`` tensor. The
  Trainer takes this path when its loss is one of the cross-entropies below.
- Anything else sees a tensor: :class:`TrainingTargets` is a ``torch.Tensor`` subclass with the
  logits' shape and dtype, and the first operation on it builds the dense ``t`` (once) and runs
  on that. A loss that expects probabilities (``soft_cross_entropy`` style, a Composer model's
  ``loss(outputs, batch)``) or a callback reading the batch works unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from labelsmooth._validation import check_floating, check_reduction, check_smoothing, fail
from labelsmooth.functional._targets import classify_targets
from labelsmooth.functional.cross_entropy import (
    _native_call,
    _native_smoothed_cross_entropy,
    mixed_smoothed_cross_entropy,
    smoothed_cross_entropy,
    soft_cross_entropy,
)
from labelsmooth.functional.mixing import Box, paste_box
from labelsmooth.functional.smoothing import smooth_labels
from labelsmooth.losses import SmoothedBCEWithLogitsLoss, SmoothedCrossEntropyLoss, SoftCrossEntropyLoss

__all__ = ["Mix", "TrainingTargets"]


class Mix(NamedTuple):
    """One mix of a batch with a permutation of itself.

    Attributes:
        indices: the partner of every example, a permutation of the batch.
        lam: the partner's share in [0, 1]: the component ``(w, y)`` becomes
            ``(w (1 - lam), y)`` and ``(w lam, y[indices])``.
        box: for per-pixel targets, the box (one ``(start, stop)`` pair per trailing dimension)
            inside which the partner's labels replace the example's; ``lam`` is then not used.
        interpolate: a loss that is not one of the project's cross-entropies is computed once per
            component and interpolated, instead of once on the dense mixed target.
    """

    indices: torch.Tensor
    lam: float
    box: Box | None = None
    interpolate: bool = False


def _components(targets: torch.Tensor, mixes: Sequence[Mix]) -> list[tuple[float, torch.Tensor]]:
    """The ``(weight, targets)`` components of ``targets`` after ``mixes``, in order."""
    components = [(1.0, targets)]
    for mix in mixes:
        mixed = []
        for weight, part in components:
            partner = part[mix.indices.to(part.device)]
            if mix.box is not None:
                mixed.append((weight, paste_box(part, partner, mix.box)))
            else:
                mixed += [(weight * (1.0 - mix.lam), part), (weight * mix.lam, partner)]
        components = mixed
    kept = [(weight, part) for weight, part in components if weight != 0.0]
    return kept or components[:1]


def _unwrap(value: Any) -> Any:
    if isinstance(value, TrainingTargets):
        return value.dense()
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(item) for item in value)
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    return value


class TrainingTargets(torch.Tensor):
    """The training target of a batch: the user's targets, a smoothing and mixes, dense on demand.

    Build one with :meth:`of` (algorithms do, at ``BEFORE_LOSS``); change it with
    :meth:`replace`, :meth:`with_mix` and :meth:`without_mix`, which return new objects. As a
    tensor it has the logits' shape, dtype and device, and stands for the dense target
    ``sum_k w_k smooth_s(y_k)`` (see the module docstring); the dense tensor is built by the
    first operation that needs it (:meth:`dense`).

    Attributes:
        targets: the user's targets, the very object from the batch (index targets ``(N, *)`` or
            dense ``(N, C, *)``).
        smoothing: ``s`` in [0, 1], or any finite ``s <= 1`` when made with
            ``allow_negative=True`` (negative label smoothing).
        mixes: the :class:`Mix` es applied, in order.
        class_dim: the class dimension of the logits.
        ignore_index: index-target value whose positions get an all-zero dense target and
            count nothing in :meth:`cross_entropy`, or ``None``.

    Example:
        >>> logits, y = torch.zeros(2, 3), torch.tensor([0, 2])
        >>> target = TrainingTargets.of(y, logits).replace(smoothing=0.3)
        >>> target + 0  # any operation sees the dense smoothed target
        tensor([[0.8000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.8000]])
        >>> torch.allclose(target.cross_entropy(logits),
        ...                torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.3))
        True
    """

    targets: torch.Tensor
    smoothing: float
    mixes: tuple[Mix, ...]
    class_dim: int
    ignore_index: int | None
    _dense: torch.Tensor | None

    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def _make(targets: torch.Tensor, like: torch.Tensor, *, smoothing: float, mixes: tuple[Mix, ...],
              class_dim: int, ignore_index: int | None) -> TrainingTargets:
        self: TrainingTargets = torch.Tensor._make_wrapper_subclass(
            TrainingTargets, like.shape, dtype=like.dtype, device=like.device)
        self.targets, self.smoothing, self.mixes = targets, smoothing, mixes
        self.class_dim, self.ignore_index, self._dense = class_dim, ignore_index, None
        return self

    @classmethod
    def of(cls, targets: Any, logits: torch.Tensor, *, class_dim: int = 1,
           smoothing: float | None = None, ignore_index: int | None = None,
           mix: Mix | None = None, allow_negative: bool = False) -> TrainingTargets:
        """``targets`` as training targets for ``logits``, with ``smoothing`` (and
        ``ignore_index``) when given and ``mix`` added after the mixes already there.
        ``allow_negative=True`` admits a negative ``smoothing``.

        Training targets given nothing to change come back unchanged; otherwise the result is
        one new object (an algorithm builds one per step, whatever it changes).

        Raises:
            ValueError, TypeError: if ``targets`` are neither index targets nor dense targets
                of a shape that fits ``logits``, or ``smoothing`` is not in [0, 1] (not a finite
                number <= 1 with ``allow_negative``).
        """
        if smoothing is not None:
            smoothing = check_smoothing(smoothing, allow_negative=allow_negative)
        if isinstance(targets, TrainingTargets):
            if smoothing is None and ignore_index is None and mix is None:
                return targets
            base, dim = targets.targets, targets.class_dim
            like: torch.Tensor = targets
            smoothing = targets.smoothing if smoothing is None else smoothing
            ignore_index = targets.ignore_index if ignore_index is None else ignore_index
            mixes = targets.mixes
        else:
            _, dim = classify_targets(logits, targets, class_dim)
            base, like, mixes = targets, logits, ()
            smoothing = 0.0 if smoothing is None else smoothing
        return cls._make(base, like, smoothing=smoothing, class_dim=dim, ignore_index=ignore_index,
                         mixes=mixes if mix is None else (*mixes, mix))

    def replace(self, *, smoothing: float | None = None, ignore_index: int | None = None,
                allow_negative: bool = False) -> TrainingTargets:
        """A copy with another smoothing (and ``ignore_index``, when given);
        ``allow_negative=True`` admits a negative ``smoothing``."""
        if smoothing is not None:
            smoothing = check_smoothing(smoothing, allow_negative=allow_negative)
        return self._make(self.targets, self, mixes=self.mixes, class_dim=self.class_dim,
                          smoothing=self.smoothing if smoothing is None else smoothing,
                          ignore_index=self.ignore_index if ignore_index is None else ignore_index)

    def with_mix(self, mix: Mix) -> TrainingTargets:
        """A copy with ``mix`` applied after the mixes already there."""
        return self._make(self.targets, self, smoothing=self.smoothing, mixes=(*self.mixes, mix),
                          class_dim=self.class_dim, ignore_index=self.ignore_index)

    def without_mix(self, mix: Mix) -> TrainingTargets:
        """A copy without ``mix`` (the same object identifies it)."""
        mixes = tuple(kept for kept in self.mixes if kept is not mix)
        return self._make(self.targets, self, smoothing=self.smoothing, mixes=mixes,
                          class_dim=self.class_dim, ignore_index=self.ignore_index)

    def without_smoothing(self) -> Any:
        """What is left once the smoothing is taken out: the user's original target object when
        no mix is left (no new object), else a copy with smoothing 0."""
        return self.targets if not self.mixes else self.replace(smoothing=0.0)

    def simplified(self) -> Any:
        """The user's original target object when no smoothing and no mix is left, else self."""
        return self.targets if self.smoothing == 0.0 and not self.mixes else self

    def components(self) -> list[tuple[float, torch.Tensor]]:
        """The ``(weight, targets)`` pairs whose smoothed, weighted sum is the target."""
        return _components(self.targets, self.mixes)

    def terms(self) -> list[tuple[float, TrainingTargets]]:
        """One unmixed training target per component, with its weight (an interpolated loss)."""
        return [(weight, self._make(part, self, smoothing=self.smoothing, mixes=(),
                                    class_dim=self.class_dim, ignore_index=self.ignore_index))
                for weight, part in self.components()]

    @property
    def interpolate(self) -> bool:
        """Whether any mix asks for an interpolated loss rather than a mixed target."""
        return any(mix.interpolate for mix in self.mixes)

    def dense(self) -> torch.Tensor:
        """The dense target ``sum_k w_k smooth_s(y_k)``, a plain tensor (built once, then kept)."""
        if self._dense is None:
            template = torch.empty((), dtype=self.dtype, device=self.device).expand(self.shape)
            total: torch.Tensor | None = None
            for weight, part in self.components():
                term = smooth_labels(template, part, self.smoothing, class_dim=self.class_dim,
                                     ignore_index=self.ignore_index,
                                     allow_negative=self.smoothing < 0.0)
                if total is None:
                    total = term if weight == 1.0 else term * weight
                else:
                    total.add_(term, alpha=weight)
            self._dense = total
        assert self._dense is not None  # components are never empty
        return self._dense

    def cross_entropy(self, input: torch.Tensor, *, weight: torch.Tensor | None = None,
                      ignore_index: int = -100, reduction: str = "mean", class_dim: int | None = None,
                      inplace_backward: bool = False) -> torch.Tensor:
        """The cross-entropy of ``input`` against this target, from the index targets.

        ``sum_k w_k * smoothed_cross_entropy(input, y_k, s, ...)``, computed by
        :func:`~labelsmooth.functional.mixed_smoothed_cross_entropy` in one fused pass (no
        ``N x C`` target; one gradient buffer, none with ``inplace_backward=True``); with one
        component it is ``F.cross_entropy(input, y, label_smoothing=s)`` with the same options.
        ``ignore_index`` is this target's when set, else the argument. Dense user targets are
        computed component by component.
        """
        if class_dim is not None and class_dim % input.ndim != self.class_dim:
            fail("class_dim", f"the training targets' class dimension {self.class_dim}", class_dim)
        ignore = self.ignore_index if self.ignore_index is not None else ignore_index
        if (not self.mixes and weight is None and input.shape == self.shape
                and not self.targets.is_floating_point() and _native_call(
                    input, self.smoothing, dim=self.class_dim, prior=None,
                    inplace_backward=inplace_backward)):
            return self._native_cross_entropy(input, ignore, reduction)
        components = self.components()
        # A negative smoothing was admitted when this target was made (allow_negative=True).
        options: dict[str, Any] = dict(weight=weight, ignore_index=ignore, reduction=reduction,
                                       class_dim=self.class_dim, allow_negative=self.smoothing < 0.0)
        if not any(part.is_floating_point() for _, part in components):
            return mixed_smoothed_cross_entropy(
                input, [part for _, part in components], [share for share, _ in components],
                self.smoothing, inplace_backward=inplace_backward, **options)
        total: torch.Tensor | None = None
        for share, part in components:
            term = smoothed_cross_entropy(input, part, self.smoothing, **options,
                                          inplace_backward=inplace_backward and len(components) == 1)
            term = term if share == 1.0 else term * share
            total = term if total is None else total + term
        assert total is not None  # components are never empty
        return total

    def _native_cross_entropy(self, input: torch.Tensor, ignore_index: int, reduction: str
                              ) -> torch.Tensor:
        """The library's small-problem loss, where the fused op would hand the call to it (one
        index target, ``s >= 0``, a small CPU problem): the targets' shape and dtype were
        checked when this object was made, and the loss checks their range."""
        check_floating(input, "input")
        targets = self.targets if self.targets.dtype == torch.int64 else self.targets.long()
        return _native_smoothed_cross_entropy(input, targets, self.smoothing,
                                              weight=None, ignore_index=ignore_index,
                                              reduction=check_reduction(reduction),
                                              targets_name="targets")

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (),  # type: ignore[override]
                           kwargs: Any = None) -> Any:
        return func(*_unwrap(tuple(args)), **_unwrap(dict(kwargs or {})))

    def __repr__(self) -> str:  # type: ignore[override]
        return (f"TrainingTargets(shape={tuple(self.shape)}, smoothing={self.smoothing}, "
                f"mixes={len(self.mixes)}, targets={self.targets!r})")


def loss_options(loss_fn: Callable[..., Any]) -> dict[str, Any] | None:
    """The options of ``loss_fn`` if it is a cross-entropy that :meth:`TrainingTargets.cross_entropy`
    computes exactly, else ``None``.

    Those are :func:`~labelsmooth.functional.soft_cross_entropy`, ``F.cross_entropy``,
    :class:`~labelsmooth.SoftCrossEntropyLoss`, :class:`~labelsmooth.SmoothedCrossEntropyLoss`
    and ``nn.CrossEntropyLoss`` (the last two without smoothing of their own).
    """
    if loss_fn is soft_cross_entropy or loss_fn is F.cross_entropy:
        return {}
    if isinstance(loss_fn, (SoftCrossEntropyLoss, SmoothedCrossEntropyLoss)):
        options = {"weight": loss_fn.weight, "ignore_index": loss_fn.ignore_index,
                   "reduction": loss_fn.reduction, "class_dim": loss_fn.class_dim}
        if isinstance(loss_fn, SmoothedCrossEntropyLoss):
            options["inplace_backward"] = loss_fn.inplace_backward
        return options if own_smoothing(loss_fn) == 0.0 else None
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss) and loss_fn.label_smoothing == 0.0:
        return {"weight": loss_fn.weight, "ignore_index": loss_fn.ignore_index,
                "reduction": loss_fn.reduction}
    return None


def own_smoothing(loss_fn: Callable[..., Any]) -> float:
    """The smoothing ``loss_fn`` applies by itself (0 for a loss not known to smooth)."""
    if loss_fn is smoothed_cross_entropy:
        return float(inspect.signature(smoothed_cross_entropy).parameters["smoothing"].default)
    if isinstance(loss_fn, (SmoothedCrossEntropyLoss, SmoothedBCEWithLogitsLoss)):
        return float(loss_fn.smoothing)
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return float(loss_fn.label_smoothing)
    return 0.0
