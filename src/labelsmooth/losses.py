"""Loss modules: they hold configuration and call the functionals in a one-line ``forward``.

Example:
    >>> import torch
    >>> from labelsmooth import SmoothedCrossEntropyLoss
    >>> criterion = SmoothedCrossEntropyLoss(smoothing=0.1)
    >>> x, y = torch.randn(8, 5), torch.randint(5, (8,))
    >>> torch.allclose(criterion(x, y),
    ...                torch.nn.CrossEntropyLoss(label_smoothing=0.1)(x, y))
    True
"""

from __future__ import annotations

import torch
from torch import nn

from labelsmooth._validation import (
    check_finite_real,
    check_int,
    check_prior,
    check_reduction,
    check_smoothing,
    fail,
)
from labelsmooth.functional.cross_entropy import (
    smoothed_binary_cross_entropy_with_logits,
    smoothed_cross_entropy,
    soft_cross_entropy,
)
from labelsmooth.functional.linear_cross_entropy import smoothed_linear_cross_entropy

__all__ = [
    "SmoothedBCEWithLogitsLoss",
    "SmoothedCrossEntropyLoss",
    "SmoothedLinearCrossEntropyLoss",
    "SoftCrossEntropyLoss",
]


class _WeightedLoss(nn.Module):
    weight: torch.Tensor | None

    def __init__(self, *, weight: torch.Tensor | None, reduction: str) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", weight)


class SoftCrossEntropyLoss(_WeightedLoss):
    """Cross-entropy for index or dense targets: :func:`labelsmooth.functional.soft_cross_entropy`.

    Args:
        weight: class weights ``(C,)`` (default ``None``), kept as a buffer.
        ignore_index: index-target value that contributes nothing (default -100).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.
        class_dim: the class dimension of the input (default 1).

    Shape:
        input ``(N, C, *)``; target ``(N, *)`` indices or ``(N, C, *)`` dense; output scalar, or
        ``(N, *)`` for ``reduction="none"``.

    Example:
        >>> criterion = SoftCrossEntropyLoss()
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> torch.allclose(criterion(logits, torch.tensor([0])),
        ...                criterion(logits, torch.tensor([[1.0, 0.0, 0.0]])))
        True
    """

    def __init__(self, *, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", class_dim: int = 1) -> None:
        super().__init__(weight=weight, reduction=reduction)
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.class_dim = check_int(class_dim, "class_dim")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                                  reduction=self.reduction, class_dim=self.class_dim)


class SmoothedCrossEntropyLoss(_WeightedLoss):
    """Label-smoothed cross-entropy: :func:`labelsmooth.functional.smoothed_cross_entropy`.

    A drop-in for ``torch.nn.CrossEntropyLoss(label_smoothing=s)`` that never builds the dense
    target, computes loss and gradient in one fused pass, and accumulates in float32 for
    half-precision logits. Per position, with ``lse`` the log-sum-exp of the logits ``x``:

    .. math::

        \\ell = (1 - s)\\, w_y (\\mathrm{lse} - x_y) + \\frac{s}{C} \\sum_c w_c (\\mathrm{lse} - x_c)

    plus, with ``confidence_penalty=beta``, ``beta * sum_c p_c log p_c`` per non-ignored position
    (Pereyra et al., 2017), computed in the same pass.

    Args:
        smoothing: ``s`` in ``[0, 1]`` (default 0.1).
        weight: class weights ``(C,)`` (default ``None``), kept as a buffer.
        ignore_index: index-target value that contributes nothing (default -100).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.
        class_dim: the class dimension of the input (default 1).
        inplace_backward: write the gradient into the input's storage, destroying the logits
            (default ``False``); see :func:`labelsmooth.functional.smoothed_cross_entropy`.
        confidence_penalty: the weight ``beta`` of the confidence penalty, a finite float
            (default 0: none); see :func:`labelsmooth.functional.smoothed_cross_entropy`.

    Shape:
        input ``(N, C, *)``; target ``(N, *)`` indices or ``(N, C, *)`` dense; output scalar, or
        ``(N, *)`` for ``reduction="none"``.

    Example:
        >>> criterion = SmoothedCrossEntropyLoss(0.1, reduction="none")
        >>> x, y = torch.randn(2, 7, 3), torch.randint(7, (2, 3))
        >>> criterion(x, y).shape
        torch.Size([2, 3])

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
    """

    prior: torch.Tensor | None

    def __init__(self, smoothing: float = 0.1, *, prior: torch.Tensor | None = None,
                 allow_negative: bool = False, weight: torch.Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean", class_dim: int = 1,
                 inplace_backward: bool = False, confidence_penalty: float = 0.0) -> None:
        super().__init__(weight=weight, reduction=reduction)
        self.smoothing = check_smoothing(smoothing, allow_negative=allow_negative)
        self.allow_negative = allow_negative
        if isinstance(prior, torch.Tensor) and prior.ndim != 1:
            fail("prior", "a 1-d probability vector of shape (C,)", f"shape {tuple(prior.shape)}")
        self.register_buffer(
            "prior", None if prior is None else check_prior(prior, prior.shape[0]))
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.class_dim = check_int(class_dim, "class_dim")
        if not isinstance(inplace_backward, bool):
            fail("inplace_backward", "a bool", inplace_backward, error=TypeError)
        self.inplace_backward = inplace_backward
        self.confidence_penalty = check_finite_real(confidence_penalty, "confidence_penalty")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smoothed_cross_entropy(input, target, self.smoothing, prior=self.prior,
                                      allow_negative=self.allow_negative, weight=self.weight,
                                      ignore_index=self.ignore_index, reduction=self.reduction,
                                      class_dim=self.class_dim, inplace_backward=self.inplace_backward,
                                      confidence_penalty=self.confidence_penalty)


class SmoothedBCEWithLogitsLoss(_WeightedLoss):
    """Binary / multi-label BCE on logits with targets ``t (1 - s) + s / 2``.

    See :func:`labelsmooth.functional.smoothed_binary_cross_entropy_with_logits`.

    Args:
        smoothing: ``s`` in ``[0, 1]`` (default 0.1).
        weight: a weight broadcastable to the input (default ``None``), kept as a buffer.
        pos_weight: weight of positives per class (default ``None``), kept as a buffer.
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.

    Shape:
        input and target of the same shape; output scalar, or the input's shape for ``"none"``.

    Example:
        >>> criterion = SmoothedBCEWithLogitsLoss(0.2)
        >>> criterion(torch.zeros(2, 3), torch.ones(2, 3))
        tensor(0.6931)
    """

    pos_weight: torch.Tensor | None

    def __init__(self, smoothing: float = 0.1, *, weight: torch.Tensor | None = None,
                 pos_weight: torch.Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(weight=weight, reduction=reduction)
        self.smoothing = check_smoothing(smoothing)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smoothed_binary_cross_entropy_with_logits(
            input, target, self.smoothing, weight=self.weight, pos_weight=self.pos_weight,
            reduction=self.reduction)


class SmoothedLinearCrossEntropyLoss(_WeightedLoss):
    """Label-smoothed cross-entropy of a linear head, without materialising the logits.

    See :func:`labelsmooth.functional.smoothed_linear_cross_entropy`: equal to
    ``F.cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)`` in value and
    in the gradients of all three, holding one chunk of rows' logits at a time.

    Args:
        smoothing: ``s`` in ``[0, 1]`` (default 0.1).
        weight: class weights ``(C,)`` (default ``None``), kept as a buffer.
        ignore_index: target value that contributes nothing (default -100).
        reduction: ``"none"``, ``"mean"`` (default) or ``"sum"``.
        chunk_size: rows per chunk (default ``None``: chosen from the shapes).

    Shape:
        input ``(*, H)``; linear_weight ``(C, H)``; target ``(*)``; linear_bias ``(C,)``;
        output scalar, or ``(*)`` for ``reduction="none"``.

    Example:
        >>> criterion = SmoothedLinearCrossEntropyLoss(0.1)
        >>> head = torch.nn.Linear(16, 100)
        >>> h, y = torch.randn(4, 8, 16), torch.randint(100, (4, 8))
        >>> loss = criterion(h, head.weight, y, linear_bias=head.bias)
        >>> ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(head(h).flatten(0, 1), y.flatten())
        >>> torch.allclose(loss, ref)
        True
    """

    def __init__(self, smoothing: float = 0.1, *, weight: torch.Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean",
                 chunk_size: int | None = None) -> None:
        super().__init__(weight=weight, reduction=reduction)
        self.smoothing = check_smoothing(smoothing)
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size",
                                                                     minimum=1)

    def forward(self, input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                linear_bias: torch.Tensor | None = None,
                num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
        return smoothed_linear_cross_entropy(
            input, linear_weight, target, self.smoothing, linear_bias=linear_bias,
            weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            num_items_in_batch=num_items_in_batch, chunk_size=self.chunk_size)
