"""Cross-entropy losses for index or dense targets, with label smoothing.

``soft_cross_entropy`` is the loss that accepts the dense distribution label smoothing produces
as its target. ``smoothed_cross_entropy`` reaches the label-smoothed loss from
index targets without building the dense ``N x C`` target at all. ``smoothed_binary_cross_entropy
_with_logits`` is the binary / multi-label counterpart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from labelsmooth._ops import planning
from labelsmooth._ops.cross_entropy import fused_smoothed_cross_entropy
from labelsmooth._validation import (
    check_bool,
    check_finite_real,
    check_floating,
    check_index_dtype,
    check_int,
    check_prior,
    check_reduction,
    check_sample_smoothing,
    check_shares,
    check_smoothing,
    describe,
    fail,
    shape_str,
)
from labelsmooth.functional._targets import check_target_range, classify_targets
from labelsmooth.functional.penalties import confidence_penalty as _confidence_penalty
from labelsmooth.functional.smoothing import smooth_binary_labels, smooth_labels

__all__ = [
    "mixed_smoothed_cross_entropy",
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


def _check_smoothing_argument(smoothing: object, positions: tuple[int, ...], *,
                              allow_negative: bool, device: torch.device,
                              validate_args: bool | None) -> float | torch.Tensor:
    """A float ``s``, or a tensor of one value per sample (shape ``positions[:1]``)."""
    if not isinstance(smoothing, torch.Tensor):
        return check_smoothing(smoothing, allow_negative=check_bool(allow_negative, "allow_negative"))
    check_bool(allow_negative, "allow_negative")
    validate = smoothing.device.type == "cpu" if validate_args is None else bool(validate_args)
    return check_sample_smoothing(smoothing, positions[:1], allow_negative=allow_negative,
                                  validate=validate).to(device)


def _check_prior_argument(prior: object, num_classes: int, device: torch.device,
                          validate_args: bool | None) -> torch.Tensor | None:
    """``None`` or a ``(C,)`` probability vector; its values are read (a host synchronisation on
    an accelerator) only where ``validate_args`` says the index range is checked."""
    if prior is None:
        return None
    on_cpu = isinstance(prior, torch.Tensor) and prior.device.type == "cpu"
    validate = on_cpu if validate_args is None else bool(validate_args)
    return check_prior(prior, num_classes, check_values=validate).to(device)


def _check_smoothing_options(input: torch.Tensor, dim: int, smoothing: object, prior: object,
                             weight: object, *, allow_negative: bool, inplace_backward: object,
                             validate_args: bool | None
                             ) -> tuple[float | torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The checked smoothing, class weight and prior of a call (and its ``inplace_backward``)."""
    num_classes = input.shape[dim]
    positions = tuple(input.shape[:dim] + input.shape[dim + 1:])
    s = _check_smoothing_argument(smoothing, positions, allow_negative=allow_negative,
                                  device=input.device, validate_args=validate_args)
    w = _check_weight(weight, num_classes)
    q = _check_prior_argument(prior, num_classes, input.device, validate_args)
    check_bool(inplace_backward, "inplace_backward")
    return s, w, q


def _per_position(smoothing: float | torch.Tensor, positions: tuple[int, ...]
                  ) -> float | torch.Tensor:
    """Per-sample smoothing ``(N,)`` broadcast over ``(N, *)`` and flattened to rows."""
    if not isinstance(smoothing, torch.Tensor):
        return smoothing
    view = smoothing.reshape(smoothing.shape + (1,) * (len(positions) - smoothing.ndim))
    return view.expand(positions).reshape(-1)


def _native_call(input: torch.Tensor, smoothing: float | torch.Tensor, *, dim: int,
                 prior: torch.Tensor | None, inplace_backward: bool, penalty: float = 0.0) -> bool:
    """Whether this call is one PyTorch's own operations compute faster (a float ``s >= 0``, no
    prior, no confidence penalty, a small CPU problem: see :func:`labelsmooth._ops.planning.plan`)
    with the classes already on dimension 1, so that :func:`_native_smoothed_cross_entropy` can
    take ``input`` as it is, once per target."""
    if (dim != 1 or prior is not None or isinstance(smoothing, torch.Tensor)
            or smoothing < 0.0 or penalty != 0.0):
        return False
    wants_grad = torch.is_grad_enabled() and input.requires_grad
    gradient: planning.GradientTarget = ("inplace" if inplace_backward and wants_grad
                                         else "fresh" if wants_grad else "none")
    num_classes = input.shape[1]
    num_rows = input.numel() // num_classes if num_classes else 0
    chosen = planning.plan(num_rows, num_classes, input.dtype, input.device, gradient=gradient)
    return chosen.strategy == "native"


def _native_smoothed_cross_entropy(input: torch.Tensor, target: torch.Tensor, smoothing: float, *,
                                  weight: torch.Tensor | None, ignore_index: int, reduction: str,
                                  targets_name: str) -> torch.Tensor:
    r"""``F.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing=s)``
    on ``(N, C, *)`` logits and int64 targets, with fewer autograd nodes on the CPU where it can.

    PyTorch's smoothed loss masks the ignored positions out of its uniform term, a few more
    operations (and as many more backward nodes) than the loss itself; on a small problem they
    cost more than the log-softmax. Without a class weight and with every target in
    ``[0, C)`` and ``ignore_index`` outside it (one read of the targets' range tells), no
    position is ignored and the same loss is, with ``log p = log_softmax(input)``,

    .. math::

        \ell = (1 - s)\, \mathrm{nll}(\log p, y) - \frac{s}{C} \sum_c \log p_c

    per position, summed or averaged over the positions (``"mean"``: ``- s * mean(log p)``),
    computed as ``lerp(nll, -mean_c log p_c, s)``.
    Otherwise (an ignored position, an index out of range, a weight) PyTorch's own loss runs; it
    checks the index range itself on the CPU, and only when it refuses an index is the range
    read again, for the library's message naming the index (``targets_name``: the argument).
    """
    num_classes = input.shape[1]
    if (input.device.type == "cpu" and weight is None and smoothing > 0.0 and target.numel()
            and not 0 <= ignore_index < num_classes):
        lowest, highest = torch.aminmax(target)
        if lowest.item() >= 0 and highest.item() < num_classes:
            log_p = F.log_softmax(input, dim=1)
            nll = F.nll_loss(log_p, target, reduction=reduction)
            # The uniform term -(1/C) sum_c log p_c, reduced as the NLL is; lerp weighs the two
            # in one operation (and one backward node).
            if reduction == "mean":
                uniform = log_p.mean().neg()
            elif reduction == "sum":
                uniform = log_p.sum().mul(-1.0 / num_classes)
            else:
                uniform = log_p.mean(dim=1).neg()
            return torch.lerp(nll, uniform, smoothing)
    try:
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
    except (IndexError, RuntimeError):
        check_target_range(target, num_classes, ignore_index, validate_args=True,
                           targets_name=targets_name)
        raise


def _fused_index_loss(input: torch.Tensor, targets: list[torch.Tensor], shares: tuple[float, ...],
                      smoothing: float | torch.Tensor, *, dim: int, prior: torch.Tensor | None,
                      weight: torch.Tensor | None, ignore_index: int, reduction: str,
                      inplace_backward: bool, validate_args: bool | None, targets_name: str,
                      penalty: float = 0.0) -> torch.Tensor:
    """The fused pass over ``input`` moved to ``(M, C)``, one target column per share.

    The targets' index range is checked here (as ``validate_args`` says) before the fused pass;
    a small problem's loss checks it only when PyTorch's own loss refuses an index (see
    :func:`_native_smoothed_cross_entropy`), so that it reads the targets once.
    """
    num_classes = input.shape[dim]
    if _native_call(input, smoothing, dim=dim, prior=prior,
                    inplace_backward=inplace_backward, penalty=penalty):
        # PyTorch's own loss takes (N, C, *) as it is: no moved view, no reshapes, no extra
        # autograd nodes, which is most of the fixed cost of a small batch. A mixed target is
        # the sum of its components' losses, each normalised by its own count, as in the pass.
        native_weight = None if weight is None else weight.to(input.device, input.dtype)
        losses = [_native_smoothed_cross_entropy(
                      input, part.to(device=input.device, dtype=torch.long), float(smoothing),
                      weight=native_weight, ignore_index=ignore_index, reduction=reduction,
                      targets_name=targets_name)
                  for part in targets]
        if len(losses) == 1 and shares[0] == 1.0:
            return losses[0]
        mixed = [share * loss for share, loss in zip(shares, losses, strict=True)]
        return sum(mixed[1:], mixed[0])
    for part in targets:
        check_target_range(part, num_classes, ignore_index, validate_args=validate_args,
                           targets_name=targets_name)
    rows = input.movedim(dim, -1).reshape(-1, num_classes)
    columns = [part.reshape(-1).to(device=input.device, dtype=torch.long) for part in targets]
    target = columns[0] if len(columns) == 1 else torch.stack(columns, 1)
    loss = fused_smoothed_cross_entropy(
        rows, target, _per_position(smoothing, tuple(targets[0].shape)), weight=weight,
        ignore_index=ignore_index, reduction=reduction, inplace_backward=inplace_backward,
        prior=prior, shares=shares, confidence_penalty=penalty,
    )
    return loss.reshape(targets[0].shape) if reduction == "none" else loss


def smoothed_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    smoothing: float | torch.Tensor = 0.1,
    *,
    prior: torch.Tensor | None = None,
    allow_negative: bool = False,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    class_dim: int = 1,
    inplace_backward: bool = False,
    confidence_penalty: float = 0.0,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """Label-smoothed cross-entropy that never builds the dense ``N x C`` target.

    For index target ``y``, logits ``x``, ``lse = logsumexp_c x_c`` and the prior ``q``
    (uniform, ``1 / C``, by default), the unreduced loss is

    .. math::

        \\ell = (1 - s)\\, w_y (\\mathrm{lse} - x_y) + s \\sum_c q_c w_c (\\mathrm{lse} - x_c)

    that is ``(1 - s) CE(y) + s CE(q)``, the cross-entropy of the target
    ``(1 - s) onehot(y) + s q`` (0 where ``y == ignore_index``); ``"mean"`` divides the sum by
    ``sum w_y`` over the non-ignored positions, ``"sum"`` sums. Its gradient is
    ``softmax - (1 - s) onehot - s q`` (without weights). With the uniform prior this equals
    ``torch.nn.functional.cross_entropy(input, target, weight=weight, ignore_index=ignore_index,
    reduction=reduction, label_smoothing=smoothing)`` in value and gradient, the all-ignored
    (NaN mean) and empty batches included. For float16 / bfloat16 input the class sums
    accumulate in float32, so the loss stays finite for large ``C`` where PyTorch's overflows.

    With ``confidence_penalty=beta`` the confidence penalty of Pereyra et al. (2017) is added
    in the same pass, at every position whose target is not ``ignore_index`` and without the
    class weights:

    .. math::

        L = L_s + \\beta\\, \\frac{1}{n} \\sum_{i:\\, y_i \\ne \\mathrm{ignore}} \\sum_c p_{ic} \\log p_{ic}

    where ``L_s`` is the loss above and ``n`` the number of non-ignored positions for
    ``"mean"`` (1 for ``"sum"``; ``"none"`` adds ``beta * sum_c p_c log p_c`` to each
    non-ignored position). That is ``smoothed_cross_entropy(input, target, s) +
    confidence_penalty(input[valid], beta)`` (:func:`confidence_penalty`), and its gradient adds
    ``beta * p_c (x_c - sum_j p_j x_j)`` to each counted row.

    Index targets run the fused kernel of :mod:`labelsmooth._ops.cross_entropy`: one pass over
    the logits computes the loss and the gradient together (derivation beside that code), keeps
    only the gradient, and does no gradient work under ``torch.no_grad()``. Its only ``N x C``
    allocation is the gradient it must return, or none with ``inplace_backward=True``. (Tiny
    float32/float64 CPU problems with the uniform prior and a float ``smoothing``, at most
    65536 logits and not in place, run PyTorch's own loss instead: its fixed cost is lower
    there; so do meta tensors and ``torch.func`` transforms.) Backward may run more than once,
    and twice (``create_graph=True``) as PyTorch's does, except after ``inplace_backward=True``.

    Dense targets are accepted too: they are smoothed with :func:`smooth_labels` and passed to
    :func:`soft_cross_entropy` (whose ``"mean"`` divides by the number of positions).

    Args:
        input: logits ``(N, C, *)`` with classes on ``class_dim``, or ``(C,)``; floating.
        target: class indices ``(N, *)`` in ``[0, C)`` or ``ignore_index``, or dense targets of
            ``input``'s shape; on another device than ``input`` they are copied to ``input``'s.
        smoothing: ``s`` in ``[0, 1]`` (default 0.1), a float or a floating tensor of shape
            ``(N,)`` (one per sample, the same at every position of that sample); 0 gives plain
            cross-entropy.
        prior: the distribution the smoothing moves towards, a ``(C,)`` probability vector
            (default ``None``: uniform). Its values are checked where ``validate_args`` checks
            the target range (by default on the CPU only: reading them from an accelerator
            would synchronise).
        allow_negative: accept ``s < 0``, negative label smoothing (Wei et al., 2022), which
            pushes the prediction away from the prior (default ``False``: ``s`` must be in
            ``[0, 1]``, as in PyTorch). ``s <= 1`` either way.
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
        confidence_penalty: ``beta``, the weight of the confidence penalty, a finite float
            (default 0: none; Pereyra et al. use 0.1 to 4). Positive values penalise confident
            predictions, negative ones reward them. With dense targets every position counts.
        validate_args: index-range checking, as in :func:`labelsmooth.functional.one_hot`; also
            the values of ``prior`` and of a per-sample ``smoothing`` tensor.

    Returns:
        The loss, in ``input``'s dtype.

    Example:
        >>> x, y = torch.randn(8, 5), torch.randint(5, (8,))
        >>> torch.allclose(smoothed_cross_entropy(x, y, 0.1),
        ...                torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1))
        True
        >>> prior = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1])
        >>> dense = 0.9 * torch.eye(5)[y] + 0.1 * prior
        >>> torch.allclose(smoothed_cross_entropy(x, y, 0.1, prior=prior),
        ...                torch.nn.functional.cross_entropy(x, dense))
        True
        >>> from labelsmooth.functional import confidence_penalty
        >>> torch.allclose(smoothed_cross_entropy(x, y, 0.1, confidence_penalty=0.5),
        ...                smoothed_cross_entropy(x, y, 0.1) + confidence_penalty(x, 0.5))
        True

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
        Müller, Kornblith and Hinton, "When does label smoothing help?", NeurIPS 2019;
        Wei et al., "To Smooth or Not? When Label Smoothing Meets Noisy Labels", ICML 2022;
        Pereyra et al., "Regularizing Neural Networks by Penalizing Confident Output
        Distributions", ICLR workshop 2017.
    """
    check_floating(input, "input")
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    kind, dim = classify_targets(input, target, class_dim, logits_name="input", targets_name="target")
    s, w, q = _check_smoothing_options(input, dim, smoothing, prior, weight,
                                       allow_negative=allow_negative,
                                       inplace_backward=inplace_backward,
                                       validate_args=validate_args)
    beta = check_finite_real(confidence_penalty, "confidence_penalty")
    if kind == "dense":
        dense = smooth_labels(input, target, s, prior=q, allow_negative=allow_negative,
                              class_dim=dim)
        loss = soft_cross_entropy(input, dense, weight=w, reduction=red, class_dim=dim)
        if beta == 0.0:
            return loss
        return loss + _confidence_penalty(input, beta, class_dim=dim, reduction=red)
    return _fused_index_loss(input, [target], (1.0,), s, dim=dim, prior=q, weight=w,
                             ignore_index=ignore, reduction=red, inplace_backward=inplace_backward,
                             validate_args=validate_args, targets_name="target", penalty=beta)


def mixed_smoothed_cross_entropy(
    input: torch.Tensor,
    targets: Sequence[torch.Tensor],
    shares: Sequence[float],
    smoothing: float | torch.Tensor = 0.1,
    *,
    prior: torch.Tensor | None = None,
    allow_negative: bool = False,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    class_dim: int = 1,
    inplace_backward: bool = False,
    confidence_penalty: float = 0.0,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """The smoothed cross-entropy of a mixed target (MixUp, CutMix) in one fused pass.

    .. math::

        L = \\sum_k h_k\\, \\mathrm{CE}_s(x, y_k)

    with ``CE_s`` :func:`smoothed_cross_entropy` (same ``smoothing``, ``prior``, ``weight``,
    ``ignore_index``, ``reduction`` and ``confidence_penalty``; each component's ``"mean"``
    divides by its own ``sum w_y``, and its penalty by its own count of non-ignored positions,
    so that a position ignored by one target is penalised with the shares of the others).
    Cross-entropy is linear in the target, so this is the loss of the mixed target
    ``sum_k h_k ((1 - s) onehot(y_k) + s q)`` (plus the penalty); one pass reads the logits once
    for all components and allocates one gradient (none with ``inplace_backward=True``). A
    problem small enough for PyTorch's own loss (few classes or few logits on the CPU, a float
    ``s >= 0``, no prior, no penalty) is one ``F.cross_entropy`` per component instead: at that
    size the fixed cost of a call outweighs reading the logits twice.

    Args:
        input: logits ``(N, C, *)`` with classes on ``class_dim``; floating.
        targets: ``K >= 1`` index tensors of one shape ``(N, *)``: MixUp's ``(y, y[indices])``.
        shares: ``K`` floats in ``[0, 1]`` summing to 1: MixUp's ``(1 - lam, lam)``. A target may
            have the same class as another at some position; the shares then add up.
        smoothing, prior, allow_negative, weight, ignore_index, reduction, class_dim,
            inplace_backward, confidence_penalty, validate_args: as in
            :func:`smoothed_cross_entropy`.

    Returns:
        The loss, in ``input``'s dtype (shape ``(N, *)`` for ``reduction="none"``).

    Example:
        >>> x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
        >>> loss = mixed_smoothed_cross_entropy(x, [y, y.flip(0)], [0.7, 0.3], 0.1)
        >>> dense = 0.7 * (0.9 * torch.eye(5)[y] + 0.02) + 0.3 * (0.9 * torch.eye(5)[y.flip(0)] + 0.02)
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(x, dense))
        True

    References:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018; Yun et al.,
        "CutMix", ICCV 2019.
    """
    check_floating(input, "input")
    red = check_reduction(reduction)
    ignore = check_int(ignore_index, "ignore_index")
    if isinstance(targets, torch.Tensor) or not isinstance(targets, Sequence) or not targets:
        fail("targets", "a non-empty sequence of index tensors", describe(targets), error=TypeError)
    parts = list(targets)
    mix = check_shares(shares, len(parts))
    for part in parts:
        if not isinstance(part, torch.Tensor):
            fail("targets", "a sequence of index tensors", type(part).__name__, error=TypeError)
        check_index_dtype(part, "targets")
        if part.shape != parts[0].shape:
            fail("targets", f"tensors of one shape {shape_str(parts[0].shape)}",
                 f"shape {shape_str(part.shape)}")
    _, dim = classify_targets(input, parts[0], class_dim, logits_name="input", targets_name="targets")
    s, w, q = _check_smoothing_options(input, dim, smoothing, prior, weight,
                                       allow_negative=allow_negative,
                                       inplace_backward=inplace_backward,
                                       validate_args=validate_args)
    beta = check_finite_real(confidence_penalty, "confidence_penalty")
    return _fused_index_loss(input, parts, mix, s, dim=dim, prior=q, weight=w, ignore_index=ignore,
                             reduction=red, inplace_backward=inplace_backward,
                             validate_args=validate_args, targets_name="targets", penalty=beta)


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
