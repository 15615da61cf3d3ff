"""The training state that algorithms and callbacks read and change.

A :class:`State` holds everything a step touches: the model, optimizers and schedulers, the
current batch, the model's outputs and the loss, the :class:`~labelsmooth.trainer.time.Timestamp`,
the training length, the process's rank, and the registered target transforms (see
:mod:`labelsmooth.trainer.targets` for how target-changing algorithms compose). It can be built by
hand, without a Trainer, to test an algorithm's ``match`` and ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import fail
from labelsmooth.trainer.batch import BatchKey, batch_get_item, batch_set_item
from labelsmooth.trainer.targets import TargetComponent, TargetPipeline, TargetStage, TargetTransform
from labelsmooth.trainer.time import Duration, Timestamp

if TYPE_CHECKING:
    from labelsmooth.trainer.algorithm import Algorithm
    from labelsmooth.trainer.callback import Callback

__all__ = ["State"]


def _as_list(value: Any, argument: str, kind: type) -> list[Any]:
    if value is None:
        return []
    items = [value] if isinstance(value, kind) else value
    if not isinstance(items, Iterable):
        fail(argument, f"a {kind.__name__}, a sequence of them, or None", value, error=TypeError)
    return list(items)


class State:
    """Everything the training loop and its algorithms share.

    Args:
        model: the model being trained (never the DDP wrapper).
        optimizers: an optimizer or a sequence of them. Default: none.
        schedulers: a learning-rate scheduler or a sequence of them. Default: none.
        max_duration: how long to train (``"10ep"``, ``"500ba"`` or an int of epochs), or ``None``.
        algorithms: algorithms run by the :class:`~labelsmooth.trainer.engine.Engine`, in order.
        callbacks: callbacks run after the algorithms.
        train_dataloader, eval_dataloader: the dataloaders, if any.
        device: where the model and batches live. Default: CPU.
        rank, world_size: this process's rank and the number of processes. Default: 0 and 1.
        batch: the current batch. outputs: the model's outputs. loss: the current loss.

    Example:
        >>> state = State(torch.nn.Linear(2, 3), batch=(torch.zeros(4, 2), torch.tensor([0, 1, 2, 0])))
        >>> state.batch_get_item(1).tolist()
        [0, 1, 2, 0]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        schedulers: Any = None,
        max_duration: str | int | Duration | None = None,
        algorithms: Sequence[Algorithm] = (),
        callbacks: Sequence[Callback] = (),
        train_dataloader: Any = None,
        eval_dataloader: Any = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        batch: Any = None,
        outputs: Any = None,
        loss: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.optimizers: list[torch.optim.Optimizer] = _as_list(
            optimizers, "optimizers", torch.optim.Optimizer)
        self.schedulers: list[Any] = _as_list(
            schedulers, "schedulers", torch.optim.lr_scheduler.LRScheduler)
        self.max_duration = None if max_duration is None else Duration.parse(max_duration)
        self.algorithms = list(algorithms)
        self.callbacks = list(callbacks)
        self.train_dataloader = train_dataloader
        self.eval_dataloader = eval_dataloader
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.batch = batch
        self.outputs = outputs
        self.loss = loss
        self.timestamp = Timestamp()
        self._targets = TargetPipeline()

    def batch_get_item(self, key: BatchKey) -> Any:
        """The part of the current batch named by ``key`` (an index, a key or attribute name, or
        a ``(getter, setter)`` pair); see :func:`~labelsmooth.trainer.batch.batch_get_item`."""
        return batch_get_item(self.batch, key)

    def batch_set_item(self, key: BatchKey, value: Any) -> None:
        """Write ``value`` into the current batch at ``key`` (tuples are rebuilt, lists and
        mappings set in place); see :func:`~labelsmooth.trainer.batch.batch_set_item`."""
        self.batch = batch_set_item(self.batch, key, value)

    def add_target_transform(self, owner: object, stage: TargetStage | int,
                             transform: TargetTransform, *, target_key: BatchKey = 1) -> None:
        """Register ``owner``'s transform of the targets at ``target_key`` and rewrite the batch.

        The first registration of a microbatch saves the original target object. The batch's
        target is then rebuilt from that original by every registered transform, sorted by
        stage (ties by registration order), and the first component is written into the batch.
        Registering again for the same owner replaces its transform. See
        :mod:`labelsmooth.trainer.targets`.

        Args:
            owner: who registers (usually the algorithm, ``self``); used by
                :meth:`remove_target_transform`.
            stage: a :class:`~labelsmooth.trainer.targets.TargetStage`: ``MIX`` runs before
                ``SMOOTH``.
            transform: maps a sequence of ``(weight, target)`` components to a new non-empty one.
            target_key: where the targets are in the batch. Default: ``1``.

        Raises:
            ValueError: if ``target_key`` is not in the batch or differs from the key of
                transforms already registered.
        """
        self.batch = self._targets.add(self.batch, owner, stage, transform, target_key)

    def remove_target_transform(self, owner: object) -> None:
        """Unregister ``owner``'s transform (a no-op if it has none) and rewrite the batch.

        When no transform remains the original target object is written back, so the batch
        holds exactly what it held before the first registration.
        """
        self.batch = self._targets.remove(self.batch, owner)

    @property
    def target_components(self) -> tuple[TargetComponent, ...] | None:
        """The training target as ``(weight, target)`` components, or ``None`` when no transform
        is registered (then the loss uses the batch's target as it is)."""
        return self._targets.components

    @property
    def target_key(self) -> BatchKey | None:
        """Where the transformed targets live in the batch, or ``None`` when none are."""
        return self._targets.target_key

    @property
    def target_transform_owners(self) -> list[object]:
        """The owners of the registered target transforms, in the order they are applied."""
        return self._targets.owners
