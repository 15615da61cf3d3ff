r"""``OnlineLabelSmoothing``: soft labels learned from the model's own correct predictions.

Online label smoothing (Zhang et al. 2021) replaces the uniform part of label smoothing by a
per-class distribution measured during training. ``S`` is a ``C x C`` matrix whose row ``c`` is
the soft label of class ``c``; the loss of an example ``(x, y)`` is

.. math::

    \mathcal L = \alpha\, \mathrm{CE}(x, y) + (1 - \alpha)\, \mathrm{CE}(x, S^{e-1}_{y})
               = \mathrm{CE}\big(x,\ \alpha\, \mathrm{onehot}(y) + (1 - \alpha)\, S^{e-1}_{y}\big)

(cross-entropy is linear in the target), where ``S^{e-1}`` is the matrix of the previous epoch:
row ``c`` is the mean predicted distribution ``softmax(x)`` over the training examples of class
``c`` that the model classified correctly (``argmax x = c``) during that epoch. A class with no
correct example keeps its previous row. ``S^0``, used in the first epoch, is uniform label
smoothing ``(1 - s_0) I + s_0 / C`` with ``s_0 = initial_smoothing``.

The statistics are two running sums on the device (the per-class sum of correct predicted
distributions and the per-class count), updated every training microbatch without a host
synchronisation, summed across processes at the end of the epoch, then divided and swapped in.

The pure functions here hold the math; :class:`OnlineLabelSmoothing` is the event adapter.

References:
    Zhang, Jiang, Hou, Wei, Han, Li and Cheng, "Delving Deep into Label Smoothing", IEEE
    Transactions on Image Processing 30, 2021 (arXiv:2011.12562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import (
    check_class_dim,
    check_index_dtype,
    check_int,
    check_unit_interval,
    fail,
)
from labelsmooth.functional._targets import check_target_range
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import (
    BatchKey,
    batch_get_item,
    batch_set_item,
    check_batch_key,
    get_logits,
)
from labelsmooth.trainer.events import Event

if TYPE_CHECKING:
    from labelsmooth.trainer.logger import Logger
    from labelsmooth.trainer.state import State

__all__ = ["OnlineLabelSmoothing"]

_EVENTS = (Event.FIT_START, Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.EPOCH_END)
_EVENT_SET = frozenset(_EVENTS)  # for match, which runs at every event of every step


def initial_soft_labels(num_classes: int, smoothing: float, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """``S^0 = (1 - s) I + s / C``: row ``c`` is the uniformly smoothed label of class ``c``.

    Example:
        >>> initial_soft_labels(2, 0.2)
        tensor([[0.9000, 0.1000],
                [0.1000, 0.9000]])
    """
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return eye * (1.0 - smoothing) + smoothing / num_classes


def _rows(logits: torch.Tensor, targets: torch.Tensor, class_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, *)`` logits and ``(N, *)`` targets as ``(M, C)`` rows and ``(M,)`` classes."""
    rows = logits.movedim(class_dim, -1).reshape(-1, logits.shape[class_dim])
    return rows, targets.reshape(-1)


def _kept(targets: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, classes)``: where ``targets`` is not ``ignore_index``, and the targets with the
    ignored positions replaced by class 0 (so that they can index; ``kept`` masks them out).
    Elementwise on the device: no host synchronisation."""
    if ignore_index is None:
        return torch.ones_like(targets, dtype=torch.bool), targets
    kept = targets != ignore_index
    return kept, torch.where(kept, targets, torch.zeros_like(targets))


def accumulate_correct(sums: torch.Tensor, counts: torch.Tensor, logits: torch.Tensor,
                       targets: torch.Tensor, *, class_dim: int = 1,
                       ignore_index: int | None = None) -> None:
    """Add the predicted distributions of the correctly classified examples to their class's sum.

    ``sums[c] += sum_{i: y_i = c, argmax x_i = c} softmax(x_i)`` and ``counts[c]`` += their
    number, in place, on the device (no host synchronisation). The sums are a matrix product
    ``onehot_correct^T @ softmax(x)`` rather than a scatter: on CUDA a scatter-add of floats
    is not deterministic, and a resumed run must add in the same order as an uninterrupted one.
    The softmax is taken in the accumulators' dtype (float32 at least), whatever the logits'.

    Args:
        sums: ``(C, C)`` running sums, changed in place.
        counts: ``(C,)`` running counts (same dtype), changed in place.
        logits: ``(N, C, *)`` logits (detached here).
        targets: ``(N, *)`` class indices in ``[0, C)``, or ``ignore_index``.
        class_dim: the class dimension of ``logits``. Default 1.
        ignore_index: a target value whose positions count nothing, or ``None``. Default
            ``None``.

    Example:
        >>> sums, counts = torch.zeros(2, 2), torch.zeros(2)
        >>> logits = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
        >>> accumulate_correct(sums, counts, logits, torch.tensor([1, -100]), ignore_index=-100)
        >>> counts
        tensor([0., 1.])
    """
    rows, targets = _rows(logits.detach(), targets, class_dim)
    kept, classes = _kept(targets, ignore_index)
    probabilities = rows.to(sums.dtype).softmax(dim=-1)
    correct = ((rows.argmax(dim=-1) == classes) & kept).to(sums.dtype)
    owners = torch.nn.functional.one_hot(classes, sums.shape[0]).to(sums.dtype) * correct[:, None]
    sums.addmm_(owners.T, probabilities)
    counts.add_(owners.sum(dim=0))


def next_soft_labels(previous: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``S^e``: row ``c`` is ``sums[c] / counts[c]``, or ``previous[c]`` where ``counts[c] == 0``.

    Example:
        >>> previous = torch.eye(2)
        >>> sums, counts = torch.tensor([[1.4, 0.6], [0.0, 0.0]]), torch.tensor([2.0, 0.0])
        >>> next_soft_labels(previous, sums, counts)
        tensor([[0.7000, 0.3000],
                [0.0000, 1.0000]])
    """
    seen = counts > 0
    means = sums / counts.clamp_min(1)[:, None]
    return torch.where(seen[:, None], means, previous)


def online_label_targets(soft_labels: torch.Tensor, targets: torch.Tensor, alpha: float, *,
                         class_dim: int = 1, dtype: torch.dtype | None = None,
                         ignore_index: int | None = None) -> torch.Tensor:
    """The dense training target ``alpha onehot(y) + (1 - alpha) S[y]``, shape ``(N, C, *)``.

    A position whose target is ``ignore_index`` gets an all-zero row, as
    :func:`~labelsmooth.functional.smooth_labels` gives it: it adds nothing to a cross-entropy
    and receives no gradient.

    Args:
        soft_labels: ``(C, C)`` matrix ``S``, row ``c`` the soft label of class ``c``.
        targets: ``(N, *)`` class indices, or ``ignore_index``.
        alpha: the weight of the hard label, in ``[0, 1]``.
        class_dim: where the class dimension goes in the result. Default 1.
        dtype: the result's dtype. Default: ``soft_labels``'s.
        ignore_index: a target value whose rows are all zero, or ``None``. Default ``None``.

    Example:
        >>> S = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
        >>> online_label_targets(S, torch.tensor([1, -100]), 0.5, ignore_index=-100)
        tensor([[0.2000, 0.8000],
                [0.0000, 0.0000]])
    """
    num_classes = soft_labels.shape[0]
    kept, classes = _kept(targets, ignore_index)
    hard = torch.nn.functional.one_hot(classes, num_classes).to(soft_labels.dtype)
    dense = torch.lerp(soft_labels[classes], hard, alpha)
    if ignore_index is not None:
        dense = dense * kept.unsqueeze(-1).to(dense.dtype)
    dense = dense.movedim(-1, class_dim) if dense.ndim > 1 else dense
    return dense if dtype is None else dense.to(dtype)


class OnlineLabelSmoothing(Algorithm):
    r"""Train on ``alpha * CE(y) + (1 - alpha) * CE(S[y])``, ``S`` the previous epoch's soft labels.

    .. math::

        \tilde y = \alpha\, \mathrm{onehot}(y) + (1 - \alpha)\, S^{e-1}_{y}, \qquad
        S^{e}_{c} = \frac{1}{|I_c|} \sum_{i \in I_c} \mathrm{softmax}(x_i), \quad
        I_c = \{i : y_i = c,\ \arg\max x_i = c\}

    ``S^0 = (1 - s_0) I + s_0 / C`` (uniform label smoothing by ``initial_smoothing``). Rows of
    classes with no correctly classified example in an epoch are kept from the epoch before.
    Only training batches count (evaluation never changes ``S``); with ``grad_accum`` every
    microbatch counts. Under DDP the per-class sums of all processes are added before the swap,
    so ``S`` is what one process would get on the whole epoch. A run stopped mid-epoch and
    resumed from a checkpoint continues with the same ``S`` and the same partial sums.

    Runs at ``FIT_START`` (refuses algorithms it cannot be combined with), ``BEFORE_LOSS``
    (adds the batch to this epoch's statistics, from the logits before the loss, and puts the
    dense target in the batch), ``AFTER_LOSS`` (the original targets go back) and ``EPOCH_END``
    (the swap). The loss sees a dense ``(N, C, *)`` target: the Trainer's default loss and
    PyTorch's ``F.cross_entropy`` take it, and it costs one ``N x C`` tensor per step plus the
    ``C x C`` matrix, which suits classification with up to a few thousand classes, not a
    language model's vocabulary. Index targets only. A position whose target is
    ``ignore_index`` (padding, say) counts nowhere: not in the statistics, and its dense target
    row is all zero, so it adds nothing to the loss and gets no gradient. A dense target's
    ``"mean"`` divides by every position, ignored ones included (PyTorch's convention for
    probability targets), where ``F.cross_entropy(..., ignore_index=...)`` with index targets
    divides by the positions kept. MixUp, CutMix and ``LabelSmoothing`` in the same Trainer are
    refused (their targets are a different mixture of labels), and so is a loss that smooths by
    itself (``SmoothedCrossEntropyLoss(0.1)``, ``nn.CrossEntropyLoss(label_smoothing=0.1)``):
    the targets would be smoothed twice.

    Args:
        alpha: the weight of the hard label, in ``[0, 1]``; ``1`` is plain cross-entropy.
            Default 0.5 (the paper's ImageNet setting).
        num_classes: the number of classes ``C``; ``None`` takes it from the first batch's
            logits. Given, logits with another number of classes are refused. Default ``None``.
        initial_smoothing: ``s_0``, the uniform smoothing of ``S^0`` used in the first epoch,
            in ``[0, 1]``; ``0`` makes the first epoch plain cross-entropy. Default 0.1.
        target_key: where the targets are in the batch. Default ``1``.
        class_dim: the class dimension of the logits. Default 1.
        ignore_index: a target value whose positions count nowhere, or ``None`` (every target
            must then be a class). Default -100 (PyTorch's).

    Attributes:
        soft_labels: ``S``, the ``(C, C)`` matrix used in this epoch (``None`` before the first
            batch when ``num_classes`` is not given). Float32, or float64 for float64 logits.

    Example:
        >>> import torch
        >>> from labelsmooth.trainer import Event, State
        >>> ols = OnlineLabelSmoothing(alpha=0.5, num_classes=3, initial_smoothing=0.0)
        >>> logits, y = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1])
        >>> state = State(torch.nn.Identity(), batch=(None, y), outputs=logits, world_size=1)
        >>> ols.apply(Event.BEFORE_LOSS, state, None)
        >>> state.batch[1]  # first epoch: S^0 = I, so the target is the one-hot label
        tensor([[1., 0., 0.],
                [0., 1., 0.]])
        >>> ols.apply(Event.AFTER_LOSS, state, None)
        >>> ols.apply(Event.EPOCH_END, state, None)  # row 0 from the correct example, row 1 kept
        >>> ols.soft_labels.round(decimals=4)
        tensor([[0.7870, 0.1065, 0.1065],
                [0.0000, 1.0000, 0.0000],
                [0.0000, 0.0000, 1.0000]])

    References:
        Zhang, Jiang, Hou, Wei, Han, Li and Cheng, "Delving Deep into Label Smoothing", IEEE
        Transactions on Image Processing 30, 2021.
    """

    def __init__(self, alpha: float = 0.5, *, num_classes: int | None = None,
                 initial_smoothing: float = 0.1, target_key: BatchKey = 1,
                 class_dim: int = 1, ignore_index: int | None = -100) -> None:
        self.alpha = check_unit_interval(alpha, "alpha")
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes",
                                                                        minimum=2)
        self.initial_smoothing = check_unit_interval(initial_smoothing, "initial_smoothing")
        self.target_key = check_batch_key(target_key, "target_key")
        self.class_dim = check_int(class_dim, "class_dim")
        self.ignore_index = None if ignore_index is None else check_int(ignore_index,
                                                                        "ignore_index")
        self.soft_labels: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._original: Any = None
        self._counting = False
        if self.num_classes is not None:
            self._start(self.num_classes, torch.float32, torch.device("cpu"))

    def _start(self, num_classes: int, dtype: torch.dtype, device: torch.device) -> None:
        self.soft_labels = initial_soft_labels(num_classes, self.initial_smoothing, dtype=dtype,
                                               device=device)
        self._sums = torch.zeros(num_classes, num_classes, dtype=dtype, device=device)
        self._counts = torch.zeros(num_classes, dtype=dtype, device=device)

    def _ready_for(self, logits: torch.Tensor, dim: int) -> None:
        """Check the logits' number of classes; put ``S`` and the sums on their device.

        Until the first batch is counted (or a checkpoint loaded), ``S^0`` is made again in the
        logits' precision (float64 logits get float64 statistics; anything narrower, float32).
        """
        classes = logits.shape[dim]
        if self.num_classes is not None and classes != self.num_classes:
            fail("num_classes", f"the logits' number of classes, {classes} (dim {dim} of logits "
                 f"of shape {tuple(logits.shape)})", self.num_classes)
        if not self._counting:
            self._start(classes, torch.promote_types(logits.dtype, torch.float32), logits.device)
            self.num_classes = classes
        elif self.soft_labels is not None and self.soft_labels.device != logits.device:
            self._move(logits.device)

    def _move(self, device: torch.device) -> None:
        assert self.soft_labels is not None and self._sums is not None and self._counts is not None
        self.soft_labels = self.soft_labels.to(device)
        self._sums, self._counts = self._sums.to(device), self._counts.to(device)

    def match(self, event: Event, state: State) -> bool:
        """Run at ``FIT_START``, ``BEFORE_LOSS``, ``AFTER_LOSS`` and ``EPOCH_END``."""
        return event in _EVENT_SET

    def apply(self, event: Event, state: State, logger: Logger | None) -> None:
        """Check the other algorithms (``FIT_START``), add the batch to the statistics and put
        the dense target in the batch (``BEFORE_LOSS``), put the original targets back
        (``AFTER_LOSS``), or sum the statistics across processes and swap ``S`` (``EPOCH_END``).

        Raises:
            ValueError: at ``FIT_START`` alongside MixUp, CutMix, ``LabelSmoothing`` or a second
                ``OnlineLabelSmoothing``; at ``BEFORE_LOSS`` for logits with another number
                of classes than ``num_classes``, or targets that are not class indices (or
                ``ignore_index``) of the logits' shape without the class dimension; for any
                other event.
            TypeError: for targets that are not an integer tensor.

        ``Trainer.fit`` also refuses a loss that smooths by itself alongside it.
        """
        if event == Event.FIT_START:
            self._check_companions(state)
        elif event == Event.BEFORE_LOSS:
            logits = get_logits(state.outputs, argument="state.outputs")
            targets = batch_get_item(state.batch, self.target_key, argument="target_key")
            dim = self._check_targets(logits, targets)
            self._ready_for(logits, dim)
            assert self.soft_labels is not None and self._sums is not None and self._counts is not None
            accumulate_correct(self._sums, self._counts, logits, targets, class_dim=dim,
                               ignore_index=self.ignore_index)
            self._counting = True
            self._original = targets
            dense = online_label_targets(self.soft_labels, targets, self.alpha, class_dim=dim,
                                         dtype=logits.dtype, ignore_index=self.ignore_index)
            state.batch = batch_set_item(state.batch, self.target_key, dense, argument="target_key")
        elif event == Event.AFTER_LOSS:
            if self._original is not None:
                state.batch = batch_set_item(state.batch, self.target_key, self._original,
                                             argument="target_key")
                self._original = None
        elif event == Event.EPOCH_END:
            self._swap(state.world_size)
        else:
            fail("event", f"one of {[e.name for e in _EVENTS]}", event)

    def _check_companions(self, state: State) -> None:
        from labelsmooth.algorithms._mixing import MixingAlgorithm
        from labelsmooth.algorithms.label_smoothing import LabelSmoothing

        for position, other in enumerate(state.algorithms):
            if other is self:
                continue
            if isinstance(other, (MixingAlgorithm, LabelSmoothing, OnlineLabelSmoothing)):
                fail(f"algorithms[{position}]", "no MixUp, CutMix, LabelSmoothing or second "
                     "OnlineLabelSmoothing alongside OnlineLabelSmoothing (each sets the "
                     "training target its own way)", type(other).__name__)

    def _check_targets(self, logits: torch.Tensor, targets: Any) -> int:
        if not isinstance(targets, torch.Tensor):
            fail("targets", "a tensor of class indices", type(targets).__name__, error=TypeError)
        check_index_dtype(targets, "targets")
        dim = check_class_dim(self.class_dim, logits.ndim)
        expected = logits.shape[:dim] + logits.shape[dim + 1:]
        if targets.shape != expected:
            fail("targets", f"class indices of shape {tuple(expected)} (the logits' shape "
                 f"{tuple(logits.shape)} without dim {dim})", targets)
        # On the CPU only, where reading the values costs no device synchronisation.
        check_target_range(targets, logits.shape[dim], self.ignore_index, validate_args=None)
        return dim

    def _swap(self, world_size: int) -> None:
        """``S`` from this epoch's statistics (summed across processes), then zero the sums."""
        if self.soft_labels is None or self._sums is None or self._counts is None:
            return
        if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self._sums)
            torch.distributed.all_reduce(self._counts)
        self.soft_labels = next_soft_labels(self.soft_labels, self._sums, self._counts)
        self._sums.zero_()
        self._counts.zero_()

    def state_dict(self) -> dict[str, Any]:
        """``S`` and this process's partial sums of the current epoch (CPU copies), or ``{}``
        before ``S`` exists. Under DDP the Trainer's checkpoint keeps every rank's, so that a
        run resumed mid-epoch adds the same sums in the same order."""
        if self.soft_labels is None or self._sums is None or self._counts is None:
            return {}
        return {"soft_labels": self.soft_labels.cpu().clone(), "sums": self._sums.cpu().clone(),
                "counts": self._counts.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (checked against ``num_classes``)."""
        if not state:
            return
        if set(state) != {"soft_labels", "sums", "counts"}:
            fail("state", "a dict with 'soft_labels', 'sums' and 'counts' (an "
                 "OnlineLabelSmoothing state)", sorted(state))
        soft_labels = state["soft_labels"]
        classes = soft_labels.shape[0]
        if self.num_classes is not None and classes != self.num_classes:
            fail("state", f"soft labels for num_classes={self.num_classes}",
                 f"a ({classes}, {classes}) matrix")
        self.soft_labels = soft_labels.clone()
        self._sums, self._counts = state["sums"].clone(), state["counts"].clone()
        self.num_classes = classes
        self._counting = True

    def __repr__(self) -> str:
        return (f"OnlineLabelSmoothing(alpha={self.alpha}, num_classes={self.num_classes}, "
                f"initial_smoothing={self.initial_smoothing}, target_key={self.target_key!r}, "
                f"ignore_index={self.ignore_index})")
