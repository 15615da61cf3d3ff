"""``CutMix``: the Trainer algorithm around :func:`~labelsmooth.functional.cutmix_batch`.

It composes with ``LabelSmoothing`` in any order, exactly as :mod:`labelsmooth.algorithms.mixup`
explains: inputs are mixed at ``BEFORE_FORWARD`` (and put back at ``AFTER_FORWARD``), and the
mix is added to the batch's training targets at ``BEFORE_LOSS``. The differences from MixUp are
how the inputs are mixed (a box pasted from the partner), that ``lam`` is the exact pasted area
fraction, and that per-pixel targets get the partner's labels pasted inside the same box.

References:
    Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
    Features", ICCV 2019.
"""

from __future__ import annotations

import torch

from labelsmooth._validation import fail
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

    The box covers about ``Beta(alpha, alpha)`` of the image, is placed at random and clipped
    to the image; ``lam`` is then the area actually pasted. Inputs are ``(N, C, H, W)`` images
    or ``(N, C, L)`` sequences. Per-pixel targets (index targets ``(N, H, W)`` or dense
    ``(N, C, H, W)`` with the inputs' spatial size, e.g. segmentation) are not mixed by ``lam``:
    the partner's labels are pasted inside the same box, into a copy (the user's labels are not
    modified). Runs at the same events as :class:`~labelsmooth.algorithms.MixUp`; evaluation
    batches are never mixed.

    Args:
        alpha: Beta concentration, a finite number > 0. Default 1.0 (uniform box area).
        interpolate_loss: for a loss other than the project's cross-entropies, compute
            ``(1 - lam) L(out, y) + lam L(out, y[indices])`` (both terms smoothed when
            ``LabelSmoothing`` runs too) instead of ``L`` of the dense mixed target. Default
            ``False``.
        uniform_sampling: place the box so that every pixel is pasted with the same
            probability (Composer's option) instead of centring it uniformly. Default ``False``.
        target_key: where the targets are in the batch. Default ``1``.
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

    def __init__(self, alpha: float = 1.0, *, interpolate_loss: bool = False,
                 uniform_sampling: bool = False, target_key: BatchKey = 1, input_key: BatchKey = 0,
                 class_dim: int = 1, generator: torch.Generator | None = None) -> None:
        super().__init__(alpha, interpolate_loss=interpolate_loss, target_key=target_key,
                         input_key=input_key, class_dim=class_dim, generator=generator)
        if not isinstance(uniform_sampling, bool):
            fail("uniform_sampling", "a bool", uniform_sampling, error=TypeError)
        self.uniform_sampling = uniform_sampling
        self.bbox: Box | None = None
        self._spatial: tuple[int, ...] = ()

    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        """:func:`~labelsmooth.functional.cutmix_batch` with this algorithm's options; the
        pasted box is kept as :attr:`bbox`."""
        mixed = cutmix_batch(inputs, targets, alpha=self.alpha, generator=self.generator,
                             uniform_sampling=self.uniform_sampling)
        self.bbox = mixed.bbox
        self._spatial = tuple(inputs.shape[2:])
        return mixed

    def label_box(self, targets: torch.Tensor) -> Box | None:
        """:attr:`bbox` for per-pixel targets (the inputs' spatial size after the batch
        dimension, or after a class dimension for dense targets), else ``None``."""
        if self.bbox is None or not isinstance(targets, torch.Tensor):
            return None  # anything but a tensor is refused when the targets are wrapped
        per_pixel = (targets.ndim == 1 + len(self.bbox) + int(targets.is_floating_point())
                     and tuple(targets.shape[-len(self.bbox):]) == self._spatial)
        return self.bbox if per_pixel else None

    def __repr__(self) -> str:
        return (f"CutMix(alpha={self.alpha}, interpolate_loss={self.interpolate_loss}, "
                f"uniform_sampling={self.uniform_sampling}, target_key={self.target_key!r})")
