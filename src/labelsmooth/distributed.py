"""Label-smoothed cross-entropy with the vocabulary sharded over tensor-parallel ranks.

Each rank of a ``torch.distributed`` process group holds a contiguous slice of the classes:
rank ``k`` the logits (or the output layer's weight rows) of classes ``[o_k, o_k + C_k)``, in
rank order, every rank the same rows (tokens). The global class count is ``C = sum_k C_k``.

Derivation. For one row with global logits ``x`` (spread over the ranks), target ``y``, class
weights ``w`` (all ones without ``weight``), ``W = sum_c w_c`` and smoothing ``s``::

    loss = (1 - s) * w_y * (lse - x_y) + (s / C) * (W * lse - sum_c w_c x_c)
    lse  = m + log sum_k sum_{c in shard k} exp(x_c - m),        m = max_k max_{c in shard k} x_c

so a rank needs, besides its own slice, three numbers per row from the group: the global
maximum ``m`` (one all-reduce with MAX), then the global sum of ``exp(x_c - m)``, the global
weighted sum of logits ``sum_c w_c x_c`` and the target logit ``x_y`` (only its owning rank
adds a non-zero value), together in one all-reduce with SUM. The loss is then the same on every
rank. Its gradient with respect to a rank's own logits needs nothing more::

    d loss / d x_c = a * p_c - (s / C) * w_c - b * [c == y],    p_c = exp(x_c - lse),
    a = (1 - s) * w_y + (s / C) * W,                            b = (1 - s) * w_y

(the fused kernel's formula, see :mod:`labelsmooth._ops.cross_entropy`, with the global ``C``,
``W`` and ``lse``); ``"mean"`` divides by ``D = sum_i w_{y_i}`` over non-ignored rows, which
every rank knows from the targets. Sums run in float32 for float16/bfloat16 logits.

Megatron-LM's vocab-parallel cross-entropy (``megatron/core/tensor_parallel/cross_entropy.py``)
smooths with the *local* shard: its smoothing term is ``s * K / (K - 1)`` times the mean of the
log-probabilities over the rank's own ``K = C_k`` classes. That equals the single-device loss
only with one rank; with more, each rank's term averages over a different slice and divides by
``C_k - 1`` instead of ``C - 1``, so the ranks disagree with each other and with the model's
true loss (``docs/large_vocab.md`` shows it on a small input, and the tests check it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

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
from labelsmooth.functional.linear_cross_entropy import (
    check_linear_arguments,
    linear_loss,
    plan_chunk_rows,
)

__all__ = ["vocab_parallel_smoothed_cross_entropy", "vocab_parallel_smoothed_linear_cross_entropy"]


@dataclasses.dataclass(frozen=True)
class _Shards:
    """This rank's slice ``[offset, offset + width)`` of ``num_classes`` global classes."""

    offset: int
    width: int
    num_classes: int


def _gather_shards(width: int, num_rows: int, device: torch.device, group: Any,
                   argument: str) -> _Shards:
    """All-gather every rank's class width and row count; check they fit together.

    Every rank receives the same table, so every rank raises the same error (none waits on a
    collective that another rank skipped).
    """
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    # gloo gathers CPU tensors; NCCL needs them on the rank's device.
    where = device if dist.get_backend(group) != "gloo" else torch.device("cpu")
    mine = torch.tensor([width, num_rows], dtype=torch.int64, device=where)
    table = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(table, mine, group=group)
    widths = [int(t[0]) for t in table]
    rows = [int(t[1]) for t in table]
    if len(set(rows)) != 1:
        fail(argument, "the same number of rows (tokens) on every rank of the group",
             f"rows per rank {rows}")
    if min(widths) < 1:
        fail(argument, "at least one class on every rank of the group",
             f"classes per rank {widths}")
    return _Shards(offset=sum(widths[:rank]), width=width, num_classes=sum(widths))


@dataclasses.dataclass(frozen=True)
class _Smoothing:
    """What every row's loss needs besides its logits: the global constants of the formula."""

    smoothing: float
    ignore_index: int
    shards: _Shards
    weight: Tensor | None  # global (C,) class weights in the compute dtype, or None
    group: Any

    def local_weight(self) -> Tensor | None:
        if self.weight is None:
            return None
        return self.weight[self.shards.offset:self.shards.offset + self.shards.width]


def _row_losses(logits: Tensor, target: Tensor, config: _Smoothing, want_grad: bool) -> Tensor:
    """Global per-row losses of row-sharded logits ``(rows, C_k)`` in the compute dtype.

    With ``want_grad`` the logits are replaced in place by ``d loss_i / d x`` (zero on ignored
    rows). Two all-reduces per call (see the module docstring).
    """
    with torch.no_grad():  # the gradient is written explicitly; nothing for autograd to record
        return _row_losses_no_grad(logits.detach(), target, config, want_grad)


def _row_losses_no_grad(logits: Tensor, target: Tensor, config: _Smoothing,
                        want_grad: bool) -> Tensor:
    s, shards = config.smoothing, config.shards
    valid = target != config.ignore_index
    local_target = target - shards.offset
    owned = valid & (local_target >= 0) & (local_target < shards.width)
    safe_local = torch.where(owned, local_target, 0).unsqueeze(1)
    local_weight = config.local_weight()

    row_max = logits.amax(1)
    dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=config.group)
    # -inf rows (fully masked everywhere) shift by 0 instead of producing NaN.
    shift = torch.where(torch.isfinite(row_max), row_max, 0.0).unsqueeze(1)
    sums = torch.stack([
        torch.exp(logits - shift).sum(1),
        logits.sum(1) if local_weight is None else logits @ local_weight,
        torch.where(owned, logits.gather(1, safe_local).squeeze(1), 0.0),
    ], 1)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=config.group)
    lse = shift.squeeze(1) + torch.log(sums[:, 0])
    weighted_logit_sum, target_logit = sums[:, 1], sums[:, 2]

    num_classes = shards.num_classes
    if config.weight is None:
        target_weight = valid.to(logits.dtype)
        total_weight: Tensor | float = float(num_classes)
    else:
        target_weight = torch.where(valid, config.weight[torch.where(valid, target, 0)], 0.0)
        total_weight = config.weight.sum()
    losses = torch.where(valid, (1.0 - s) * target_weight * (lse - target_logit), 0.0)
    if s != 0.0:
        # Skipped at s = 0, where -inf-masked logits would make 0 * inf = NaN.
        losses = losses + torch.where(
            valid, (s / num_classes) * (total_weight * lse - weighted_logit_sum), 0.0)
    if want_grad:
        counted = valid.to(logits.dtype)
        prob_coef = ((1.0 - s) * target_weight + (s / num_classes) * total_weight) * counted
        probs = logits.sub_(lse.unsqueeze(1)).exp_()
        probs.mul_(prob_coef.unsqueeze(1))
        if local_weight is None:
            probs.sub_((s / num_classes) * counted.unsqueeze(1))
        else:
            probs.addr_(counted, local_weight, alpha=-(s / num_classes))
        target_coef = torch.where(owned, (1.0 - s) * target_weight, 0.0).unsqueeze(1)
        probs.scatter_add_(1, safe_local, -target_coef)
    return losses


def _check_group(group: Any) -> None:
    if not dist.is_available() or not dist.is_initialized():
        fail("group", "an initialised torch.distributed process group "
             "(torch.distributed.init_process_group)", "no process group initialised",
             error=RuntimeError)


def _checked_weight(weight: Any, num_classes: int, device: torch.device,
                    dtype: torch.dtype) -> Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        fail("weight", "None or a floating-point tensor", weight, error=TypeError)
    if weight.shape != (num_classes,):
        fail("weight", f"a 1-d tensor of the {num_classes} global class weights",
             f"shape {shape_str(weight.shape)}")
    return weight.to(device=device, dtype=dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def vocab_parallel_smoothed_cross_entropy(
    local_logits: Tensor,
    target: Tensor,
    smoothing: float = 0.0,
    *,
    group: Any = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Label-smoothed cross-entropy of logits sharded along the class dimension.

    Every rank of ``group`` calls it with its own contiguous slice of the classes (rank order)
    and the same targets; every rank gets the loss of the whole logits, equal to
    ``F.cross_entropy(full_logits, target, weight=weight, ignore_index=ignore_index,
    reduction=reduction, label_smoothing=smoothing)``, and the gradient of its own slice
    of it. The smoothing term uses the global class count and log-sum-exp (derivation in the
    module docstring; why Megatron-LM's per-shard formula differs is there too).

    Args:
        local_logits: ``(*, C_k)``, this rank's classes last; floating.
        target: ``(*)`` global class indices in ``[0, C)`` or ``ignore_index``; the same on
            every rank.
        smoothing: ``s`` in ``[0, 1]`` (default 0).
        group: the tensor-parallel process group (default ``None``: the world).
        weight: the ``(C,)`` weights of all classes, or ``None`` (default).
        ignore_index: target value that contributes nothing (default -100).
        reduction: ``"none"`` (shape ``(*)``), ``"mean"`` (default) or ``"sum"``.

    Returns:
        The loss in ``local_logits``' dtype, the same on every rank.

    Example:
        On each of two ranks (``torchrun --nproc_per_node=2``), with the first 16 classes on
        rank 0 and the last 16 on rank 1::

            full = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
            rank = torch.distributed.get_rank()
            local = full[:, 16 * rank: 16 * (rank + 1)].requires_grad_()
            loss = vocab_parallel_smoothed_cross_entropy(local, target, 0.1)
            loss.backward()   # local.grad is this rank's slice of the full gradient

    References:
        Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using
        Model Parallelism", 2019 (the vocabulary-parallel cross-entropy).
    """
    _check_group(group)
    check_floating(local_logits, "local_logits")
    if local_logits.ndim < 1:
        fail("local_logits", "a tensor of shape (*, C_k)", local_logits)
    if not isinstance(target, Tensor):
        fail("target", "a torch.Tensor", type(target).__name__, error=TypeError)
    check_index_dtype(target, "target")
    if target.shape != local_logits.shape[:-1]:
        fail("target", f"class indices of shape {shape_str(local_logits.shape[:-1])} "
             f"(local_logits of shape {shape_str(local_logits.shape)})",
             f"shape {shape_str(target.shape)}")
    s = check_smoothing(smoothing)
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    width = local_logits.shape[-1]
    rows = local_logits.reshape(-1, width)
    shards = _gather_shards(width, rows.shape[0], local_logits.device, group, "local_logits")
    compute = _compute_dtype(local_logits.dtype)
    class_weight = _checked_weight(weight, shards.num_classes, local_logits.device, compute)
    check_target_range(target, shards.num_classes, ignore, validate_args=None,
                       targets_name="target")
    config = _Smoothing(s, ignore, shards, class_weight, group)
    flat_target = target.reshape(-1).to(device=local_logits.device, dtype=torch.long)
    loss = _VocabParallelCrossEntropy.apply(rows, flat_target, config, red)
    return loss.reshape(target.shape) if red == "none" else loss


def _mean_denominator(target: Tensor, config: _Smoothing, dtype: torch.dtype) -> Tensor:
    valid = target != config.ignore_index
    if config.weight is None:
        return valid.sum().to(dtype)
    return torch.where(valid, config.weight[torch.where(valid, target, 0)], 0.0).sum()


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: the global row losses and (when wanted) each row's local gradient."""

    @staticmethod
    def forward(ctx: Any, rows: Tensor, target: Tensor, config: _Smoothing,
                reduction: str) -> Tensor:
        compute = _compute_dtype(rows.dtype)
        want_grad = ctx.needs_input_grad[0]
        # A float32 copy (a plain copy in float32/float64): its storage becomes the gradient.
        work = rows.detach().to(compute, copy=True)
        losses = _row_losses(work, target, config, want_grad)
        ctx.reduction = reduction
        ctx.dtype = rows.dtype
        if reduction == "none":
            ctx.save_for_backward(work if want_grad else None, None)
            return losses.to(rows.dtype)
        if reduction == "sum":
            ctx.save_for_backward(work if want_grad else None, None)
            return losses.sum().to(rows.dtype)
        denominator = _mean_denominator(target, config, compute)
        ctx.save_for_backward(work if want_grad else None, denominator)
        # D = 0 gives NaN, as PyTorch's 0 / 0.
        mean = torch.where(denominator > 0, losses.sum() / denominator, torch.nan)
        return mean.to(rows.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad, denominator = ctx.saved_tensors
        if grad is None:
            return None, None, None, None
        factor = grad_output.to(grad.dtype)
        if ctx.reduction == "none":
            factor = factor.reshape(-1, 1)
        elif denominator is not None:
            # An all-ignored batch (D = 0) has a zero gradient, not NaN.
            factor = torch.where(denominator > 0, factor / denominator, 0.0)
        return (grad * factor).to(ctx.dtype), None, None, None


def vocab_parallel_smoothed_linear_cross_entropy(
    input: Tensor,
    local_linear_weight: Tensor,
    target: Tensor,
    smoothing: float = 0.0,
    *,
    local_linear_bias: Tensor | None = None,
    group: Any = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Label-smoothed cross-entropy of a linear head whose weight is sharded by vocabulary rows.

    The vocabulary-parallel counterpart of
    :func:`labelsmooth.functional.smoothed_linear_cross_entropy`: every rank holds the same
    ``input`` (the hidden states) and targets and its own contiguous slice of the output
    layer's rows (rank order), and gets the loss of the whole vocabulary, equal to
    ``F.cross_entropy(F.linear(input, full_weight, full_bias), target, ...)``, walking over
    chunks of rows so that no rank holds more than one chunk of its slice's logits. Gradients:
    each rank gets the gradient of its own weight (and bias) slice, and the full gradient of
    ``input``, summed over the group (one all-reduce), as a replicated input needs.

    Args:
        input: hidden states ``(*, H)``, the same on every rank; floating.
        local_linear_weight: this rank's ``(C_k, H)`` rows of the output layer.
        target: ``(*)`` global class indices in ``[0, C)`` or ``ignore_index``.
        smoothing: ``s`` in ``[0, 1]`` (default 0).
        local_linear_bias: this rank's ``(C_k,)`` slice of the bias, or ``None`` (default).
        group: the tensor-parallel process group (default ``None``: the world).
        weight: the ``(C,)`` weights of all classes, or ``None`` (default).
        ignore_index: target value that contributes nothing (default -100).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.
        num_items_in_batch: as in :func:`~labelsmooth.functional.smoothed_linear_cross_entropy`.
        chunk_size: rows per chunk (default ``None``: planned from the global class count, so
            every rank runs the same number of collectives).

    Returns:
        The loss in ``input``'s dtype, the same on every rank.
    """
    _check_group(group)
    check_floating(local_linear_weight, "local_linear_weight")
    if local_linear_weight.ndim != 2:
        fail("local_linear_weight", "a 2-d tensor of shape (C_k, H)", local_linear_weight)
    check_floating(input, "input")
    if input.ndim < 1:
        fail("input", "a tensor of shape (*, H)", input)
    num_rows = input.numel() // max(1, input.shape[-1])
    shards = _gather_shards(local_linear_weight.shape[0], num_rows, input.device, group,
                            "local_linear_weight")
    args = check_linear_arguments(
        input, local_linear_weight, target, smoothing, local_linear_bias, weight, ignore_index,
        reduction, num_items_in_batch, chunk_size, num_classes=shards.num_classes)
    if args.chunk_size is None:
        args = dataclasses.replace(args, chunk_size=plan_chunk_rows(
            num_rows, shards.num_classes, local_linear_weight.shape[1]))
    compute = _compute_dtype(input.dtype)
    class_weight = None if weight is None else weight.to(device=input.device, dtype=compute)
    config = _Smoothing(args.smoothing, args.ignore_index, shards, class_weight, group)

    def row_losses(logits: Tensor, chunk_target: Tensor, want_grad: bool) -> Tensor:
        return _row_losses(logits, chunk_target, config, want_grad)

    def sum_over_group(grad_input: Tensor) -> None:
        dist.all_reduce(grad_input, op=dist.ReduceOp.SUM, group=group)

    return linear_loss(input, local_linear_weight, local_linear_bias, target, row_losses, args,
                       class_weight=class_weight, reduce_input_grad=sum_over_group)
