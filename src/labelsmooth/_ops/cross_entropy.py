"""Fused label-smoothed cross-entropy: loss and gradient in one pass over the logits.

:func:`fused_smoothed_cross_entropy` returns what
``F.cross_entropy(logits, target, weight=..., ignore_index=..., reduction=..., label_smoothing=s)``
returns, in value and gradient, for 2-d ``(M, C)`` logits, but reads the logits once, allocates
no ``M x C`` buffer other than the gradient it must return (none at all with
``inplace_backward=True``), and does no gradient work when no gradient is wanted.

Derivation (one row; ``x`` its logits, ``w`` the class weights, all ones when ``weight`` is
None, ``s`` the smoothing, ``C`` the class count, ``q`` the prior, uniform ``1 / C`` when
``prior`` is None; the row has ``K`` index targets ``y_k`` with shares ``h_k`` summing to 1,
``K = 1, h_1 = 1`` unless the batch is mixed)::

    lse   = log sum_c exp(x_c)            l_c = x_c - lse  (log-probabilities)
    v_c   = q_c * w_c                     V = sum_c v_c    (the smoothing class vector)
    loss  = sum_k h_k * [(1 - s) * w_{y_k} * (lse - x_{y_k}) + s * (V * lse - sum_c v_c x_c)]

That is the cross-entropy of the target ``sum_k h_k ((1 - s) onehot(y_k) + s q)`` weighted as
PyTorch weights it; with the uniform prior, ``v = w / C`` and it is PyTorch's
``label_smoothing``. ``s`` may differ per row and may be negative (it is a coefficient, nothing
in the algebra needs ``s >= 0``). With ``d lse / d x_c = p_c = exp(l_c)`` and ``r_k`` the
reduction factor of component ``k`` (below)::

    d loss / d x_c = a * p_c - u * v_c - sum_k b_k * [c == y_k],
    b_k = r_k * h_k * (1 - s) * w_{y_k},   u = s * sum_k r_k * h_k,   a = sum_k b_k + u * V.

Without weights, a uniform prior and ``K = 1`` this is ``softmax - ((1 - s) * onehot + s / C)``.

The confidence penalty (``confidence_penalty=beta``) adds ``beta * P`` per counted row and
component, with ``P = sum_c p_c l_c = S - lse`` (minus the entropy) and ``S = sum_c p_c x_c``,
one more row statistic of the pass. With ``d p_j / d x_c = p_j ([j == c] - p_c)``::

    d P / d x_c = sum_j (l_j + 1) p_j ([j == c] - p_c) = p_c (l_c - P) = p_c (x_c - S),

so the gradient rows become ``p_c * (a + a_P * (x_c - S)) - u * v_c - sum_k b_k [c == y_k]``
with ``a_P = beta * sum_k r'_k * h_k``. The penalty counts the rows component ``k`` does not
ignore and is not weighted by ``w``: ``r'_k`` is ``r_k`` with ``D_k`` replaced by the count
``n_k`` of those rows, so that each component's term is ``beta`` times the mean (or sum) of
``P`` over its counted rows.

Reductions and ``ignore_index``: each component ``k`` is reduced on its own,
``sum_i r_ik * loss_ik``, with ``r_ik = 0`` where ``y_ik`` is ignored, and otherwise ``r_ik = 1``
for ``"sum"`` and ``"none"`` and ``r_ik = 1 / D_k`` for ``"mean"``, where
``D_k = sum_i w_{y_ik}`` over the non-ignored rows (the row count without weights; PyTorch
normalises the smoothing term of a weighted mean by the same ``D``), so that a mixed loss is
exactly ``sum_k h_k`` times the loss of each component. ``D_k``
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
the gradient (bounded by ``|a| + |u| max v + sum_k |b_k|``) is rounded to the logits' dtype.

How a call runs is a :class:`~labelsmooth._ops.planning.Plan`: PyTorch's own loss (tiny CPU
problems, meta tensors, ``torch.func`` transforms), the Triton kernel
(:mod:`labelsmooth._ops.triton_cross_entropy`) or the chunked CPU pass
(:mod:`labelsmooth._ops.chunked_cross_entropy`). Each returns the per-row ``lse``, the ``K``
target logits and ``sum_c v_c x_c`` and writes the gradient; the loss is assembled from them
here. PyTorch's loss knows only a uniform prior, one smoothing in ``[0, 1]`` and one target
per row: other
calls run fused even when tiny (or, for meta tensors and ``torch.func`` transforms, through a
differentiable dense formula).
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




Smoothing = float | Tensor  # a float, or an (M,) tensor of per-row values
# lse, x_{y_k} (M, K), sum_c v_c x_c, and S = sum_c p_c x_c (None without a penalty), per row.
_RowStatistics = tuple[Tensor, Tensor, Tensor, "Tensor | None"]


class _Options(NamedTuple):
    """What a call computes, besides the logits: see the module docstring for the symbols."""

    smoothing: Smoothing
    weight: Tensor | None
    prior: Tensor | None
    shares: tuple[float, ...]
    ignore_index: int
    reduction: str
    penalty: float = 0.0  # the confidence penalty's beta

    @property
    def native(self) -> bool:
        """PyTorch's ``F.cross_entropy`` computes it: uniform prior, one float ``s >= 0``, K = 1
        (it does not compute a negative ``label_smoothing`` as the formula above)."""
        return (self.prior is None and not isinstance(self.smoothing, Tensor)
                and self.smoothing >= 0.0 and self.shares == (1.0,))


@torch.compiler.disable
def fused_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    smoothing: Smoothing,
    *,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    inplace_backward: bool = False,
    plan: Plan | None = None,
    prior: Tensor | None = None,
    shares: tuple[float, ...] = (1.0,),
    confidence_penalty: float = 0.0,
) -> Tensor:
    """Label-smoothed cross-entropy of 2-d logits, equal to ``F.cross_entropy(label_smoothing=s)``.

    Arguments are trusted (the public ``smoothed_cross_entropy`` validates them).

    Args:
        logits: ``(M, C)`` floating logits, class dimension last. Any strides; non-contiguous
            logits are copied first (and ``inplace_backward`` then writes into that copy).
        target: ``(M,)`` int64 class indices in ``[0, C)`` or equal to ``ignore_index``; or
            ``(M, K)``, one column per share of ``shares``.
        smoothing: ``s <= 1``, a float or an ``(M,)`` floating tensor (one per row).
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
            Meta tensors and ``torch.func`` transforms always run PyTorch's own loss, or a
            differentiable dense formula when that cannot compute the call.
        prior: ``(C,)`` probability vector the smoothing moves towards (default: uniform).
        shares: ``h_k``, one per target column, summing to 1 (default ``(1.0,)``).
        confidence_penalty: ``beta``, a finite float: adds ``beta * sum_c p_c log p_c`` of each
            row its component counts, reduced like the loss but unweighted (default 0: none).

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
    if target.ndim == 2 and len(shares) == 1:
        target = target[:, 0]
    options = _Options(smoothing, weight, prior, tuple(shares), ignore_index, reduction,
                       float(confidence_penalty))
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    inplace = inplace_backward and wants_grad
    if inplace:
        _check_inplace_allowed(logits)
    plan = _choose_plan(logits, options, plan, wants_grad=wants_grad, inplace=inplace)
    if plan.strategy == "native":
        return _differentiable_loss(logits, target, options)
    if not logits.is_contiguous():
        logits = logits.contiguous()
    if not wants_grad:
        with torch.no_grad():
            return _forward(logits, target, options, None, plan)
    result: Tensor = _FusedSmoothedCrossEntropy.apply(logits, target, options, inplace, plan)
    return result


def _choose_plan(logits: Tensor, options: _Options, plan: Plan | None, *, wants_grad: bool,
                 inplace: bool) -> Plan:
    """The caller's plan, or the planner's for this call; meta tensors and ``torch.func``
    transforms always run the differentiable PyTorch formula."""
    if logits.device.type == "meta" or _under_functorch(logits):
        return Plan("native")
    if plan is not None:
        return plan
    gradient: GradientTarget = "inplace" if inplace else "fresh" if wants_grad else "none"
    return planning.plan(logits.shape[0], logits.shape[1], logits.dtype, logits.device,
                         gradient=gradient, native=options.native)


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
    gradient penalties) takes a differentiable formula on them. With ``inplace_backward=True``
    the logits are gone, so both are refused.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, options: _Options, inplace: bool,
                plan: Plan) -> Tensor:
        # In place, the writes go through ``out=`` views of ``logits``, which bump its version
        # counter: any other autograd node that saved ``logits`` then refuses to run backward.
        # Out of place the gradient is the one fresh M x C allocation.
        grad = logits if inplace else torch.empty_like(logits, memory_format=torch.contiguous_format)
        loss = _forward(logits, target, options, grad, plan)
        ctx.grad = grad
        ctx.options = options
        ctx.plan = plan
        ctx.inplace = inplace
        if not inplace:
            ctx.save_for_backward(logits, target)
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
            return grad, None, None, None, None
        if ctx.options.reduction == "none":
            factor = grad_output.unsqueeze(1)
            if not bool(torch.all(factor == 1)):
                grad.mul_(factor.to(grad.dtype))
        elif not bool(grad_output == 1):  # ``loss.backward()`` passes one: nothing to do
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None


def _recomputed_gradient(ctx: Any, grad_output: Tensor) -> Tensor:
    """The gradient from the saved logits, differentiable when backward records a graph."""
    logits, target = ctx.saved_tensors
    options: _Options = ctx.options
    if torch.is_grad_enabled():
        # create_graph=True: a formula whose backward is differentiable, in float32 at least
        # (the fused pass's accumulation dtype).
        loss = _differentiable_loss(logits.to(compute_dtype(logits.dtype)), target, options)
        (grad,) = torch.autograd.grad(loss, logits, grad_output.to(loss.dtype), create_graph=True)
        return grad
    with torch.no_grad():
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        _forward(logits, target, options, grad, ctx.plan)
        factor = grad_output.unsqueeze(1) if options.reduction == "none" else grad_output
        return grad.mul_(factor.to(grad.dtype))


def _differentiable_loss(logits: Tensor, target: Tensor, options: _Options) -> Tensor:
    """The loss with PyTorch's own operations: ``F.cross_entropy`` when it computes the call,
    else the dense formula of the module docstring on ``log_softmax`` (an ``M x C`` tensor)."""
    weight = options.weight
    if weight is not None:
        # PyTorch wants the weight in the logits' dtype; the fused pass accepts any float dtype.
        weight = weight.to(logits.device, logits.dtype)
    if options.native and not isinstance(options.smoothing, Tensor):
        loss = F.cross_entropy(logits, target, weight=weight, ignore_index=options.ignore_index,
                               reduction=options.reduction, label_smoothing=options.smoothing)
        return loss if options.penalty == 0.0 else loss + _dense_penalty(logits, target, options)
    log_probs = torch.log_softmax(logits, 1)
    vector = _smoothing_vector(logits.shape[1], weight, options.prior, logits)
    smoothing = options.smoothing
    if isinstance(smoothing, Tensor):
        smoothing = smoothing.to(logits.dtype)
    # s * sum_c v_c * (-l_c): skipped for s = 0, where -inf logits would make it 0 * inf.
    smooth_row = (-(log_probs * vector).sum(1) if vector is not None else -log_probs.sum(1)
                  / logits.shape[1])
    columns = target.unsqueeze(1) if target.ndim == 1 else target
    total: Tensor | None = None
    for share, labels in zip(options.shares, columns.unbind(1), strict=True):
        valid = labels != options.ignore_index
        safe = labels.masked_fill(~valid, 0)
        label_weight = valid.to(logits.dtype) if weight is None else torch.where(
            valid, weight[safe], 0.0)
        nll = -log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)
        row = (1 - smoothing) * label_weight * nll
        if isinstance(smoothing, Tensor) or smoothing != 0.0:
            row = row + torch.where(valid, smoothing * smooth_row, 0.0)
        reduced = _reduce(row, torch.zeros_like(row), label_weight.sum(), options.reduction)
        total = reduced * share if total is None else total + reduced * share
    assert total is not None  # at least one share
    return total if options.penalty == 0.0 else total + _dense_penalty(logits, target, options)


def _dense_penalty(logits: Tensor, target: Tensor, options: _Options) -> Tensor:
    """``beta * sum_c p_c log p_c`` per counted row, reduced per component (module docstring)."""
    log_probs = torch.log_softmax(logits, 1)
    # p log p -> 0 as p -> 0: a -inf log-probability (a masked class) is clamped to the lowest
    # finite value, so that the term and its gradient are 0 there, not 0 * inf.
    finite = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)
    penalty_row = options.penalty * (log_probs.exp() * finite).sum(1)
    columns = target.unsqueeze(1) if target.ndim == 1 else target
    total: Tensor | None = None
    for share, labels in zip(options.shares, columns.unbind(1), strict=True):
        valid = labels != options.ignore_index
        reduced = _reduce_term(torch.where(valid, penalty_row, 0.0),
                               valid.sum().to(logits.dtype), options.reduction)
        total = reduced * share if total is None else total + reduced * share
    assert total is not None  # at least one share
    return total


def _smoothing_vector(num_classes: int, weight: Tensor | None, prior: Tensor | None,
                      like: Tensor) -> Tensor | None:
    """``v = q * w`` of the module docstring in ``like``'s dtype and device, or None for the
    uniform prior without weights (``v = 1 / C``: a row sum instead of a matrix-vector product)."""
    if prior is None:
        return None if weight is None else weight / num_classes
    prior = prior.to(device=like.device, dtype=like.dtype)
    return prior if weight is None else prior * weight


class _GradientCoefficients(NamedTuple):
    """Per-row ``a`` and ``u`` of the module docstring, ``(M,)``, and ``b``, ``(M, K)``; the
    confidence penalty's ``a_P``, ``(M,)``, or None without a penalty.

    ``u`` multiplies the kernels' class vector: ``v`` itself with a prior, and ``w`` (ones when
    there are no weights) with the uniform prior, ``u`` then holding the ``1 / C``.
    """

    prob: Tensor
    uniform: Tensor
    target: Tensor
    penalty: Tensor | None = None


class _ClassTerms(NamedTuple):
    """The class-side quantities of one call, in the compute dtype: ``s``, the kernels' class
    vector (None for ones), its total ``W`` and the spread (``s / C`` with the uniform prior, the
    arithmetic of PyTorch's loss; ``s`` with a prior, whose vector ``q * w`` carries the rest)."""

    smoothing: Smoothing
    class_weight: Tensor | None
    class_vector: Tensor | None
    total_weight: Tensor | float
    spread: Smoothing


def _class_terms(options: _Options, num_classes: int, device: torch.device,
                 compute: torch.dtype) -> _ClassTerms:
    smoothing: Smoothing = options.smoothing
    if isinstance(smoothing, Tensor):
        smoothing = smoothing.to(device=device, dtype=compute)
    class_weight = None if options.weight is None else options.weight.to(
        device=device, dtype=compute)
    if options.prior is None:
        total_weight: Tensor | float = (float(num_classes) if class_weight is None
                                        else class_weight.sum())
        return _ClassTerms(smoothing, class_weight, class_weight, total_weight,
                           smoothing / num_classes)
    prior = options.prior.to(device=device, dtype=compute)
    class_vector = prior if class_weight is None else prior * class_weight
    return _ClassTerms(smoothing, class_weight, class_vector, class_vector.sum(), smoothing)


class _TargetTerms(NamedTuple):
    """The target-side quantities, one column per component ``k``, ``(M, K)``: whether the row
    counts, its label (0 where ignored, so that it can index), and ``w_y`` (0 where ignored)."""

    valid: Tensor
    safe_target: Tensor
    target_weight: Tensor


def _target_terms(target: Tensor, ignore_index: int, class_weight: Tensor | None,
                  compute: torch.dtype) -> _TargetTerms:
    columns = target.unsqueeze(1) if target.ndim == 1 else target
    valid = columns != ignore_index
    safe_target = columns.masked_fill(~valid, 0)
    if class_weight is None:
        target_weight = valid.to(compute)
    else:
        target_weight = torch.where(valid, class_weight[safe_target], 0.0)
    return _TargetTerms(valid, safe_target, target_weight)


def _forward(logits: Tensor, target: Tensor, options: _Options, grad: Tensor | None,
             plan: Plan) -> Tensor:
    """Loss of the whole batch; when ``grad`` is given, also write the reduced-loss gradient."""
    compute = compute_dtype(logits.dtype)
    terms = _class_terms(options, logits.shape[1], logits.device, compute)
    targets = _target_terms(target, options.ignore_index, terms.class_weight, compute)
    components = range(len(options.shares))
    # D_k, the mean's denominator of component k: the sum of its w_y.
    denominators = [targets.target_weight[:, k].sum() for k in components]
    with_penalty = options.penalty != 0.0
    # n_k, the rows component k counts: the penalty's (unweighted) mean denominator.
    counts = [targets.valid[:, k].sum().to(compute) for k in components] if with_penalty else []
    coefficients = None
    if grad is not None:
        coefficients = _coefficients(targets.valid, targets.target_weight, denominators,
                                     options.shares, terms.smoothing, terms.spread,
                                     terms.total_weight, options.reduction, compute)
        if with_penalty:
            coefficients = coefficients._replace(penalty=_penalty_coefficients(
                targets.valid, counts, options.shares, options.penalty, options.reduction,
                compute))
    stats = _row_statistics(logits, targets.safe_target, terms.class_vector, grad, coefficients,
                            plan, with_penalty)
    total = _combine(stats, options, terms, targets, denominators, counts)
    return total.to(logits.dtype)


def _row_statistics(logits: Tensor, safe_target: Tensor, class_vector: Tensor | None,
                    grad: Tensor | None, coefficients: _GradientCoefficients | None, plan: Plan,
                    with_penalty: bool) -> _RowStatistics:
    """The per-row sums of the plan's kernel (and the gradient written into ``grad``)."""
    if plan.strategy == "triton":
        from labelsmooth._ops.triton_cross_entropy import triton_row_statistics

        return triton_row_statistics(logits, safe_target, class_vector, grad, coefficients,
                                     with_penalty=with_penalty)
    return chunked_row_statistics(logits, safe_target, class_vector, grad, coefficients, plan,
                                  with_penalty=with_penalty)


def _combine(stats: _RowStatistics, options: _Options, terms: _ClassTerms,
             targets: _TargetTerms, denominators: list[Tensor], counts: list[Tensor]) -> Tensor:
    """The loss from the row statistics: each component reduced, weighted by its share."""
    lse, target_logit, weighted_logit_sum, prob_logit_sum = stats
    # beta * sum_c p_c log p_c = beta * (S - lse), the row's confidence penalty.
    penalty_row = None if prob_logit_sum is None else options.penalty * (prob_logit_sum - lse)
    total: Tensor | None = None
    for k, share in enumerate(options.shares):
        counted = targets.valid[:, k]
        loss = _component_loss(lse, target_logit[:, k], weighted_logit_sum, counted,
                               targets.target_weight[:, k], terms, denominators[k],
                               options.reduction)
        if penalty_row is not None:
            loss = loss + _reduce_term(torch.where(counted, penalty_row, 0.0), counts[k],
                                       options.reduction)
        loss = loss if share == 1.0 else loss * share
        total = loss if total is None else total + loss
    assert total is not None  # at least one share
    return total


def _component_loss(lse: Tensor, target_logit: Tensor, weighted_logit_sum: Tensor,
                    counted: Tensor, target_weight: Tensor, terms: _ClassTerms,
                    denominator: Tensor, reduction: str) -> Tensor:
    """The reduced loss of one component ``k``:
    ``loss_ik = (1 - s) * w_y * (lse - x_y) + spread * (W * lse - sum_c v_c x_c)``, 0 if ignored."""
    smoothing = terms.smoothing
    target_term = torch.where(counted, (1.0 - smoothing) * target_weight * (lse - target_logit),
                              0.0)
    if isinstance(smoothing, float) and smoothing == 0.0:
        # Not 0 * (W * lse - sum_c v_c x_c): logits masked with -inf make that 0 * inf = NaN,
        # where plain cross-entropy (PyTorch's, without smoothing) is finite.
        uniform_term = torch.zeros_like(target_term)
    else:
        if isinstance(smoothing, Tensor):
            counted = counted & (smoothing != 0.0)
        uniform_term = torch.where(
            counted, terms.spread * (terms.total_weight * lse - weighted_logit_sum), 0.0)
    return _reduce(target_term, uniform_term, denominator, reduction)


def _coefficients(valid: Tensor, target_weight: Tensor, denominators: list[Tensor],
                  shares: tuple[float, ...], smoothing: Smoothing, spread: Smoothing,
                  total_weight: Tensor | float, reduction: str,
                  compute: torch.dtype) -> _GradientCoefficients:
    """``a``, ``u`` and ``b_k`` of the module docstring, ``r_k * h_k`` folded in."""
    prob: Tensor | None = None
    uniform: Tensor | None = None
    targets = []
    for k, share in enumerate(shares):
        # r_k: 1 / D_k for mean, 1 otherwise, 0 on ignored rows.
        row_scale = torch.where(valid[:, k], 1.0 / denominators[k] if reduction == "mean"
                                else 1.0, 0.0).to(compute)
        if share != 1.0:
            row_scale = row_scale * share
        part_prob = row_scale * ((1.0 - smoothing) * target_weight[:, k] + spread * total_weight)
        part_uniform = row_scale * spread
        targets.append(row_scale * (1.0 - smoothing) * target_weight[:, k])
        prob = part_prob if prob is None else prob + part_prob
        uniform = part_uniform if uniform is None else uniform + part_uniform
    assert prob is not None and uniform is not None  # at least one share
    return _GradientCoefficients(prob=prob, uniform=uniform, target=torch.stack(targets, 1))


def _penalty_coefficients(valid: Tensor, counts: list[Tensor], shares: tuple[float, ...],
                          beta: float, reduction: str, compute: torch.dtype) -> Tensor:
    """``a_P = beta * sum_k r'_k * h_k`` of the module docstring: ``r'_k`` is 0 on rows that
    component ``k`` ignores, else ``1 / n_k`` for ``"mean"`` and 1 otherwise."""
    total: Tensor | None = None
    for k, share in enumerate(shares):
        row_scale = torch.where(valid[:, k], 1.0 / counts[k] if reduction == "mean" else 1.0,
                                0.0).to(compute)
        part = row_scale * (beta * share)
        total = part if total is None else total + part
    assert total is not None  # at least one share
    return total


def _reduce_term(term: Tensor, denominator: Tensor, reduction: str) -> Tensor:
    """One per-row term reduced: as it is, summed, or summed and divided by ``denominator``."""
    if reduction == "none":
        return term
    if reduction == "sum":
        return term.sum()
    return term.sum() / denominator


def _reduce(target_term: Tensor, uniform_term: Tensor, denominator: Tensor,
            reduction: str) -> Tensor:
    # Each term divided by D on its own, as PyTorch does: when every counted target has weight
    # 0 (D = 0), the target term's 0 / 0 makes the mean NaN, as PyTorch's, not +inf.
    return (_reduce_term(target_term, denominator, reduction)
            + _reduce_term(uniform_term, denominator, reduction))
