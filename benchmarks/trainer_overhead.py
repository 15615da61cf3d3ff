"""Benchmark: what the Trainer itself costs per step, against a hand-written training loop.

Run ``python -m benchmarks.trainer_overhead`` (``--quick`` for a tiny smoke run).

The task is small enough that the Trainer's own per-step work shows: a 40-256-256-10 MLP
(ReLU), batches of 128 from 4096 random examples shuffled by a ``DataLoader``, Adam (lr 1e-3),
16 epochs (512 optimizer steps, a few seconds per run, so that a run is long against the
machine's jitter). Contenders, each against the hand-written loop that does the
same math:

* ``loop``: ``zero_grad``, ``F.cross_entropy(model(x), y)``, ``backward``, ``step``.
* ``loop_ls``: the same with ``label_smoothing=0.1``.
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

Method: every contender trains a fresh model from the same seed once per round, in an order
shuffled afresh each round (the machine may be shared; a fixed order would favour whoever runs
after a quiet spell), after one short untimed warm-up run each (one epoch). The time of one run
is the wall time of the training alone (building the model, optimizer and Trainer is outside
it). The median over rounds gives samples/s and the ratio of the medians to the contender's
baseline (above 1 is faster than the baseline). Each round also gives a paired ratio, the
baseline's time in that round over the contender's: their median, minimum and maximum over the
rounds show how far the noise moves a ratio. This is repeated for each torch thread count. The
process's CPU time per run is reported beside the wall time: on a machine shared with other
jobs it is the steadier measure of the work done (at one thread; at more, OpenMP's waiting
threads count too). Rows are appended to
``benchmarks/results/trainer_overhead.csv`` with provenance (machine, torch version, date,
commit). The loss here is a few microseconds: ``torch.compile`` of it changes the baselines by
less than the run-to-run noise, so the loops run PyTorch's eager loss.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._common import append_csv, new_run_id, provenance
from labelsmooth.algorithms import LabelSmoothing, MixUp
from labelsmooth.trainer import Trainer

__all__ = ["BASELINES", "CONTENDERS", "Task", "main", "run_benchmark"]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CSV = RESULTS / "trainer_overhead.csv"
SMOOTHING = 0.1
MIXUP_ALPHA = 0.2


@dataclass(frozen=True)
class Task:
    """The training run every contender does."""

    samples: int = 4096
    batch_size: int = 128
    epochs: int = 16
    features: int = 40
    hidden: int = 256
    classes: int = 10

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

# A contender: given the task and its data, build everything and return the training to time.
Prepare = Callable[[Task, TensorDataset], Callable[[], None]]


def _loop(smoothing: float, mixup: bool) -> Prepare:
    def prepare(task: Task, data: TensorDataset) -> Callable[[], None]:
        model, loader = task.model(), task.loader(data)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        beta = torch.distributions.Beta(MIXUP_ALPHA, MIXUP_ALPHA)

        def train() -> None:
            model.train()
            for _ in range(task.epochs):
                for inputs, targets in loader:
                    optimizer.zero_grad(set_to_none=True)
                    if mixup:
                        lam = float(beta.sample())
                        perm = torch.randperm(inputs.shape[0])
                        logits = model(lam * inputs + (1 - lam) * inputs[perm])
                        loss = (lam * F.cross_entropy(logits, targets, label_smoothing=smoothing)
                                + (1 - lam) * F.cross_entropy(logits, targets[perm],
                                                              label_smoothing=smoothing))
                    else:
                        loss = F.cross_entropy(model(inputs), targets, label_smoothing=smoothing)
                    loss.backward()
                    optimizer.step()

        return train
    return prepare


def _trainer(*, smoothing: bool, mixup: bool, train_metrics: bool = True) -> Prepare:
    def prepare(task: Task, data: TensorDataset) -> Callable[[], None]:
        model = task.model()
        algorithms = ([LabelSmoothing(SMOOTHING)] if smoothing else []) + (
            [MixUp(MIXUP_ALPHA)] if mixup else [])
        # Without an algorithm, the loop's own loss; with one, the default loss.
        loss = {} if algorithms else {"loss_fn": F.cross_entropy}
        trainer = Trainer(model, task.loader(data), max_duration=f"{task.epochs}ep", **loss,
                          optimizers=torch.optim.Adam(model.parameters(), lr=1e-3),
                          algorithms=algorithms, device="cpu", progress_bar=False,
                          train_metrics=train_metrics)
        return trainer.fit
    return prepare


CONTENDERS: dict[str, Prepare] = {
    "loop": _loop(0.0, mixup=False),
    "loop_ls": _loop(SMOOTHING, mixup=False),
    "loop_ls_mixup": _loop(SMOOTHING, mixup=True),
    "trainer": _trainer(smoothing=False, mixup=False),
    "trainer_no_metrics": _trainer(smoothing=False, mixup=False, train_metrics=False),
    "trainer_ls": _trainer(smoothing=True, mixup=False),
    "trainer_ls_mixup": _trainer(smoothing=True, mixup=True),
}
BASELINES = {"loop": "loop", "loop_ls": "loop_ls", "loop_ls_mixup": "loop_ls_mixup",
             "trainer": "loop", "trainer_no_metrics": "loop", "trainer_ls": "loop_ls",
             "trainer_ls_mixup": "loop_ls_mixup"}


def _time_once(prepare: Prepare, task: Task, data: TensorDataset) -> tuple[float, float]:
    """Wall and CPU seconds of one training run."""
    train = prepare(task, data)
    wall, cpu = time.perf_counter(), time.process_time()
    train()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_contenders(task: Task, names: Sequence[str], rounds: int, seed: int = 0
                    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per training run of each contender: one warm-up each (one epoch),
    then ``rounds`` rounds in a freshly shuffled order."""
    data = task.data()
    order = list(names)
    shuffler = random.Random(seed)
    warm_up = replace(task, epochs=1)
    for name in order:
        _time_once(CONTENDERS[name], warm_up, data)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            seconds, cpu_seconds = _time_once(CONTENDERS[name], task, data)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu


CSV_FIELDS = [
    "run_id", "date", "git_commit", "machine", "cpu_count", "torch_threads", "torch_version",
    "python_version", "quick", "samples", "batch_size", "epochs", "contender", "baseline",
    "rounds", "median_s", "min_s", "samples_per_s", "ratio_to_baseline", "median_cpu_s",
    "cpu_ratio_to_baseline", "paired_ratio_median", "paired_ratio_min", "paired_ratio_max",
]


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


def run_benchmark(task: Task, *, threads: Sequence[int], rounds: int,
                  contenders: Sequence[str] = tuple(CONTENDERS), quick: bool = False,
                  report: Callable[[str], None] = print) -> list[dict[str, str]]:
    """Time every contender at every thread count; return one CSV row per pair."""
    run_id = new_run_id()
    names = list(dict.fromkeys([*contenders, *(BASELINES[name] for name in contenders)]))
    trained = task.samples * task.epochs
    rows: list[dict[str, str]] = []
    previous_threads = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            provenance_row = provenance()
            times, cpu_times = time_contenders(task, names, rounds)
            median = {name: statistics.median(values) for name, values in times.items()}
            cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
            report(f"\n{count} thread(s): {rounds} interleaved rounds, medians, "
                   f"{trained} samples per run; per round: the baseline's time over the "
                   "contender's in the same round (median [min, max])")
            report(f"  {'contender':20s} {'samples/s':>10s} {'vs baseline':>12s} "
                   f"{'per round':>22s} {'CPU s':>7s} {'CPU vs baseline':>16s}  baseline")
            for name in names:
                baseline = BASELINES[name]
                ratio = median[baseline] / median[name]
                cpu_ratio = cpu[baseline] / cpu[name]
                paired = paired_ratios(times, name)
                paired_median = statistics.median(paired)
                rows.append({
                    **provenance_row, "run_id": run_id, "quick": str(quick),
                    "samples": str(task.samples), "batch_size": str(task.batch_size),
                    "epochs": str(task.epochs), "contender": name, "baseline": baseline,
                    "rounds": str(rounds), "median_s": f"{median[name]:.5f}",
                    "min_s": f"{min(times[name]):.5f}",
                    "samples_per_s": f"{trained / median[name]:.1f}",
                    "ratio_to_baseline": f"{ratio:.4f}",
                    "median_cpu_s": f"{cpu[name]:.5f}",
                    "cpu_ratio_to_baseline": f"{cpu_ratio:.4f}",
                    "paired_ratio_median": f"{paired_median:.4f}",
                    "paired_ratio_min": f"{min(paired):.4f}",
                    "paired_ratio_max": f"{max(paired):.4f}",
                })
                spread = f"{paired_median:.3f} [{min(paired):.3f}, {max(paired):.3f}]"
                report(f"  {name:20s} {trained / median[name]:10.0f} {ratio:12.3f} "
                       f"{spread:>22s} {cpu[name]:7.3f} {cpu_ratio:16.3f}  {baseline}")
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trainer_overhead",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="512 samples, 1 epoch, 1 round, 1 thread: a smoke run, not a measurement")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per thread count (default 8, or 1 with --quick)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to run at (default 1 2, or 1 with --quick)")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                        default=list(CONTENDERS), help="(their baselines always run too)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="CSV to append to")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds: expected a positive int, got {args.rounds}")
    if args.threads is not None and min(args.threads) < 1:
        parser.error(f"--threads: expected positive ints, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, str]]:
    args = _parse_args(argv)
    task = QUICK_TASK if args.quick else Task()
    rows: list[dict[str, str]] = []
    # One thread count at a time, each appended as soon as it is measured.
    for count in args.threads or ([1] if args.quick else [1, 2]):
        measured = run_benchmark(task, threads=[count], rounds=args.rounds or (1 if args.quick else 8),
                                 contenders=args.contenders, quick=args.quick)
        _upgrade_header(args.csv)
        append_csv(measured, args.csv, CSV_FIELDS)
        print(f"\nappended {len(measured)} rows to {args.csv}", flush=True)
        rows += measured
    return rows


if __name__ == "__main__":
    main()
