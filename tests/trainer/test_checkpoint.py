"""Checkpoints: atomic writes, and a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer import Algorithm, Callback, Event, State
from labelsmooth.trainer.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state: State, logger: Any) -> None:
        if state.timestamp.batch == self.batch:
            raise Crash(f"crash after batch {self.batch}")


class RaiseSmoothing(Algorithm):
    """A smoothing schedule with state of its own: +0.01 after every batch."""

    def __init__(self, label_smoothing: LabelSmoothing) -> None:
        self.label_smoothing = label_smoothing
        self.steps = 0

    def match(self, event: Event, state: State) -> bool:
        return event == Event.BATCH_END

    def apply(self, event: Event, state: State, logger: Any) -> None:
        self.steps += 1
        self.label_smoothing.smoothing = min(1.0, self.label_smoothing.smoothing + 0.01)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]


def _run(folder: Path, *, init_seed: int, seed: int, crash_at: int | None = None,
         load_path: Path | None = None, save_interval: str = "2ba") -> tuple[Trainer, LabelSmoothing]:
    # Dropout, shuffling, Adam and a scheduler: every kind of state a resume must restore.
    model = make_model(seed=init_seed, dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)
    smoothing = LabelSmoothing(0.1)
    trainer = Trainer(
        model, make_loader(make_dataset(40), 8, shuffle=True), max_duration="3ep",
        optimizers=optimizer, schedulers=scheduler,
        algorithms=[smoothing, RaiseSmoothing(smoothing)],
        callbacks=[] if crash_at is None else [CrashAt(crash_at)],
        device="cpu", progress_bar=False, seed=seed, save_folder=folder,
        save_interval=save_interval, load_path=load_path,
    )
    if crash_at is None:
        trainer.fit()
    else:
        with pytest.raises(Crash):
            trainer.fit()
    return trainer, smoothing


@pytest.mark.parametrize(("save_interval", "crash_at", "resume_from"), [
    ("2ba", 9, "ep1-ba8.pt"),    # mid-epoch: 3 batches of epoch 2 done
    ("2ba", 11, "ep1-ba10.pt"),  # after the last batch of epoch 2, before its end
    ("1ep", 12, "ep2-ba10.pt"),  # at an epoch boundary
])
def test_resume_is_bit_identical_to_an_uninterrupted_run(
        tmp_path: Path, save_interval: str, crash_at: int, resume_from: str) -> None:
    reference, reference_smoothing = _run(tmp_path / "a", init_seed=0, seed=1,
                                          save_interval=save_interval)
    _run(tmp_path / "b", init_seed=0, seed=1, crash_at=crash_at, save_interval=save_interval)
    latest = tmp_path / "b" / "latest.pt"
    assert latest.read_bytes() == (tmp_path / "b" / resume_from).read_bytes()
    # A different initialisation and seed: everything must come from the checkpoint.
    resumed, resumed_smoothing = _run(tmp_path / "c", init_seed=5, seed=7, load_path=latest,
                                      save_interval=save_interval)
    assert resumed.state.timestamp == reference.state.timestamp
    for (name, expected), actual in zip(reference.state.model.state_dict().items(),
                                        resumed.state.model.state_dict().values(), strict=True):
        assert torch.equal(actual, expected), name
    assert resumed_smoothing.smoothing == reference_smoothing.smoothing
    assert resumed.state.schedulers[0].last_epoch == reference.state.schedulers[0].last_epoch == 15
    assert resumed.state.algorithms[1].steps == 15  # type: ignore[attr-defined]


def test_save_writes_atomically_and_a_failed_save_keeps_the_previous_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "weights": torch.arange(5)}, path, also=tmp_path / "latest.pt")

    def crash_mid_write(obj: Any, handle: Any) -> None:
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk died")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk died"):
        save_checkpoint({"step": 2}, path, also=tmp_path / "latest.pt")
    monkeypatch.undo()
    with pytest.raises(Exception):  # noqa: B017 - the pickler's own error for a lambda
        save_checkpoint({"step": 3, "unpicklable": lambda: 0}, path)
    for name in ("checkpoint.pt", "latest.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded["step"] == 1 and torch.equal(loaded["weights"], torch.arange(5))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "latest.pt"]


def test_rng_state_round_trip() -> None:
    import random

    state = get_rng_state()
    first = (random.random(), torch.rand(3))
    set_rng_state(state)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_checkpoint_contents(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep",
                      algorithms=[LabelSmoothing(0.2)], device="cpu", progress_bar=False,
                      save_folder=tmp_path)
    trainer.fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep1-ba2.pt", "latest.pt"]
    checkpoint = load_checkpoint(tmp_path / "latest.pt")
    assert checkpoint["timestamp"] == {"epoch": 1, "batch": 2, "sample": 16, "batch_in_epoch": 0,
                                       "sample_in_epoch": 0}
    assert checkpoint["algorithms"] == [("LabelSmoothing", {"smoothing": 0.2})]
    for key, value in trainer.state.model.state_dict().items():
        assert torch.equal(checkpoint["model"][key], value)


def test_bad_load_paths_raise(tmp_path: Path) -> None:
    def trainer(**kwargs: Any) -> Trainer:
        return Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep",
                       device="cpu", progress_bar=False, **kwargs)

    with pytest.raises(ValueError, match="load_path: expected an existing checkpoint file"):
        trainer(load_path=tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"load_path: expected a labelsmooth checkpoint \(format 1\)"):
        trainer(load_path=tmp_path / "foreign.pt")
    trainer(save_folder=tmp_path / "run", algorithms=[LabelSmoothing()]).fit()
    with pytest.raises(ValueError, match="load_path: expected a checkpoint with 0 algorithms"):
        trainer(load_path=tmp_path / "run" / "latest.pt")
    with pytest.raises(TypeError, match=r"algorithms\[0\]: expected a LabelSmoothing"):
        trainer(load_path=tmp_path / "run" / "latest.pt", algorithms=[RaiseSmoothing(LabelSmoothing())])
    with pytest.raises(ValueError, match="save_folder: expected a folder to save checkpoints in"):
        trainer().save_checkpoint()
