"""The training state that algorithms and callbacks read and change.

A :class:`State` holds everything a step touches: the model, optimizers and schedulers, the
current batch, the model's outputs and the loss, the :class:`~labelsmooth.trainer.time.Timestamp`,
the training length and the process's rank. It can be built by hand, without a Trainer, to test
an algorithm's ``match`` and ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from labelsmooth._validation import fail
from labelsmooth.trainer.batch import BatchKey, batch_get_item, batch_set_item
from labelsmooth.trainer.time import Duration, Timestamp

if TYPE_CHECKING:
    from labelsmooth.trainer.algorithm import Algorithm
    from labelsmooth.trainer.callback import Callback

__all__ = ["State"]


def _as_list(value: Any, argument: str, kind: type) -> list[Any]:
    """``None``, one ``kind`` object or an iterable of them, as a new list."""
    name = ("an " if kind.__name__[0] in "AEIOU" else "a ") + kind.__name__
    expected = f"{name}, a sequence of them, or None"
    if value is None:
        return []
    items = [value] if isinstance(value, kind) else value
    if not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        fail(argument, expected, value, error=TypeError)
    items = list(items)
    for position, item in enumerate(items):
        if not isinstance(item, kind):
            fail(f"{argument}[{position}]", name, type(item).__name__,
                 error=TypeError)
    return items


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

    def batch_get_item(self, key: BatchKey) -> Any:
        """The part of the current batch named by ``key`` (an index, a key or attribute name, or
        a ``(getter, setter)`` pair); see :func:`~labelsmooth.trainer.batch.batch_get_item`."""
        return batch_get_item(self.batch, key)

    def batch_set_item(self, key: BatchKey, value: Any) -> None:
        """Write ``value`` into the current batch at ``key`` (tuples are rebuilt, lists and
        mappings set in place); see :func:`~labelsmooth.trainer.batch.batch_set_item`."""
        self.batch = batch_set_item(self.batch, key, value)
