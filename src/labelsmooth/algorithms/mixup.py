"""``MixUp``: the Trainer algorithm around :func:`~labelsmooth.functional.mixup_batch`.

The mixed inputs go to the model at ``BEFORE_FORWARD`` (the user's tensor comes back at
``AFTER_FORWARD``); at ``BEFORE_LOSS`` the drawn ``(indices, lam)`` is added to the batch's
:class:`~labelsmooth.trainer.targets.TrainingTargets`, so the training target is

.. math::

    \\tilde y_i = (1 - \\lambda)\\, \\mathrm{smooth}_s(y_i) + \\lambda\\, \\mathrm{smooth}_s(y_{\\pi(i)})

with the smoothing of ``LabelSmoothing`` if it runs too, in either order. The project's
cross-entropies compute the loss from the index targets, ``(1 - lam) L(y) + lam L(y[indices])``
(cross-entropy is linear in the target); any other loss sees the dense mixed target.

References:
    Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
"""

from __future__ import annotations

import torch

from labelsmooth._validation import fail
from labelsmooth.algorithms._mixing import MixingAlgorithm
from labelsmooth.functional.mixing import MixedBatch, mixup_batch
from labelsmooth.trainer.batch import BatchKey

__all__ = ["MixUp"]


class MixUp(MixingAlgorithm):
    """Train on convex combinations of pairs of examples and of their (smoothed) targets.

    .. math::

        \\tilde x = (1 - \\lambda)\\, x + \\lambda\\, x_{\\pi}, \\qquad
        \\tilde y = (1 - \\lambda)\\, y + \\lambda\\, y_{\\pi}, \\qquad
        \\lambda = \\min(z, 1 - z),\\ z \\sim \\mathrm{Beta}(\\alpha, \\alpha)

    As in Composer, ``lam`` is folded into [0, 1/2], so that every mixed example is mostly its
    original self and the training accuracy (on the original labels) stays meaningful.
    Runs at ``BEFORE_FORWARD`` (mix the inputs), ``AFTER_FORWARD`` (put the user's inputs back),
    ``BEFORE_LOSS`` (add the mix to the training targets) and ``AFTER_LOSS`` (take it out; the
    original targets come back). Evaluation batches are never mixed.

    Args:
        alpha: Beta concentration, a finite number > 0. Default 0.2.
        interpolate_loss: for a loss other than the project's cross-entropies, compute
            ``(1 - lam) L(out, y) + lam L(out, y[indices])`` (both terms smoothed when
            ``LabelSmoothing`` runs too) instead of ``L`` of the dense mixed target. The
            project's cross-entropies always compute it this way, which for them is the same
            number. Default ``False``.
        lam_at_most_half: fold ``lam`` into [0, 1/2] (default ``True``); ``False`` uses the raw
            Beta draw.
        target_key: where the targets are in the batch (int index, str key or attribute, or a
            ``(getter, setter)`` pair). Default ``1``.
        input_key: where the inputs are. Default ``0``.
        class_dim: the class dimension of the logits. Default 1.
        generator: a ``torch.Generator`` for every draw; ``None`` uses torch's global CPU
            generator. Its state is saved in :meth:`state_dict`.

    Attributes:
        lam: the partner's share drawn for the most recent training microbatch (``None``
            before the first).
        indices: the permutation drawn for it (``None`` before the first).

    Example:
        >>> import torch
        >>> from labelsmooth.trainer import Event, State
        >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])
        >>> state = State(torch.nn.Identity(), batch=(x, y))
        >>> mixup = MixUp(alpha=1.0, generator=torch.Generator().manual_seed(0))
        >>> mixup.apply(Event.BEFORE_FORWARD, state, None)
        >>> torch.allclose(state.batch[0], (1 - mixup.lam) * x + mixup.lam * x[mixup.indices])
        True
        >>> state.outputs = torch.zeros(2, 2)
        >>> mixup.apply(Event.AFTER_FORWARD, state, None)
        >>> mixup.apply(Event.BEFORE_LOSS, state, None)
        >>> state.batch[1].shape, state.batch[1].targets is y
        (torch.Size([2, 2]), True)
        >>> mixup.apply(Event.AFTER_LOSS, state, None)
        >>> state.batch[0] is x and state.batch[1] is y
        True

    References:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    """

    def __init__(self, alpha: float = 0.2, *, interpolate_loss: bool = False,
                 lam_at_most_half: bool = True, target_key: BatchKey = 1, input_key: BatchKey = 0,
                 class_dim: int = 1, generator: torch.Generator | None = None) -> None:
        super().__init__(alpha, interpolate_loss=interpolate_loss, target_key=target_key,
                         input_key=input_key, class_dim=class_dim, generator=generator)
        if not isinstance(lam_at_most_half, bool):
            fail("lam_at_most_half", "a bool", lam_at_most_half, error=TypeError)
        self.lam_at_most_half = lam_at_most_half

    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        """:func:`~labelsmooth.functional.mixup_batch` with this algorithm's options."""
        return mixup_batch(inputs, targets, alpha=self.alpha, generator=self.generator,
                           lam_at_most_half=self.lam_at_most_half)

    def __repr__(self) -> str:
        return (f"MixUp(alpha={self.alpha}, interpolate_loss={self.interpolate_loss}, "
                f"target_key={self.target_key!r})")
