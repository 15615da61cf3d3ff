"""Triton kernel of the fused label-smoothed cross-entropy (CUDA; imported only with Triton).

One program per row. The first loop over the row's column blocks is an online softmax: it keeps
the running maximum ``m`` and ``d = sum exp(x - m)``, rescaling ``d`` by ``exp(m_old - m_new)``
whenever the maximum grows, together with the row sum ``sum_c v_c x_c`` over the smoothing class
vector ``v``; at the end ``lse = m + log d``, and the ``K`` target logits are read once. The
second loop writes the gradient of the reduced loss (see :mod:`labelsmooth._ops.cross_entropy`
for the derivation and the coefficients)::

    grad_c = a * exp(x_c - lse) - u * v_c - sum_k b_k * [c == y_k]

with the per-row coefficients ``a``, ``u`` and ``b_k`` computed by the caller (all zero for an
ignored row, so its gradient is zero; ``v`` is ``w``, or ones, for the uniform prior, ``u`` then
carrying the ``1 / C``). ``K`` is a compile-time constant (1, or 2 and 4 for mixed batches): its
loops unroll. Everything is accumulated in float32 whatever the logits' dtype (float16 sums over
a 32k vocabulary overflow); only the stored gradient is rounded to the logits' dtype. The target
terms are folded into the second loop with a ``where`` rather than stored afterwards, because
two stores to one address from different threads of a program are not ordered (and two targets
of a row may be the same class: their terms simply add). With ``grad`` aliasing ``logits``
(``inplace_backward``) every element is read before it is overwritten by the same program, and
rows belong to one program each, so the write is safe.

With a confidence penalty (``HAS_PENALTY``) the first loop also keeps ``sum exp(x - m) * x``,
rescaled with ``d``, so that ``S = sum_c p_c x_c`` is that sum over ``d``, and the gradient
gains ``a_P * p_c * (x_c - S)``, the derivative of ``a_P * sum_c p_c log p_c`` (derived in
:mod:`labelsmooth._ops.cross_entropy`). The kernel is memory-bound: these few operations per
element read nothing more. A ``-inf`` logit has ``p = 0`` and contributes 0 to both, not
``0 * -inf``.

The loss itself is assembled from ``lse``, ``x_{y_k}`` and ``sum_c v_c x_c`` by the caller,
with the same code as the CPU path. This module is not verified here without a GPU beyond Triton's CPU
interpreter (``TRITON_INTERPRET=1``), which its tests use when Triton is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import triton
import triton.language as tl
from torch import Tensor

if TYPE_CHECKING:
    from labelsmooth._ops.cross_entropy import _GradientCoefficients

__all__ = ["triton_row_statistics"]

# Columns per block: a power of two; 4096 float32 values per program step keeps registers in
# bounds with 8 warps (16 values per thread) while rows of 32k-256k classes take 8-64 steps.
_MAX_BLOCK = 4096


@triton.jit
def _smoothed_cross_entropy_rows(
    logits_ptr,
    logits_row_stride,
    grad_ptr,
    grad_row_stride,
    target_ptr,
    vector_ptr,
    prob_coef_ptr,
    uniform_coef_ptr,
    target_coef_ptr,
    lse_ptr,
    target_logit_ptr,
    weighted_sum_ptr,
    penalty_coef_ptr,
    prob_logit_sum_ptr,
    n_cols,
    HAS_VECTOR: tl.constexpr,
    HAS_GRAD: tl.constexpr,
    HAS_PENALTY: tl.constexpr,
    NUM_TARGETS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_logits = logits_ptr + row * logits_row_stride
    row_targets = target_ptr + row * NUM_TARGETS

    running_max = float("-inf")
    running_sum = 0.0
    weighted_sum = 0.0
    running_logit_sum = 0.0  # sum exp(x - m) * x, rescaled as running_sum is
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(row_logits + cols, mask=mask, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        # While every logit seen is -inf (classes masked out, or the start), new_max is -inf and
        # exp(-inf - -inf) would be NaN: shift by 0 instead, so those terms are exp(-inf) = 0.
        # Otherwise exp(-inf - m) = 0 for the masked tail and for the first block's empty sum.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp(running_max - shift)
        exponentials = tl.exp(x - shift)
        running_sum = running_sum * rescale + tl.sum(exponentials, axis=0)
        if HAS_PENALTY:
            running_logit_sum = running_logit_sum * rescale + tl.sum(
                tl.where(exponentials > 0.0, exponentials * x, 0.0), axis=0)
        running_max = new_max
        x_in = tl.where(mask, x, 0.0)
        if HAS_VECTOR:
            v = tl.load(vector_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            weighted_sum += tl.sum(x_in * v, axis=0)
        else:
            weighted_sum += tl.sum(x_in, axis=0)
    lse = running_max + tl.log(running_sum)
    tl.store(lse_ptr + row, lse)
    for k in tl.static_range(NUM_TARGETS):
        target = tl.load(row_targets + k)
        tl.store(target_logit_ptr + row * NUM_TARGETS + k,
                 tl.load(row_logits + target).to(tl.float32))
    tl.store(weighted_sum_ptr + row, weighted_sum)
    prob_logit_sum = 0.0
    if HAS_PENALTY:
        prob_logit_sum = running_logit_sum / running_sum
        tl.store(prob_logit_sum_ptr + row, prob_logit_sum)

    if HAS_GRAD:
        penalty_coef = 0.0
        if HAS_PENALTY:
            penalty_coef = tl.load(penalty_coef_ptr + row)
        prob_coef = tl.load(prob_coef_ptr + row)
        uniform_coef = tl.load(uniform_coef_ptr + row)
        row_grad = grad_ptr + row * grad_row_stride
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(row_logits + cols, mask=mask, other=0.0).to(tl.float32)
            probs = tl.exp(x - lse)
            grad = prob_coef * probs
            if HAS_PENALTY:
                grad += tl.where(probs > 0.0, penalty_coef * probs * (x - prob_logit_sum), 0.0)
            for k in tl.static_range(NUM_TARGETS):
                target = tl.load(row_targets + k)
                target_coef = tl.load(target_coef_ptr + row * NUM_TARGETS + k)
                grad -= tl.where(cols == target, target_coef, 0.0)
            if HAS_VECTOR:
                v = tl.load(vector_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                grad -= uniform_coef * v
            else:
                grad -= uniform_coef
            tl.store(row_grad + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def triton_row_statistics(
    logits: Tensor,
    safe_target: Tensor,
    class_vector: Tensor | None,
    grad: Tensor | None,
    coefficients: _GradientCoefficients | None,
    *,
    with_penalty: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-row float32 ``lse``, ``x_{y_k}`` ``(M, K)`` and ``sum_c v_c x_c``; the gradient.
    ``with_penalty``: also ``S = sum_c p_c x_c`` (else None), and the penalty's gradient term.

    ``logits`` and ``grad`` are contiguous ``(M, C)`` (``grad`` may be ``logits`` itself),
    ``safe_target`` holds ``(M, K)`` class indices (ignored ones pointed at class 0, with zero
    coefficients), ``class_vector`` (``v``; None: ones) and the coefficients are float32.
    """
    num_rows, num_classes = logits.shape
    num_targets = safe_target.shape[1]
    safe_target = safe_target.contiguous()
    lse = torch.empty(num_rows, dtype=torch.float32, device=logits.device)
    target_logit = torch.empty(num_rows, num_targets, dtype=torch.float32, device=logits.device)
    weighted_sum = torch.empty_like(lse)
    prob_logit_sum = torch.empty_like(lse) if with_penalty else None
    if num_rows == 0:
        return lse, target_logit, weighted_sum, prob_logit_sum
    block = min(triton.next_power_of_2(num_classes), _MAX_BLOCK)
    # Unused pointers still need a tensor argument; the constexpr flags compile their use out.
    placeholder = lse
    launch: Any = _smoothed_cross_entropy_rows[(num_rows,)]
    launch(
        logits,
        logits.stride(0),
        grad if grad is not None else placeholder,
        grad.stride(0) if grad is not None else 0,
        safe_target,
        class_vector if class_vector is not None else placeholder,
        coefficients.prob if coefficients is not None else placeholder,
        coefficients.uniform if coefficients is not None else placeholder,
        coefficients.target.contiguous() if coefficients is not None else placeholder,
        lse,
        target_logit,
        weighted_sum,
        (coefficients.penalty if coefficients is not None and coefficients.penalty is not None
         else placeholder),
        prob_logit_sum if prob_logit_sum is not None else placeholder,
        num_classes,
        HAS_VECTOR=class_vector is not None,
        HAS_GRAD=grad is not None,
        HAS_PENALTY=with_penalty,
        NUM_TARGETS=num_targets,
        BLOCK=block,
        num_warps=8 if block >= 2048 else 4,
    )
    return lse, target_logit, weighted_sum, prob_logit_sum
