"""Smoothed target distributions: ``one_hot``, ``smooth_labels`` and ``smooth_binary_labels``.

Label smoothing (Szegedy et al., 2016) replaces the one-hot target of each example by a convex
combination of it and the uniform distribution over the ``C`` classes:

.. math::

    \\tilde y_c = (1 - s)\\, y_c + \\frac{s}{C}

The functions here build that dense target. The losses in
:mod:`labelsmooth.functional.cross_entropy` reach the same loss without ever building it.
"""

from __future__ import annotations

import torch

from labelsmooth._validation import (
    check_bool,
    check_class_dim,
    check_floating,
    check_index_dtype,
    check_int,
    check_prior,
    check_sample_smoothing,
    check_smoothing,
    fail,
)
from labelsmooth.functional._targets import (
    check_ignore_index,
    check_target_range,
    classify_targets,
)

__all__ = ["one_hot", "smooth_binary_labels", "smooth_labels"]


def _scatter_value(
    targets: torch.Tensor, num_classes: int, class_dim: int, *, off: float, on: torch.Tensor,
    ignore_index: int | None, dtype: torch.dtype,
) -> torch.Tensor:
    """A dense tensor holding ``on`` at each target's class and ``off`` elsewhere.

    Rows whose target is ``ignore_index`` are all zero. ``class_dim`` is the class dimension of
    the result (``targets.ndim + 1`` dimensions). ``on`` is a 0-d tensor of ``dtype`` on the
    targets' device: a copy from the host would synchronise with an accelerator.
    """
    shape = list(targets.shape)
    shape.insert(class_dim, num_classes)
    out = torch.full(shape, off, dtype=dtype, device=targets.device)
    index = targets.long()
    ignored = None
    if ignore_index is not None:
        ignored = index == ignore_index
        index = index.masked_fill(ignored, 0)
    index = index.unsqueeze(class_dim)
    out.scatter_(class_dim, index, on.expand(index.shape))
    if ignored is not None:
        out.masked_fill_(ignored.unsqueeze(class_dim), 0)
    return out


def one_hot(
    targets: torch.Tensor,
    num_classes: int,
    *,
    class_dim: int = 1,
    ignore_index: int | None = None,
    dtype: torch.dtype = torch.float32,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """One-hot encode class indices along ``class_dim``.

    Unlike :func:`torch.nn.functional.one_hot`, the class dimension can be anywhere (dim 1 by
    default, the PyTorch layout ``(N, C, *)``), the dtype is floating by default, ``num_classes``
    is required (inferring it would need ``targets.max()``, a host-device sync), and positions
    whose target is ``ignore_index`` come out all zero.

    Args:
        targets: class indices, shape ``(N, *)`` (or ``()`` for one example), an integer dtype.
        num_classes: ``C >= 1``.
        class_dim: where the class dimension goes in the result (default 1; for a 0-d target
            the result is ``(C,)`` and dim 1 resolves to 0).
        ignore_index: a target value whose rows are all zero (default ``None``: none).
        dtype: the result's dtype (default ``torch.float32``).
        validate_args: check that indices lie in ``[0, C)``; ``None`` (default) checks CPU
            tensors only, ``True`` any device (one sync on CUDA), ``False`` never.

    Returns:
        A tensor of shape ``targets.shape`` with ``C`` inserted at ``class_dim``.

    Example:
        >>> one_hot(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    if not isinstance(targets, torch.Tensor):
        fail("targets", "a torch.Tensor", type(targets).__name__, error=TypeError)
    check_index_dtype(targets, "targets")
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    ignore = check_ignore_index(ignore_index, optional=True)
    dim = check_class_dim(class_dim, targets.ndim + 1)
    check_target_range(targets, num_classes, ignore, validate_args=validate_args)
    one = torch.ones((), dtype=dtype, device=targets.device)
    return _scatter_value(targets, num_classes, dim, off=0.0, on=one, ignore_index=ignore, dtype=dtype)


def smooth_labels(
    logits: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float | torch.Tensor = 0.1,
    *,
    prior: torch.Tensor | None = None,
    allow_negative: bool = False,
    class_dim: int = 1,
    ignore_index: int | None = None,
    validate_args: bool | None = None,
) -> torch.Tensor:
    """Dense label-smoothed targets shaped like ``logits``.

    .. math::

        \\tilde y = (1 - s)\\, y + s\\, q, \\qquad q = \\tfrac{1}{C} \\text{ by default},
        \\quad C = \\text{logits.shape[class\\_dim]}

    where ``y`` is the one-hot encoding of index targets, or the dense targets themselves
    (one-hot, soft or mixed distributions are smoothed as distributions), and ``q`` the prior.
    With the uniform prior and a float ``smoothing``, index targets give exactly the values of
    Composer's ``smooth_labels``: the true class holds ``float(1 - s) + float(s / C)`` rounded
    once in the logits' dtype, every other class ``s / C``.

    Args:
        logits: the model's outputs, shape ``(N, C, *)`` (class dim at ``class_dim``), floating.
            Only its shape, dtype and device are used.
        targets: class indices of shape ``(N, *)`` (the logits' shape without the class dim), or
            dense targets of the logits' shape.
        smoothing: ``s`` in ``[0, 1]`` (default 0.1), a float or a floating tensor of shape
            ``(N,)``, one per sample. 0 returns the one-hot / dense targets, 1 the prior.
        prior: a ``(C,)`` probability vector (default ``None``: uniform).
        allow_negative: accept ``s < 0`` (negative label smoothing: the target entries of the
            other classes become negative; default ``False``). ``s <= 1`` either way.
        class_dim: the class dimension of ``logits`` (default 1).
        ignore_index: for index targets, a value whose positions come out all zero, so they add
            nothing to a dense loss (default ``None``). Dense targets ignore it.
        validate_args: index-range checking, as in :func:`one_hot`; also the values of
            ``prior`` and of a per-sample ``smoothing`` tensor.

    Returns:
        A tensor of ``logits``' shape and dtype; each non-ignored row sums to 1 when the input
        row does.

    Example:
        >>> logits = torch.zeros(2, 4)
        >>> smooth_labels(logits, torch.tensor([0, 3]), smoothing=0.2)
        tensor([[0.8500, 0.0500, 0.0500, 0.0500],
                [0.0500, 0.0500, 0.0500, 0.8500]])
        >>> smooth_labels(logits, torch.tensor([0, 3]), smoothing=0.2,
        ...               prior=torch.tensor([0.5, 0.5, 0.0, 0.0]))
        tensor([[0.9000, 0.1000, 0.0000, 0.0000],
                [0.1000, 0.1000, 0.0000, 0.8000]])

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
        Wei et al., "To Smooth or Not? When Label Smoothing Meets Noisy Labels", ICML 2022.
    """
    check_floating(logits, "logits")
    ignore = check_ignore_index(ignore_index, optional=True)
    kind, dim = classify_targets(logits, targets, class_dim)
    num_classes = logits.shape[dim]
    check_bool(allow_negative, "allow_negative")
    if isinstance(smoothing, torch.Tensor):
        positions = tuple(logits.shape[:dim] + logits.shape[dim + 1:])
        validate = smoothing.device.type == "cpu" if validate_args is None else bool(validate_args)
        s: float | torch.Tensor = check_sample_smoothing(
            smoothing, positions[:1], allow_negative=allow_negative, validate=validate)
    else:
        s = check_smoothing(smoothing, allow_negative=allow_negative)
    q = None
    if prior is not None:
        on_cpu = isinstance(prior, torch.Tensor) and prior.device.type == "cpu"
        q = check_prior(prior, num_classes, check_values=on_cpu if validate_args is None else validate_args)
    if kind == "index":
        check_target_range(targets, num_classes, ignore, validate_args=validate_args)
    if q is None and not isinstance(s, torch.Tensor):
        return _uniform_smooth_labels(logits, targets, s, kind=kind, dim=dim, ignore=ignore)
    return _prior_smooth_labels(logits, targets, s, q, kind=kind, dim=dim, ignore=ignore)


def _uniform_smooth_labels(logits: torch.Tensor, targets: torch.Tensor, s: float, *, kind: str,
                           dim: int, ignore: int | None) -> torch.Tensor:
    num_classes = logits.shape[dim]
    off = s / num_classes
    if kind == "dense":
        return targets.to(dtype=logits.dtype, device=logits.device) * (1.0 - s) + off
    # The true class gets (1 - s) + s / C with each term rounded to the logits' dtype first and
    # the sum rounded once, as `onehot * (1 - s) + s / C` computes it: bit-identical to Composer's.
    on = torch.full((), 1.0 - s, dtype=logits.dtype, device=logits.device) + off
    return _scatter_value(
        targets.to(logits.device), num_classes, dim, off=off, on=on, ignore_index=ignore,
        dtype=logits.dtype,
    )


def _prior_smooth_labels(logits: torch.Tensor, targets: torch.Tensor, s: float | torch.Tensor,
                         prior: torch.Tensor | None, *, kind: str, dim: int,
                         ignore: int | None) -> torch.Tensor:
    """``(1 - s) y + s q`` with a prior and/or per-sample ``s`` (computed in the logits' dtype)."""
    num_classes = logits.shape[dim]
    shape = [1] * logits.ndim
    shape[dim] = num_classes
    q = (torch.full(shape, 1.0 / num_classes, dtype=logits.dtype, device=logits.device)
         if prior is None else prior.to(device=logits.device, dtype=logits.dtype).reshape(shape))
    if isinstance(s, torch.Tensor):
        sample_dim = 0 if dim != 0 else 1  # (N,) values along the logits' batch dimension
        per_sample = [1] * logits.ndim
        if logits.ndim > 1:
            per_sample[sample_dim] = s.numel()
        s = s.to(device=logits.device, dtype=logits.dtype).reshape(per_sample)
    if kind == "dense":
        dense = targets.to(dtype=logits.dtype, device=logits.device)
        return dense * (1.0 - s) + s * q
    hot = one_hot(targets.to(logits.device), num_classes, class_dim=dim, ignore_index=ignore,
                  dtype=logits.dtype, validate_args=False)
    out = hot * (1.0 - s) + s * q
    if ignore is not None:
        ignored = (targets.to(logits.device) == ignore).unsqueeze(dim)
        out = out.masked_fill(ignored, 0.0)
    return out


def smooth_binary_labels(targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Smoothed binary (or multi-label) targets: ``targets * (1 - s) + s / 2``.

    Each label is a two-class problem, so the uniform distribution puts ``1/2`` on each side: a
    positive becomes ``1 - s/2`` and a negative ``s/2``. This is Keras' convention
    (``binary_crossentropy(label_smoothing=s)``) and the only one that keeps binary smoothing
    identical to two-class softmax smoothing with the same ``s``. timm's
    ``BinaryCrossEntropy(smoothing=s)`` instead uses the multi-class off-value ``s / C`` for
    negatives and ``1 - s + s / C`` for positives, which depends on the number of labels ``C``
    and, for many labels, barely moves the negatives; we do not follow it.

    Args:
        targets: targets in ``[0, 1]`` of any shape; bool or integer targets are converted to the
            default floating dtype, floating targets keep theirs.
        smoothing: ``s`` in ``[0, 1]`` (default 0.1).

    Returns:
        A new floating tensor of ``targets``' shape.

    Example:
        >>> smooth_binary_labels(torch.tensor([1.0, 0.0]), smoothing=0.2)
        tensor([0.9000, 0.1000])

    References:
        Keras, ``keras.losses.BinaryCrossentropy(label_smoothing=...)``; timm,
        ``timm.loss.BinaryCrossEntropy``.
    """
    if not isinstance(targets, torch.Tensor):
        fail("targets", "a torch.Tensor", type(targets).__name__, error=TypeError)
    s = check_smoothing(smoothing)
    if targets.is_complex():
        fail("targets", "real-valued targets", f"dtype {targets.dtype}", error=TypeError)
    values = targets if targets.is_floating_point() else targets.to(torch.get_default_dtype())
    return values * (1.0 - s) + s / 2
