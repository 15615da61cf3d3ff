"""The Trainer: an event-driven training loop that runs algorithms such as ``LabelSmoothing``.

One optimizer step per batch::

    BATCH_START
    for each microbatch (grad_accum of them):
        BEFORE_FORWARD   outputs = model(inputs)          AFTER_FORWARD
        BEFORE_LOSS      loss = loss_fn(outputs, targets)          AFTER_LOSS   (even if it raised)
        BEFORE_BACKWARD  (loss * microbatch share).backward()      AFTER_BACKWARD
    optimizer step, scheduler step
    BATCH_END

With ``LabelSmoothing``, ``MixUp`` or ``CutMix`` the batch holds
:class:`~labelsmooth.trainer.targets.TrainingTargets` from ``BEFORE_LOSS`` to ``AFTER_LOSS``, and
a cross-entropy ``loss_fn`` is computed from them by the fused kernel, with index targets; any
other loss sees the dense target. Training metrics are updated after ``AFTER_LOSS``, on the
original targets, on the device (no host synchronisation per step).

A loss that is not finite stops training with :class:`NonFiniteLossError`, naming the epoch and
step where it first appeared. The check is made on the device's copy of each step's loss when the
host reads from the device anyway: before every checkpoint, evaluation and training log (so no
checkpoint is ever written after a non-finite loss, and the last one written is the last good
one), and before the optimizer step of every ``finite_check_interval``-th step. Between checks
training runs on; with ``finite_check_interval=1`` every step is checked before its optimizer
step, so the weights never see a non-finite loss.

Two model protocols are supported:

- an ``nn.Module`` called as ``model(inputs)`` on ``(inputs, targets)`` batches; the loss is
  ``loss_fn(outputs, targets)``;
- Composer's protocol: a module whose ``forward(batch)`` takes the whole batch and which has a
  ``loss(outputs, batch)`` *method*; ``loss_fn`` is then unused.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import numbers
import os
import random
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from labelsmooth._validation import check_int, fail
from labelsmooth.functional import soft_cross_entropy
from labelsmooth.trainer import distributed as dist_utils
from labelsmooth.trainer.algorithm import Algorithm
from labelsmooth.trainer.batch import (
    _SEQUENCES,
    BatchKey,
    batch_get_item,
    batch_set_item,
    batch_size,
    check_batch_key,
    get_logits,
    split_batch,
)
from labelsmooth.trainer.callback import Callback
from labelsmooth.trainer.checkpoint import (
    check_writable_folder,
    dataloader_generators,
    get_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
)
from labelsmooth.trainer.engine import Engine
from labelsmooth.trainer.events import Event
from labelsmooth.trainer.logger import Logger
from labelsmooth.trainer.metrics import ClassificationMetrics
from labelsmooth.trainer.state import State
from labelsmooth.trainer.targets import TrainingTargets, loss_options, own_smoothing
from labelsmooth.trainer.time import Duration, Timestamp, TimeUnit

__all__ = ["NonFiniteLossError", "Trainer"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
              "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}
CHECKPOINT_FORMAT = 1
# Entered on every evaluation forward in fp32: one reusable context that does nothing.
_NO_AUTOCAST = contextlib.nullcontext()


class NonFiniteLossError(FloatingPointError):
    """The training loss was NaN or infinite; the message names the epoch and step."""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def _close_at_exit(trainer: weakref.ref[Trainer]) -> None:
    alive = trainer()
    if alive is not None:
        alive.close()
    elif torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _to_device(batch: Any, device: torch.device) -> Any:
    if type(batch) in _SEQUENCES:
        for item in batch:
            if type(item) is not torch.Tensor or item.device != device:
                break
        else:
            # The usual (inputs, targets) batch, already there. A list is copied (algorithms set
            # its items in place, and the loader may hand out the same list again).
            return batch if type(batch) is tuple else list(batch)
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple):
        items = [_to_device(value, device) for value in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [_to_device(value, device) for value in batch]
    return batch


def _no_event(event: Event) -> None:
    """Stands in for ``Engine.run_event`` on a step where no algorithm or callback is registered."""


def _uses_batch_protocol(model: torch.nn.Module) -> bool:
    # A `loss` *method* marks Composer's protocol; a loss module stored as `self.loss` does not.
    loss = getattr(type(model), "loss", None)
    return callable(loss) and not isinstance(loss, torch.nn.Module)


def _logits_or_none(outputs: Any) -> torch.Tensor | None:
    # Outputs without logits are reported where the metrics read them, after the loss.
    try:
        return get_logits(outputs)
    except TypeError:
        return None


def _check_iterable(value: Any, argument: str, *, optional: bool) -> Any:
    if value is None and optional:
        return None
    if not hasattr(value, "__iter__"):
        fail(argument, "an iterable of batches (e.g. a torch DataLoader)", type(value).__name__,
             error=TypeError)
    return value


def _as_list(value: Any, argument: str, kind: type) -> list[Any]:
    """One ``kind`` object, ``None`` or an iterable of them, as a new list (as Composer accepts)."""
    name = ("an " if kind.__name__[0] in "AEIOU" else "a ") + kind.__name__
    if value is None:
        return []
    if isinstance(value, kind):
        return [value]
    if not hasattr(value, "__iter__") or isinstance(value, (str, bytes)):
        fail(argument, f"{name}, a sequence of them, or None", type(value).__name__,
             error=TypeError)
    items = list(value)
    for position, item in enumerate(items):
        if not isinstance(item, kind):
            fail(f"{argument}[{position}]", name, type(item).__name__, error=TypeError)
    return items


def _check_keep(value: Any) -> int:
    keep = check_int(value, "save_num_checkpoints_to_keep")
    if keep == 0 or keep < -1:
        fail("save_num_checkpoints_to_keep", "-1 (keep every checkpoint) or an int >= 1", keep)
    return keep


def _check_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail("dist_timeout", "a number of seconds > 0, or None", value, error=TypeError)
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        fail("dist_timeout", "a finite number of seconds > 0, or None", value)
    return seconds


def _check_not_empty(dataloader: Any, argument: str) -> None:
    try:
        length = len(dataloader)
    except TypeError:  # an iterable without a length is checked when it is first iterated
        return
    if length == 0:
        fail(argument, "a dataloader that yields at least one batch", "one of length 0")


class Trainer:
    """Train a model with algorithms and callbacks run at Composer's events.

    Args:
        model: an ``nn.Module`` called as ``model(inputs)`` on ``(inputs, targets)`` batches, or a
            module with ``forward(batch)`` and a ``loss(outputs, batch)`` method (Composer's
            protocol). Moved to ``device``; its parameters are what training changes.
        train_dataloader: yields the training batches (a ``DataLoader`` when distributed).
        max_duration: how long to train: ``"10ep"``, ``"500ba"`` or an int of epochs.
        optimizers: an optimizer or a list. Default: ``Adam(model.parameters(), lr=1e-3)``.
        schedulers: learning-rate schedulers, stepped after every optimizer step. Default: none.
        loss_fn: ``loss_fn(outputs, targets)`` for index or dense targets. Default:
            :func:`~labelsmooth.functional.soft_cross_entropy`.
        algorithms: an :class:`~labelsmooth.trainer.algorithm.Algorithm` or a sequence of
            them, run in order (reversed on ``after`` events).
        callbacks: a :class:`~labelsmooth.trainer.callback.Callback` or a sequence of them.
        eval_dataloader: batches to evaluate on, or ``None``; one of length 0 is refused.
            Default: ``None``.
        eval_interval: evaluate every ``"Nep"`` / ``"Nba"`` (or int of epochs). Default: ``"1ep"``.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:0"``...; a device this
            machine lacks is refused. Default: ``"auto"``.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast and a grad scaler;
            CUDA only). Composer's ``"amp_bf16"`` / ``"amp_fp16"`` are accepted. Default: fp32.
        grad_accum: split every batch into this many microbatches, running the forward, loss and
            backward events per microbatch, with one optimizer step per batch. Default: 1.
        seed: seeds Python, torch and (if imported) numpy once the arguments are checked, and
            seeds the DistributedSampler's shuffle. Default: none (the shuffle seed is then 0).
        save_folder: where checkpoints go (``ep{E}-ba{B}.pt`` and ``latest.pt``), or ``None``.
            Created, and checked to be writable, on construction; temporary files left there
            by a killed save are removed.
        save_interval: checkpoint every ``"Nep"`` / ``"Nba"``; ``None`` means ``"1ep"``. A final
            checkpoint is written when ``fit`` ends.
        save_num_checkpoints_to_keep: keep only the newest ``N`` checkpoints this Trainer wrote
            (older ones are deleted after each save; ``latest.pt`` always names the newest), or
            ``-1`` to keep all. Default: ``-1``.
        load_path: a checkpoint to resume from; training continues where it stopped, and ends
            with bit-identical weights to an uninterrupted run on the same hardware. Records
            of ``log_file`` written after that checkpoint are dropped.
        progress_bar: show a rich progress bar on rank 0. Default: ``True``.
        log_file: a JSON-lines file that gets one record per epoch and per evaluation; checked
            to be writable on construction.
        train_metrics: log the training accuracy, ECE, NLL and loss every epoch. Default:
            ``True``. They are accumulated on the device, a few small operations per step.
        finite_check_interval: check that the loss is finite at least every this many optimizer
            steps (and before every checkpoint, evaluation and log); each check waits for the
            device. ``1`` checks every step before its optimizer step. Default: 100.
        target_key: where the loss (for ``model(inputs)`` models) and the metrics find the
            targets in a batch: an int index, a str key or attribute. Default: ``1``.
        dist_timeout: seconds a rank waits for the others in a collective operation before
            failing, when this Trainer starts the process group; ``None`` keeps PyTorch's
            default (30 minutes for gloo and nccl). Default: ``None``.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from labelsmooth.algorithms import LabelSmoothing
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)))
        >>> trainer = Trainer(torch.nn.Linear(4, 3), DataLoader(data, batch_size=8),
        ...                   max_duration="2ep", algorithms=[LabelSmoothing(0.1)],
        ...                   progress_bar=False, device="cpu")
        >>> trainer.fit()
        >>> trainer.state.timestamp.batch
        8
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_dataloader: Any,
        *,
        max_duration: str | int,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        schedulers: Any = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] = soft_cross_entropy,
        algorithms: Algorithm | Sequence[Algorithm] | None = (),
        callbacks: Callback | Sequence[Callback] | None = (),
        eval_dataloader: Any = None,
        eval_interval: str | int = "1ep",
        device: str | torch.device = "auto",
        precision: str = "fp32",
        grad_accum: int = 1,
        seed: int | None = None,
        save_folder: str | os.PathLike[str] | None = None,
        save_interval: str | int | None = None,
        save_num_checkpoints_to_keep: int = -1,
        load_path: str | os.PathLike[str] | None = None,
        progress_bar: bool = True,
        log_file: str | os.PathLike[str] | None = None,
        target_key: BatchKey = 1,
        dist_timeout: float | None = None,
        train_metrics: bool = True,
        finite_check_interval: int = 100,
    ) -> None:
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        if not isinstance(model, torch.nn.Module):
            fail("model", "a torch.nn.Module", type(model).__name__, error=TypeError)
        _check_iterable(train_dataloader, "train_dataloader", optional=False)
        _check_iterable(eval_dataloader, "eval_dataloader", optional=True)
        if eval_dataloader is not None:
            _check_not_empty(eval_dataloader, "eval_dataloader")
        duration = Duration.parse(max_duration, "max_duration")
        self.eval_interval = Duration.parse(eval_interval, "eval_interval")
        self.save_interval = Duration.parse("1ep" if save_interval is None else save_interval,
                                            "save_interval")
        if not callable(loss_fn):
            fail("loss_fn", "a callable loss_fn(outputs, targets)", loss_fn, error=TypeError)
        if precision not in PRECISIONS:
            fail("precision", f"one of {sorted(PRECISIONS)}", precision)
        self.grad_accum = check_int(grad_accum, "grad_accum", minimum=1)
        self.target_key = check_batch_key(target_key, "target_key")
        algorithms = _as_list(algorithms, "algorithms", Algorithm)
        callbacks = _as_list(callbacks, "callbacks", Callback)
        if not isinstance(progress_bar, bool):
            fail("progress_bar", "a bool", progress_bar, error=TypeError)
        self.save_num_checkpoints_to_keep = _check_keep(save_num_checkpoints_to_keep)
        dist_timeout = _check_timeout(dist_timeout)
        if not isinstance(train_metrics, bool):
            fail("train_metrics", "a bool", train_metrics, error=TypeError)
        self.finite_check_interval = check_int(finite_check_interval, "finite_check_interval",
                                               minimum=1)

        if seed is not None:
            _seed_everything(seed)
        self.device = dist_utils.resolve_device(device)
        self.autocast_dtype = PRECISIONS[precision]
        if self.autocast_dtype is torch.float16 and self.device.type != "cuda":
            fail("precision", "'fp32' or 'bf16' on a CPU ('fp16' needs CUDA for its grad scaler)",
                 precision)
        self._owns_process_group = dist_utils.init_distributed(self.device, timeout=dist_timeout)
        if self._owns_process_group:
            # A process group still alive at interpreter exit aborts the process; close for the
            # user who did not.
            atexit.register(_close_at_exit, weakref.ref(self))
        rank, world_size = dist_utils.get_rank(), dist_utils.get_world_size()

        model.to(self.device)
        if optimizers is None:
            optimizers = torch.optim.Adam(model.parameters(), lr=1e-3)
        shuffle_seed = 0 if seed is None else seed
        self.state = State(
            model, optimizers=optimizers, schedulers=schedulers, max_duration=duration,
            algorithms=algorithms, callbacks=callbacks,
            train_dataloader=dist_utils.distributed_dataloader(
                train_dataloader, argument="train_dataloader", shuffle_seed=shuffle_seed),
            eval_dataloader=None if eval_dataloader is None else dist_utils.distributed_dataloader(
                eval_dataloader, argument="eval_dataloader", shuffle_seed=shuffle_seed),
            device=self.device, rank=rank, world_size=world_size,
        )
        self.loss_fn = loss_fn
        used_loss = model.loss if _uses_batch_protocol(model) else loss_fn
        self._loss_writes_logits = getattr(used_loss, "inplace_backward", False) is True
        self.logger = Logger(self.state, log_file=log_file)
        self.engine = Engine(self.state, self.logger)
        self.save_folder = None if save_folder is None else Path(save_folder)
        if self.save_folder is not None and rank == 0:
            check_writable_folder(self.save_folder, "save_folder")
            remove_stale_temporaries(self.save_folder)
        self._saved_paths: list[Path] = []
        self._warned_uncaptured = False
        # The dataloader's own generators are checkpointed with the global ones.
        self._loader_generators, self._uncaptured_rng = dataloader_generators(
            self.state.train_dataloader)
        self.progress_bar = progress_bar and rank == 0
        self._batch_protocol = _uses_batch_protocol(model)
        self._model_loss: Callable[[Any, Any], torch.Tensor] | None = (
            cast(Callable[[Any, Any], torch.Tensor], model.loss) if self._batch_protocol else None)
        self._forward_model: torch.nn.Module = model
        if world_size > 1:
            self._forward_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._scaler = (torch.amp.GradScaler("cuda") if self.autocast_dtype is torch.float16
                        else None)
        # The loss has been given the same targets: the metrics need not check their range again.
        self._train_metrics = (ClassificationMetrics(device=self.device, track_loss=True,
                                                     validate_args=False)
                               if train_metrics else None)
        # Each step's loss since the last finite check, and the timestamp before the first.
        self._unchecked_losses: list[torch.Tensor] = []
        self._unchecked_from = Timestamp()
        self._eval_metrics = ClassificationMetrics(device=self.device)
        self._epoch_rng: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._last_saved: Timestamp | None = None

        self.engine.run_event(Event.INIT)
        if load_path is not None:
            self.load_checkpoint(load_path)

    # -- public API -----------------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every record logged so far (one per epoch and per evaluation)."""
        return self.logger.history

    def fit(self) -> None:
        """Train until ``max_duration``, evaluating and checkpointing at their intervals.

        The model trains in training mode (dropout on, batch-norm statistics updated) even if it
        was passed in evaluation mode; its mode is put back when ``fit`` returns or raises, so
        only its parameters and buffers change. Calling ``fit`` again after ``max_duration`` is
        reached does nothing.

        Example:
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5)).eval()
            >>> data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
            >>> Trainer(model, DataLoader(data, batch_size=4), max_duration="1ba",
            ...         progress_bar=False, device="cpu").fit()
            >>> model.training
            False
        """
        state = self.state
        assert state.max_duration is not None  # set in __init__
        if state.timestamp.reached(state.max_duration):
            return
        self._check_single_smoothing()
        model = state.model
        was_training = model.training
        model.train()
        try:
            self.engine.run_event(Event.FIT_START)
            progress = self._start_progress()
            try:
                while not state.timestamp.reached(state.max_duration):
                    self._train_epoch(progress)
            finally:
                if progress is not None:
                    progress.stop()
            self.engine.run_event(Event.FIT_END)
        finally:
            model.train(was_training)
        if self.save_folder is not None and self._last_saved != state.timestamp:
            self.save_checkpoint()

    def eval(self) -> dict[str, float]:
        """Evaluate on ``eval_dataloader``: accuracy, ECE and NLL, logged and returned.

        The model runs in evaluation mode under ``torch.no_grad`` (no algorithm changes the
        batch: only the ``EVAL_*`` events fire) and gets its previous mode back afterwards.

        Returns:
            ``{"accuracy": ..., "ece": ..., "nll": ...}`` over the whole eval set (reduced across
            ranks), also appended to :attr:`history` and ``log_file``.

        Raises:
            ValueError: without an ``eval_dataloader``, or if it yields no batch.

        Example:
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))))
            >>> trainer = Trainer(torch.nn.Linear(4, 3), data, max_duration=1,
            ...                   eval_dataloader=data, progress_bar=False, device="cpu")
            >>> sorted(trainer.eval())
            ['accuracy', 'ece', 'nll']
        """
        state = self.state
        if state.eval_dataloader is None:
            fail("eval_dataloader", "a dataloader to evaluate on", None)
        model = state.model
        was_training = model.training
        model.eval()
        try:
            self._eval_metrics.reset()
            self.engine.run_event(Event.EVAL_START)
            batches = 0
            with torch.no_grad():
                for batch in state.eval_dataloader:
                    state.batch = _to_device(batch, self.device)
                    self.engine.run_event(Event.EVAL_BATCH_START)
                    self.engine.run_event(Event.EVAL_BEFORE_FORWARD)
                    with self._autocast():
                        state.outputs = self._forward(state.batch)
                    self.engine.run_event(Event.EVAL_AFTER_FORWARD)
                    self._eval_metrics.update(get_logits(state.outputs), self._targets())
                    self.engine.run_event(Event.EVAL_BATCH_END)
                    batches += 1
            if batches == 0:
                fail("eval_dataloader", "a dataloader that yields at least one batch",
                     "one that yielded nothing")
            results = self._eval_metrics.compute()
            self.logger.log_metrics({"split": "eval", **results})
            self.engine.run_event(Event.EVAL_END)
        finally:
            model.train(was_training)
        return results

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current state (rank 0 writes; every rank must call).

        With ``save_num_checkpoints_to_keep=N`` the oldest checkpoints this Trainer wrote are
        then deleted, so that ``N`` remain. A random generator the dataloader holds that a
        checkpoint cannot hold (see :func:`~labelsmooth.trainer.checkpoint.dataloader_generators`)
        is named in a warning: a run resumed from the file draws other numbers from it.

        Returns:
            The file written on rank 0, ``None`` on other ranks.

        Raises:
            OSError: one line naming the file if the disk is full or the write fails; the
                previous checkpoint is unchanged.
            NonFiniteLossError: if a step since the last check had a non-finite loss (nothing
                is written).
        """
        if self.save_folder is None:
            fail("save_folder", "a folder to save checkpoints in", None)
        self._check_finite()
        state = self.state
        if self._uncaptured_rng and not self._warned_uncaptured:
            self._warned_uncaptured = True
            warnings.warn(
                f"save_checkpoint: {', '.join(self._uncaptured_rng)} "
                f"{'holds' if len(self._uncaptured_rng) == 1 else 'hold'} random state that a "
                "checkpoint cannot hold; a run resumed from it draws different random numbers "
                "there than an uninterrupted run", stacklevel=2)
        rng = dist_utils.all_gather_object({"now": get_rng_state(self._loader_generators),
                                            "epoch": self._epoch_rng})
        # An algorithm may hold per-process state (OnlineLabelSmoothing's partial sums of the
        # epoch): every rank's is kept, and each rank gets its own back on load.
        algorithms = dist_utils.all_gather_object(
            [(type(a).__name__, a.state_dict()) for a in state.algorithms])
        path = None
        if state.rank == 0:
            checkpoint = {
                "format": CHECKPOINT_FORMAT,
                "timestamp": state.timestamp.state_dict(),
                "model": state.model.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in state.optimizers],
                "optimizer_classes": [type(optimizer).__name__ for optimizer in state.optimizers],
                "schedulers": [scheduler.state_dict() for scheduler in state.schedulers],
                "algorithms": algorithms[0],
                **({"algorithms_per_rank": algorithms} if len(algorithms) > 1 else {}),
                "callbacks": [(type(c).__name__, c.state_dict()) for c in state.callbacks],
                "scaler": None if self._scaler is None else self._scaler.state_dict(),
                "rng": rng,
            }
            stamp = state.timestamp
            path = save_checkpoint(checkpoint, self.save_folder / f"ep{stamp.epoch}-ba{stamp.batch}.pt",
                                   also=self.save_folder / "latest.pt")
            self._remove_old_checkpoints(path)
        dist_utils.barrier()
        self._last_saved = state.timestamp
        return path

    def _remove_old_checkpoints(self, newest: Path) -> None:
        if newest in self._saved_paths:
            self._saved_paths.remove(newest)
        self._saved_paths.append(newest)
        if self.save_num_checkpoints_to_keep == -1:
            return
        while len(self._saved_paths) > self.save_num_checkpoints_to_keep:
            with contextlib.suppress(FileNotFoundError):
                self._saved_paths.pop(0).unlink()

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`, to continue training.

        Restores the model, optimizers and algorithms (checked by class and count), schedulers,
        callbacks (matched by class), the grad scaler, the timestamp and this rank's random
        states, including those of the training dataloader's generators; the next :meth:`fit`
        continues where the checkpoint was written. Records of ``log_file`` written after the
        checkpoint are dropped (see :meth:`Logger.drop_records_after
        <labelsmooth.trainer.logger.Logger.drop_records_after>`).

        Args:
            path: a file written by :meth:`save_checkpoint` (``load_path`` in the constructor).

        Raises:
            ValueError: if ``path`` is missing, empty, truncated, corrupted or not a labelsmooth
                checkpoint, or holds a different number of optimizers, schedulers or
                algorithms than this Trainer.
            TypeError: if an optimizer's or algorithm's class differs from the checkpoint's at
                its position.
        """
        if not Path(path).is_file():
            fail("load_path", "an existing checkpoint file", str(path))
        checkpoint = load_checkpoint(path, map_location=self.device, argument="load_path")
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            fail("load_path", f"a labelsmooth checkpoint (format {CHECKPOINT_FORMAT})", str(path))
        state = self.state
        for name, mine, saved in (("optimizers", state.optimizers, checkpoint["optimizers"]),
                                  ("schedulers", state.schedulers, checkpoint["schedulers"]),
                                  ("algorithms", state.algorithms, checkpoint["algorithms"])):
            if len(mine) != len(saved):
                fail("load_path", f"a checkpoint with {len(mine)} {name}, as this Trainer has",
                     f"one with {len(saved)}")
        # Checkpoints written before optimizer classes were recorded are not checked.
        for position, (optimizer, name) in enumerate(zip(
                state.optimizers, checkpoint.get("optimizer_classes", []), strict=False)):
            if type(optimizer).__name__ != name:
                fail(f"optimizers[{position}]",
                     f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}, as in the checkpoint",
                     type(optimizer).__name__, error=TypeError)
        saved_generators = len(checkpoint["rng"][0]["now"].get("generators", []))
        if saved_generators != len(self._loader_generators):
            fail("train_dataloader", f"{saved_generators} torch.Generator(s) in its sampler or "
                 "dataset, as when the checkpoint was written", f"{len(self._loader_generators)}")
        saved_algorithms = zip(state.algorithms, checkpoint["algorithms"], strict=True)
        for position, (algorithm, (name, _)) in enumerate(saved_algorithms):
            if type(algorithm).__name__ != name:
                fail(f"algorithms[{position}]", f"a {name}, as in the checkpoint",
                     type(algorithm).__name__, error=TypeError)
        state.model.load_state_dict(checkpoint["model"])
        for optimizer, saved in zip(state.optimizers, checkpoint["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(state.schedulers, checkpoint["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        per_rank = checkpoint.get("algorithms_per_rank") or [checkpoint["algorithms"]]
        for algorithm, (_, saved) in zip(state.algorithms, per_rank[state.rank % len(per_rank)],
                                         strict=True):
            algorithm.load_state_dict(saved)
        # Callbacks observe and may differ between runs (a progress printer added on resume):
        # each gets the state of the first saved callback of its class not yet taken.
        saved_callbacks = list(checkpoint["callbacks"])
        for callback in state.callbacks:
            for index, (name, saved) in enumerate(saved_callbacks):
                if name == type(callback).__name__:
                    callback.load_state_dict(saved)
                    del saved_callbacks[index]
                    break
        if self._scaler is not None and checkpoint["scaler"] is not None:
            self._scaler.load_state_dict(checkpoint["scaler"])
        state.timestamp = Timestamp.from_state_dict(checkpoint["timestamp"])
        # Each rank continues its own random streams (bit-identical with the same world size).
        saved_rng = checkpoint["rng"][state.rank % len(checkpoint["rng"])]
        self._pending_rng, self._epoch_rng = saved_rng["now"], saved_rng["epoch"]
        self._last_saved = state.timestamp
        self.logger.drop_records_after(state.timestamp)

    def close(self) -> None:
        """Destroy the process group if this Trainer started it (also done at interpreter exit)."""
        if self._owns_process_group:
            # Free the DDP wrapper first: its reducer still refers to the process group.
            self._forward_model = self.state.model
            torch.distributed.destroy_process_group()
            self._owns_process_group = False

    # -- the loop -------------------------------------------------------------------------------

    def _start_progress(self) -> Any:
        if not self.progress_bar:
            return None
        from labelsmooth.trainer.progress import ProgressBar

        state = self.state
        assert state.max_duration is not None  # set in __init__
        per_epoch = self._batches_per_epoch()
        if state.max_duration.unit is TimeUnit.BATCH:
            total: int | None = state.max_duration.value
        else:
            total = None if per_epoch is None else per_epoch * state.max_duration.value
        return ProgressBar(total, completed=state.timestamp.batch)

    def _batches_per_epoch(self) -> int | None:
        try:
            return len(self.state.train_dataloader)
        except TypeError:
            return None

    def _epoch_iterator(self) -> Iterator[Any]:
        """The epoch's batches; after a mid-epoch resume, the ones not yet trained on.

        With a ``save_folder``, the random state at the start of the epoch is kept (and
        checkpointed) so that a resumed run rebuilds the same shuffle, skips the batches already
        trained on, and then continues from the random state at the checkpoint.
        """
        state = self.state
        dataloader = state.train_dataloader
        for sampler in (getattr(dataloader, "sampler", None), getattr(dataloader, "batch_sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(state.timestamp.epoch)
        skip = state.timestamp.batch_in_epoch
        if skip == 0:
            # Only a checkpoint needs it (reading numpy's state alone takes tens of microseconds).
            self._epoch_rng = (get_rng_state(self._loader_generators)
                               if self.save_folder is not None else None)
            return iter(dataloader)
        if self._epoch_rng is None or self._pending_rng is None:
            fail("load_path", "a checkpoint with the random state of its epoch", "none")
        self._restore_rng(self._epoch_rng)
        iterator = iter(dataloader)
        for skipped in range(skip):
            try:
                next(iterator)
            except StopIteration:
                fail("train_dataloader", f"at least {skip} batches per epoch, as when the "
                     "checkpoint was written", f"{skipped}")
        self._restore_rng(self._pending_rng)
        self._pending_rng = None
        return iterator

    def _restore_rng(self, saved: dict[str, Any]) -> None:
        set_rng_state(saved, self._loader_generators, argument="train_dataloader")

    def _train_epoch(self, progress: Any) -> None:
        state, engine = self.state, self.engine
        assert state.max_duration is not None  # set in __init__
        resuming = state.timestamp.batch_in_epoch > 0
        if not resuming:
            if self._pending_rng is not None:
                # Resumed at an epoch boundary: continue the random streams from the checkpoint,
                # before anything at EPOCH_START can draw from them.
                self._restore_rng(self._pending_rng)
                self._pending_rng = None
            if self._train_metrics is not None:
                self._train_metrics.reset()
            engine.run_event(Event.EPOCH_START)
        iterator = self._epoch_iterator()
        per_epoch = self._batches_per_epoch()
        trained = False
        while per_epoch is None or state.timestamp.batch_in_epoch < per_epoch:
            fire = self._step_events()
            fire(Event.BEFORE_DATALOADER)
            try:
                batch = next(iterator)
            except StopIteration:
                break
            state.batch = _to_device(batch, self.device)
            fire(Event.AFTER_DATALOADER)
            self._train_batch(fire)
            trained = True
            if progress is not None:
                progress.update(epoch=state.timestamp.epoch, completed=state.timestamp.batch,
                                loss=state.loss)
            self._run_intervals(TimeUnit.BATCH)
            if state.max_duration.unit is TimeUnit.BATCH and state.timestamp.reached(state.max_duration):
                if per_epoch is None or state.timestamp.batch_in_epoch < per_epoch:
                    self._log_train_metrics()
                    return
        if not trained and not resuming:
            fail("train_dataloader", "a dataloader that yields at least one batch",
                 f"one that yielded nothing in epoch {state.timestamp.epoch}")
        state.timestamp = state.timestamp.to_next_epoch()
        self._log_train_metrics()
        engine.run_event(Event.EPOCH_END)
        self._run_intervals(TimeUnit.EPOCH)

    def _run_intervals(self, unit: TimeUnit) -> None:
        stamp = self.state.timestamp
        if (self.state.eval_dataloader is not None and self.eval_interval.unit is unit
                and stamp.is_multiple_of(self.eval_interval)):
            self._check_finite()
            self.eval()
        if (self.save_folder is not None and self.save_interval.unit is unit
                and stamp.is_multiple_of(self.save_interval)):
            self.save_checkpoint()

    def _log_train_metrics(self) -> None:
        self._check_finite()
        metrics: dict[str, Any] = {"split": "train"}
        if self._train_metrics is not None:
            metrics |= self._train_metrics.compute()
        if self.state.optimizers:
            metrics["lr"] = self.state.optimizers[0].param_groups[0]["lr"]
        for algorithm in self.state.algorithms:
            metrics |= algorithm.train_metrics()
        self.logger.log_metrics(metrics)

    def _step_events(self) -> Callable[[Event], object]:
        """What fires the events of the next step: ``Engine.run_event``, or a no-op while no
        algorithm or callback is registered (nothing then listens, and nothing can be registered
        during the step, since only algorithms and callbacks run code at its events)."""
        state = self.state
        return self.engine.run_event if state.algorithms or state.callbacks else _no_event

    def _train_batch(self, fire: Callable[[Event], object] | None = None) -> None:
        state = self.state
        if fire is None:
            fire = self._step_events()
        fire(Event.BATCH_START)
        full_batch = state.batch
        examples = batch_size(full_batch)
        for optimizer in state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.grad_accum == 1:
            batch_loss = self._train_microbatch(1.0, fire)
        else:
            batch_loss = self._train_microbatches(full_batch, examples, fire)
        state.batch = full_batch
        state.loss = batch_loss
        if not self._unchecked_losses:
            self._unchecked_from = state.timestamp
        self._unchecked_losses.append(batch_loss)
        if len(self._unchecked_losses) >= self.finite_check_interval:
            self._check_finite()
        for optimizer in state.optimizers:
            if self._scaler is not None:
                self._scaler.step(optimizer)
            else:
                optimizer.step()
        if self._scaler is not None:
            self._scaler.update()
        for scheduler in state.schedulers:
            scheduler.step()
        state.timestamp = state.timestamp.to_next_batch(examples * state.world_size)
        fire(Event.BATCH_END)

    def _train_microbatches(self, full_batch: Any, examples: int,
                            fire: Callable[[Event], object]) -> torch.Tensor:
        """Forward, loss and backward of each of ``grad_accum`` microbatches; returns the batch's
        loss, the microbatch losses weighted by their share of the examples."""
        state = self.state
        microbatches = split_batch(full_batch, self.grad_accum)
        batch_loss = torch.zeros((), device=self.device)
        for position, microbatch in enumerate(microbatches):
            state.batch = microbatch
            share = batch_size(microbatch) / examples
            last = position == len(microbatches) - 1
            # DDP all-reduces gradients in backward; only the last microbatch's needs to.
            no_sync = (self._forward_model.no_sync() if not last and isinstance(
                self._forward_model, torch.nn.parallel.DistributedDataParallel)
                else contextlib.nullcontext())
            with no_sync:
                loss = self._train_microbatch(share, fire)
            batch_loss += loss.float() * share
        return batch_loss

    def _train_microbatch(self, share: float, fire: Callable[[Event], object]) -> torch.Tensor:
        """Forward, loss and backward of the batch in ``state.batch``, weighted by ``share``;
        returns the loss, detached."""
        state = self.state
        # AFTER_FORWARD and AFTER_LOSS fire even when the forward or the loss raises, so that
        # algorithms undo what they changed (MixUp's inputs, every algorithm's targets). The
        # try/finally blocks are Engine.run_around written out: this runs on every step.
        try:
            fire(Event.BEFORE_FORWARD)
            if self.autocast_dtype is None:  # fp32: no context to enter on every step
                state.outputs = self._forward(state.batch)
            else:
                with self._autocast():
                    state.outputs = self._forward(state.batch)
        finally:
            fire(Event.AFTER_FORWARD)
        # A loss may write its gradient into the logits (inplace_backward=True); the metrics
        # read a copy taken before it runs, and any other loss that does is refused.
        before = _logits_or_none(state.outputs)
        snapshot = (before.detach().clone() if before is not None and self._loss_writes_logits
                    else None)
        version = None if before is None else before._version
        try:
            fire(Event.BEFORE_LOSS)
            if self.autocast_dtype is None:
                state.loss = self._loss()
            else:
                with self._autocast():
                    state.loss = self._loss()
        finally:
            fire(Event.AFTER_LOSS)
        targets = self._targets()
        if isinstance(targets, TrainingTargets):
            raise RuntimeError(
                "training targets still in the batch after AFTER_LOSS: an algorithm that adds "
                "its part at BEFORE_LOSS must take it out at AFTER_LOSS")
        logits = get_logits(state.outputs)
        if snapshot is None and logits is before and logits._version != version:
            fail("loss_fn", "a loss that leaves the logits unchanged (the training metrics read "
                 "them after the loss), or one with an inplace_backward=True attribute",
                 "one that wrote into the logits")
        loss = state.loss
        value = loss.detach()
        if self._train_metrics is not None:
            self._train_metrics.update(logits if snapshot is None else snapshot, targets,
                                       loss=value)
        fire(Event.BEFORE_BACKWARD)
        scaled = state.loss if share == 1.0 else state.loss * share
        (self._scaler.scale(scaled) if self._scaler is not None else scaled).backward()
        fire(Event.AFTER_BACKWARD)
        # The loss optimised, detached: an algorithm or callback may have replaced it.
        return value if state.loss is loss else state.loss.detach()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return _NO_AUTOCAST
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _inputs(self, batch: Any) -> Any:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            fail("batch", "an (inputs, targets) pair for a model called as model(inputs) (or a "
                 "model with forward(batch) and loss(outputs, batch))",
                 f"a {type(batch).__name__}" + (f" of {len(batch)} items"
                                                if isinstance(batch, (tuple, list)) else ""))
        return batch[0]

    def _forward(self, batch: Any) -> Any:
        if self._batch_protocol:
            return self._forward_model(batch)
        return self._forward_model(self._inputs(batch))

    def _targets(self) -> Any:
        return batch_get_item(self.state.batch, self.target_key, argument="target_key")

    def _loss(self) -> torch.Tensor:
        """The loss of the microbatch.

        Training targets written by ``LabelSmoothing``, ``MixUp`` or ``CutMix`` go through the
        fused cross-entropy, from the index targets, when ``loss_fn`` is one of the
        cross-entropies :func:`~labelsmooth.trainer.targets.loss_options` knows; any other loss
        sees them as the dense target tensor, or, when a mix asks to interpolate the loss, is
        computed once per mixed component and the results weighted.
        """
        state = self.state
        targets = self._targets()
        if not isinstance(targets, TrainingTargets):
            return self._loss_term(state.batch, targets)
        options = None if self._model_loss is not None else loss_options(self.loss_fn)
        if options is not None and isinstance(state.outputs, torch.Tensor):
            return targets.cross_entropy(state.outputs, **options)
        if not targets.interpolate:
            return self._loss_term(state.batch, targets)
        total: torch.Tensor | None = None
        try:
            for weight, part in targets.terms():
                state.batch = batch_set_item(state.batch, self.target_key, part, argument="target_key")
                term = weight * self._loss_term(state.batch, part)
                total = term if total is None else total + term
        finally:
            state.batch = batch_set_item(state.batch, self.target_key, targets, argument="target_key")
        assert total is not None  # there is always a component
        return total

    def _loss_term(self, batch: Any, targets: Any) -> torch.Tensor:
        if self._model_loss is not None:
            return self._model_loss(self.state.outputs, batch)
        return self.loss_fn(self.state.outputs, targets)

    def _check_single_smoothing(self) -> None:
        """Refuse ``LabelSmoothing`` or ``OnlineLabelSmoothing`` with a loss that smooths by
        itself (the targets would be smoothed twice)."""
        if self._model_loss is not None:
            return
        from labelsmooth.algorithms import LabelSmoothing, OnlineLabelSmoothing

        smoothing = own_smoothing(self.loss_fn)
        smoothers = [a for a in self.state.algorithms
                     if isinstance(a, (LabelSmoothing, OnlineLabelSmoothing))]
        if smoothing > 0.0 and smoothers:
            fail("loss_fn", f"a loss that does not smooth by itself when {type(smoothers[0]).__name__} "
                 "is among the algorithms (e.g. the default, or SmoothedCrossEntropyLoss(0.0))",
                 f"{self.loss_fn!r}, which smooths by {smoothing}")

    def _check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a step since the last check had a non-finite loss.

        One host synchronisation for all the steps since the last check (and one all-reduce
        when distributed, so that every rank stops at the same check).
        """
        losses, self._unchecked_losses = self._unchecked_losses, []
        if not losses:
            return
        values = torch.stack(losses).tolist()  # the one read of the device
        finite = [math.isfinite(value) for value in values]
        if dist_utils.all_ranks_agree(all(finite), self.device):
            return
        # Training cannot go on from here: every later check fails too.
        self._unchecked_losses = losses
        first = self._unchecked_from
        if all(finite):
            where = (f"at epoch {first.epoch}, between batches {first.batch_in_epoch + 1} and "
                     f"{first.batch_in_epoch + len(losses)} of the epoch (steps {first.batch + 1} "
                     f"to {first.batch + len(losses)})")
            value = "a non-finite loss on another rank"
        else:
            bad = finite.index(False)
            where = (f"at epoch {first.epoch}, batch {first.batch_in_epoch + bad + 1} of the epoch "
                     f"(step {first.batch + bad + 1})")
            value = f"{values[bad]}"
        raise NonFiniteLossError(
            f"loss: expected a finite value {where}, got {value}; training stopped at the "
            "first check after it, and no checkpoint was written after it")
