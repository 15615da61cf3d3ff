r"""The confidence penalty: a loss term that rewards high-entropy (less confident) predictions.

Pereyra et al. (2017) add ``-beta * H(softmax(z))`` to the training loss, where
``H(p) = -sum_k p_k log p_k``. Label smoothing with a uniform prior pulls the prediction towards
the uniform distribution through ``KL(u || p)``; the confidence penalty does so through
``KL(p || u) = log C - H(p)``, the same divergence in the other direction (up to a constant).

References:
    Pereyra, Tucker, Chorowski, Kaiser and Hinton (2017), "Regularizing neural networks by
    penalizing confident output distributions", ICLR workshop. arXiv:1701.06548.
"""

from __future__ import annotations

import torch

from labelsmooth._validation import (
    check_class_dim,
    check_finite_real,
    check_floating,
    check_reduction,
)

__all__ = ["confidence_penalty", "entropy"]


def entropy(logits: torch.Tensor, *, class_dim: int = 1) -> torch.Tensor:
    r"""Entropy of ``softmax(logits)`` along the class dimension, in nats.

    .. math::
        H(p) = -\sum_k p_k \log p_k = \operatorname{logsumexp}(z) - \sum_k p_k z_k

    Computed from ``log_softmax`` in float32 (float64 for float64 input), so half-precision
    logits neither overflow in ``exp`` nor lose the small terms of the sum; the result is cast
    back to ``logits``' dtype. A class with logit ``-inf`` (a masked class) has ``p_k = 0`` and
    contributes 0, with a finite gradient.

    Args:
        logits: ``(N, C, *)`` or ``(C,)`` floating-point logits, classes along ``class_dim``.
        class_dim: the class dimension. Default: 1.

    Returns:
        ``logits``' shape without the class dimension, in ``logits``' dtype; values in
        ``[0, log C]``.

    Example:
        >>> entropy(torch.zeros(1, 4))  # uniform over 4 classes: log 4
        tensor([1.3863])
    """
    return _entropy_accumulated(logits, class_dim).to(logits.dtype)


def _entropy_accumulated(logits: torch.Tensor, class_dim: int) -> torch.Tensor:
    """The entropy in float32 (float64 for float64 logits), after validating the arguments."""
    check_floating(logits, "logits")
    dim = check_class_dim(class_dim, logits.ndim)
    accumulate = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_p = torch.log_softmax(logits.to(accumulate), dim=dim)
    # p log p -> 0 as p -> 0: clamping -inf to the most negative finite value keeps 0 * log p at 0
    # and its gradient finite (the clamp passes no gradient to a clamped entry).
    log_p_finite = log_p.clamp(min=torch.finfo(accumulate).min)
    return -(log_p.exp() * log_p_finite).sum(dim=dim)


def confidence_penalty(
    logits: torch.Tensor,
    beta: float,
    *,
    class_dim: int = 1,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The confidence penalty ``-beta * H(softmax(logits))``, to be added to the training loss.

    .. math::
        \ell_i = -\beta\, H(p_i) = \beta \sum_k p_{ik} \log p_{ik}, \qquad p_i = \mathrm{softmax}(z_i)

    with ``reduction="mean"`` the mean of ``\ell_i`` over all positions ``(N, *)``, with ``"sum"``
    their sum, with ``"none"`` the per-position values. Its gradient with respect to the logits is
    ``\beta\, p_{ik} (\log p_{ik} + H(p_i))``. A positive ``beta`` penalises confident
    predictions (Pereyra et al. use 0.1 to 4 depending on the task); a negative ``beta`` rewards
    them (entropy minimisation). The entropy is accumulated in float32 (see :func:`entropy`).
    Added to a cross-entropy of index targets, it is cheaper fused into that loss:
    ``smoothed_cross_entropy(logits, y, s, confidence_penalty=beta)`` computes both in one pass
    over the logits (where targets are ``ignore_index`` it adds no penalty).

    Args:
        logits: ``(N, C, *)`` or ``(C,)`` floating-point logits, classes along ``class_dim``.
        beta: the weight of the penalty, a finite real number (typically in ``[0.1, 4]``).
        class_dim: the class dimension. Default: 1.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or the shape of ``logits`` without the class dimension for ``"none"``, in
        ``logits``' dtype.

    Example:
        >>> import torch.nn.functional as F
        >>> logits, y = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
        >>> loss = F.cross_entropy(logits, y) + confidence_penalty(logits, 0.5)
        >>> round(confidence_penalty(logits, 0.5).item(), 4)
        -0.3328

    References:
        Pereyra et al. (2017), "Regularizing neural networks by penalizing confident output
        distributions". arXiv:1701.06548.
    """
    weight = check_finite_real(beta, "beta")
    reduction = check_reduction(reduction)
    # Reduced in float32 before the one rounding to logits' dtype: a float16 mean over many
    # positions would otherwise lose its small terms.
    penalty = -weight * _entropy_accumulated(logits, class_dim)
    if reduction == "mean":
        penalty = penalty.mean()
    elif reduction == "sum":
        penalty = penalty.sum()
    return penalty.to(logits.dtype)
