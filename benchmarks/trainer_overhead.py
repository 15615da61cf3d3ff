"""Benchmark: what the Trainer itself costs per step, against a hand-written training loop.

Run ``python -m benchmarks.trainer_overhead`` (``--quick`` for a tiny smoke run).

The task is small enough that the Trainer's own per-step work shows: a 40-256-256-10 MLP
(ReLU), batches of 128 from 4096 random examples shuffled by a ``DataLoader``, Adam (lr 1e-3),
about 2.5 ms per optimizer step on one core. Contenders, each against the hand-written loop that
does the same math:

* ``loop``: ``zero_grad``, ``F.cross_entropy(model(x), y)``, ``backward``, ``step``.
* ``loop_control``: a second build of ``loop``, the same code; baseline ``loop``. How far its
  ratios are from 1 is how far this run can tell two contenders apart.
* ``loop_ls``: the same with ``label_smoothing=0.1``.
* ``loop_ls_library``: ``loop_ls`` with the library's
  :func:`~labelsmooth.functional.smoothed_cross_entropy` in place of PyTorch's loss (the same
  values; on a small CPU problem it runs fewer autograd nodes); baseline ``loop_ls``. Against
  it, ``trainer_ls`` shows the Trainer's own cost with the loss held equal.
* ``loop_ls_mixup``: MixUp (alpha 0.2, a Beta draw and a permutation per batch) by hand,
  ``lam * CE(z, y) + (1 - lam) * CE(z, y[perm])``, both smoothed by 0.1.
* ``trainer``: ``Trainer(...).fit()`` with its defaults (training metrics on, finite-loss
  check every 100 steps and at each log) and no progress bar, given the loop's loss
  (``loss_fn=F.cross_entropy``), so that the difference is the Trainer's own work; baseline
  ``loop``.
* ``trainer_no_metrics``: the same with ``train_metrics=False``; baseline ``loop``.
* ``trainer_ls``: with ``algorithms=[LabelSmoothing(0.1)]`` and the Trainer's default loss
  (what a user writes); baseline ``loop_ls``.
* ``trainer_ls_mixup``: with ``[LabelSmoothing(0.1), MixUp(0.2)]`` and the default loss;
  baseline ``loop_ls_mixup``.

What is measured: the steady-state time per optimizer step. Every contender is built (model,
optimizer, ``DataLoader``, ``Trainer``) and trained for one untimed warm-up run; then each round
trains every contender ``--epochs`` more epochs (a short run, 2 epochs = 64 steps by default),
in an order shuffled afresh each round, for ``--rounds`` rounds (100 by default); every
``--rounds-per-build`` rounds (25) every contender is built afresh. A Trainer run is ``fit()``
with ``max_duration`` moved on by ``--epochs``, so it pays ``fit``'s own start and its
per-epoch log; nothing is added to its event loop to time it. The time of a run is its wall
time over its steps.

Why this estimator: with a fresh model, optimizer and loader per timed run, the runs of one
loop spread by 20 % even on a quiet machine, because a run starts by allocating and faulting in
the optimizer's state and its first batches' buffers, and a shared machine adds its own spells
of load. Reusing a build for many runs takes that one-time start-up out of the measurement (it
is not the per-step cost under test), ``gc.freeze()`` after building keeps the garbage collector
from walking the other contenders' objects during a run, and many short interleaved runs put
every contender through the same spells of load. But one build of a loop can run a few percent
faster or slower than another build of the same loop for as long as it lives (on a 2-core VM,
2-4 % between the medians of three builds over 60 rounds): spreading the rounds over several
builds averages that out, and ``loop_control`` shows what is left of it. A paired ratio (the
baseline's time in a round over the contender's in the same round) cancels what the round
shared. Reported per contender:
the median and the minimum per-step time over the rounds, the ratio of the medians and of the
minimums to the baseline (above 1 is faster than the baseline), and the paired ratios' median
with their quartiles and range, which show how far the noise moves a ratio. The process's CPU
time per run is reported beside the wall time (at one thread it is the steadier measure of the
work done on a shared machine; at more, OpenMP's waiting threads count too). Rows are appended
to ``benchmarks/results/trainer_overhead.csv`` with provenance (machine, torch version, date,
commit). The loss here is a few microseconds: ``torch.compile`` of it changes the baselines by
less than the run-to-run noise, so the loops run PyTorch's eager loss.
"""

from __future__ import annotations

import argparse
import csv
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._common import append_csv, new_run_id, provenance
from labelsmooth.algorithms import LabelSmoothing, MixUp
from labelsmooth.functional import smoothed_cross_entropy
from labelsmooth.trainer import Trainer
from labelsmooth.trainer.time import Duration, TimeUnit

__all__ = ["BASELINES", "CONTENDERS", "Task", "main", "run_benchmark"]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CSV = RESULTS / "trainer_overhead.csv"
SMOOTHING = 0.1
MIXUP_ALPHA = 0.2
DEFAULT_ROUNDS = 100
# Rounds between fresh builds of every contender: two builds of the same loop differ by a few
# percent for as long as they live (where their tensors landed in memory), so the rounds are
# spread over several builds.
ROUNDS_PER_BUILD = 25


@dataclass(frozen=True)
class Task:
    """The training every contender does; ``epochs`` is the length of one timed run."""

    samples: int = 4096
    batch_size: int = 128
    epochs: int = 2
    features: int = 40
    hidden: int = 256
    classes: int = 10

    @property
    def steps(self) -> int:
        """Optimizer steps in one timed run."""
        return self.epochs * -(-self.samples // self.batch_size)

    def data(self) -> TensorDataset:
        generator = torch.Generator().manual_seed(0)
        return TensorDataset(torch.randn(self.samples, self.features, generator=generator),
                             torch.randint(0, self.classes, (self.samples,), generator=generator))

    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(self.features, self.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, self.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, self.classes))

    def loader(self, data: TensorDataset) -> DataLoader[tuple[torch.Tensor, ...]]:
        return DataLoader(data, batch_size=self.batch_size, shuffle=True)


QUICK_TASK = Task(samples=512, epochs=1)

# A contender: given the task and its data, build everything once and return a function that
# trains the given number of further epochs.
Prepare = Callable[[Task, TensorDataset], Callable[[int], None]]


def _loop(smoothing: float, mixup: bool, library: bool = False) -> Prepare:
    def prepare(task: Task, data: TensorDataset) -> Callable[[int], None]:
        model, loader = task.model(), task.loader(data)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        beta = torch.distributions.Beta(MIXUP_ALPHA, MIXUP_ALPHA)

        def train(epochs: int) -> None:
            model.train()
            for _ in range(epochs):
                for inputs, targets in loader:
                    optimizer.zero_grad(set_to_none=True)
                    if mixup:
                        lam = float(beta.sample())
                        perm = torch.randperm(inputs.shape[0])
                        logits = model(lam * inputs + (1 - lam) * inputs[perm])
                        loss = (lam * F.cross_entropy(logits, targets, label_smoothing=smoothing)
                                + (1 - lam) * F.cross_entropy(logits, targets[perm],
                                                              label_smoothing=smoothing))
                    elif library:
                        loss = smoothed_cross_entropy(model(inputs), targets, smoothing)
                    else:
                        loss = F.cross_entropy(model(inputs), targets, label_smoothing=smoothing)
                    loss.backward()
                    optimizer.step()

        return train
    return prepare


def _trainer(*, smoothing: bool, mixup: bool, train_metrics: bool = True) -> Prepare:
    def prepare(task: Task, data: TensorDataset) -> Callable[[int], None]:
        model = task.model()
        algorithms = ([LabelSmoothing(SMOOTHING)] if smoothing else []) + (
            [MixUp(MIXUP_ALPHA)] if mixup else [])
        # Without an algorithm, the loop's own loss; with one, the default loss.
        loss: dict[str, Any] = {} if algorithms else {"loss_fn": F.cross_entropy}
        trainer = Trainer(model, task.loader(data), max_duration=f"{task.epochs}ep", **loss,
                          optimizers=torch.optim.Adam(model.parameters(), lr=1e-3),
                          algorithms=algorithms, device="cpu", progress_bar=False,
                          train_metrics=train_metrics)

        def train(epochs: int) -> None:
            done = trainer.state.timestamp.epoch
            trainer.state.max_duration = Duration(done + epochs, TimeUnit.EPOCH)
            trainer.fit()

        return train
    return prepare


CONTENDERS: dict[str, Prepare] = {
    "loop": _loop(0.0, mixup=False),
    "loop_control": _loop(0.0, mixup=False),
    "loop_ls": _loop(SMOOTHING, mixup=False),
    "loop_ls_library": _loop(SMOOTHING, mixup=False, library=True),
    "loop_ls_mixup": _loop(SMOOTHING, mixup=True),
    "trainer": _trainer(smoothing=False, mixup=False),
    "trainer_no_metrics": _trainer(smoothing=False, mixup=False, train_metrics=False),
    "trainer_ls": _trainer(smoothing=True, mixup=False),
    "trainer_ls_mixup": _trainer(smoothing=True, mixup=True),
}
BASELINES = {"loop": "loop", "loop_control": "loop", "loop_ls": "loop_ls", "loop_ls_library": "loop_ls",
             "loop_ls_mixup": "loop_ls_mixup", "trainer": "loop", "trainer_no_metrics": "loop",
             "trainer_ls": "loop_ls", "trainer_ls_mixup": "loop_ls_mixup"}


def _time_run(train: Callable[[int], None], epochs: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``epochs`` more epochs of one contender."""
    wall, cpu = time.perf_counter(), time.process_time()
    train(epochs)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_contenders(task: Task, names: Sequence[str], rounds: int, seed: int = 0, *,
                    rounds_per_build: int = ROUNDS_PER_BUILD
                    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per run of ``task.epochs`` epochs of each contender, over ``rounds``
    rounds in freshly shuffled order; every ``rounds_per_build`` rounds every contender is built
    afresh and warmed up by one untimed run."""
    data = task.data()
    shuffler = random.Random(seed)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for start in range(0, rounds, rounds_per_build):
        _time_block(task, data, list(names), min(rounds_per_build, rounds - start), shuffler,
                    wall, cpu)
    return wall, cpu


def _time_block(task: Task, data: TensorDataset, order: list[str], rounds: int,
                shuffler: random.Random, wall: dict[str, list[float]],
                cpu: dict[str, list[float]]) -> None:
    """Build and warm up every contender once, then time ``rounds`` rounds of them."""
    trainers = {name: CONTENDERS[name](task, data) for name in order}
    for name in order:
        _time_run(trainers[name], task.epochs)
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds):
            shuffler.shuffle(order)
            for name in order:
                seconds, cpu_seconds = _time_run(trainers[name], task.epochs)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
    finally:
        gc.unfreeze()


CSV_FIELDS = [
    "run_id", "date", "git_commit", "machine", "cpu_count", "torch_threads", "torch_version",
    "python_version", "quick", "samples", "batch_size", "epochs", "contender", "baseline",
    "rounds", "median_s", "min_s", "samples_per_s", "ratio_to_baseline", "median_cpu_s",
    "cpu_ratio_to_baseline", "paired_ratio_median", "paired_ratio_min", "paired_ratio_max",
    "method", "steps_per_run", "median_step_us", "min_step_us", "ratio_of_min",
    "paired_ratio_q1", "paired_ratio_q3",
]
# The "method" column: every contender built afresh and warmed up every ROUNDS_PER_BUILD rounds
# of short interleaved runs ("steady" rows built each one once; rows without a method timed a
# freshly built contender per run of 16 epochs).
METHOD = "rebuilt"


def _upgrade_header(path: Path) -> None:
    """Rewrite a CSV written before a column was added with today's columns (empty in old rows),
    so that appended rows line up with the header."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        old_rows, fields = list(reader), reader.fieldnames or []
    if fields == CSV_FIELDS or not set(fields) <= set(CSV_FIELDS):
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(old_rows)


def paired_ratios(times: dict[str, list[float]], name: str) -> list[float]:
    """The baseline's time over ``name``'s, round by round (above 1: faster than the baseline)."""
    return [base / own for base, own in zip(times[BASELINES[name]], times[name], strict=True)]


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (one value: itself twice)."""
    if len(values) < 2:
        return values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, third


def _row(task: Task, name: str, times: dict[str, list[float]], cpu_times: dict[str, list[float]]
         ) -> dict[str, str]:
    """The measured columns of one contender's row."""
    baseline = BASELINES[name]
    median = {key: statistics.median(times[key]) for key in (name, baseline)}
    cpu = {key: statistics.median(cpu_times[key]) for key in (name, baseline)}
    paired = paired_ratios(times, name)
    q1, q3 = quartiles(paired)
    return {
        "samples": str(task.samples), "batch_size": str(task.batch_size),
        "epochs": str(task.epochs), "contender": name, "baseline": baseline,
        "rounds": str(len(times[name])), "method": METHOD, "steps_per_run": str(task.steps),
        "median_s": f"{median[name]:.5f}", "min_s": f"{min(times[name]):.5f}",
        "median_step_us": f"{median[name] / task.steps * 1e6:.1f}",
        "min_step_us": f"{min(times[name]) / task.steps * 1e6:.1f}",
        "samples_per_s": f"{task.samples * task.epochs / median[name]:.1f}",
        "ratio_to_baseline": f"{median[baseline] / median[name]:.4f}",
        "ratio_of_min": f"{min(times[baseline]) / min(times[name]):.4f}",
        "median_cpu_s": f"{cpu[name]:.5f}",
        "cpu_ratio_to_baseline": f"{cpu[baseline] / cpu[name]:.4f}",
        "paired_ratio_median": f"{statistics.median(paired):.4f}",
        "paired_ratio_q1": f"{q1:.4f}", "paired_ratio_q3": f"{q3:.4f}",
        "paired_ratio_min": f"{min(paired):.4f}", "paired_ratio_max": f"{max(paired):.4f}",
    }


def _report_table(rows: Sequence[dict[str, str]], count: int, task: Task, rounds: int,
                  report: Callable[[str], None]) -> None:
    report(f"\n{count} thread(s): {rounds} interleaved rounds of {task.steps} steps per "
           "contender; per-step time over the rounds; ratios: the baseline's time over the "
           "contender's (above 1: faster); per round: paired ratios, median [quartiles] (range)")
    report(f"  {'contender':20s} {'median us':>10s} {'min us':>8s} {'of medians':>11s} "
           f"{'of mins':>8s} {'per round':>38s} {'CPU':>6s}  baseline")
    for row in rows:
        spread = (f"{float(row['paired_ratio_median']):.3f} [{float(row['paired_ratio_q1']):.3f}, "
                  f"{float(row['paired_ratio_q3']):.3f}] ({float(row['paired_ratio_min']):.2f}, "
                  f"{float(row['paired_ratio_max']):.2f})")
        report(f"  {row['contender']:20s} {float(row['median_step_us']):10.0f} "
               f"{float(row['min_step_us']):8.0f} {float(row['ratio_to_baseline']):11.3f} "
               f"{float(row['ratio_of_min']):8.3f} {spread:>38s} "
               f"{float(row['cpu_ratio_to_baseline']):6.3f}  {row['baseline']}")


def run_benchmark(task: Task, *, threads: Sequence[int], rounds: int,
                  contenders: Sequence[str] = tuple(CONTENDERS), quick: bool = False,
                  rounds_per_build: int = ROUNDS_PER_BUILD,
                  report: Callable[[str], None] = print) -> list[dict[str, str]]:
    """Time every contender at every thread count; return one CSV row per pair."""
    run_id = new_run_id()
    names = list(dict.fromkeys([*contenders, *(BASELINES[name] for name in contenders)]))
    rows: list[dict[str, str]] = []
    previous_threads = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            provenance_row = provenance()
            times, cpu_times = time_contenders(task, names, rounds,
                                               rounds_per_build=rounds_per_build)
            measured = [{**provenance_row, "run_id": run_id, "quick": str(quick),
                         **_row(task, name, times, cpu_times)} for name in names]
            _report_table(measured, count, task, rounds, report)
            rows += measured
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trainer_overhead",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="512 samples, 1 epoch, 2 rounds, 1 thread: a smoke run, not a measurement")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved rounds per thread count (default {DEFAULT_ROUNDS}, "
                        "or 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per timed run (default 2: 64 steps; 1 with --quick)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to run at (default 1 2, or 1 with --quick)")
    parser.add_argument("--rounds-per-build", type=int, default=ROUNDS_PER_BUILD,
                        help="rounds between fresh builds of every contender (default "
                        f"{ROUNDS_PER_BUILD})")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                        default=list(CONTENDERS), help="(their baselines always run too)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="CSV to append to")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds: expected a positive int, got {args.rounds}")
    if args.rounds_per_build < 1:
        parser.error(f"--rounds-per-build: expected a positive int, got {args.rounds_per_build}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive int, got {args.epochs}")
    if args.threads is not None and min(args.threads) < 1:
        parser.error(f"--threads: expected positive ints, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, str]]:
    args = _parse_args(argv)
    task = QUICK_TASK if args.quick else Task()
    if args.epochs is not None:
        task = replace(task, epochs=args.epochs)
    rounds = args.rounds or (2 if args.quick else DEFAULT_ROUNDS)
    rows: list[dict[str, str]] = []
    # One thread count at a time, each appended as soon as it is measured.
    for count in args.threads or ([1] if args.quick else [1, 2]):
        measured = run_benchmark(task, threads=[count], rounds=rounds,
                                 contenders=args.contenders, quick=args.quick,
                                 rounds_per_build=args.rounds_per_build)
        _upgrade_header(args.csv)
        append_csv(measured, args.csv, CSV_FIELDS)
        print(f"\nappended {len(measured)} rows to {args.csv}", flush=True)
        rows += measured
    return rows


if __name__ == "__main__":
    main()
