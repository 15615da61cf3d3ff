"""Benchmark: one training step in the Trainer, with and without label smoothing and MixUp.

Run ``python -m benchmarks.trainer_step`` (``--quick`` for a tiny smoke run). The model is
``nn.Linear(256, C)`` (``C = 32000`` by default) on a batch of 1024 examples, trained with SGD;
a step is the Trainer's whole step (events, forward, loss, training metrics, backward,
optimizer step). Contenders:

* ``plain``: ``loss_fn=F.cross_entropy``, no algorithm: the baseline every ratio refers to.
* ``label_smoothing``: the default loss with ``algorithms=[LabelSmoothing(0.1)]``.
* ``label_smoothing_mixup``: the default loss with ``[LabelSmoothing(0.1), MixUp(0.2)]``.
* ``eager_loss``: ``loss_fn=F.cross_entropy(..., label_smoothing=0.1)``, no algorithm.
* ``compiled_loss``: the same loss through ``torch.compile`` (what a user gets for free);
  left out with ``--no-compile``.

Method. Time: every contender runs one step per round, in an order shuffled afresh each round
(the machine may be shared and noisy), after two warm-up steps (and the compilation); the
median over rounds is reported with its ratio to ``plain``'s median of the same run. Memory:
each contender runs in its own fresh subprocess (glibc's mmap threshold at 64 KiB, so freed
buffers leave the resident set): after two warm-up steps the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``), one step runs, and the peak RSS minus the RSS before the step is
the step's peak extra memory, reported in MiB and as a ratio to ``plain``'s. Rows are appended
to ``benchmarks/results/trainer_step.csv`` with provenance (machine, torch version, date,
commit, and where the measured ``labelsmooth`` was imported from).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import labelsmooth
from benchmarks._common import append_csv, cpu_name, git_commit, utc_now
from labelsmooth.algorithms import LabelSmoothing, MixUp
from labelsmooth.trainer import Trainer

__all__ = ["CONTENDERS", "build_trainer", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "trainer_step.csv"
FEATURES = 256
SMOOTHING = 0.1
CONTENDERS = ("plain", "label_smoothing", "label_smoothing_mixup", "eager_loss", "compiled_loss")
BASELINE = "plain"


def _smoothed_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, label_smoothing=SMOOTHING)


def build_trainer(contender: str, *, batch: int, classes: int) -> Trainer:
    """A Trainer for ``contender`` whose state holds one fixed batch, ready for steps."""
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, classes)
    inputs, targets = torch.randn(batch, FEATURES), torch.randint(classes, (batch,))
    loader = [(inputs, targets)]
    algorithms: list[Any] = []
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    if contender == "plain":
        loss_fn = F.cross_entropy
    elif contender == "label_smoothing":
        algorithms = [LabelSmoothing(SMOOTHING)]
    elif contender == "label_smoothing_mixup":
        algorithms = [LabelSmoothing(SMOOTHING), MixUp(0.2, generator=torch.Generator().manual_seed(0))]
    elif contender == "eager_loss":
        loss_fn = _smoothed_loss
    elif contender == "compiled_loss":
        loss_fn = torch.compile(_smoothed_loss)
    else:
        raise ValueError(f"contender: expected one of {CONTENDERS}, got {contender!r}")
    options: dict[str, Any] = {} if loss_fn is None else {"loss_fn": loss_fn}
    trainer = Trainer(model, loader, max_duration="1ba", algorithms=algorithms,
                      optimizers=torch.optim.SGD(model.parameters(), lr=1e-3), device="cpu",
                      progress_bar=False, **options)
    trainer.state.batch = (inputs, targets)
    return trainer


def _step(trainer: Trainer) -> None:
    batch = trainer.state.batch
    trainer._train_batch()
    trainer.state.batch = batch


def time_steps(names: Sequence[str], *, rounds: int, batch: int, classes: int) -> dict[str, list[float]]:
    trainers = {name: build_trainer(name, batch=batch, classes=classes) for name in names}
    for trainer in trainers.values():
        for _ in range(2):
            _step(trainer)
    times: dict[str, list[float]] = {name: [] for name in names}
    order = list(names)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            _step(trainers[name])
            times[name].append(time.perf_counter() - start)
    return times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _probe_memory(contender: str, batch: int, classes: int) -> int:
    """Peak extra RSS (bytes) of one step, in this process (run in a fresh subprocess)."""
    trainer = build_trainer(contender, batch=batch, classes=classes)
    for _ in range(2):
        _step(trainer)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_kib("VmRSS")
    _step(trainer)
    return (_status_kib("VmHWM") - before) * 1024


def measure_memory(contender: str, *, batch: int, classes: int) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    code = (f"from benchmarks.trainer_step import _probe_memory; "
            f"print(_probe_memory({contender!r}, {batch}, {classes}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def _provenance() -> dict[str, str]:
    return {
        "date": utc_now(),
        "git_commit": git_commit(),
        "labelsmooth_from": str(Path(labelsmooth.__file__).resolve().parent),
        "machine": f"{platform.node()} ({cpu_name()})",
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
    }


CSV_FIELDS = ["run_id", "date", "git_commit", "code", "labelsmooth_from", "machine", "cpu_count",
              "torch_threads", "torch_version", "batch", "classes", "contender", "rounds",
              "median_ms", "min_ms", "time_ratio_to_plain", "peak_extra_mib",
              "memory_ratio_to_plain"]


def main(argv: Sequence[str] | None = None) -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (3 rounds, C=1000)")
    parser.add_argument("--no-compile", action="store_true", help="leave out compiled_loss")
    parser.add_argument("--code", default="", help="a label for the code measured (e.g. 'main')")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.classes, args.batch = 3, 1000, 64
    names = [name for name in CONTENDERS if not (args.no_compile and name == "compiled_loss")]
    times = time_steps(names, rounds=args.rounds, batch=args.batch, classes=args.classes)
    memory = {name: measure_memory(name, batch=args.batch, classes=args.classes) for name in names}
    medians = {name: statistics.median(values) for name, values in times.items()}
    provenance = _provenance()
    run_id = provenance["date"]
    rows = []
    print(f"Trainer step, nn.Linear({FEATURES}, {args.classes}), batch {args.batch}, "
          f"{args.rounds} interleaved rounds (median), memory: one step in a fresh process")
    print(f"{'contender':<24}{'median ms':>11}{'x plain':>9}{'peak MiB':>10}{'x plain':>9}")
    for name in names:
        time_ratio = medians[name] / medians[BASELINE]
        memory_ratio = memory[name] / memory[BASELINE]
        print(f"{name:<24}{medians[name] * 1e3:>11.1f}{time_ratio:>9.2f}"
              f"{memory[name] / 2**20:>10.1f}{memory_ratio:>9.2f}")
        rows.append({**provenance, "run_id": run_id, "code": args.code, "batch": str(args.batch),
                     "classes": str(args.classes), "contender": name, "rounds": str(args.rounds),
                     "median_ms": f"{medians[name] * 1e3:.3f}",
                     "min_ms": f"{min(times[name]) * 1e3:.3f}",
                     "time_ratio_to_plain": f"{time_ratio:.4f}",
                     "peak_extra_mib": f"{memory[name] / 2**20:.1f}",
                     "memory_ratio_to_plain": f"{memory_ratio:.4f}"})
    if not args.quick:
        append_csv(rows, args.csv, CSV_FIELDS)
    print(json.dumps({"csv": str(args.csv) if not args.quick else None}))
    return rows


if __name__ == "__main__":
    main()
