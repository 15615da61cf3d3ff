"""Resume after a real interruption: bit-identical weights with a DataLoader that has its own
generator, a log without the records of the steps that were repeated, a warning for random
state a checkpoint cannot hold."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler

from labelsmooth import Trainer
from labelsmooth.trainer import Callback, State
from labelsmooth.trainer.checkpoint import dataloader_generators

WORKER = Path(__file__).with_name("resume_worker.py")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_after_sigkill_with_a_dataloader_generator_is_bit_identical(tmp_path: Path) -> None:
    killed = subprocess.run([sys.executable, str(WORKER), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = tmp_path / "checkpoints"
    # Killed after batch 30, before its checkpoint: the latest is batch 27, mid-epoch 2.
    assert (checkpoints / "latest.pt").read_bytes() == (checkpoints / "ep2-ba27.pt").read_bytes()
    assert not (checkpoints / "ep3-ba30.pt").exists()

    sys.path.insert(0, str(WORKER.parent))
    try:
        from resume_worker import build
    finally:
        sys.path.remove(str(WORKER.parent))
    resumed = build(tmp_path, load_path=checkpoints / "latest.pt")
    resumed.fit()
    reference = build(tmp_path / "reference")
    reference.fit()
    for actual, expected in zip(resumed.state.model.parameters(),
                                reference.state.model.parameters(), strict=True):
        assert torch.equal(actual, expected), (actual - expected).abs().max()

    # Every epoch and evaluation is logged once, in order, as in the uninterrupted run.
    log, reference_log = _records(tmp_path / "log.jsonl"), _records(tmp_path / "reference" / "log.jsonl")
    assert [(r["epoch"], r["batch"], r["split"]) for r in log] == [
        (r["epoch"], r["batch"], r["split"]) for r in reference_log]
    # The resumed epoch's training metrics cover only the batches after the resume; the others
    # are the uninterrupted run's, exactly.
    for mine, theirs in zip(log, reference_log, strict=True):
        if (mine["epoch"], mine["split"]) != (3, "train"):
            assert mine == theirs


def _crash_at(batch: int) -> Callback:
    """A callback interrupting training at the end of ``batch``, as Ctrl-C would."""

    class CrashAt(Callback):
        def batch_end(self, state: State, logger: Any) -> None:
            if state.timestamp.batch == batch:
                raise KeyboardInterrupt

    return CrashAt()


def _logged_run(folder: Path, *, crash_at: int | None = None, load_path: Path | None = None) -> None:
    trainer = Trainer(make_model(), make_loader(make_dataset(40), 4, shuffle=True),
                      max_duration="3ep", eval_dataloader=make_loader(make_dataset(8, seed=1), 8),
                      callbacks=None if crash_at is None else _crash_at(crash_at), device="cpu",
                      progress_bar=False, seed=0, save_folder=folder, save_interval="4ba",
                      log_file=folder / "log.jsonl", load_path=load_path)
    if crash_at is None:
        trainer.fit()
    else:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()


def test_resume_drops_the_log_records_written_after_the_checkpoint(tmp_path: Path) -> None:
    _logged_run(tmp_path / "reference")
    reference = _records(tmp_path / "reference" / "log.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    earlier = '{"epoch": 9, "batch": 90, "sample": 360, "split": "train", "loss": 0.5}\n'
    (run / "log.jsonl").write_text(earlier)  # an earlier run appended to the same file
    # Batch 20 ends epoch 1: checkpoint ep1-ba20, then that epoch's train and eval records
    # (stamped epoch 2, batch 20); the crash at batch 22 comes before the next checkpoint.
    _logged_run(run, crash_at=22)
    with (run / "log.jsonl").open("a") as handle:
        handle.write('{"epoch": 2, "batch": 2')  # a record cut short by the interruption
    before = _records_lines(run / "log.jsonl")
    assert [(r["epoch"], r["batch"]) for r in before[-2:]] == [(2, 20), (2, 20)]

    _logged_run(run, load_path=run / "ep1-ba20.pt")
    log = (run / "log.jsonl").read_text()
    assert log.startswith(earlier)
    records = _records(run / "log.jsonl")[1:]
    assert [(r["epoch"], r["batch"], r["split"]) for r in records] == [
        (r["epoch"], r["batch"], r["split"]) for r in reference]
    assert [r for r in records if r["split"] == "eval"] == [r for r in reference if r["split"] == "eval"]


def _records_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_dataloader_generators_are_found_once_and_other_random_state_is_named() -> None:
    first, second = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    data = make_dataset(8)
    shuffled = DataLoader(data, batch_size=2, shuffle=True, generator=first)
    assert dataloader_generators(shuffled) == ([first], [])  # the loader's and its sampler's
    own_sampler = DataLoader(data, batch_size=2, sampler=RandomSampler(data, generator=second),
                             generator=first)
    assert dataloader_generators(own_sampler) == ([first, second], [])
    batched = DataLoader(data, batch_sampler=BatchSampler(RandomSampler(data, generator=second), 2, False))
    assert dataloader_generators(batched) == ([second], [])
    assert dataloader_generators(make_loader(data, 2, shuffle=True)) == ([], [])

    class PythonRandomSampler(Sampler[int]):
        def __init__(self) -> None:
            self.generator = random.Random(0)

        def __iter__(self) -> Iterator[int]:
            return iter(self.generator.sample(range(8), 8))

        def __len__(self) -> int:
            return 8

    workers = DataLoader(data, batch_size=2, sampler=PythonRandomSampler(), num_workers=1,
                         persistent_workers=True)
    assert dataloader_generators(workers) == ([], [
        "train_dataloader.sampler.generator (a Random)",
        "train_dataloader's persistent worker processes"])


def test_saving_warns_about_random_state_a_checkpoint_cannot_hold(tmp_path: Path) -> None:
    class PythonRandomSampler(Sampler[int]):
        def __init__(self) -> None:
            self.generator = random.Random(0)

        def __iter__(self) -> Iterator[int]:
            return iter(self.generator.sample(range(16), 16))

        def __len__(self) -> int:
            return 16

    data = make_dataset(16)
    trainer = Trainer(make_model(), DataLoader(data, batch_size=8, sampler=PythonRandomSampler()),
                      max_duration="1ep", device="cpu", progress_bar=False, save_folder=tmp_path)
    with pytest.warns(UserWarning, match=r"^save_checkpoint: train_dataloader.sampler.generator "
                      r"\(a Random\) holds random state that a checkpoint cannot hold; a run "
                      r"resumed from it draws different random numbers there than an "
                      r"uninterrupted run$") as warned:
        trainer.fit()
    assert len(warned) == 1  # once per Trainer, not at every save


def test_resuming_with_other_dataloader_generators_is_refused(tmp_path: Path) -> None:
    data = make_dataset(16)
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    Trainer(make_model(), loader, max_duration="1ep", device="cpu", progress_bar=False,
            save_folder=tmp_path).fit()
    with pytest.raises(ValueError, match=r"^train_dataloader: expected 1 torch.Generator\(s\) in "
                       r"its sampler or dataset, as when the checkpoint was written, got 0$"):
        Trainer(make_model(), make_loader(data, 8, shuffle=True), max_duration="2ep",
                device="cpu", progress_bar=False, load_path=tmp_path / "latest.pt")
