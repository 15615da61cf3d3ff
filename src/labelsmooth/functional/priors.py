r"""Priors for label smoothing estimated from data: class frequencies and class similarity.

Label smoothing with a prior ``u`` trains towards ``(1 - s) onehot(y) + s u``. The uniform prior
treats every wrong class alike; a prior from data spreads the smoothing mass where it is
plausible:

* :func:`class_prior`, the unigram frequencies of the training targets, one ``(C,)`` vector for
  every target. It suits long-tailed label sets (language models, where it is the unigram
  smoothing of Pereyra et al. 2017, and imbalanced classification): rare classes get little mass.
* :func:`similarity_prior` and :func:`confusion_prior`, a ``(C, C)`` matrix whose row ``y`` is the
  prior for target ``y``, concentrated on the classes similar to ``y`` (fine-grained classes,
  hierarchies). Built from class-embedding similarities (e.g. the cosine similarity of the
  classifier's weight rows or of text embeddings of the class names) or from the confusion
  matrix of a trained model on held-out data. The diagonal is excluded: the target's own class
  already has ``1 - s``, and a prior putting mass on it would only shrink the smoothing.

References:
    Szegedy et al. (2016), "Rethinking the Inception architecture for computer vision", CVPR
    (label smoothing with a prior ``u(k)``). Pereyra et al. (2017), "Regularizing neural
    networks by penalizing confident output distributions" (unigram prior). Zhang et al. (2021),
    "Delving deep into label smoothing", IEEE TIP (class-wise soft labels).
"""

from __future__ import annotations

import math
import numbers

import torch

from labelsmooth._validation import check_floating, check_index_dtype, check_int, fail

__all__ = ["class_prior", "confusion_prior", "similarity_prior"]


def _check_pseudo_count(value: object, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(argument, "a finite real number >= 0", repr(value) if isinstance(value, str) else value,
             error=TypeError)
    count = float(value)
    if not math.isfinite(count) or count < 0:
        fail(argument, "a finite real number >= 0", value)
    return count


def class_prior(
    targets: torch.Tensor,
    num_classes: int,
    *,
    smoothing: float = 0.0,
    ignore_index: int = -100,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Class frequencies of ``targets``, additively smoothed: a ``(C,)`` prior.

    .. math::
        u_k = \frac{n_k + \alpha}{N + \alpha C}

    where ``n_k`` counts the targets of class ``k``, ``N`` the targets that are not
    ``ignore_index`` and ``alpha = smoothing`` is a pseudo-count added to every class (Laplace's
    rule for ``alpha = 1``). With ``alpha > 0`` no class has probability 0; ``alpha -> inf`` gives
    the uniform prior. Counted in float64, returned in ``dtype``.

    Args:
        targets: integer class indices of any shape (e.g. ``(N,)`` or ``(N, *)``), each in
            ``[0, C)`` or equal to ``ignore_index``.
        num_classes: ``C``, at least 1.
        smoothing: the pseudo-count ``alpha >= 0``. Default: 0 (plain frequencies).
        ignore_index: a target value that is not counted. Default: -100.
        dtype: floating dtype of the result. Default: ``torch.float32``.

    Returns:
        A ``(C,)`` tensor on ``targets``' device, nonnegative, summing to 1.

    Example:
        >>> class_prior(torch.tensor([0, 0, 1, -100]), 3)
        tensor([0.6667, 0.3333, 0.0000])
        >>> class_prior(torch.tensor([0, 0, 1]), 3, smoothing=1.0)  # (2+1, 1+1, 0+1) / 6
        tensor([0.5000, 0.3333, 0.1667])
    """
    if not isinstance(targets, torch.Tensor):
        fail("targets", "an integer tensor of class indices", type(targets).__name__, error=TypeError)
    check_index_dtype(targets, "targets")
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    alpha = _check_pseudo_count(smoothing, "smoothing")
    ignore_index = check_int(ignore_index, "ignore_index")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        fail("dtype", "a floating-point torch.dtype", dtype, error=TypeError)
    kept = targets.reshape(-1)
    kept = kept[kept != ignore_index].long()
    outside = (kept < 0) | (kept >= num_classes)
    if kept.numel() and bool(outside.any()):
        expected = f"class indices in [0, {num_classes}) or ignore_index={ignore_index}"
        fail("targets", expected, f"a target {kept[outside][0].item()}")
    counts = torch.bincount(kept, minlength=num_classes).to(torch.float64)
    total = kept.numel() + alpha * num_classes
    if total == 0:
        fail("targets", "at least one target that is not ignore_index (or smoothing > 0)", targets)
    return ((counts + alpha) / total).to(dtype)


def _check_square(matrix: object, argument: str) -> torch.Tensor:
    matrix = check_floating(matrix, argument)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        fail(argument, "a square (C, C) matrix with C >= 2", matrix)
    if not bool(torch.isfinite(matrix).all()):
        fail(argument, "finite values", f"{int((~torch.isfinite(matrix)).sum())} non-finite entries")
    return matrix


def similarity_prior(similarity: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    r"""A per-target prior ``(C, C)`` from class similarities: a softmax over the other classes.

    .. math::
        U_{yk} = \frac{\exp(S_{yk} / T)}{\sum_{j \ne y} \exp(S_{yj} / T)} \ (k \ne y),
        \qquad U_{yy} = 0

    Row ``y`` is the prior for target ``y``. A small temperature concentrates the smoothing mass
    on the nearest classes; a large one approaches the uniform prior over the ``C - 1`` other
    classes. ``S`` need not be symmetric. Computed in float32 (float64 for float64 input).

    Args:
        similarity: ``(C, C)`` finite floating similarities, ``C >= 2`` (e.g. cosine similarities
            of class embeddings, in ``[-1, 1]``). Its diagonal is ignored.
        temperature: ``T > 0``. Default: 1.

    Returns:
        A ``(C, C)`` tensor in ``similarity``'s dtype; each row is nonnegative, sums to 1 and is 0
        on the diagonal.

    Example:
        >>> s = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.1, 1.0]])
        >>> similarity_prior(s, temperature=0.25)
        tensor([[0.0000, 0.9608, 0.0392],
                [0.9608, 0.0000, 0.0392],
                [0.5000, 0.5000, 0.0000]])
    """
    _check_square(similarity, "similarity")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        fail("temperature", "a finite real number > 0", temperature, error=TypeError)
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        fail("temperature", "a finite real number > 0", temperature)
    accumulate = torch.float64 if similarity.dtype == torch.float64 else torch.float32
    scores = similarity.to(accumulate) / float(temperature)
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return scores.masked_fill(eye, float("-inf")).softmax(dim=1).to(similarity.dtype)


def confusion_prior(confusion: torch.Tensor, *, smoothing: float = 0.0) -> torch.Tensor:
    r"""A per-target prior ``(C, C)`` from a confusion matrix: the off-diagonal rows, normalised.

    .. math::
        U_{yk} = \frac{M_{yk} + \alpha}{\sum_{j \ne y} M_{yj} + \alpha (C - 1)} \ (k \ne y),
        \qquad U_{yy} = 0

    where ``M_{yk}`` counts (or weighs) examples of true class ``y`` predicted as ``k``, taken
    from a trained model on held-out data, and ``alpha = smoothing`` is a pseudo-count. Row ``y``
    is the prior for target ``y``: the smoothing mass goes to the classes the model confuses
    with ``y``. Computed in float64, returned in ``confusion``'s dtype (float32 for counts).

    Args:
        confusion: ``(C, C)`` nonnegative counts, rows the true class, columns the predicted
            class (``torchmetrics``' and scikit-learn's convention), ``C >= 2``. Its diagonal is
            ignored.
        smoothing: the pseudo-count ``alpha >= 0``; with 0, every row needs an off-diagonal
            count. Default: 0.

    Returns:
        A ``(C, C)`` tensor; each row is nonnegative, sums to 1 and is 0 on the diagonal.

    Example:
        >>> m = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 10]])
        >>> confusion_prior(m, smoothing=1.0)
        tensor([[0.0000, 0.7500, 0.2500],
                [0.6667, 0.0000, 0.3333],
                [0.5000, 0.5000, 0.0000]])
    """
    if not isinstance(confusion, torch.Tensor):
        fail("confusion", "a (C, C) tensor of counts", type(confusion).__name__, error=TypeError)
    if confusion.dtype == torch.bool or confusion.is_complex():
        fail("confusion", "a tensor of counts", f"dtype {confusion.dtype}", error=TypeError)
    out_dtype = confusion.dtype if confusion.is_floating_point() else torch.float32
    counts = _check_square(confusion.to(torch.float64), "confusion")
    if bool((counts < 0).any()):
        fail("confusion", "counts >= 0", f"minimum {counts.min().item():.6g}")
    alpha = _check_pseudo_count(smoothing, "smoothing")
    eye = torch.eye(counts.shape[0], dtype=torch.bool, device=counts.device)
    off = counts.masked_fill(eye, 0) + alpha * (~eye)
    totals = off.sum(dim=1, keepdim=True)
    if bool((totals == 0).any()):
        row = int((totals[:, 0] == 0).nonzero()[0].item())
        fail("confusion", "an off-diagonal count in every row (or smoothing > 0)", f"row {row} without one")
    return (off / totals).to(out_dtype)
