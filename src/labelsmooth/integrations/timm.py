"""Label smoothing with timm's MixUp / CutMix, with or without its dense targets.

``timm.data.Mixup(label_smoothing=s, num_classes=C)`` returns mixed images and a dense
``(N, C)`` target ``lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`` (two smoothed one-hots per
batch), which ``timm.loss.SoftTargetCrossEntropy`` consumes. Two ways to use labelsmooth there:

- **Dense targets, as timm makes them**: :class:`labelsmooth.SoftCrossEntropyLoss` with
  ``class_dim=-1`` is ``SoftTargetCrossEntropy`` (same value and gradient), with class weights,
  ``reduction`` and argument checks on top.
- **Index targets, no dense target at all**: mix with
  :func:`labelsmooth.functional.mixup_batch` / :func:`~labelsmooth.functional.cutmix_batch` and
  train on :func:`mixed_smoothed_cross_entropy`, which runs the fused loss once for both labels
  (:func:`labelsmooth.functional.mixed_smoothed_cross_entropy`). Since
  cross-entropy is linear in the target,

  .. math::

      \\mathrm{CE}\\big(x,\\ (1 - \\lambda)\\,\\mathrm{smooth}(y) + \\lambda\\,\\mathrm{smooth}(y_\\pi)\\big)
      = (1 - \\lambda)\\,\\mathrm{CE}_s(x, y) + \\lambda\\,\\mathrm{CE}_s(x, y_\\pi),

  the same loss as timm's target gives, without materialising it.

Conventions differ: timm's ``lam`` is the share of the example itself and its partner is
``x.flip(0)`` (example ``i`` with ``N - 1 - i``); labelsmooth's ``lam`` is the partner's share
and the partner is any permutation. timm's ``(lam, flip)`` is labelsmooth's
``(1 - lam, flip_partners(N))``; a CutMix box ``(yl, yh, xl, xh)`` is ``bbox=((yl, yh), (xl, xh))``.
"""

from __future__ import annotations

import torch

from labelsmooth._validation import check_int, check_smoothing, fail, shape_str
from labelsmooth.functional import mixed_smoothed_cross_entropy as functional_mixed_loss
from labelsmooth.functional import smoothed_cross_entropy

__all__ = ["flip_partners", "mixed_smoothed_cross_entropy"]


def flip_partners(batch_size: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """timm's MixUp / CutMix partners as ``indices``: example ``i`` mixes with ``N - 1 - i``.

    Args:
        batch_size: ``N``, an int >= 0.
        device: where to make the indices (default: the CPU).

    Returns:
        ``tensor([N - 1, ..., 1, 0])``, the permutation that ``x.flip(0)`` applies.

    Example:
        >>> flip_partners(4)
        tensor([3, 2, 1, 0])
    """
    n = check_int(batch_size, "batch_size", minimum=0)
    return torch.arange(n - 1, -1, -1, device=device)


def mixed_smoothed_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    permuted_target: torch.Tensor,
    lam: float,
    smoothing: float = 0.1,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    class_dim: int = 1,
) -> torch.Tensor:
    """The smoothed cross-entropy of a mixed batch from index targets: no dense target is built.

    .. math::

        L = (1 - \\lambda)\\,\\mathrm{CE}_s(x, y) + \\lambda\\,\\mathrm{CE}_s(x, y_\\pi),

    with ``CE_s`` :func:`labelsmooth.functional.smoothed_cross_entropy` (mean reduction), equal
    to the soft-target cross-entropy of ``mix_targets(y, y_pi, lam, smoothing=s)`` and, with
    ``lam = 1 - lam_timm`` and ``y_pi = y.flip(0)``, to timm's ``SoftTargetCrossEntropy`` of
    ``mixup_target(y, C, lam_timm, s)``.

    Args:
        input: logits ``(N, C, *)`` with classes on ``class_dim``; floating.
        target: class indices ``(N, *)`` (the ``targets`` of a :class:`~labelsmooth.functional.MixedBatch`).
        permuted_target: the partners' class indices, ``target``'s shape (its ``permuted_targets``).
        lam: the partner's share in [0, 1] (its ``lam``).
        smoothing: ``s`` in [0, 1] (default 0.1).
        weight: class weights ``(C,)`` (default ``None``).
        ignore_index: an index that contributes nothing (default -100).
        class_dim: the class dimension of ``input`` (default 1).

    Returns:
        The scalar loss, in ``input``'s dtype.

    Example:
        >>> from labelsmooth.functional import mixup_batch
        >>> x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> batch = mixup_batch(x, y, lam=0.3, indices=flip_partners(4))
        >>> logits = torch.randn(4, 5)
        >>> loss = mixed_smoothed_cross_entropy(logits, batch.targets, batch.permuted_targets,
        ...                                     batch.lam, smoothing=0.1)
        >>> dense = 0.7 * (0.9 * torch.eye(5)[y] + 0.02) + 0.3 * (0.9 * torch.eye(5)[y.flip(0)] + 0.02)
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(logits, dense))
        True
    """
    mix = check_smoothing(lam, "lam")
    s = check_smoothing(smoothing)
    if not isinstance(target, torch.Tensor):
        fail("target", "a tensor of class indices", type(target).__name__, error=TypeError)
    if not isinstance(permuted_target, torch.Tensor) or permuted_target.shape != target.shape:
        shown = (f"shape {shape_str(permuted_target.shape)}" if isinstance(permuted_target, torch.Tensor)
                 else type(permuted_target).__name__)
        fail("permuted_target", f"a tensor of target's shape {shape_str(target.shape)}", shown)
    if target.is_floating_point():
        fail("target", "class indices (dense targets: use labelsmooth.SoftCrossEntropyLoss)",
             f"dtype {target.dtype}", error=TypeError)

    if mix == 0.0:
        return smoothed_cross_entropy(input, target, s, weight=weight, ignore_index=ignore_index,
                                      class_dim=class_dim)
    return functional_mixed_loss(input, [target, permuted_target], [1.0 - mix, mix], s,
                                 weight=weight, ignore_index=ignore_index, class_dim=class_dim)
