"""``MixUp``: the Trainer algorithm around :func:`~labelsmooth.functional.mixup_batch`.

How mixing composes with label smoothing, in any order
------------------------------------------------------
The target every example should train on is

.. math::

    \\tilde y_i = (1 - \\lambda)\\, \\mathrm{smooth}_s(y_i) + \\lambda\\, \\mathrm{smooth}_s(y_{\\pi(i)}),

and with ``interpolate_loss=True`` the loss is
:math:`(1 - \\lambda)\\, L(f(\\tilde x), \\mathrm{smooth}_s(y)) + \\lambda\\, L(f(\\tilde x),
\\mathrm{smooth}_s(y_{\\pi}))`: both terms smoothed. Composer's algorithms each overwrite the
batch's targets with their own result and restore what they saved, so with
``[LabelSmoothing, MixUp]`` the permuted half of the target is never smoothed, and the second
interpolated term is computed after the targets were restored, unsmoothed.

Here no algorithm writes the targets. The work is split in two:

1. **Inputs, at** ``BEFORE_FORWARD``: the algorithm draws ``lam`` and the permutation
   ``indices`` for this microbatch (through its optional ``generator``), records them as
   :attr:`MixUp.lam` / :attr:`MixUp.indices`, and puts the mixed inputs into the batch. At
   ``AFTER_FORWARD`` the user's input tensor goes back into the batch.
2. **Targets, at** ``BEFORE_LOSS``: the algorithm registers a transform with the State's
   target-transform stage (:meth:`State.add_target_transform
   <labelsmooth.trainer.state.State.add_target_transform>`) at stage
   :attr:`~labelsmooth.trainer.targets.TargetStage.MIX`; ``LabelSmoothing`` registers its own at
   :attr:`~labelsmooth.trainer.targets.TargetStage.SMOOTH`. The State rebuilds the training
   target from the **original** targets on every registration, applying the transforms sorted
   by stage, so MIX always runs before SMOOTH whatever order the algorithms are listed (or run)
   in. The target is a list of ``(weight, target)`` components: mixing turns ``[(1, y)]`` into
   ``[(1, (1 - lam) y + lam y[indices])]``, or with ``interpolate_loss`` into
   ``[(1 - lam, y), (lam, y[indices])]``; smoothing then smooths *every* component, and the
   loss is ``sum_k w_k * L(outputs, t_k)``. At ``AFTER_LOSS`` each algorithm unregisters, and
   the State writes the original target object back.

Since smoothing is affine and the mixing weights sum to one, smoothing after mixing gives the
formula above exactly (:func:`~labelsmooth.functional.mix_targets` shows the algebra); a
smoothing transform that ran first would give the same numbers, but the fixed stage order means
no pair of algorithms has to know about the other. :class:`~labelsmooth.algorithms.CutMix`
works the same way with a pasted box instead of an average.

References:
    Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
"""

from __future__ import annotations

import torch

from labelsmooth.algorithms._mixing import MixingAlgorithm
from labelsmooth.functional.mixing import MixedBatch, mixup_batch
from labelsmooth.trainer.batch import BatchKey

__all__ = ["MixUp"]


class MixUp(MixingAlgorithm):
    """Train on convex combinations of pairs of examples and of their (smoothed) targets.

    .. math::

        \\tilde x = (1 - \\lambda)\\, x + \\lambda\\, x_{\\pi}, \\qquad
        \\tilde y = (1 - \\lambda)\\, y + \\lambda\\, y_{\\pi}, \\qquad
        \\lambda \\sim \\mathrm{Beta}(\\alpha, \\alpha)

    Runs at ``BEFORE_FORWARD`` (mix the inputs), ``AFTER_FORWARD`` (put the user's inputs back),
    ``BEFORE_LOSS`` (register the MIX-stage target transform) and ``AFTER_LOSS`` (remove it;
    the original targets come back). Evaluation batches are never mixed.

    Args:
        alpha: Beta concentration, a finite number > 0. Default 0.2.
        interpolate_loss: if ``True`` the loss is
            ``(1 - lam) L(out, y) + lam L(out, y[indices])`` (two target components, both
            smoothed when ``LabelSmoothing`` runs too) instead of one mixed dense target.
            Default ``False``.
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
        >>> state.batch[1].shape
        torch.Size([2, 2])
        >>> mixup.apply(Event.AFTER_LOSS, state, None)
        >>> state.batch[0] is x and state.batch[1] is y
        True

    References:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    """

    def __init__(self, alpha: float = 0.2, interpolate_loss: bool = False,
                 target_key: BatchKey = 1, *, input_key: BatchKey = 0, class_dim: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(alpha, interpolate_loss=interpolate_loss, target_key=target_key,
                         input_key=input_key, class_dim=class_dim, generator=generator)

    def mix_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> MixedBatch:
        return mixup_batch(inputs, targets, alpha=self.alpha, generator=self.generator)

    def __repr__(self) -> str:
        return (f"MixUp(alpha={self.alpha}, interpolate_loss={self.interpolate_loss}, "
                f"target_key={self.target_key!r})")
