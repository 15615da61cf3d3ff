"""Checkpoints: atomic writes, and a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer import Algorithm, Callback, Event, State
from labelsmooth.trainer.checkpoint import (
    get_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
)


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state: State, logger: Any) -> None:
        if state.timestamp.batch == self.batch:
            raise Crash(f"crash after batch {self.batch}")


class DrawRandomNumbers(Callback):
    """Draws from the global generator where a resumed run and the original differ in history."""

    def fit_start(self, state: State, logger: Any) -> None:
        torch.rand(3)

    def epoch_start(self, state: State, logger: Any) -> None:
        torch.rand(3)


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
        callbacks=[DrawRandomNumbers(), *([] if crash_at is None else [CrashAt(crash_at)])],
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


def _saved_checkpoint(folder: Path) -> Path:
    trainer = Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep",
                      device="cpu", progress_bar=False, save_folder=folder)
    trainer.fit()
    return folder / "latest.pt"


def _resume(path: Path, **kwargs: Any) -> Trainer:
    return Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="2ep",
                   device="cpu", progress_bar=False, load_path=path, **kwargs)


def test_unreadable_checkpoint_files_raise_one_line_naming_the_file(tmp_path: Path) -> None:
    good = _saved_checkpoint(tmp_path / "run")
    data = good.read_bytes()
    cases = {
        "empty.pt": (b"", r"an empty file \(0 bytes\)"),
        "half.pt": (data[:len(data) // 2],
                    rf"a truncated or corrupted file \({len(data) // 2} bytes of an incomplete zip"),
        "short.pt": (data[:-10], rf"a truncated or corrupted file \({len(data) - 10} bytes"),
        "garbage.pt": (b"\x00\x13 garbage bytes" * 10,
                       r"a file that is not a PyTorch checkpoint \(160 bytes, starting with "
                       r"b'\\x00\\x13 g'\)"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"^load_path: expected a complete checkpoint file, "
                           rf"got '.*{name}', {reason}") as raised:
            _resume(tmp_path / name)
        assert "\n" not in str(raised.value)
    torch.save({"model": os.stat_result((0,) * 10)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match=r"got '.*objects.pt', a file that holds objects other "
                       r"than tensors and plain containers$"):
        _resume(tmp_path / "objects.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"load_path: expected a checkpoint holding a dict, got "
                       r"'.*list.pt', holding a list$"):
        _resume(tmp_path / "list.pt")
    assert good.read_bytes() == data
    assert _resume(good).state.timestamp.batch == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_saving_raises_one_line_and_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import labelsmooth.trainer.checkpoint as checkpoint_module

    trainer = Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep",
                      device="cpu", progress_bar=False, save_folder=tmp_path, save_interval="1ba")
    trainer.fit()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # Every write to /dev/full fails with ENOSPC, as on a full disk.
    monkeypatch.setattr(checkpoint_module, "_create", lambda path: os.open("/dev/full", os.O_WRONLY))
    trainer.state.timestamp = trainer.state.timestamp.__class__(epoch=1, batch=3, sample=24)
    with pytest.raises(OSError, match=r"^checkpoint: expected room to write '.*ep1-ba3.pt', got a "
                       r"full disk \(no space left on the device\); the previous checkpoint is "
                       r"unchanged$") as raised:
        trainer.save_checkpoint()
    assert raised.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_checkpoint_of_another_optimizer_class_is_refused(tmp_path: Path) -> None:
    path = _saved_checkpoint(tmp_path)  # the default optimizer: Adam
    model = make_model()
    with pytest.raises(TypeError, match=r"^optimizers\[0\]: expected an Adam, as in the "
                       r"checkpoint, got SGD$"):
        _resume(path, optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert load_checkpoint(path)["optimizer_classes"] == ["Adam"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        save_checkpoint({"step": 1}, tmp_path / "a.pt", also=tmp_path / "latest.pt")
    finally:
        os.umask(previous)
    for name in ("a.pt", "latest.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_temporary_files_of_killed_saves_are_removed_at_start(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead, alive = int(finished.stdout), os.getpid()
    hex_part = "0123456789abcdef" * 2
    stale = [tmp_path / f".ep0-ba1.pt.{dead}.{hex_part}.tmp", tmp_path / f".latest.pt.{dead}.{hex_part}.tmp"]
    kept = [tmp_path / f".ep0-ba2.pt.{alive}.{hex_part}.tmp",  # a save in progress
            tmp_path / ".notes.tmp", tmp_path / f"ep0-ba1.pt.{dead}.{hex_part}.tmp"]
    for path in stale + kept:
        path.write_bytes(b"PK\x03\x04 half a zip file")
    Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep", device="cpu",
            progress_bar=False, save_folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize(("keep", "expected"), [
    # Every batch, and once more at the end (the epoch count went up after the last batch).
    (-1, ["ep0-ba1.pt", "ep0-ba2.pt", "ep1-ba3.pt", "ep1-ba4.pt", "ep2-ba4.pt"]),
    (2, ["ep1-ba4.pt", "ep2-ba4.pt"]),
    (1, ["ep2-ba4.pt"]),
])
def test_save_num_checkpoints_to_keep(tmp_path: Path, keep: int, expected: list[str]) -> None:
    trainer = Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="2ep",
                      device="cpu", progress_bar=False, save_folder=tmp_path, save_interval="1ba",
                      save_num_checkpoints_to_keep=keep)
    trainer.fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == [*expected, "latest.pt"]
    assert (tmp_path / "latest.pt").read_bytes() == (tmp_path / "ep2-ba4.pt").read_bytes()
    assert load_checkpoint(tmp_path / "latest.pt")["timestamp"]["batch"] == 4
