"""The CPU strategy of the fused cross-entropy: one pass over chunks of rows.

The rows are walked in chunks small enough to stay in cache between the operations that read
them. Per chunk: the row sums ``sum_c v_c x_c`` and the target logits ``x_{y_k}``; the
probabilities (PyTorch's softmax kernel) and the first target's probabilities ``p_{y_1}``; the
gradient rows ``a * p - u * v`` (notation of :mod:`labelsmooth._ops.cross_entropy`). The target
entries, which also carry ``- b_k``, are written by indexed writes after the loop. The chunks
run in the calling thread, on PyTorch's intra-op threads, or on single-threaded worker threads
(:mod:`labelsmooth._ops._workers`), as the :class:`~labelsmooth._ops.planning.Plan` says.

Where the probabilities go: out of place in float32/float64, straight into the gradient rows,
which the scaling then overwrites; for float16/bfloat16, into the float32 copy of the chunk
(everything is computed in float32 and rounded once, when the gradient rows are written);
in place or without a gradient, into a scratch chunk of each worker's own, so that the logits
stay readable until their row's gradient is written.
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


@dataclass
class _ChunkPass:
    """What the chunks of one call read and write; row statistics are ``(M,)``, ``(M, 1)`` or
    ``(M, K)``."""

    logits: Tensor
    target: Tensor  # (M, K): each row's classes, 0 for ignored ones
    first_target: Tensor  # (M, 1): the class whose probability gives lse
    weight: Tensor | None  # the class vector v; None: all ones
    grad: Tensor | None
    coefficients: _GradientCoefficients | None
    plan: Plan
    staged: bool  # low-precision logits, copied into a float32 chunk first
    scratch: bool  # the probabilities go into a chunk of their own, not the gradient rows
    weighted_sum: Tensor
    target_logit: Tensor
    target_prob: Tensor
    row_max: Tensor
    max_prob: Tensor  # max_c p_c, where some p_y of the chunk underflowed
    from_maxima: Tensor  # rows whose lse comes from the maxima
    starts: Iterator[int]


def chunked_row_statistics(
    logits: Tensor,
    safe_target: Tensor,
    class_vector: Tensor | None,
    grad: Tensor | None,
    coefficients: _GradientCoefficients | None,
    plan: Plan,
) -> tuple[Tensor, Tensor, Tensor]:
    """One pass over row chunks: per-row ``lse``, ``x_{y_k}`` and ``sum_c v_c x_c``; the gradient.

    ``safe_target`` is ``(M, K)``; ``class_vector`` is ``v`` (None: all ones). With the softmax
    of the first target, ``lse = x_y - log p_y``, exact to a few ulps wherever ``p_y`` is a normal
    number, needs no pass of its own (a row-maximum pass over the logits costs about 10% at
    C = 32000). A chunk where some ``p_y`` underflowed (a target logit about 87 below its row's
    maximum in float32) or is NaN also gets the row maxima ``m`` of the logits and of the
    probabilities, and its rows take ``lse = m - log(max_c p_c)``: the largest probability is
    ``1 / sum_c exp(x_c - m)``, never below ``1 / C``.
    """
    num_rows = logits.shape[0]
    compute = compute_dtype(logits.dtype)
    column = functools.partial(logits.new_empty, (num_rows, 1), dtype=compute)
    row = functools.partial(logits.new_empty, (num_rows,), dtype=compute)
    state = _ChunkPass(
        logits=logits, target=safe_target, first_target=safe_target[:, :1], weight=class_vector,
        grad=grad, coefficients=coefficients, plan=plan, staged=compute != logits.dtype,
        scratch=grad is None or grad.data_ptr() == logits.data_ptr() or compute != logits.dtype,
        weighted_sum=row(), target_logit=logits.new_empty(safe_target.shape, dtype=compute),
        target_prob=column(), row_max=row(),
        max_prob=row(), from_maxima=torch.zeros(num_rows, dtype=torch.bool,
                                                  device=logits.device),
        starts=iter(range(0, num_rows, max(1, plan.chunk_rows))),
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
        _write_target_entries(grad, safe_target, class_vector, coefficients, target_logit, lse)
    return lse, target_logit, state.weighted_sum


def _run_chunks(state: _ChunkPass) -> None:
    """Take chunks from the shared iterator until none is left (one worker's share).

    ``next`` on the shared range iterator is atomic under the GIL, so each chunk is taken by
    exactly one worker; the scratch chunk is this worker's own.
    """
    num_rows, num_classes = state.logits.shape
    rows = max(1, state.plan.chunk_rows)
    scratch = None
    if state.scratch:
        scratch = state.logits.new_empty((min(rows, num_rows), num_classes),
                                         dtype=state.row_max.dtype)
    with torch.no_grad():  # grad mode is per thread; out= and in-place writes need it off
        for start in state.starts:
            _chunk(state, slice(start, min(num_rows, start + rows)), scratch)


def _chunk(state: _ChunkPass, rows: slice, scratch: Tensor | None) -> None:
    x = state.logits[rows]
    if scratch is not None:
        scratch = scratch[: x.shape[0]]
        if state.staged:  # the probabilities then overwrite this float32 copy
            x = scratch.copy_(x)
    if state.weight is None:
        torch.sum(x, 1, out=state.weighted_sum[rows])
    else:
        torch.mv(x, state.weight, out=state.weighted_sum[rows])
    torch.gather(x, 1, state.target[rows], out=state.target_logit[rows])
    probs = scratch if scratch is not None else state.grad[rows]  # type: ignore[index]
    _softmax_probabilities(state, x, probs, rows)
    if state.grad is not None and state.coefficients is not None:
        _gradient_rows(state, state.grad[rows], state.coefficients, probs, rows)


def _softmax_probabilities(state: _ChunkPass, x: Tensor, out: Tensor, rows: slice) -> None:
    """``softmax(x)`` into ``out`` and ``p_y``; the maxima where some ``p_y`` underflowed."""
    torch.softmax(x, 1, out=out)
    target_prob = torch.gather(out, 1, state.first_target[rows], out=state.target_prob[rows])
    # ``not >=``: a NaN p_y (from infinite or NaN logits) takes the maxima too.
    if not bool(torch.all(target_prob >= torch.finfo(out.dtype).tiny)):
        state.row_max[rows] = state.logits[rows].amax(1)  # the logits: ``x`` may be ``out``
        torch.amax(out, 1, out=state.max_prob[rows])
        state.from_maxima[rows] = True


def _gradient_rows(state: _ChunkPass, grad_rows: Tensor, coefficients: _GradientCoefficients,
                   probs: Tensor, rows: slice) -> None:
    """``a * p - u * v`` into the gradient rows (the target entries come later).

    Row-broadcast multiply and add are vectorised (``addcmul`` with a broadcast column is not:
    6x slower). Low precision is scaled in float32 and rounded once, by the final copy.
    """
    coef = coefficients.prob[rows].unsqueeze(1)
    scaled = torch.mul(probs, coef, out=probs if state.staged else grad_rows)
    neg_uniform = -coefficients.uniform[rows]
    if state.weight is None:
        scaled.add_(neg_uniform.unsqueeze(1))
    else:
        scaled.addr_(neg_uniform, state.weight)
    if state.staged:
        grad_rows.copy_(scaled)


def _write_target_entries(grad: Tensor, safe_target: Tensor, class_vector: Tensor | None,
                          coefficients: _GradientCoefficients, target_logit: Tensor,
                          lse: Tensor) -> None:
    """``a * p_y - u * v_y - b_1`` into each row's first target entry, then ``- b_k`` added
    into the entry of each further target (which may be the first one's class)."""
    first = safe_target[:, 0]
    target_vector = 1.0 if class_vector is None else class_vector[first]
    value = (coefficients.prob * torch.exp(target_logit[:, 0] - lse)
             - coefficients.uniform * target_vector - coefficients.target[:, 0])
    # index_put_ on the flat view: ``scatter_`` on a bfloat16/float16 CPU tensor makes a float32
    # copy of the whole tensor (2x the logits' bytes).
    row_offset = torch.arange(grad.shape[0], device=grad.device) * grad.shape[1]
    flat = grad.view(-1)
    flat.index_put_((first + row_offset,), value.to(grad.dtype))
    for k in range(1, safe_target.shape[1]):
        flat.index_put_((safe_target[:, k] + row_offset,),
                        (-coefficients.target[:, k]).to(grad.dtype), accumulate=True)
