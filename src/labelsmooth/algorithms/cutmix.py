"""``CutMix``: the Trainer algorithm around :func:`~labelsmooth.functional.cutmix_batch`.

It composes with ``LabelSmoothing`` in any order through the State's target-transform stage,
exactly as :mod:`labelsmooth.algorithms.mixup` explains: inputs are mixed at
``BEFORE_FORWARD`` (and put back at ``AFTER_FORWARD``), targets through a
:attr:`~labelsmooth.trainer.targets.TargetStage.MIX` transform registered at ``BEFORE_LOSS``,
which always runs before smoothing. The only differences from MixUp are how the inputs are
mixed (a box pasted from the partner) and that ``lam`` is the exact pasted area fraction.

References:
    Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
    Features", ICCV 2019.
"""

from __future__ import annotations

import torch

from labelsmooth.algorithms._mixing import MixingAlgorithm
from labelsmooth.functional.mixing import Box, MixedBatch, cutmix_batch
from labelsmooth.trainer.batch import BatchKey

__all__ = ["CutMix"]


class CutMix(MixingAlgorithm):
    """Paste a random box from a partner example into each example; mix the targets by area.

    .. math::

        \\tilde x = (1 - M) \\odot x + M \\odot x_{\\pi}, \\qquad
        \\tilde y = (1 - \\lambda)\\, y + \\lambda\\, y_{\\pi}, \\qquad
        \\lambda = \\frac{\\sum M}{H W}

    The box covers about ``Beta(alpha, alpha)`` of the image, is centred uniformly at random and
    clipped to the image; ``lam`` is then the area actually pasted. Inputs are ``(N, C, H, W)``
    images or ``(N, C, L)`` sequences. Runs at the same events as
    :class:`~labelsmooth.algorithms.MixUp`; evaluation batches are never mixed.

    Args:
        alpha: Beta concentration, a finite number > 0. Default 1.0 (uniform box area).
        target_key: where the targets are in the batch. Default ``1``.
        interpolate_loss: if ``True`` the loss is
            ``(1 - lam) L(out, y) + lam L(out, y[indices])`` (both terms smoothed when
            ``LabelSmoothing`` runs too). Default ``False``.
        input_key: where the inputs are. Default ``0``.
        class_dim: the class dimension of the logits. Default 1.
        generator: a ``torch.Generator`` for every draw; ``None`` uses torch's global CPU
            generator. Its state is saved in :meth:`state_dict`.

    Attributes:
        lam: the pasted area fraction of the most recent training microbatch (``None`` before
            the first).
        indices: the permutation drawn for it.
        bbox: the pasted box, one ``(start, stop)`` pair per spatial dimension
            (``((top, bottom), (left, right))`` for images).

    Example:
        >>> import torch
        >>> from labelsmooth.trainer import Event, State
        >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> state = State(torch.nn.Identity(), batch=(x, y))
        >>> cutmix = CutMix(generator=torch.Generator().manual_seed(0))
        >>> cutmix.apply(Event.BEFORE_FORWARD, state, None)
        >>> (top, bottom), (left, right) = cutmix.bbox
        >>> cutmix.lam == (bottom - top) * (right - left) / 64
        True

    References:
        Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
        Localizable Features", ICCV 2019.
    """

    def __init__(self, alpha: float = 1.0, target_key: BatchKey = 1, *,
                 interpolate_loss: bool = False, input_key: BatchKey = 0, class_dim: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(alpha, interpolate_loss=interpolate_loss, target_key=target_key,
                         input_key=input_key, class_dim=class_dim, generator=generator)
        self.bbox: Box | None = None

    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        mixed = cutmix_batch(inputs, targets, alpha=self.alpha, generator=self.generator)
        self.bbox = mixed.bbox
        return mixed

    def __repr__(self) -> str:
        return (f"CutMix(alpha={self.alpha}, target_key={self.target_key!r}, "
                f"interpolate_loss={self.interpolate_loss})")
