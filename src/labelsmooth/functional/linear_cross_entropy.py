"""Label-smoothed cross-entropy of a linear head that never materialises the logits.

For a language model the logits ``z = x W^T + b`` (tokens x vocabulary) are the largest tensor
of the step. :func:`smoothed_linear_cross_entropy` walks over chunks of rows instead: per chunk
it computes the chunk's logits (in float32 for float16/bfloat16 inputs), runs the fused
label-smoothed cross-entropy kernel (:mod:`labelsmooth._ops.cross_entropy`) on them, which
replaces them in place by their gradient ``g = d loss / d z``, and folds ``g`` into the
gradients of the input, the weight and the bias at once. Backward only multiplies the stored
gradients by ``grad_output``. At most one chunk of logits exists at any time.

Derivation. With ``a``, ``b`` and the per-row scale ``r`` of the fused kernel (see
:mod:`labelsmooth._ops.cross_entropy`), the gradient of one row's loss with respect to its
logits is ``g_c = r * (a * p_c - (s / C) * w_c - b * [c == y])``, and with ``z = x W^T + b``::

    d loss / d x_i = sum_c g_ic W_c          = (g W)_i           (chunk x H, one matmul)
    d loss / d W_c = sum_i g_ic x_i          = (g^T x)_c         (V x H, accumulated per chunk)
    d loss / d b_c = sum_i g_ic

The uniform term ``-(s / C) * r_i * w_c`` is in every entry of ``g``: it reaches the input as
``-(s / C) * r_i * (w^T W)`` (a weighted mean of the weight's rows, the same for every row but
for ``r_i``) and the weight as ``-(s / C) * w_c * sum_i r_i x_i`` (the batch's mean input,
given to every class). Both are small per entry (order ``1 / C``) but summed over ``C`` classes
or over the whole batch they are not, which is why ``g`` is kept dense and never filtered.

The loss is the sum of per-row losses, divided by ``D = sum_i w_{y_i}`` over the non-ignored
rows for ``"mean"`` (the row count without weights, PyTorch's normalisation) or by
``num_items_in_batch``. ``D`` depends only on the targets, so it is known before the chunk
loop, and the gradients of the *reduced* loss are the chunk sums scaled once by ``1 / D``.
``reduction="none"`` cannot know ``grad_output`` per row in advance: it keeps only the losses
and runs the chunk loop again in backward, each row's ``g`` then scaled by its ``grad_output``
(through the ``chunk x H`` input rows rather than the ``chunk x V`` gradient).

Why float32 for float16/bfloat16: the kernel's sums over ``C`` classes need it (see there), and
the weight's gradient is a sum over every row of the batch, where float16's or bfloat16's short
mantissa would drop the small late terms. The weight and bias are therefore used in float32
(one float32 copy of a low-precision weight) and the gradients are accumulated in float32 and
rounded once, at the end, to the parameters' dtypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth._ops.cross_entropy import fused_smoothed_cross_entropy
from labelsmooth._validation import (
    check_floating,
    check_index_dtype,
    check_int,
    check_reduction,
    check_smoothing,
    fail,
    shape_str,
)
from labelsmooth.functional._targets import check_target_range

__all__ = ["plan_chunk_rows", "smoothed_linear_cross_entropy"]

# A chunk's logits are kept to at most 1/_CHUNK_SHARE of the gradients of the input and the
# weight, which the function must hold anyway: the chunk never dominates its memory.
_CHUNK_SHARE = 4
# ... unless that makes chunks smaller than this many logits, where per-chunk overhead (a few
# matrix products and kernel launches) and the repeated update of the weight's gradient would
# dominate the time.
_MIN_CHUNK_ELEMENTS = 1 << 20

# Row losses of one chunk: ``(logits, target, want_grad) -> (rows,)`` losses in the compute
# dtype; with ``want_grad`` the function also replaces ``logits`` in place by ``d sum(losses) /
# d logits`` (zero on ignored rows).
RowLosses = Callable[[Tensor, Tensor, bool], Tensor]


def plan_chunk_rows(num_rows: int, num_classes: int, hidden: int, *,
                    share: int = _CHUNK_SHARE, min_elements: int = _MIN_CHUNK_ELEMENTS) -> int:
    """Rows per chunk: chunk logits at most ``1 / share`` of the input's and weight's gradients.

    ``(num_rows + num_classes) * hidden`` elements of gradient are held anyway; a chunk holds
    ``rows * num_classes`` logits. Chunks are not made smaller than ``min_elements`` logits nor
    larger than the batch. Why these defaults: ``docs/large_vocab.md``.

    Example:
        >>> plan_chunk_rows(4096, 32000, 1024)
        288
    """
    budget = (num_rows + num_classes) * hidden // share
    rows = max(budget, min_elements) // max(1, num_classes)
    rows = max(8, rows - rows % 8)
    return max(1, min(num_rows, rows))


def smoothed_linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    smoothing: float = 0.0,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Label-smoothed cross-entropy of ``F.linear(input, linear_weight, linear_bias)``, chunked.

    Equal in value and in the gradients of ``input``, ``linear_weight`` and ``linear_bias`` to

    .. code-block:: python

        F.cross_entropy(F.linear(input, linear_weight, linear_bias).flatten(0, -2),
                        target.flatten(), weight=weight, ignore_index=ignore_index,
                        reduction=reduction, label_smoothing=smoothing)

    (``"none"`` reshaped to ``target``'s shape), with, for row ``i`` with logits ``z_i``,

    .. math::

        \\ell_i = (1 - s)\\, w_{y_i} (\\mathrm{lse}(z_i) - z_{i y_i})
                 + \\frac{s}{C} \\sum_c w_c (\\mathrm{lse}(z_i) - z_{ic}),

    but without ever holding more than one chunk of rows' logits (``chunk_size x C``): each
    chunk's gradient is folded into the input's and weight's gradients during the forward
    pass (derivation in the module docstring). Memory: the gradients of ``input`` and
    ``linear_weight`` (float32 for half precisions, plus a float32 copy of a half-precision
    weight) and one chunk of logits. An all-ignored ``"mean"`` batch gives NaN and zero
    gradients, as PyTorch does.

    Args:
        input: hidden states ``(*, H)``, floating (``(B, T, H)`` for a language model).
        linear_weight: the output layer's weight ``(C, H)``, same dtype and device as ``input``.
        target: class indices of shape ``(*)`` (``input``'s shape without ``H``), in
            ``[0, C)`` or equal to ``ignore_index``.
        smoothing: ``s`` in ``[0, 1]`` (default 0: plain cross-entropy).
        linear_bias: the output layer's bias ``(C,)`` or ``None`` (default).
        weight: class weights ``(C,)``, any floating dtype, or ``None`` (default).
        ignore_index: target value that contributes nothing (default -100).
        reduction: ``"none"`` (shape ``(*)``), ``"mean"`` (default) or ``"sum"``.
        num_items_in_batch: with ``reduction="mean"``, divide the summed loss by this (an int
            or a 0-d tensor, > 0) instead of by ``D``: Hugging Face's convention for exact
            gradient accumulation over micro-batches and ranks, where it is the count of
            non-ignored targets over all of them.
        chunk_size: rows per chunk (default ``None``: :func:`plan_chunk_rows`).

    Returns:
        The loss, in ``input``'s dtype.

    Example:
        >>> import torch.nn.functional as F
        >>> x, W = torch.randn(2, 6, 16), torch.randn(50, 16)
        >>> y = torch.randint(50, (2, 6))
        >>> loss = smoothed_linear_cross_entropy(x, W, y, 0.1)
        >>> ref = F.cross_entropy(F.linear(x, W).flatten(0, 1), y.flatten(), label_smoothing=0.1)
        >>> torch.allclose(loss, ref)
        True

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025 (the
        chunked linear-plus-loss idea, without label smoothing); Hsu et al., "Liger Kernel:
        Efficient Triton Kernels for LLM Training", 2024 (gradients computed in the forward).
    """
    args = check_linear_arguments(input, linear_weight, target, smoothing, linear_bias, weight,
                                  ignore_index, reduction, num_items_in_batch, chunk_size)
    row_losses = _FusedRowLosses(args.smoothing, weight, args.ignore_index)
    return linear_loss(input, linear_weight, linear_bias, target, row_losses, args,
                       class_weight=weight)


@dataclass(frozen=True)
class LinearArguments:
    """Checked scalar arguments of a chunked linear loss."""

    smoothing: float
    ignore_index: int
    reduction: str
    num_items_in_batch: int | Tensor | None
    chunk_size: int | None


def check_linear_arguments(
    input: Any, linear_weight: Any, target: Any, smoothing: Any, linear_bias: Any, weight: Any,
    ignore_index: Any, reduction: Any, num_items_in_batch: Any, chunk_size: Any,
    *, num_classes: int | None = None,
) -> LinearArguments:
    """Check every argument of a chunked linear loss before any work; one line per mistake.

    ``num_classes``: the class count of ``weight`` and of the target range when it is not
    ``linear_weight``'s row count (the vocabulary-parallel variant, whose weight is a shard).
    """
    check_floating(input, "input")
    check_floating(linear_weight, "linear_weight")
    if input.ndim < 1:
        fail("input", "a tensor of shape (*, H)", input)
    if linear_weight.ndim != 2:
        fail("linear_weight", "a 2-d tensor of shape (C, H)", linear_weight)
    rows_classes, hidden = linear_weight.shape
    if input.shape[-1] != hidden:
        fail("linear_weight", f"shape (C, {input.shape[-1]}) to match input's last dimension "
             f"(input of shape {shape_str(input.shape)})", f"shape {shape_str(linear_weight.shape)}")
    if linear_weight.dtype != input.dtype or linear_weight.device != input.device:
        fail("linear_weight", f"input's dtype {input.dtype} and device {input.device}",
             f"dtype {linear_weight.dtype} on {linear_weight.device}", error=TypeError)
    if linear_bias is not None:
        check_floating(linear_bias, "linear_bias")
        if linear_bias.shape != (rows_classes,):
            fail("linear_bias", f"None or a tensor of shape ({rows_classes},)",
                 f"shape {shape_str(linear_bias.shape)}")
        if linear_bias.dtype != input.dtype or linear_bias.device != input.device:
            fail("linear_bias", f"input's dtype {input.dtype} and device {input.device}",
                 f"dtype {linear_bias.dtype} on {linear_bias.device}", error=TypeError)
    if not isinstance(target, torch.Tensor):
        fail("target", "a torch.Tensor", type(target).__name__, error=TypeError)
    check_index_dtype(target, "target")
    if target.shape != input.shape[:-1]:
        fail("target", f"class indices of shape {shape_str(input.shape[:-1])} (input of shape "
             f"{shape_str(input.shape)})", f"shape {shape_str(target.shape)}")
    s = check_smoothing(smoothing)
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    classes = rows_classes if num_classes is None else num_classes
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            fail("weight", "None or a torch.Tensor", type(weight).__name__, error=TypeError)
        if not weight.is_floating_point():
            fail("weight", "a floating-point tensor", f"dtype {weight.dtype}", error=TypeError)
        if weight.shape != (classes,):
            fail("weight", f"a 1-d tensor of {classes} class weights",
                 f"shape {shape_str(weight.shape)}")
    items = _check_num_items(num_items_in_batch, red)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    check_target_range(target, classes, ignore, validate_args=None, targets_name="target")
    return LinearArguments(s, ignore, red, items, chunk_size)


def _check_num_items(value: Any, reduction: str) -> int | Tensor | None:
    if value is None:
        return None
    if reduction != "mean":
        fail("num_items_in_batch", "None with reduction='sum' or 'none' (it divides the summed "
             "loss, as reduction='mean' does)", value)
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            fail("num_items_in_batch", "an int or a 0-d real tensor > 0", value, error=TypeError)
        # On the CPU the check costs no device synchronisation; on an accelerator it is skipped.
        if value.device.type == "cpu" and not bool(value > 0):
            fail("num_items_in_batch", "an int or a 0-d real tensor > 0",
                 f"a tensor holding {value.item()}")
        return value
    return check_int(value, "num_items_in_batch", minimum=1)


def linear_loss(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None, target: Tensor,
                row_losses: RowLosses, args: LinearArguments, *, class_weight: Tensor | None,
                reduce_input_grad: Callable[[Tensor], None] | None = None) -> Tensor:
    """The chunked linear loss for checked arguments (shared with the vocabulary-parallel one).

    ``class_weight``: the global ``(C,)`` class weights (for the mean's denominator).
    ``reduce_input_grad``: applied in place to the input's gradient once it is complete.
    """
    num_classes, hidden = linear_weight.shape
    rows = input.reshape(-1, hidden)
    flat_target = target.reshape(-1).to(device=input.device, dtype=torch.long)
    chunk = args.chunk_size or plan_chunk_rows(rows.shape[0], num_classes, hidden)
    plan = _Plan(row_losses, chunk, args.reduction, reduce_input_grad)
    divisor = _divisor(flat_target, class_weight, args, rows)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, linear_weight, linear_bias))
    if not wants_grad:
        with torch.no_grad():
            losses = _chunk_pass(rows, linear_weight, linear_bias, flat_target, plan,
                                 (False, False, False), None).losses
        loss = _reduce(losses, args.reduction, divisor).to(input.dtype)
    else:
        loss = _LinearCrossEntropy.apply(rows, linear_weight, linear_bias, flat_target, plan,
                                         divisor)
    return loss.reshape(target.shape) if args.reduction == "none" else loss


def _divisor(target: Tensor, class_weight: Tensor | None, args: LinearArguments,
             rows: Tensor) -> Tensor | None:
    """What the summed loss is divided by: ``num_items_in_batch``, ``D`` for mean, else None."""
    compute = _compute_dtype(rows.dtype)
    if args.num_items_in_batch is not None:
        return torch.as_tensor(args.num_items_in_batch, device=rows.device).to(compute)
    if args.reduction != "mean":
        return None
    valid = target != args.ignore_index
    if class_weight is None:
        return valid.sum().to(compute)
    w = class_weight.to(device=rows.device, dtype=compute)
    return torch.where(valid, w[target.masked_fill(~valid, 0)], 0.0).sum()


def _reduce(losses: Tensor, reduction: str, divisor: Tensor | None) -> Tensor:
    if reduction == "none":
        return losses
    total = losses.sum()
    if divisor is None:
        return total
    # D = 0 (every row ignored, or every counted target of weight 0) gives NaN, as PyTorch's
    # 0 / 0 of the target term does.
    return torch.where(divisor > 0, total / divisor, math.nan)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Plan:
    row_losses: RowLosses
    chunk: int
    reduction: str
    reduce_input_grad: Callable[[Tensor], None] | None


@dataclass
class _PassResult:
    losses: Tensor
    grad_input: Tensor | None
    grad_weight: Tensor | None
    grad_bias: Tensor | None


def _chunk_pass(rows: Tensor, linear_weight: Tensor, linear_bias: Tensor | None, target: Tensor,
                plan: _Plan, wanted: tuple[bool, bool, bool],
                row_scale: Tensor | None) -> _PassResult:
    """Per-row losses and the gradients of ``sum_i c_i loss_i`` (``c = row_scale`` or ones).

    ``wanted``: which of the gradients of input, weight and bias to compute. All in the
    compute dtype; ``c_i`` scales the ``chunk x H`` input rows, never the ``chunk x C`` logits.
    """
    num_rows, hidden = rows.shape
    num_classes = linear_weight.shape[0]
    compute = _compute_dtype(rows.dtype)
    weight_c = linear_weight.detach().to(compute)
    bias_c = None if linear_bias is None else linear_bias.detach().to(compute)
    want_input, want_weight, want_bias = wanted
    want_grad = any(wanted)
    new = rows.new_empty
    losses = new((num_rows,), dtype=compute)
    grad_input = new((num_rows, hidden), dtype=compute) if want_input else None
    grad_weight = rows.new_zeros((num_classes, hidden), dtype=compute) if want_weight else None
    grad_bias = rows.new_zeros((num_classes,), dtype=compute) if want_bias else None
    for start in range(0, num_rows, plan.chunk):
        stop = min(num_rows, start + plan.chunk)
        x = rows[start:stop].detach().to(compute)
        # With a gradient wanted the logits must be produced by an operation (the kernel writes
        # its gradient into them, which autograd refuses for a leaf): an input that requires
        # grad makes ``addmm``'s output such a tensor. Its backward node is never run.
        with torch.set_grad_enabled(want_grad):
            source = x.detach().requires_grad_() if want_grad else x
            logits = (torch.mm(source, weight_c.T) if bias_c is None
                      else torch.addmm(bias_c, source, weight_c.T))
            losses[start:stop] = plan.row_losses(logits, target[start:stop], want_grad).detach()
        if not want_grad:
            continue
        with torch.no_grad():
            g = logits.detach()
            scale = None if row_scale is None else row_scale[start:stop].unsqueeze(1)
            if grad_input is not None:
                torch.mm(g, weight_c, out=grad_input[start:stop])
                if scale is not None:
                    grad_input[start:stop].mul_(scale)
            if grad_weight is not None:
                grad_weight.addmm_(g.T, x if scale is None else x * scale)
            if grad_bias is not None:
                grad_bias += g.sum(0) if scale is None else g.T @ scale.squeeze(1)
    return _PassResult(losses, grad_input, grad_weight, grad_bias)


class _FusedRowLosses:
    """Row losses of a chunk from the fused kernel, its gradient written in place."""

    def __init__(self, smoothing: float, class_weight: Tensor | None, ignore_index: int) -> None:
        self.smoothing = smoothing
        self.class_weight = class_weight
        self.ignore_index = ignore_index

    def __call__(self, logits: Tensor, target: Tensor, want_grad: bool) -> Tensor:
        losses = fused_smoothed_cross_entropy(
            logits, target, self.smoothing, weight=self.class_weight,
            ignore_index=self.ignore_index, reduction="none", inplace_backward=want_grad)
        if want_grad:
            # The kernel computed d loss_i / d logits during its forward pass, in the logits'
            # own storage; with a grad_output of ones its backward hands that tensor back.
            (grad,) = torch.autograd.grad(losses, logits, torch.ones_like(losses))
            if grad.data_ptr() != logits.data_ptr():
                logits.detach().copy_(grad)
        return losses


def _cast(grads: list[Tensor | None], dtypes: tuple[torch.dtype | None, ...]) -> list[Tensor | None]:
    """Round the float32/float64 gradients to their parameters' dtypes."""
    return [None if g is None or d is None else g.to(d) for g, d in zip(grads, dtypes, strict=True)]


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and (for mean/sum) its gradients; backward scales them."""

    @staticmethod
    def forward(ctx: Any, rows: Tensor, linear_weight: Tensor, linear_bias: Tensor | None,
                target: Tensor, plan: _Plan, divisor: Tensor | None) -> Tensor:
        wanted = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                  linear_bias is not None and ctx.needs_input_grad[2])
        ctx.plan = plan
        ctx.wanted = wanted
        ctx.scaled = False
        ctx.dtypes = (rows.dtype, linear_weight.dtype,
                      None if linear_bias is None else linear_bias.dtype)
        if plan.reduction == "none":
            # Gradients need each row's grad_output: the chunk loop runs again in backward.
            with torch.no_grad():
                result = _chunk_pass(rows, linear_weight, linear_bias, target, plan,
                                     (False, False, False), None)
            ctx.save_for_backward(rows, linear_weight, linear_bias, target)
            return result.losses.to(rows.dtype)
        result = _chunk_pass(rows, linear_weight, linear_bias, target, plan, wanted, None)
        if result.grad_input is not None and plan.reduce_input_grad is not None:
            plan.reduce_input_grad(result.grad_input)
        grads = [result.grad_input, result.grad_weight, result.grad_bias]
        if divisor is not None:
            # 1 / D where D > 0; an all-ignored batch (D = 0) has zero gradients, not NaN.
            factor = torch.where(divisor > 0, 1.0 / divisor, 0.0)
            for grad in grads:
                if grad is not None:
                    grad.mul_(factor)
        ctx.save_for_backward(*_cast(grads, ctx.dtypes))
        return _reduce(result.losses, plan.reduction, divisor).to(rows.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        plan: _Plan = ctx.plan
        if plan.reduction == "none":
            rows, linear_weight, linear_bias, target = ctx.saved_tensors
            compute = _compute_dtype(rows.dtype)
            result = _chunk_pass(rows, linear_weight, linear_bias, target, plan, ctx.wanted,
                                 grad_output.reshape(-1).to(compute))
            if result.grad_input is not None and plan.reduce_input_grad is not None:
                plan.reduce_input_grad(result.grad_input)
            grads = [result.grad_input, result.grad_weight, result.grad_bias]
            out = _cast(grads, ctx.dtypes)
            return out[0], out[1], out[2], None, None, None
        if ctx.scaled:
            raise RuntimeError(
                "smoothed linear cross-entropy: a second backward through the same graph after "
                "one with a grad_output other than one (with retain_graph=True, every backward "
                "but the last must pass a grad_output of one)")
        saved = list(ctx.saved_tensors)
        if not bool(grad_output == 1):
            # In place: a second copy of the weight's gradient would cost as much as the first.
            for grad in saved:
                if grad is not None:
                    grad.mul_(grad_output.to(grad.dtype))
            ctx.scaled = True
        return saved[0], saved[1], saved[2], None, None, None
