"""The Trainer end to end: LabelSmoothing inside the loop, event order, the loss, precision,
microbatches, both model protocols, metrics, logging, and every bad-input case."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_task import NUM_CLASSES, make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer import (
    Algorithm,
    Callback,
    Event,
    NonFiniteLossError,
    State,
    TrainingTargets,
)
from labelsmooth.trainer.checkpoint import load_checkpoint
from labelsmooth.trainer.time import Duration, TimeUnit


def _trainer(model: torch.nn.Module | None = None, loader: Any = None, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {"max_duration": "1ep", "device": "cpu", "progress_bar": False}
    options.update(kwargs)
    return Trainer(model if model is not None else make_model(),
                   loader if loader is not None else make_loader(make_dataset(32)), **options)


class EventRecorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def run_event(self, event: Event, state: State, logger: Any) -> None:
        self.events.append(event.value)


class LossInspector(Callback):
    """Keeps each batch's target object at AFTER_DATALOADER and checks it at AFTER_LOSS."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.checked = 0

    def after_dataloader(self, state: State, logger: Any) -> None:
        self.targets, self.values = state.batch[1], state.batch[1].clone()

    def after_loss(self, state: State, logger: Any) -> None:
        assert state.batch[1] is self.targets
        assert torch.equal(state.batch[1], self.values)
        expected = F.cross_entropy(state.outputs, self.targets, label_smoothing=self.smoothing)
        torch.testing.assert_close(state.loss, expected)
        self.checked += 1


def test_label_smoothing_in_the_loop_restores_targets_and_matches_torch_loss() -> None:
    inspector = LossInspector(0.2)
    _trainer(max_duration="2ep", algorithms=[LabelSmoothing(smoothing=0.2)],
             callbacks=[inspector]).fit()
    assert inspector.checked == 4


def test_without_algorithms_the_loss_is_plain_cross_entropy() -> None:
    inspector = LossInspector(0.0)
    _trainer(callbacks=[inspector]).fit()
    assert inspector.checked == 2


def test_short_run_learns_the_task_with_label_smoothing() -> None:
    data, model = make_dataset(256), make_model()
    trainer = _trainer(model, make_loader(data, 32, shuffle=True), max_duration="10ep",
                       optimizers=torch.optim.Adam(model.parameters(), lr=0.02),
                       algorithms=[LabelSmoothing(0.1)], seed=0,
                       eval_dataloader=make_loader(make_dataset(128, seed=1), 64), eval_interval="10ep")
    trainer.fit()
    train = [r for r in trainer.history if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    final = [r for r in trainer.history if r["split"] == "eval"][-1]
    assert final["accuracy"] > 0.85, final


def test_events_fire_in_composer_order() -> None:
    recorder = EventRecorder()
    _trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="2ep", grad_accum=2,
             callbacks=[recorder], eval_dataloader=make_loader(make_dataset(8), 8)).fit()
    micro = ["before_forward", "after_forward", "before_loss", "after_loss", "before_backward",
             "after_backward"]
    batch = ["before_dataloader", "after_dataloader", "batch_start", *micro, *micro, "batch_end"]
    evaluation = ["eval_start", "eval_batch_start", "eval_before_forward", "eval_after_forward",
                  "eval_batch_end", "eval_end"]
    epoch = ["epoch_start", *batch, *batch, "epoch_end", *evaluation]
    assert recorder.events == ["init", "fit_start", *epoch, *epoch, "fit_end"]


def test_a_callback_added_between_fits_gets_every_event_of_the_next_steps() -> None:
    """Steps with no algorithm and no callback fire nothing; whether anything listens is asked
    again at every step, so a callback appended to the state afterwards hears every event."""
    trainer = _trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep")
    trainer.fit()
    recorder = EventRecorder()
    trainer.state.callbacks.append(recorder)
    trainer.state.max_duration = Duration(3, TimeUnit.BATCH)
    trainer.fit()
    micro = ["before_forward", "after_forward", "before_loss", "after_loss", "before_backward",
             "after_backward"]
    assert recorder.events == ["fit_start", "epoch_start", "before_dataloader", "after_dataloader",
                               "batch_start", *micro, "batch_end", "fit_end"]


class Nested(Algorithm):
    """Records the order it runs in at the forward and loss events."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.AFTER_FORWARD)

    def apply(self, event: Event, state: State, logger: Any) -> None:
        self.log.append(f"{self.name}:{event.value}")


def test_after_events_run_first_in_last_out_with_two_algorithms() -> None:
    log: list[str] = []
    _trainer(make_model(), make_loader(make_dataset(8), 8),
             algorithms=[Nested("a", log), Nested("b", log)]).fit()
    assert log == ["b:after_forward", "a:after_forward", "a:before_loss", "b:before_loss",
                   "b:after_loss", "a:after_loss"]


def test_after_loss_runs_and_targets_come_back_when_the_loss_raises() -> None:
    seen: list[torch.Tensor] = []

    class Watch(Callback):
        def after_dataloader(self, state: State, logger: Any) -> None:
            self.targets = state.batch[1]

        def after_loss(self, state: State, logger: Any) -> None:
            seen.append(state.batch[1])
            assert state.batch[1] is self.targets

    def exploding_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert targets.is_floating_point()  # smoothed when the loss runs
        raise RuntimeError("loss exploded")

    with pytest.raises(RuntimeError, match="loss exploded"):
        _trainer(loss_fn=exploding_loss, algorithms=[LabelSmoothing(0.1)], callbacks=[Watch()]).fit()
    assert len(seen) == 1 and not seen[0].is_floating_point()


def test_after_forward_runs_and_inputs_come_back_when_the_forward_raises() -> None:
    from labelsmooth import MixUp

    inputs, targets = torch.randn(8, 4), torch.arange(8) % NUM_CLASSES
    batch = [inputs, targets]  # a list batch: algorithms set its items in place

    class Exploding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x is not inputs  # MixUp's mixed inputs reached the model
            raise RuntimeError("forward exploded")

    mixup = MixUp(alpha=0.4, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(Exploding(), [batch], algorithms=[mixup])
    with pytest.raises(RuntimeError, match="forward exploded"):
        trainer.fit()
    # The State's batch (what callbacks and a post-mortem see) holds the real inputs again.
    assert trainer.state.batch[0] is inputs
    assert batch[0] is inputs and batch[1] is targets


def test_grad_accum_gives_the_full_batch_update() -> None:
    data = make_dataset(24, dtype=torch.float64)
    results = []
    for grad_accum in (1, 3):
        model = make_model(dtype=torch.float64)
        _trainer(model, make_loader(data, 12), grad_accum=grad_accum, algorithms=[LabelSmoothing(0.1)],
                 optimizers=torch.optim.SGD(model.parameters(), lr=0.5)).fit()
        results.append(torch.nn.utils.parameters_to_vector(model.parameters()))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


class ComposerStyle(torch.nn.Module):
    """Composer's protocol: forward(batch) and a loss(outputs, batch) method; dict batches."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.net(batch["x"])}

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"], batch["labels"])


def _dict_loader(n: int = 32) -> Any:
    data = make_dataset(n)
    return torch.utils.data.DataLoader(
        [{"x": x, "labels": y} for x, y in zip(data.tensors[0], data.tensors[1], strict=True)],
        batch_size=16)


def test_composer_protocol_model_with_label_smoothing() -> None:
    checked = []

    class Check(Callback):
        def after_dataloader(self, state: State, logger: Any) -> None:
            self.labels = state.batch["labels"]

        def after_loss(self, state: State, logger: Any) -> None:
            assert state.batch["labels"] is self.labels
            expected = F.cross_entropy(state.outputs["logits"], self.labels, label_smoothing=0.3)
            torch.testing.assert_close(state.loss, expected)
            checked.append(True)

    trainer = _trainer(ComposerStyle(), _dict_loader(), target_key="labels",
                       algorithms=[LabelSmoothing(0.3, target_key="labels")], callbacks=[Check()],
                       eval_dataloader=_dict_loader(16))
    trainer.fit()
    assert len(checked) == 2
    assert {r["split"] for r in trainer.history} == {"train", "eval"}


def test_a_module_with_a_loss_submodule_is_called_on_inputs() -> None:
    class WithLossModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()
            self.loss = torch.nn.CrossEntropyLoss()  # a submodule, not Composer's loss method

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            assert isinstance(inputs, torch.Tensor)
            return self.net(inputs)

    inspector = LossInspector(0.0)
    _trainer(WithLossModule(), callbacks=[inspector]).fit()
    assert inspector.checked == 2


def test_bf16_autocast_runs_the_model_in_bfloat16() -> None:
    dtypes = []

    class Dtype(Callback):
        def after_forward(self, state: State, logger: Any) -> None:
            dtypes.append(state.outputs.dtype)

    model = make_model()
    trainer = _trainer(model, precision="bf16", algorithms=[LabelSmoothing(0.1)], callbacks=[Dtype()])
    trainer.fit()
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(trainer.history[-1]["loss"])


def test_max_duration_in_batches_stops_mid_epoch() -> None:
    trainer = _trainer(make_model(), make_loader(make_dataset(64), 8), max_duration="5ba")
    trainer.fit()
    stamp = trainer.state.timestamp
    assert (stamp.epoch, stamp.batch, stamp.batch_in_epoch, stamp.sample) == (0, 5, 5, 40)
    assert [r["split"] for r in trainer.history] == ["train"]
    trainer.fit()  # already done: nothing more
    assert trainer.state.timestamp.batch == 5


def test_schedulers_step_after_every_batch() -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = _trainer(model, make_loader(make_dataset(32), 8), optimizers=optimizer,
                       schedulers=scheduler)
    trainer.fit()
    assert optimizer.param_groups[0]["lr"] == 0.5**4
    assert trainer.history[-1]["lr"] == 0.5**4


def test_log_file_gets_one_json_record_per_epoch_and_evaluation(tmp_path: Any) -> None:
    log_file = tmp_path / "run" / "log.jsonl"
    _trainer(max_duration="2ep", log_file=log_file, eval_dataloader=make_loader(make_dataset(8))).fit()
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records] == [
        ("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]
    assert set(records[0]) == {"epoch", "batch", "sample", "split", "loss", "accuracy", "ece",
                               "nll", "lr"}
    assert set(records[1]) == {"epoch", "batch", "sample", "split", "accuracy", "ece", "nll"}


def test_progress_bar_shows_epoch_and_loss(capsys: Any) -> None:
    _trainer(progress_bar=True).fit()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "epoch 1" in text and "loss" in text and "2/2" in text


def test_progress_bar_reads_the_loss_at_most_once_per_redraw(monkeypatch: Any) -> None:
    """Reading a GPU loss waits for the device: not after every batch, only once per redraw."""
    from labelsmooth.trainer import progress as progress_module

    class CountingLoss:
        reads = 0

        def __float__(self) -> float:
            CountingLoss.reads += 1
            return 1.5

    clock = [100.0]
    monkeypatch.setattr(progress_module, "monotonic", lambda: clock[0])
    bar = progress_module.ProgressBar(50)
    try:
        for batch in range(20):
            bar.update(epoch=0, completed=batch + 1, loss=CountingLoss())  # type: ignore[arg-type]
        assert CountingLoss.reads == 1
        assert bar._progress.tasks[0].completed == 1  # the bar itself is updated once per redraw too
        clock[0] += 1.0  # ten redraw intervals later
        bar.update(epoch=0, completed=21, loss=CountingLoss())  # type: ignore[arg-type]
        assert CountingLoss.reads == 2
        assert bar._progress.tasks[0].fields["loss"] == "1.5000"
        assert bar._progress.tasks[0].completed == 21
        bar.update(epoch=1, completed=22, loss=CountingLoss())  # type: ignore[arg-type]
    finally:
        bar.stop()
    assert bar._progress.tasks[0].completed == 22 and CountingLoss.reads == 3  # stop shows the last


def test_nothing_the_user_passed_is_mutated() -> None:
    data = make_dataset(32)
    inputs, targets = (t.clone() for t in data.tensors)
    loader = make_loader(data, 8, shuffle=True)
    sampler = loader.sampler
    algorithms = [LabelSmoothing(0.1)]
    listed = list(algorithms)
    Trainer(make_model(), loader, max_duration="1ep", algorithms=algorithms, progress_bar=False,
            device="cpu", grad_accum=2).fit()
    assert torch.equal(data.tensors[0], inputs) and torch.equal(data.tensors[1], targets)
    assert loader.sampler is sampler and algorithms == listed
    assert algorithms[0].smoothing == 0.1


def test_a_list_batch_handed_out_again_is_never_written_to() -> None:
    data = make_dataset(16)
    batches = [list(data.tensors)]  # the same list object every epoch
    inputs, targets = batches[0]
    seen: list[tuple[bool, bool]] = []

    class Watch(Callback):
        def run_event(self, event: Event, state: Any, logger: Any) -> None:
            if event is Event.BEFORE_LOSS:  # the targets in the Trainer's batch are smoothed now
                seen.append((state.batch is batches[0], batches[0][1] is targets))

    Trainer(make_model(), batches, max_duration="2ep", algorithms=[LabelSmoothing(0.1)],
            callbacks=[Watch()], progress_bar=False, device="cpu").fit()
    assert seen == [(False, True), (False, True)]
    assert batches[0][0] is inputs and batches[0][1] is targets


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fit_trains_in_training_mode_and_gives_the_users_mode_back(mode: str) -> None:
    """A model passed in eval mode would train with dropout off; evaluations between epochs
    must not leave it in eval mode either; after fit the user's mode is back."""
    seen: list[tuple[str, bool]] = []

    class Mode(Callback):
        def before_forward(self, state: State, logger: Any) -> None:
            seen.append(("train", state.model.training))

        def eval_before_forward(self, state: State, logger: Any) -> None:
            seen.append(("eval", state.model.training))

    model = torch.nn.Sequential(make_model(), torch.nn.Dropout(0.5))
    model.train(mode == "train")
    _trainer(model, make_loader(make_dataset(16), 8), max_duration="2ep", callbacks=[Mode()],
             eval_dataloader=make_loader(make_dataset(8), 8)).fit()
    assert seen == [("train", True)] * 2 + [("eval", False)] + [("train", True)] * 2 + [("eval", False)]
    assert model.training is (mode == "train")
    assert all(module.training is (mode == "train") for module in model.modules())


class BadAlgorithm(Algorithm):
    """Writes training targets into the batch and never takes them out."""

    def match(self, event: Event, state: State) -> bool:
        return event == Event.BEFORE_LOSS

    def apply(self, event: Event, state: State, logger: Any) -> None:
        targets = TrainingTargets.of(state.batch[1], state.outputs).replace(smoothing=0.1)
        state.batch = (state.batch[0], targets)


def test_training_targets_left_in_the_batch_after_the_loss_raise() -> None:
    with pytest.raises(RuntimeError, match="training targets still in the batch after AFTER_LOSS"):
        _trainer(algorithms=[BadAlgorithm()]).fit()


# -- bad input ----------------------------------------------------------------------------------

def test_unknown_duration_string_raises() -> None:
    with pytest.raises(ValueError, match="max_duration: expected an int number of epochs or a string"):
        _trainer(max_duration="10 epochs")
    with pytest.raises(ValueError, match="eval_interval: expected"):
        _trainer(eval_interval="1 epoch")
    with pytest.raises(ValueError, match="save_interval: expected"):
        _trainer(save_interval="3x")


def test_empty_dataloader_raises() -> None:
    empty = make_loader(make_dataset(0))
    with pytest.raises(ValueError, match="train_dataloader: expected a dataloader that yields at least one batch"):
        _trainer(loader=empty).fit()
    # An eval dataloader of length 0 is refused before any training; an iterable without a
    # length when it is first evaluated.
    with pytest.raises(ValueError, match="eval_dataloader: expected a dataloader that yields at "
                       "least one batch, got one of length 0"):
        _trainer(eval_dataloader=empty)

    class NoBatches:
        def __iter__(self) -> Any:
            return iter(())

    trainer = _trainer(eval_dataloader=NoBatches())
    with pytest.raises(ValueError, match="eval_dataloader: expected a dataloader that yields at least one batch"):
        trainer.eval()


def test_missing_target_key_raises() -> None:
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute of the batch"):
        _trainer(algorithms=[LabelSmoothing(0.1, target_key=2)]).fit()
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute of the batch"):
        _trainer(ComposerStyle(), _dict_loader(), target_key="y").fit()


def test_outputs_with_no_logits_raise() -> None:
    class NoLogits(ComposerStyle):
        def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"scores": self.net(batch["x"])}

        def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(outputs["scores"], batch["labels"])

    with pytest.raises(TypeError, match=r"state\.outputs: expected a logits tensor"):
        _trainer(NoLogits(), _dict_loader(), target_key="labels",
                 algorithms=[LabelSmoothing(target_key="labels")]).fit()
    with pytest.raises(TypeError, match="outputs: expected a logits tensor"):
        _trainer(NoLogits(), _dict_loader(), target_key="labels").fit()


def test_a_loss_replaced_before_backward_is_the_batch_loss_and_the_one_checked() -> None:
    """A callback that replaces the loss at BEFORE_BACKWARD (a penalty, say) changes what is
    optimised: the batch's loss in the state is the new one, and a non-finite one stops
    training at that step."""
    seen: list[tuple[str, float]] = []

    class Replaces(Callback):
        def after_loss(self, state: Any, logger: Any) -> None:
            seen.append(("computed", state.loss.item()))

        def before_backward(self, state: Any, logger: Any) -> None:
            state.loss = state.loss * (2.0 if state.timestamp.batch == 0 else float("nan"))

        def batch_end(self, state: Any, logger: Any) -> None:
            assert not state.loss.requires_grad
            seen.append(("batch", state.loss.item()))

    trainer = _trainer(make_model(), make_loader(make_dataset(16), 8), callbacks=[Replaces()])
    with pytest.raises(NonFiniteLossError, match=r"batch 2 of the epoch \(step 2\), got nan"):
        trainer.fit()
    assert [name for name, _ in seen] == ["computed", "batch", "computed", "batch"]
    assert seen[1][1] == pytest.approx(2 * seen[0][1], rel=1e-6)
    assert math.isnan(seen[3][1])


@pytest.mark.parametrize("interval", [1, 100])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path: Any, interval: int) -> None:
    data = make_dataset(32)
    data.tensors[0][20, 0] = float("nan")  # in the third batch of 8
    model = make_model()
    with pytest.raises(NonFiniteLossError, match=r"loss: expected a finite value at epoch 0, batch 3 of the epoch \(step 3\), got nan"):
        _trainer(model, make_loader(data, 8), save_folder=tmp_path, save_interval="1ba",
                 algorithms=[LabelSmoothing(0.1)], finite_check_interval=interval).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep0-ba1.pt", "ep0-ba2.pt", "latest.pt"]
    checkpoint = load_checkpoint(tmp_path / "latest.pt")
    assert checkpoint["timestamp"]["batch"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    # Checked before every optimizer step, the weights never take a step on a NaN loss.
    assert all(torch.isfinite(p).all() for p in model.parameters()) == (interval == 1)


def test_the_finite_check_reads_the_device_once_per_log_not_per_step(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Four steps per epoch, a checkpoint per epoch: the losses are checked once, at each
    epoch's log, and a NaN in the second epoch's second batch is named there (step 6), with the
    first epoch's record and checkpoint written and nothing after; saving later still refuses."""
    data = make_dataset(32)
    calls: list[int] = []
    tolist = torch.Tensor.tolist

    def counting_tolist(tensor: torch.Tensor) -> Any:
        calls.append(tensor.numel())
        return tolist(tensor)

    class NanInSecondEpoch(Callback):
        def after_loss(self, state: Any, logger: Any) -> None:
            if state.timestamp.batch == 5:
                state.loss = state.loss * float("nan")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    # Without training metrics, whose one read per log would be counted too.
    trainer = _trainer(loader=make_loader(data, 8), max_duration="2ep", callbacks=[NanInSecondEpoch()],
                       save_folder=tmp_path, train_metrics=False)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, batch 2 of the epoch \(step 6\), got nan"):
        trainer.fit()
    assert calls == [4, 4]  # one check of four steps per epoch (the save after the first reads nothing new)
    assert [record["epoch"] for record in trainer.history] == [1]
    with pytest.raises(NonFiniteLossError, match=r"\(step 6\)"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep1-ba4.pt", "latest.pt"]


def test_the_finite_check_interval_bounds_the_steps_run_on_a_non_finite_loss() -> None:
    data = make_dataset(64)
    data.tensors[0][8, 0] = float("inf")  # second batch of 8
    seen: list[int] = []

    class Steps(Callback):
        def batch_end(self, state: Any, logger: Any) -> None:
            seen.append(state.timestamp.batch)

    with pytest.raises(NonFiniteLossError, match=r"batch 2 of the epoch \(step 2\), got nan"):
        _trainer(loader=make_loader(data, 8), finite_check_interval=3, callbacks=[Steps()],
                 grad_accum=2).fit()
    assert seen == [1, 2]  # the third step is checked before its optimizer step
    with pytest.raises(ValueError, match="finite_check_interval: expected an int >= 1, got 0"):
        _trainer(finite_check_interval=0)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"precision": "fp8"}, ValueError, "precision: expected one of"),
    ({"precision": "fp16"}, ValueError, "precision: expected 'fp32' or 'bf16' on a CPU"),
    ({"grad_accum": 0}, ValueError, "grad_accum: expected an int >= 1"),
    ({"grad_accum": 2.0}, TypeError, "grad_accum: expected an int"),
    ({"algorithms": [object()]}, TypeError, r"algorithms\[0\]: expected an Algorithm"),
    ({"callbacks": [LabelSmoothing()]}, TypeError, r"callbacks\[0\]: expected a Callback"),
    ({"loss_fn": "cross_entropy"}, TypeError, "loss_fn: expected a callable"),
    ({"device": "gpu7"}, ValueError, "device: expected 'auto', 'cpu'"),
    ({"seed": -1}, ValueError, "seed: expected an int >= 0"),
    ({"progress_bar": "yes"}, TypeError, "progress_bar: expected a bool"),
    ({"target_key": 1.5}, TypeError, "target_key: expected an int index"),
    ({"eval_dataloader": 3}, TypeError, "eval_dataloader: expected an iterable of batches"),
])
def test_bad_arguments_raise(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _trainer(**kwargs)


def test_bad_model_and_dataloader_raise() -> None:
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module"):
        Trainer(lambda x: x, make_loader(make_dataset(8)), max_duration=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_dataloader: expected an iterable of batches"):
        Trainer(make_model(), 5, max_duration=1)


def test_eval_without_a_dataloader_and_batches_that_are_not_pairs_raise() -> None:
    with pytest.raises(ValueError, match="eval_dataloader: expected a dataloader to evaluate on, got None"):
        _trainer().eval()
    triples = [(torch.randn(6), torch.tensor(0), torch.tensor(1))] * 4
    with pytest.raises(ValueError, match=r"batch: expected an \(inputs, targets\) pair .*got a list of 3 items"):
        _trainer(loader=torch.utils.data.DataLoader(triples, batch_size=2)).fit()


def test_classes_match_the_task() -> None:
    assert make_model()(torch.zeros(1, 6)).shape == (1, NUM_CLASSES)


def test_eval_interval_in_batches_and_an_iterable_without_length() -> None:
    data = make_dataset(32)

    class Batches:  # no __len__: the epoch ends when the iterator does
        def __iter__(self) -> Any:
            return iter(make_loader(data, 8))

    trainer = _trainer(make_model(), Batches(), max_duration="2ep", eval_interval="3ba",
                       eval_dataloader=make_loader(data, 16))
    trainer.fit()
    assert [(r["split"], r["batch"]) for r in trainer.history] == [
        ("eval", 3), ("train", 4), ("eval", 6), ("train", 8)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizers": 5}, "optimizers: expected an Optimizer, a sequence of them, or None"),
    ({"optimizers": [torch.optim.SGD(make_model().parameters(), lr=0.1), "adam"]},
     r"optimizers\[1\]: expected an Optimizer, got str"),
    ({"schedulers": "cosine"}, "schedulers: expected a LRScheduler, a sequence of them, or None"),
])
def test_bad_optimizers_and_schedulers_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _trainer(**kwargs)
