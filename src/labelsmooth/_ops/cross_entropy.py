"""Fused label-smoothed cross-entropy: loss and gradient in one pass over the logits.

:func:`fused_smoothed_cross_entropy` returns what
``F.cross_entropy(logits, target, weight=..., ignore_index=..., reduction=..., label_smoothing=s)``
returns, in value and gradient, for 2-d ``(M, C)`` logits, but reads the logits once, allocates
no ``M x C`` buffer other than the gradient it must return (none at all with
``inplace_backward=True``), and does no gradient work when no gradient is wanted.

Derivation (one row; ``x`` its logits, ``y`` its target, ``w`` the class weights, all ones when
``weight`` is None, ``W = sum_c w_c``, ``s`` the smoothing, ``C`` the class count)::

    lse      = log sum_c exp(x_c)           l_c = x_c - lse  (log-probabilities)
    loss     = (1 - s) * w_y * (lse - x_y) + (s / C) * sum_c w_c * (lse - x_c)
             = -(1 - s) * w_y * l_y        - (s / C) * sum_c w_c * l_c

That is PyTorch's definition: the weighted NLL of the target plus ``s / C`` times the weighted
sum of ``-log p`` over all classes. With ``d lse / d x_c = p_c = exp(l_c)``::

    d loss / d x_c = (1 - s) * w_y * (p_c - [c == y]) + (s / C) * (W * p_c - w_c)
                   = a * p_c - (s / C) * w_c - b * [c == y],
    a = (1 - s) * w_y + (s / C) * W,        b = (1 - s) * w_y.

Without weights (``w = 1``, ``W = C``) this is ``softmax - ((1 - s) * onehot + s / C)``.

Reductions and ``ignore_index``: the reduced loss is ``sum_i r_i * loss_i`` with ``r_i = 0`` for
an ignored row, and otherwise ``r_i = 1`` for ``"sum"`` and ``"none"`` and ``r_i = 1 / D`` for
``"mean"``, where ``D = sum_i w_{y_i}`` over the non-ignored rows (the row count without
weights; PyTorch normalises the smoothing term of a weighted mean by the same ``D``). ``D``
depends only on the targets, so it is known before the pass and the gradient of the *reduced*
loss, ``r_i * d loss_i / d x``, is computed during the forward pass. Backward only multiplies it
by ``grad_output``, and skips even that when ``grad_output`` is one (``loss.backward()``). An
all-ignored ``"mean"`` batch gives ``0 / 0 = NaN`` as loss and a zero gradient, as PyTorch does
(``r_i`` is chosen with ``torch.where``, so the infinite ``1 / D`` never reaches the gradient).

Why float32 for float16/bfloat16 logits: the smoothing term adds ``C`` log-probabilities of
magnitude about ``log C``; at ``C = 32000`` the sum is about ``3e5``, beyond float16's 65504,
which is why PyTorch's own float16 loss is ``inf`` there, and float16's 11-bit mantissa would
lose the small terms of ``sum exp`` long before that. Each chunk is therefore staged into a
float32 scratch buffer; all sums, the loss and the gradient are computed in float32, and only
the gradient (bounded by ``max(a, b + s/C * max w) * r``) is rounded to the logits' dtype.

How a call runs is a :class:`~labelsmooth._ops.planning.Plan`: PyTorch's own loss (tiny CPU
problems, meta tensors, ``torch.func`` transforms), the Triton kernel
(:mod:`labelsmooth._ops.triton_cross_entropy`) or the chunked CPU pass
(:mod:`labelsmooth._ops.chunked_cross_entropy`). Each returns the per-row ``lse``, ``x_y`` and
``sum_c w_c x_c`` and writes the gradient; the loss is assembled from them here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth._ops import planning
from labelsmooth._ops.chunked_cross_entropy import chunked_row_statistics
from labelsmooth._ops.planning import GradientTarget, Plan, compute_dtype
from labelsmooth._validation import fail

__all__ = ["fused_smoothed_cross_entropy"]

def _under_functorch(logits: Tensor) -> bool:
    """``torch.func`` transforms (``grad``, ``vmap``, ...) are active: PyTorch's own loss has
    their rules; the chunk loop's ``out=`` writes and host reads have none."""
    return bool(torch._C._are_functorch_transforms_active()
                or torch._C._functorch.is_functorch_wrapped_tensor(logits))




@torch.compiler.disable
def fused_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    smoothing: float,
    *,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    inplace_backward: bool = False,
    plan: Plan | None = None,
) -> Tensor:
    """Label-smoothed cross-entropy of 2-d logits, equal to ``F.cross_entropy(label_smoothing=s)``.

    Arguments are trusted (the public ``smoothed_cross_entropy`` validates them).

    Args:
        logits: ``(M, C)`` floating logits, class dimension last. Any strides; non-contiguous
            logits are copied first (and ``inplace_backward`` then writes into that copy).
        target: ``(M,)`` int64 class indices in ``[0, C)`` or equal to ``ignore_index``.
        smoothing: ``s`` in ``[0, 1]``.
        weight: ``(C,)`` floating class weights, any floating dtype, or None. It receives no
            gradient.
        ignore_index: rows whose target equals it contribute nothing.
        reduction: ``"none"`` (shape ``(M,)``), ``"mean"`` or ``"sum"`` (scalars).
        inplace_backward: write the gradient into the logits' storage instead of a new buffer.
            The logits' values are destroyed by the call (their version counter is bumped, so
            an autograd node that saved them raises when it runs backward). Refused with a
            ``ValueError`` for a leaf that requires grad or a view of one. Nothing is written
            when no gradient is wanted (``torch.no_grad()`` or logits not requiring grad).
        plan: how to run (default: :func:`~labelsmooth._ops.planning.plan` of the logits'
            shape, dtype, device and where the gradient goes).
            Meta tensors and ``torch.func`` transforms always run PyTorch's own loss.

    Returns:
        The loss in the logits' dtype; differentiable with respect to ``logits``, also twice.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x = torch.randn(4, 7, requires_grad=True)
        >>> y = torch.tensor([0, 3, -100, 6])
        >>> loss = fused_smoothed_cross_entropy(x, y, 0.1, weight=None, ignore_index=-100,
        ...                                     reduction="mean")
        >>> torch.allclose(loss, F.cross_entropy(x, y, label_smoothing=0.1))
        True
    """
    # torch.compile traces neither the chunk loop (data-dependent Python control flow, ``out=``
    # writes into a buffer saved for backward) nor a Triton launch it did not generate: the
    # decorator breaks the graph here and runs this eagerly, which keeps results exact.
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    inplace = inplace_backward and wants_grad
    if inplace:
        _check_inplace_allowed(logits)
    if plan is None:
        gradient: GradientTarget = "inplace" if inplace else "fresh" if wants_grad else "none"
        plan = planning.plan(logits.shape[0], logits.shape[1], logits.dtype, logits.device,
                         gradient=gradient)
    if logits.device.type == "meta" or _under_functorch(logits):
        plan = Plan("native")
    if plan.strategy == "native":
        # PyTorch wants the weight in the logits' dtype; the fused pass accepts any float dtype.
        native_weight = None if weight is None else weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=native_weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
    if not logits.is_contiguous():
        logits = logits.contiguous()
    if not wants_grad:
        with torch.no_grad():
            return _forward(logits, target, smoothing, weight, ignore_index, reduction, None,
                            plan)
    result: Tensor = _FusedSmoothedCrossEntropy.apply(
        logits, target, smoothing, weight, ignore_index, reduction, inplace, plan
    )
    return result


def _check_inplace_allowed(logits: Tensor) -> None:
    # Autograd itself forbids in-place writes to a leaf that requires grad (or a view of one):
    # its values are what the optimiser updates. Tensors saved by other autograd nodes cannot be
    # seen from here; for those the bumped version counter makes their backward raise.
    if logits.is_leaf:
        fail("inplace_backward",
             "logits produced by an operation (the gradient overwrites them), not a leaf "
             "tensor that requires grad; pass inplace_backward=False",
             "a leaf tensor that requires grad")
    base = logits._base
    if base is not None and base.is_leaf and base.requires_grad:
        fail("inplace_backward",
             "logits produced by an operation (the gradient overwrites them), not a view of a "
             "leaf tensor that requires grad; pass inplace_backward=False",
             "a view of a leaf tensor that requires grad")



class _FusedSmoothedCrossEntropy(torch.autograd.Function):
    """Forward computes loss and the reduced-loss gradient; backward only scales the latter.

    The gradient buffer is handed out by the first backward and forgotten: autograd may then
    own it (as a leaf's ``.grad``, accumulated into in place by later backwards). A later
    backward through the same graph (``retain_graph=True``) recomputes the gradient from the
    saved logits, and a backward that records a graph (``create_graph=True``: double backward,
    gradient penalties) takes PyTorch's differentiable formula on them. With
    ``inplace_backward=True`` the logits are gone, so both are refused.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        smoothing: float,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
        inplace: bool,
        plan: Plan,
    ) -> Tensor:
        # In place, the writes go through ``out=`` views of ``logits``, which bump its version
        # counter: any other autograd node that saved ``logits`` then refuses to run backward.
        # Out of place the gradient is the one fresh M x C allocation.
        grad = logits if inplace else torch.empty_like(logits, memory_format=torch.contiguous_format)
        loss = _forward(logits, target, smoothing, weight, ignore_index, reduction, grad, plan)
        ctx.grad = grad
        ctx.options = (smoothing, ignore_index, reduction, plan)
        ctx.inplace = inplace
        if not inplace:
            ctx.save_for_backward(logits, target, weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled() or grad is None:
            if ctx.inplace:
                raise RuntimeError(
                    "fused smoothed cross-entropy: expected one backward without create_graph "
                    "after inplace_backward=True (the gradient overwrote the logits), got "
                    + ("a backward with create_graph=True" if torch.is_grad_enabled()
                       else "a second backward through the same graph")
                    + "; pass inplace_backward=False")
            grad = _recomputed_gradient(ctx, grad_output)
            return grad, None, None, None, None, None, None, None
        reduction = ctx.options[2]
        if reduction == "none":
            factor = grad_output.unsqueeze(1)
            if not bool(torch.all(factor == 1)):
                grad.mul_(factor.to(grad.dtype))
        elif not bool(grad_output == 1):  # ``loss.backward()`` passes one: nothing to do
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None, None, None, None


def _recomputed_gradient(ctx: Any, grad_output: Tensor) -> Tensor:
    """The gradient from the saved logits, differentiable when backward records a graph."""
    logits, target, weight = ctx.saved_tensors
    smoothing, ignore_index, reduction, plan = ctx.options
    if torch.is_grad_enabled():
        # create_graph=True: PyTorch's own loss, whose backward is differentiable, in float32
        # at least (the fused pass's accumulation dtype).
        compute = compute_dtype(logits.dtype)
        x = logits.to(compute)
        w = None if weight is None else weight.to(logits.device, compute)
        loss = F.cross_entropy(x, target, weight=w, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
        (grad,) = torch.autograd.grad(loss, logits, grad_output.to(loss.dtype), create_graph=True)
        return grad
    with torch.no_grad():
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        _forward(logits, target, smoothing, weight, ignore_index, reduction, grad, plan)
        factor = grad_output.unsqueeze(1) if reduction == "none" else grad_output
        return grad.mul_(factor.to(grad.dtype))


class _GradientCoefficients(NamedTuple):
    """Per-row ``r * a``, ``r * s / C`` and ``r * b`` of the module docstring, shape ``(M,)``."""

    prob: Tensor
    uniform: Tensor
    target: Tensor


def _forward(
    logits: Tensor,
    target: Tensor,
    smoothing: float,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    grad: Tensor | None,
    plan: Plan,
) -> Tensor:
    """Loss of the whole batch; when ``grad`` is given, also write the reduced-loss gradient."""
    num_classes = logits.shape[1]
    compute = compute_dtype(logits.dtype)
    class_weight = None if weight is None else weight.to(device=logits.device, dtype=compute)
    valid = target != ignore_index
    safe_target = target.masked_fill(~valid, 0)
    # w_y of each row, 0 for ignored rows: the NLL weight and (summed) the mean's denominator.
    if class_weight is None:
        target_weight = valid.to(compute)
        total_weight: Tensor | float = float(num_classes)
    else:
        target_weight = torch.where(valid, class_weight[safe_target], 0.0)
        total_weight = class_weight.sum()
    denominator = target_weight.sum()
    coefficients = None
    if grad is not None:
        # r_i (see the module docstring): 1 / D for mean, 1 otherwise, 0 on ignored rows.
        row_scale = torch.where(valid, 1.0 / denominator if reduction == "mean" else 1.0,
                                0.0).to(compute)
        coefficients = _GradientCoefficients(
            prob=row_scale * ((1.0 - smoothing) * target_weight
                              + (smoothing / num_classes) * total_weight),
            uniform=row_scale * (smoothing / num_classes),
            target=row_scale * (1.0 - smoothing) * target_weight,
        )
    if plan.strategy == "triton":
        from labelsmooth._ops.triton_cross_entropy import triton_row_statistics

        stats = triton_row_statistics(logits, safe_target, class_weight, grad, coefficients)
    else:
        stats = chunked_row_statistics(logits, safe_target, class_weight, grad, coefficients,
                                       plan)
    lse, target_logit, weighted_logit_sum = stats
    # loss_i = (1 - s) * w_y * (lse - x_y) + (s / C) * (W * lse - sum_c w_c x_c), 0 if ignored.
    target_term = torch.where(valid, (1.0 - smoothing) * target_weight * (lse - target_logit), 0.0)
    if smoothing == 0.0:
        # Not 0 * (W * lse - sum_c w_c x_c): logits masked with -inf make that 0 * inf = NaN,
        # where plain cross-entropy (PyTorch's, without smoothing) is finite.
        uniform_term = torch.zeros_like(target_term)
    else:
        uniform_term = torch.where(
            valid, (smoothing / num_classes) * (total_weight * lse - weighted_logit_sum), 0.0)
    return _reduce(target_term, uniform_term, denominator, reduction).to(logits.dtype)


def _reduce(target_term: Tensor, uniform_term: Tensor, denominator: Tensor,
            reduction: str) -> Tensor:
    if reduction == "none":
        return target_term + uniform_term
    if reduction == "sum":
        return target_term.sum() + uniform_term.sum()
    # Each term divided by D on its own, as PyTorch does: when every counted target has weight
    # 0 (D = 0), the target term's 0 / 0 makes the mean NaN, as PyTorch's, not +inf.
    return target_term.sum() / denominator + uniform_term.sum() / denominator
