"""The CPU strategy of the fused cross-entropy: one pass over chunks of rows.

The rows are walked in chunks small enough to stay in cache between the operations that read
them. Per chunk: the row sums ``sum_c v_c x_c`` and the target logits ``x_{y_k}``; the
exponentials ``exp(x - x_{y_1})`` and their row sums ``S``, which give the first target's
probability ``p_{y_1} = 1 / S`` and so ``lse`` (see :func:`_shifted_exponentials`); the
gradient rows ``a * p - u * v`` (notation of :mod:`labelsmooth._ops.cross_entropy`), with
``p = exp(x - x_{y_1}) / S``, the ``1 / S`` folded into the row coefficient ``a``, so no pass
normalises the probabilities. The target entries, which also carry ``- b_k``, are written by
indexed writes after the loop. The chunks run in the calling thread, on PyTorch's intra-op
threads, or on single-threaded worker threads (:mod:`labelsmooth._ops._workers`), as the
:class:`~labelsmooth._ops.planning.Plan` says.

Where the exponentials go: in float32/float64, straight into the gradient rows, which the
scaling then overwrites (in place, these are the logits, once their row sums and target logits
are read); without a gradient, into a scratch chunk of each worker's own. float16/bfloat16
chunks are first copied into a float32 scratch chunk, whose values the exponentials then
overwrite. Everything is computed in the compute dtype (float32, or float64
for float64 logits) and rounded once, when the gradient rows are written.

With a confidence penalty the pass also writes the products ``p * x`` of the chunk into a
float32 chunk of each worker's own, while both are in cache, and sums them: ``S = sum_c p_c x_c``
per row. In place, the exponentials then go into a scratch chunk, so that the logits stay
readable until the products are taken. The gradient rows become ``p * (a + a_P * (x - S)) - u *
v = p * (a - a_P * S) + a_P * (p * x) - u * v``: the usual multiply with another row
coefficient, plus the products scaled by ``a_P`` (:func:`_penalty_statistics`,
:func:`_gradient_rows`). Without a penalty none of this runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from labelsmooth._ops._workers import run_on_workers
from labelsmooth._ops.planning import Plan, compute_dtype

if TYPE_CHECKING:
    from labelsmooth._ops.cross_entropy import _GradientCoefficients

__all__ = ["chunked_row_statistics"]

_LOG2_E = 1.4426950408889634  # exp(v) = 2^(v * log2(e))


@dataclass
class _ChunkPass:
    """What the chunks of one call read and write; row statistics are ``(M,)``, ``(M, 1)`` or
    ``(M, K)``."""

    logits: Tensor
    target: Tensor  # (M, K): each row's classes, 0 for ignored ones
    weight: Tensor | None  # the class vector v; None: all ones
    grad: Tensor | None
    coefficients: _GradientCoefficients | None
    plan: Plan
    staged: bool  # low-precision logits, copied into a float32 chunk first
    scratch: bool  # the exponentials go into a chunk of their own, not the gradient rows
    in_place: bool  # the exponentials overwrite the logits: shifted by the row maxima at once
    weighted_sum: Tensor
    target_logit: Tensor
    target_prob: Tensor
    row_max: Tensor
    max_prob: Tensor  # max_c p_c, where some p_y of the chunk underflowed
    from_maxima: Tensor  # rows whose lse comes from the maxima
    starts: Iterator[int]
    prob_logit_sum: Tensor | None = None  # S = sum_c p_c x_c; None: no confidence penalty


def chunked_row_statistics(
    logits: Tensor,
    safe_target: Tensor,
    class_vector: Tensor | None,
    grad: Tensor | None,
    coefficients: _GradientCoefficients | None,
    plan: Plan,
    *,
    with_penalty: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """One pass over row chunks: per-row ``lse``, ``x_{y_k}`` and ``sum_c v_c x_c``; the gradient.

    ``with_penalty``: also ``S = sum_c p_c x_c`` per row (else None is returned in its place),
    and the gradient includes the confidence penalty's ``a_P`` term of the coefficients.

    ``safe_target`` is ``(M, K)``; ``class_vector`` is ``v`` (None: all ones). With the
    probability of the first target, ``lse = x_y - log p_y``, exact to a few ulps wherever
    ``p_y`` is a normal number, needs no pass of its own (a row-maximum pass over the logits
    costs about 10% at C = 32000). A chunk where some ``p_y`` underflowed (a target logit about
    88 below its row's maximum in float32) or is NaN is shifted by the row maxima ``m`` of the
    logits instead, and its rows take ``lse = m - log(max_c p_c)``: the largest probability is
    ``1 / sum_c exp(x_c - m)``, never below ``1 / C``.
    """
    num_rows = logits.shape[0]
    compute = compute_dtype(logits.dtype)
    # The exponentials overwrite the logits (float32/float64 in place) unless the penalty's
    # products still need to read them.
    in_place = grad is not None and grad.data_ptr() == logits.data_ptr() and compute == logits.dtype
    column = functools.partial(logits.new_empty, (num_rows, 1), dtype=compute)
    row = functools.partial(logits.new_empty, (num_rows,), dtype=compute)
    state = _ChunkPass(
        logits=logits, target=safe_target, weight=class_vector,
        grad=grad, coefficients=coefficients, plan=plan, staged=compute != logits.dtype,
        scratch=grad is None or compute != logits.dtype or (in_place and with_penalty),
        in_place=in_place and not with_penalty,
        weighted_sum=row(), target_logit=logits.new_empty(safe_target.shape, dtype=compute),
        target_prob=column(), row_max=row(),
        max_prob=row(), from_maxima=torch.zeros(num_rows, dtype=torch.bool,
                                                  device=logits.device),
        starts=iter(range(0, num_rows, max(1, plan.chunk_rows))),
        prob_logit_sum=row() if with_penalty else None,
    )
    task = functools.partial(_run_chunks, state)
    if plan.workers > 1:
        run_on_workers(plan.workers, task)
    else:
        task()
    target_logit = state.target_logit
    lse = torch.where(state.from_maxima, state.row_max - torch.log(state.max_prob),
                      target_logit[:, 0] - torch.log(state.target_prob.squeeze(1)))
    if grad is not None and coefficients is not None:
        _write_target_entries(grad, safe_target, class_vector, coefficients, target_logit, lse,
                              state.prob_logit_sum)
    return lse, target_logit, state.weighted_sum, state.prob_logit_sum


def _run_chunks(state: _ChunkPass) -> None:
    """Take chunks from the shared iterator until none is left (one worker's share).

    ``next`` on the shared range iterator is atomic under the GIL, so each chunk is taken by
    exactly one worker; the scratch chunk is this worker's own.
    """
    num_rows, num_classes = state.logits.shape
    rows = max(1, state.plan.chunk_rows)
    scratch = penalty_buffer = None
    if state.scratch:
        scratch = state.logits.new_empty((min(rows, num_rows), num_classes),
                                         dtype=state.row_max.dtype)
    if state.prob_logit_sum is not None:
        penalty_buffer = state.logits.new_empty((min(rows, num_rows), num_classes),
                                                dtype=state.row_max.dtype)
    with torch.no_grad():  # grad mode is per thread; out= and in-place writes need it off
        for start in state.starts:
            _chunk(state, slice(start, min(num_rows, start + rows)), scratch, penalty_buffer)


def _chunk(state: _ChunkPass, rows: slice, scratch: Tensor | None,
           penalty_buffer: Tensor | None = None) -> None:
    x = state.logits[rows]
    if scratch is not None:
        scratch = scratch[: x.shape[0]]
        if state.staged:  # the exponentials then overwrite this float32 copy
            x = scratch.copy_(x)
    if state.weight is None:
        torch.sum(x, 1, out=state.weighted_sum[rows])
    else:
        torch.mv(x, state.weight, out=state.weighted_sum[rows])
    torch.gather(x, 1, state.target[rows], out=state.target_logit[rows])
    # The exponentials go into the scratch chunk where there is one, else into the gradient rows.
    probs = scratch if scratch is not None else state.grad[rows]  # type: ignore[index]
    prob_scale = _shifted_exponentials(state, x, probs, rows)  # p = prob_scale * probs
    products = None
    if penalty_buffer is not None:
        products = _penalty_statistics(state, probs, prob_scale, rows,
                                       penalty_buffer[: probs.shape[0]])
    if state.grad is not None and state.coefficients is not None:
        _gradient_rows(state, state.grad[rows], state.coefficients, probs, prob_scale, rows,
                       products=products)


def _shifted_exponentials(state: _ChunkPass, x: Tensor, out: Tensor, rows: slice) -> Tensor:
    """``exp(x - shift)`` into ``out``; returns the row scale of the probabilities, ``(M, 1)``.

    With the shift ``x_y`` and ``S = sum_c exp(x_c - x_y)`` (at least 1: the target contributes
    ``exp(0)``), the probabilities are ``exp(x - x_y) / S`` and ``p_y = 1 / S``, so
    ``lse = x_y - log p_y`` needs neither the row maxima nor a softmax. Where ``S`` overflowed (a
    target logit about 88 below its row's maximum in float32, about 709 in float64) or ``p_y``
    is not a normal number (``not >=`` also catches a NaN from infinite or NaN logits), the
    chunk is shifted by its row maxima ``m`` instead, and the row scale is ``max_c p_c = 1 /
    sum_c exp(x_c - m)``; ``out`` may be ``x`` (a staged chunk), which is then copied again.
    Where the exponentials overwrite the logits (in place, float32/float64), nothing is left
    to fall back on, so they are shifted by the row maxima at once: a maximum pass over a chunk
    in cache costs less than writing a scratch chunk (docs/fused.md has the figures).
    """
    if not state.in_place:
        # The first target's logit: its probability gives ``lse`` (further targets only add
        # entries).
        target_prob = _exponentials(x, state.target_logit[rows, :1], out, state.target_prob[rows])
        if bool(torch.all(target_prob >= torch.finfo(out.dtype).tiny)):
            return target_prob
        if state.staged:
            x = out.copy_(state.logits[rows])
    row_max = torch.amax(x, 1, keepdim=True)
    max_prob = _exponentials(x, row_max, out, torch.empty_like(row_max))
    state.row_max[rows] = row_max.squeeze(1)
    state.max_prob[rows] = max_prob.squeeze(1)
    state.from_maxima[rows] = True
    return max_prob


def _exponentials(x: Tensor, shift: Tensor, out: Tensor, row_scale: Tensor) -> Tensor:
    """``exp(x - shift)`` into ``out``; ``1 / sum_c exp(x_c - shift)`` into ``row_scale``.

    ``x, shift, out, row_scale``: ``(M, C)``, ``(M, 1)``, ``(M, C)``, ``(M, 1)``, all of the
    compute dtype; ``out`` may be ``x``. ``exp(x - shift) = 2^(L x - L shift)`` with
    ``L = log2(e)``: one fused multiply-add (``torch.add(..., alpha=L)``) then PyTorch's
    ``exp2``, which on the CPU costs about half of its ``exp`` (the softmax's; docs/fused.md has
    the figures). The rounding of ``L shift`` moves every exponent of a row alike, so it cancels
    in the probabilities and moves ``lse`` by about one ulp of the shift; each exponent is
    rounded once, as ``x - shift`` would be.
    """
    torch.add(shift * -_LOG2_E, x, alpha=_LOG2_E, out=out).exp2_()
    return torch.sum(out, 1, keepdim=True, out=row_scale).reciprocal_()


def _penalty_statistics(state: _ChunkPass, probs: Tensor, prob_scale: Tensor,
                        rows: slice, products: Tensor) -> Tensor:
    """``probs * x`` into ``products`` and ``S = sum_c p_c x_c`` into the row statistic.

    A multiply into a chunk and a row sum cost less than a third of one batched dot product
    (``bmm`` of ``(M, 1, C)`` by ``(M, C, 1)``, a small matrix product per row), and the
    products are the penalty's gradient term. Low-precision logits are copied into the float32
    chunk first (their own float32 copy holds the exponentials by now). A class with logit
    ``-inf`` has ``p = 0`` and contributes 0 to ``S`` and to the gradient, but makes ``p * x``
    NaN: where a row's ``S`` is not finite, products with ``p = 0`` are set to 0 and ``S`` is
    summed again.
    """
    assert state.prob_logit_sum is not None  # only called with a penalty
    logits = state.logits[rows]
    if state.staged:
        torch.mul(products.copy_(logits), probs, out=products)
    else:
        torch.mul(probs, logits, out=products)
    total = torch.sum(products, 1, out=state.prob_logit_sum[rows])
    if not bool(torch.isfinite(total).all()):
        torch.sum(products.masked_fill_(probs == 0, 0.0), 1, out=total)
    total.mul_(prob_scale.squeeze(1))
    return products


def _penalty_terms(state: _ChunkPass, coefficients: _GradientCoefficients, coef: Tensor,
                   prob_scale: Tensor, rows: slice, products: Tensor) -> Tensor:
    """Scales ``products`` by ``a_P * prob_scale`` in place; returns ``coef - a_P *
    prob_scale * S``, the probabilities' row coefficient (``coef`` is ``a * prob_scale``)."""
    assert coefficients.penalty is not None and state.prob_logit_sum is not None
    penalty = coefficients.penalty[rows].unsqueeze(1) * prob_scale
    products.mul_(penalty)
    return coef - penalty * state.prob_logit_sum[rows].unsqueeze(1)


def _gradient_rows(state: _ChunkPass, grad_rows: Tensor, coefficients: _GradientCoefficients,
                   probs: Tensor, prob_scale: Tensor, rows: slice, *,
                   products: Tensor | None = None) -> None:
    """``a * p - u * v`` into the gradient rows (the target entries come later); with a
    confidence penalty and the chunk's ``products = probs * x``, ``(a - a_P * S) * p + a_P *
    prob_scale * products - u * v``.

    ``p = prob_scale * probs`` with a ``(M, 1)`` ``prob_scale``, folded into ``a``, so it costs
    no pass of its own. Row-broadcast multiply and add are
    vectorised (``addcmul`` with a broadcast column is not: 6x slower). Low precision is scaled
    in float32 and rounded once, by the final copy.
    """
    coef = coefficients.prob[rows].unsqueeze(1) * prob_scale
    if products is not None:
        coef = _penalty_terms(state, coefficients, coef, prob_scale, rows, products)
    scaled = torch.mul(probs, coef, out=probs if state.staged else grad_rows)
    if products is not None:
        scaled.add_(products)
    neg_uniform = -coefficients.uniform[rows]
    if state.weight is None:
        scaled.add_(neg_uniform.unsqueeze(1))
    else:
        scaled.addr_(neg_uniform, state.weight)
    if state.staged:
        grad_rows.copy_(scaled)


def _write_target_entries(grad: Tensor, safe_target: Tensor, class_vector: Tensor | None,
                          coefficients: _GradientCoefficients, target_logit: Tensor,
                          lse: Tensor, prob_logit_sum: Tensor | None = None) -> None:
    """``a * p_y - u * v_y - b_1`` into each row's first target entry, then ``- b_k`` added
    into the entry of each further target (which may be the first one's class). With a
    confidence penalty the first entry also gets ``a_P * p_y * (x_y - S)``."""
    first = safe_target[:, 0]
    target_vector = 1.0 if class_vector is None else class_vector[first]
    target_prob = torch.exp(target_logit[:, 0] - lse)
    value = (coefficients.prob * target_prob
             - coefficients.uniform * target_vector - coefficients.target[:, 0])
    if coefficients.penalty is not None and prob_logit_sum is not None:
        # p_y = 0 (a target logit of -inf) contributes 0, not 0 * -inf.
        value = value + torch.where(
            target_prob > 0, coefficients.penalty * target_prob * (target_logit[:, 0]
                                                                   - prob_logit_sum), 0.0)
    # index_put_ on the flat view: ``scatter_`` on a bfloat16/float16 CPU tensor makes a float32
    # copy of the whole tensor (2x the logits' bytes).
    row_offset = torch.arange(grad.shape[0], device=grad.device) * grad.shape[1]
    flat = grad.view(-1)
    flat.index_put_((first + row_offset,), value.to(grad.dtype))
    for k in range(1, safe_target.shape[1]):
        flat.index_put_((safe_target[:, k] + row_offset,),
                        (-coefficients.target[:, k]).to(grad.dtype), accumulate=True)
