"""Cross-entropy losses for index or dense targets, with label smoothing.

``soft_cross_entropy`` is the loss that accepts the dense distribution label smoothing produces
as its target. ``smoothed_cross_entropy`` reaches the label-smoothed loss from
index targets without building the dense ``N x C`` target at all. ``smoothed_binary_cross_entropy
_with_logits`` is the binary / multi-label counterpart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labelsmooth._ops.cross_entropy import fused_smoothed_cross_entropy
from labelsmooth._validation import (
    check_floating,
    check_int,
    check_reduction,
    check_smoothing,
    describe,
    fail,
    shape_str,
)
from labelsmooth.functional._targets import check_target_range, classify_targets
from labelsmooth.functional.smoothing import smooth_binary_labels, smooth_labels

__all__ = [
    "smoothed_binary_cross_entropy_with_logits",
    "smoothed_cross_entropy",
    "soft_cross_entropy",
]


def _check_weight(weight: object, num_classes: int, argument: str = "weight") -> torch.Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        fail(argument, "None or a torch.Tensor", type(weight).__name__, error=TypeError)
    if not weight.is_floating_point():
        fail(argument, "a floating-point tensor", f"dtype {weight.dtype}", error=TypeError)
    if weight.shape != (num_classes,):
        fail(argument, f"a 1-d tensor of {num_classes} class weights", f"shape {shape_str(weight.shape)}")
    return weight


def soft_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    class_dim: int = 1,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """Cross-entropy for index **or** dense (probability) targets.

    With ``lp = log_softmax(input)`` along the class dim, the unreduced loss of one position is

    - index target ``y``: ``-w[y] * lp[y]`` (0 where ``y == ignore_index``);
    - dense target ``t``: ``-sum_c w[c] * t[c] * lp[c]``.

    The two paths normalise ``reduction="mean"`` differently, exactly as PyTorch does:

    - index targets divide the summed loss by ``sum w[y]`` over the non-ignored positions (by
      their count without ``weight``): a weighted average;
    - dense targets divide by the number of positions ``N * d1 * ... * dk``, whatever ``weight``
      is; an all-zero target row (as :func:`smooth_labels` gives ignored positions) adds 0 to
      the sum but still counts in the denominator.

    Args:
        input: logits, shape ``(N, C, *)`` with classes on ``class_dim``, or ``(C,)``; floating.
        target: class indices ``(N, *)`` (integer) or dense targets of ``input``'s shape; on
            another device than ``input`` they are copied to ``input``'s (as
            :func:`labelsmooth.functional.smooth_labels` does).
        weight: class weights, shape ``(C,)``, any floating dtype (cast to ``input``'s)
            (default ``None``: all 1).
        ignore_index: for index targets, a value that contributes 0 (default -100).
        reduction: ``"none"`` (shape ``(N, *)``), ``"mean"`` (default) or ``"sum"``.
        class_dim: the class dimension of ``input`` (default 1).
        validate_args: index-range checking, as in :func:`labelsmooth.functional.one_hot`.

    Returns:
        The loss in ``input``'s dtype; equal to :func:`torch.nn.functional.cross_entropy` with
        the same arguments (class dim moved to 1).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> soft_cross_entropy(logits, torch.tensor([0])).allclose(
        ...     soft_cross_entropy(logits, torch.tensor([[1.0, 0.0, 0.0]])))
        True

    References:
        PyTorch, :func:`torch.nn.functional.cross_entropy` (probability targets since 1.10).
    """
    check_floating(input, "input")
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    kind, dim = classify_targets(input, target, class_dim, logits_name="input", targets_name="target")
    num_classes = input.shape[dim]
    w = _check_weight(weight, num_classes)
    if w is not None:
        # PyTorch requires the weight in the input's dtype; the fused smoothed path accepts any
        # floating weight, so this one does too.
        w = w.to(device=input.device, dtype=input.dtype)
    moved = input.movedim(dim, 1) if input.ndim > 1 else input
    if kind == "index":
        check_target_range(target, num_classes, ignore, validate_args=validate_args,
                           targets_name="target")
        index = target.to(device=input.device, dtype=torch.long)
        return F.cross_entropy(moved, index, weight=w, ignore_index=ignore, reduction=red)
    dense = target.to(device=input.device, dtype=input.dtype)
    dense = dense.movedim(dim, 1) if input.ndim > 1 else dense
    return F.cross_entropy(moved, dense, weight=w, reduction=red)


def smoothed_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    smoothing: float = 0.1,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    class_dim: int = 1,
    inplace_backward: bool = False,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """Label-smoothed cross-entropy that never builds the dense ``N x C`` target.

    For index target ``y``, logits ``x`` and ``lse = logsumexp_c x_c``, the unreduced loss is

    .. math::

        \\ell = (1 - s)\\, w_y (\\mathrm{lse} - x_y) + \\frac{s}{C} \\sum_c w_c (\\mathrm{lse} - x_c)

    (0 where ``y == ignore_index``); ``"mean"`` divides the sum by ``sum w_y`` over the
    non-ignored positions, ``"sum"`` sums. This equals
    ``torch.nn.functional.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
    reduction=reduction, label_smoothing=smoothing)`` in value and gradient, the all-ignored
    (NaN mean) and empty batches included. For float16 / bfloat16 input the class sums
    accumulate in float32, so the loss stays finite for large ``C`` where PyTorch's overflows.

    Index targets run the fused kernel of :mod:`labelsmooth._ops.cross_entropy`: one pass over
    the logits computes the loss and the gradient together (derivation beside that code), keeps
    only the gradient, and does no gradient work under ``torch.no_grad()``. Its only ``N x C``
    allocation is the gradient it must return, or none with ``inplace_backward=True``. (Tiny
    float32/float64 CPU problems, at most 65536 logits and not in place, run PyTorch's own
    loss instead: its fixed cost is lower there; so do meta tensors and ``torch.func``
    transforms.) Backward may run more than once, and twice (``create_graph=True``) as
    PyTorch's does, except after ``inplace_backward=True``.

    Dense targets are accepted too: they are smoothed with :func:`smooth_labels` and passed to
    :func:`soft_cross_entropy` (whose ``"mean"`` divides by the number of positions).

    Args:
        input: logits ``(N, C, *)`` with classes on ``class_dim``, or ``(C,)``; floating.
        target: class indices ``(N, *)`` in ``[0, C)`` or ``ignore_index``, or dense targets of
            ``input``'s shape; on another device than ``input`` they are copied to ``input``'s.
        smoothing: ``s`` in ``[0, 1]`` (default 0.1); 0 gives plain cross-entropy.
        weight: class weights ``(C,)``, any floating dtype (default ``None``). Index targets
            use it in float32 (float64 for float64 input); dense ones cast it to ``input``'s.
        ignore_index: index-target value that contributes nothing (default -100).
        reduction: ``"none"`` (shape ``(N, *)``), ``"mean"`` (default) or ``"sum"``.
        class_dim: the class dimension of ``input`` (default 1).
        inplace_backward: write the gradient into ``input``'s own storage instead of a new
            buffer (default ``False``; the name flash-attention uses). **The logits' values are
            destroyed by the call**: read anything you need from them (accuracy, say) before.
            Refused with a ``ValueError`` for a leaf tensor that requires grad or a view of one;
            another autograd node that saved the logits raises in backward (the write bumps
            their version counter). Saves memory only when the logits, moved to ``(M, C)``,
            are contiguous (the usual ``(N, C)`` head output); otherwise it writes into that copy.
        validate_args: index-range checking, as in :func:`labelsmooth.functional.one_hot`.

    Returns:
        The loss, in ``input``'s dtype.

    Example:
        >>> x, y = torch.randn(8, 5), torch.randint(5, (8,))
        >>> torch.allclose(smoothed_cross_entropy(x, y, 0.1),
        ...                torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1))
        True

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
        Müller, Kornblith and Hinton, "When does label smoothing help?", NeurIPS 2019.
    """
    check_floating(input, "input")
    s = check_smoothing(smoothing)
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    kind, dim = classify_targets(input, target, class_dim, logits_name="input", targets_name="target")
    num_classes = input.shape[dim]
    w = _check_weight(weight, num_classes)
    if not isinstance(inplace_backward, bool):
        fail("inplace_backward", "a bool", describe(inplace_backward), error=TypeError)
    if kind == "dense":
        dense = smooth_labels(input, target, s, class_dim=dim)
        return soft_cross_entropy(input, dense, weight=w, reduction=red, class_dim=dim)
    check_target_range(target, num_classes, ignore, validate_args=validate_args, targets_name="target")
    rows = input.movedim(dim, -1).reshape(-1, num_classes)
    loss = fused_smoothed_cross_entropy(
        rows, target.reshape(-1).to(device=input.device, dtype=torch.long), s, weight=w,
        ignore_index=ignore, reduction=red, inplace_backward=inplace_backward,
    )
    return loss.reshape(target.shape) if red == "none" else loss


def smoothed_binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    smoothing: float = 0.1,
    *,
    weight: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary / multi-label cross-entropy on logits with smoothed targets.

    The targets become ``t (1 - s) + s / 2`` (:func:`smooth_binary_labels`, Keras' convention;
    see there for timm's alternative), then
    :func:`torch.nn.functional.binary_cross_entropy_with_logits` applies:

    .. math::

        \\ell = -w \\,[\\, p\\, \\tilde t \\log \\sigma(x) + (1 - \\tilde t) \\log(1 - \\sigma(x)) \\,]

    with ``p = pos_weight`` broadcast over the last dimension.

    Args:
        input: logits of any shape, floating.
        target: targets in ``[0, 1]`` of ``input``'s shape (bool, integer or floating); on
            another device than ``input`` they are copied to ``input``'s.
        smoothing: ``s`` in ``[0, 1]`` (default 0.1).
        weight: a tensor broadcastable to ``input`` (default ``None``).
        pos_weight: weight of positives per class, broadcastable to ``input`` (default ``None``).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.

    Returns:
        The loss in ``input``'s dtype.

    Example:
        >>> x = torch.zeros(2, 3)
        >>> smoothed_binary_cross_entropy_with_logits(x, torch.ones(2, 3), 0.1)
        tensor(0.6931)

    References:
        Keras, ``keras.losses.BinaryCrossentropy(label_smoothing=...)``; Müller, Kornblith and
        Hinton, "When does label smoothing help?", NeurIPS 2019.
    """
    check_floating(input, "input")
    s = check_smoothing(smoothing)
    red = check_reduction(reduction)
    if not isinstance(target, torch.Tensor):
        fail("target", "a torch.Tensor", type(target).__name__, error=TypeError)
    if target.shape != input.shape:
        fail("target", f"the input's shape {shape_str(input.shape)}", f"shape {shape_str(target.shape)}")
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is not None and not isinstance(value, torch.Tensor):
            fail(name, "None or a torch.Tensor", describe(value), error=TypeError)
    # Smooth in the input's dtype: smoothing a bool target in float32 first would round s / 2.
    smoothed = smooth_binary_labels(target.to(device=input.device, dtype=input.dtype), s)
    return F.binary_cross_entropy_with_logits(
        input, smoothed, weight=weight, pos_weight=pos_weight, reduction=red,
    )
