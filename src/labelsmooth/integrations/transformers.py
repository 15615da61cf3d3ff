"""The fused label-smoothed loss for Hugging Face Transformers' ``Trainer``.

Two ways in, both computing the same loss as Hugging Face's own label smoothing
(``TrainingArguments(label_smoothing_factor=...)``) without its float32 log-probabilities of
the whole ``(B, T, V)`` logits:

- ``Trainer(..., compute_loss_func=compute_loss_func(0.1, shift_labels=True))``;
- ``trainer.label_smoother = LabelSmoother(0.1)``, a drop-in for
  ``transformers.trainer_pt_utils.LabelSmoother``.

With ``B`` sequences of ``T`` positions, ``V`` classes, logits ``x``, labels ``y`` and
``lse = logsumexp_v x_v``, the loss is

.. math::

    L = \\frac{1}{D} \\sum_{t:\\, y_t \\ne \\mathrm{ignore}}
        (1 - s)(\\mathrm{lse}_t - x_{t, y_t}) + \\frac{s}{V} \\sum_v (\\mathrm{lse}_t - x_{t, v}),

where ``D`` is ``num_items_in_batch`` when the ``Trainer`` passes it (the number of
non-ignored labels over all the micro-batches of one optimizer step, so that gradient
accumulation gives the update of one large batch) and the number of non-ignored labels of this
batch otherwise. This is Hugging Face's ``LabelSmoother`` formula term for term.

For causal language models (``shift_labels=True``) position ``t`` predicts label ``t + 1``. The
labels are shifted left and the last position gets ``ignore_index``, rather than the logits
being sliced: the logits stay one contiguous block, so the gradient can be written into their
own storage (``inplace_backward``) with no ``(B, T, V)`` copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth._optional import import_optional
from labelsmooth._validation import check_index_dtype, check_int, check_smoothing, fail, shape_str
from labelsmooth.functional import smoothed_cross_entropy

__all__ = ["MINIMUM_TRANSFORMERS", "LabelSmoother", "compute_loss_func", "smoothed_loss"]

#: ``Trainer(compute_loss_func=...)`` first appeared in this release.
MINIMUM_TRANSFORMERS = "4.46"

LossFunc = Callable[..., torch.Tensor]


def _require_transformers() -> None:
    import_optional("transformers", extra="transformers", minimum=MINIMUM_TRANSFORMERS,
                    purpose="labelsmooth.integrations.transformers")


def _check_bool(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        fail(argument, "a bool", repr(value) if isinstance(value, str) else value, error=TypeError)
    return value


def _logits_of(model_output: Any) -> torch.Tensor:
    """The logits of a ``ModelOutput`` / dict (key ``"logits"``), a tuple (first item) or a tensor."""
    if isinstance(model_output, torch.Tensor):
        return model_output
    if isinstance(model_output, Mapping):
        logits = model_output.get("logits")
        shown = f"a {type(model_output).__name__} with keys {list(model_output.keys())}"
    elif isinstance(model_output, (tuple, list)) and len(model_output) > 0:
        logits = model_output[0]
        shown = f"a {type(model_output).__name__} whose first item is {type(logits).__name__}"
    else:
        logits, shown = None, type(model_output).__name__
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.ndim < 2:
        fail("model_output", "a model output with floating-point logits (B, ..., V) (a ModelOutput or "
             "dict with 'logits', a tuple whose first item is the logits, or the logits)", shown,
             error=TypeError)
    return logits


def _inplace_allowed(logits: torch.Tensor) -> bool:
    """The gradient may overwrite logits that autograd produced, not a leaf or a view of one."""
    if not (torch.is_grad_enabled() and logits.requires_grad) or logits.grad_fn is None:
        return False
    base = logits._base
    return base is None or not (base.is_leaf and base.requires_grad)


def _checked_labels(labels: Any, logits: torch.Tensor, *, shift: bool, ignore_index: int) -> torch.Tensor:
    """Labels ``(B, ..., T)`` matching the logits; shifted left for a causal model."""
    expected = shape_str(logits.shape[:-1])
    note = " (unshifted: shift_labels=True shifts them)" if shift else ""
    if not isinstance(labels, torch.Tensor):
        fail("labels", f"a tensor of class indices of shape {expected}{note}", type(labels).__name__,
             error=TypeError)
    check_index_dtype(labels, "labels")
    if labels.shape != logits.shape[:-1]:
        fail("labels", f"shape {expected}, the logits' {shape_str(logits.shape)} without the class "
             f"dimension{note}", f"shape {shape_str(labels.shape)}")
    labels = labels.to(device=logits.device, dtype=torch.long)
    if shift:
        labels = F.pad(labels[..., 1:], (0, 1), value=ignore_index)
    return labels


def smoothed_loss(
    model_output: Any,
    labels: torch.Tensor,
    smoothing: float = 0.1,
    *,
    ignore_index: int = -100,
    shift_labels: bool = False,
    num_items_in_batch: int | torch.Tensor | None = None,
    inplace_backward: bool = True,
) -> torch.Tensor:
    """Hugging Face's label-smoothed loss of one (micro-)batch, by the fused kernel.

    Args:
        model_output: a ``ModelOutput`` or dict with ``"logits"``, a tuple whose first item is
            the logits, or the logits; shape ``(B, ..., V)``, floating.
        labels: class indices ``(B, ...)``, the logits' shape without ``V``; ``ignore_index``
            marks padding. Unshifted when ``shift_labels=True``.
        smoothing: ``s`` in [0, 1] (default 0.1).
        ignore_index: the label that contributes nothing (default -100).
        shift_labels: position ``t`` predicts label ``t + 1`` (causal language models).
        num_items_in_batch: the divisor ``D`` (an int or a tensor); default ``None``: the
            number of non-ignored labels of this batch.
        inplace_backward: write the gradient into the logits' storage when autograd allows it
            (logits produced by the model, not a leaf); they hold the gradient afterwards.
            Default ``True``: the ``Trainer`` does not read the training logits after the loss.
            Under ``torch.no_grad()`` (evaluation) the logits are never written.

    Returns:
        The loss, a scalar in the logits' dtype.

    Example:
        >>> logits, labels = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
        >>> reference = torch.nn.functional.cross_entropy(
        ...     logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), label_smoothing=0.1)
        >>> torch.allclose(smoothed_loss(logits, labels, 0.1, shift_labels=True), reference)
        True
    """
    s = check_smoothing(smoothing)
    ignore = check_int(ignore_index, "ignore_index")
    shift = _check_bool(shift_labels, "shift_labels")
    inplace = _check_bool(inplace_backward, "inplace_backward")
    logits = _logits_of(model_output)
    target = _checked_labels(labels, logits, shift=shift, ignore_index=ignore)
    inplace = inplace and _inplace_allowed(logits)
    if num_items_in_batch is None:
        return smoothed_cross_entropy(logits, target, s, ignore_index=ignore, class_dim=-1,
                                      inplace_backward=inplace)
    total = smoothed_cross_entropy(logits, target, s, ignore_index=ignore, class_dim=-1,
                                   reduction="sum", inplace_backward=inplace)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    elif isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, (int, float)):
        fail("num_items_in_batch", "None, a number or a tensor", repr(num_items_in_batch), error=TypeError)
    return total / num_items_in_batch


def compute_loss_func(
    smoothing: float = 0.1,
    *,
    ignore_index: int = -100,
    shift_labels: bool = False,
    inplace_backward: bool = True,
) -> LossFunc:
    """A ``compute_loss_func`` for ``transformers.Trainer``: the fused label-smoothed loss.

    The ``Trainer`` calls it as ``(outputs, labels, num_items_in_batch=...)`` and, for a
    ``compute_loss_func``, does not divide the loss by the accumulation steps itself: the sum
    divided by ``num_items_in_batch`` (the non-ignored labels over all micro-batches of the
    step) makes ``gradient_accumulation_steps=k`` give the update of one batch ``k`` times as
    large. See :func:`smoothed_loss` for the formula and the arguments.

    Args:
        smoothing: ``s`` in [0, 1] (default 0.1).
        ignore_index: the label that contributes nothing (default -100).
        shift_labels: ``True`` for causal language models (the ``Trainer`` does not shift labels
            for a ``compute_loss_func``); default ``False``.
        inplace_backward: write the gradient into the logits (default ``True``); pass ``False``
            if something else reads the training logits after the loss.

    Returns:
        ``loss_func(outputs, labels, num_items_in_batch=None) -> loss``.

    Raises:
        ImportError: transformers is missing or older than :data:`MINIMUM_TRANSFORMERS`.

    Example:
        >>> loss_func = compute_loss_func(0.1, shift_labels=True)
        >>> logits, labels = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
        >>> float(loss_func({"logits": logits}, labels, num_items_in_batch=8)) > 0
        True
    """
    _require_transformers()
    s = check_smoothing(smoothing)
    ignore = check_int(ignore_index, "ignore_index")
    shift = _check_bool(shift_labels, "shift_labels")
    inplace = _check_bool(inplace_backward, "inplace_backward")

    def loss_func(outputs: Any, labels: torch.Tensor,
                  num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
        return smoothed_loss(outputs, labels, s, ignore_index=ignore, shift_labels=shift,
                             num_items_in_batch=num_items_in_batch, inplace_backward=inplace)

    return loss_func


@dataclass
class LabelSmoother:
    """A drop-in for ``transformers.trainer_pt_utils.LabelSmoother``, by the fused kernel.

    ``trainer.label_smoother = LabelSmoother(0.1)`` replaces the one the ``Trainer`` builds from
    ``label_smoothing_factor``; it is called the same way, ``(model_output, labels,
    shift_labels=False, num_items_in_batch=None)``, and returns the same loss (see
    :func:`smoothed_loss`), writing the gradient into the logits when autograd allows it.

    Args:
        epsilon: the smoothing ``s`` in [0, 1] (default 0.1).
        ignore_index: the label that contributes nothing (default -100).
        inplace_backward: as in :func:`smoothed_loss` (default ``True``).

    Raises:
        ImportError: transformers is missing or older than :data:`MINIMUM_TRANSFORMERS`.

    Example:
        >>> smoother = LabelSmoother(0.1)
        >>> logits, labels = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
        >>> torch.allclose(smoother({"logits": logits}, labels),
        ...                torch.nn.functional.cross_entropy(logits.reshape(-1, 11),
        ...                                                  labels.reshape(-1), label_smoothing=0.1))
        True
    """

    epsilon: float = 0.1
    ignore_index: int = -100
    inplace_backward: bool = True

    def __post_init__(self) -> None:
        _require_transformers()
        self.epsilon = check_smoothing(self.epsilon, "epsilon")
        self.ignore_index = check_int(self.ignore_index, "ignore_index")
        self.inplace_backward = _check_bool(self.inplace_backward, "inplace_backward")

    def __call__(self, model_output: Any, labels: torch.Tensor, shift_labels: bool = False,
                 num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
        return smoothed_loss(model_output, labels, self.epsilon, ignore_index=self.ignore_index,
                             shift_labels=shift_labels, num_items_in_batch=num_items_in_batch,
                             inplace_backward=self.inplace_backward)
