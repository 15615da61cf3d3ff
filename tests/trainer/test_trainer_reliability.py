"""The Trainer refuses what it cannot honour at construction, with one line: unwritable
folders and files, empty eval data, devices this machine lacks, bad retention and timeout
options; accepts a single algorithm or callback; and its training metrics read the logits
before a loss that overwrites them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, SmoothedCrossEntropyLoss, Trainer
from labelsmooth.trainer import Callback, State


def _trainer(model: torch.nn.Module | None = None, loader: Any = None, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {"max_duration": "1ep", "device": "cpu", "progress_bar": False}
    options.update(kwargs)
    return Trainer(model if model is not None else make_model(),
                   loader if loader is not None else make_loader(make_dataset(32)), **options)


@pytest.mark.parametrize("inplace_backward", [False, True])
def test_training_metrics_read_the_logits_before_an_in_place_loss(inplace_backward: bool) -> None:
    data = make_dataset(64, seed=3)
    model = make_model(seed=2)
    # Float64 reference: the metrics of the model's logits before its one optimizer step.
    with torch.no_grad():
        logits = model.double()(data.tensors[0].double())
    model.float()
    accuracy = (logits.argmax(1) == data.tensors[1]).double().mean().item()
    nll = F.cross_entropy(logits, data.tensors[1]).item()
    assert 0.2 < accuracy < 0.8  # the gradient's arg-max would not give it by chance
    trainer = _trainer(model, make_loader(data, 64), max_duration="1ba",
                       loss_fn=SmoothedCrossEntropyLoss(0.1, inplace_backward=inplace_backward))
    trainer.fit()
    record = trainer.history[0]
    assert record["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert record["nll"] == pytest.approx(nll, rel=1e-5)


def test_a_loss_that_overwrites_the_logits_unannounced_is_refused() -> None:
    def overwriting_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(outputs, targets)
        outputs.mul_(0.0)
        return loss

    with pytest.raises(ValueError, match=r"loss_fn: expected a loss that leaves the logits "
                       r"unchanged .*, got one that wrote into the logits$"):
        _trainer(loss_fn=overwriting_loss).fit()


class CountBatches(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def batch_end(self, state: State, logger: Any) -> None:
        self.batches += 1


def test_a_single_algorithm_and_a_single_callback_are_accepted() -> None:
    smoothing, counter = LabelSmoothing(0.1), CountBatches()
    trainer = _trainer(algorithms=smoothing, callbacks=counter)
    assert trainer.state.algorithms == [smoothing] and trainer.state.callbacks == [counter]
    trainer.fit()
    assert counter.batches == 2
    assert _trainer(algorithms=None, callbacks=None).state.algorithms == []
    with pytest.raises(TypeError, match="algorithms: expected an Algorithm, a sequence of them, "
                       "or None, got int"):
        _trainer(algorithms=3)
    with pytest.raises(TypeError, match=r"callbacks\[1\]: expected a Callback, got LabelSmoothing"):
        _trainer(callbacks=[counter, smoothing])


def test_unwritable_save_folder_and_log_file_are_refused_at_construction(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match=r"save_folder: expected a folder this process can "
                       r"create files in, got '.*a-file' \(File exists\)$"):
        _trainer(save_folder=a_file)
    with pytest.raises(ValueError, match=r"save_folder: expected .*, got '.*a-file/run' "
                       r"\(Not a directory\)$"):
        _trainer(save_folder=a_file / "run")
    with pytest.raises(ValueError, match=r"log_file: expected a file this process can append "
                       r"to, got '.*' \(Is a directory\)$"):
        _trainer(log_file=tmp_path)
    with pytest.raises(ValueError, match=r"log_file: expected .*, got '.*a-file/log.jsonl' "
                       r"\(File exists\)$"):
        _trainer(log_file=a_file / "log.jsonl")
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_cuda_is_refused(device: Any) -> None:
    with pytest.raises(ValueError, match=r"^device: expected 'auto' or 'cpu' \(CUDA is not "
                       r"available here: .*\), got 'cuda(:\d)?'$"):
        _trainer(device=device)


def test_meta_device_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^device: expected a device that holds data .*, "
                       r"got 'meta'$"):
        _trainer(device="meta")


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"save_num_checkpoints_to_keep": 0}, ValueError,
     r"save_num_checkpoints_to_keep: expected -1 \(keep every checkpoint\) or an int >= 1, got 0"),
    ({"save_num_checkpoints_to_keep": -2}, ValueError, "save_num_checkpoints_to_keep: expected -1"),
    ({"save_num_checkpoints_to_keep": 1.0}, TypeError, "save_num_checkpoints_to_keep: expected an int"),
    ({"dist_timeout": 0}, ValueError, r"dist_timeout: expected a finite number of seconds > 0"),
    ({"dist_timeout": float("inf")}, ValueError, r"dist_timeout: expected a finite number"),
    ({"dist_timeout": "60"}, TypeError, r"dist_timeout: expected a number of seconds > 0"),
])
def test_bad_retention_and_timeout_options_raise(kwargs: dict[str, Any], error: type,
                                                 message: str) -> None:
    with pytest.raises(error, match=message):
        _trainer(**kwargs)
