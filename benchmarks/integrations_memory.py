"""Peak memory of the label-smoothed loss step in Hugging Face's Trainer: theirs against ours.

``python -m benchmarks.integrations_memory`` measures, for causal-LM logits of shape
``(B, T, V)`` (default ``8x1024x32000`` bfloat16, 10% of the labels padding), the peak resident
memory that one forward + backward of the loss adds on top of the logits, for:

- ``huggingface``: ``transformers.trainer_pt_utils.LabelSmoother`` (what
  ``TrainingArguments(label_smoothing_factor=...)`` uses);
- ``ours_inplace``: ``labelsmooth.integrations.transformers.LabelSmoother`` (the default,
  gradient written into the logits);
- ``ours``: the same with ``inplace_backward=False`` (one fresh gradient buffer).

Every measurement runs in a fresh process of its own (the peak-RSS mark is reset right before
the call through ``/proc/self/clear_refs``; ``ru_maxrss`` differences elsewhere), the contenders
interleaved in a shuffled order in each round. It prints the median peak per contender, its
ratio to Hugging Face's in the same run, and each loss's relative difference to Hugging Face's,
and appends one row per measurement, with provenance, to
``benchmarks/results/integrations_memory.csv``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import (
    append_csv,
    cpu_name,
    git_commit,
    reset_peak_rss,
    run_probe,
    status_kib,
    utc_now,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT / "benchmarks" / "results" / "integrations_memory.csv"
CONTENDERS = ("huggingface", "ours_inplace", "ours")
CSV_FIELDS = ["run_id", "date", "git_commit", "machine", "cpu_count", "torch_version",
              "transformers_version", "shape", "dtype", "contender", "round", "peak_extra_bytes",
              "logits_bytes", "loss", "reference_loss", "seconds"]

LossFn = Callable[..., torch.Tensor]


def _smoother(contender: str) -> LossFn:
    if contender == "huggingface":
        # Looked up at run time so that type-checking the benchmarks does not analyse all of
        # transformers (about a minute on a cold cache).
        trainer_pt_utils = importlib.import_module("transformers.trainer_pt_utils")
        return trainer_pt_utils.LabelSmoother(epsilon=0.1)
    from labelsmooth.integrations.transformers import LabelSmoother as Ours

    return Ours(0.1, inplace_backward=contender == "ours_inplace")


class _ModelOutput(torch.autograd.Function):
    """Hands the logits over as a model's output: a non-leaf requiring grad, sharing storage."""

    @staticmethod
    def forward(ctx: Any, leaf: torch.Tensor) -> torch.Tensor:
        return leaf.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _inputs(shape: tuple[int, int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.empty(shape, dtype=dtype)
    logits.normal_(generator=generator)
    labels = torch.randint(shape[2], shape[:2], generator=generator)
    labels[torch.rand(shape[:2], generator=generator) < 0.1] = -100
    return logits, labels


def _step(smoother: LossFn, leaf: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _ModelOutput.apply(leaf)
    loss = smoother({"logits": logits}, labels, shift_labels=True)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def probe(contender: str, shape: tuple[int, int, int], dtype: torch.dtype) -> dict[str, float]:
    """In this process: the loss, the seconds, and the peak RSS growth of one loss step."""
    smoother = _smoother(contender)
    warm_leaf, warm_labels = _inputs((shape[0], 8, shape[2]), dtype)  # one-time costs first
    _step(smoother, warm_leaf.requires_grad_(), warm_labels)
    logits, labels = _inputs(shape, dtype)
    leaf = logits.requires_grad_()
    if reset_peak_rss() and (before := status_kib("VmRSS")) is not None:
        start = time.perf_counter()
        loss, grad = _step(smoother, leaf, labels)
        seconds = time.perf_counter() - start
        peak = (status_kib("VmHWM") or before) - before
        extra = peak * 1024
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        loss, grad = _step(smoother, leaf, labels)
        seconds = time.perf_counter() - start
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * (
            1 if sys.platform == "darwin" else 1024)
    del grad, leaf, logits
    return {"peak_extra_bytes": extra, "loss": float(loss), "seconds": seconds,
            "reference_loss": reference_loss(shape, dtype)}


def reference_loss(shape: tuple[int, int, int], dtype: torch.dtype) -> float:
    """The exact loss of the same inputs: PyTorch's smoothed loss in float64, one sequence at a time."""
    logits, labels = _inputs(shape, dtype)
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    total = sum(float(torch.nn.functional.cross_entropy(logits[b].double(), shifted[b], label_smoothing=0.1,
                                                        reduction="sum")) for b in range(shape[0]))
    return total / int((shifted != -100).sum())


def _measure(contender: str, shape_text: str, dtype_name: str) -> dict[str, float]:
    payload: dict[str, float] = run_probe("benchmarks.integrations_memory", "--probe", contender,
                                          "--shape", shape_text, "--dtype", dtype_name)
    return payload


def provenance() -> dict[str, str]:
    try:
        import importlib.metadata

        transformers_version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers_version = "missing"
    return {
        "date": utc_now(),
        "git_commit": git_commit(),
        "machine": f"{platform.node()} ({cpu_name()})",
        "cpu_count": str(os.cpu_count()),
        "torch_version": torch.__version__,
        "transformers_version": transformers_version,
    }


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"--shape: expected BxTxV (three positive ints), got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def run(shape_text: str, dtype_name: str, rounds: int, csv_path: Path,
        measure: Callable[[str, str, str], dict[str, float]] = _measure) -> list[dict[str, Any]]:
    """Measure every contender ``rounds`` times, interleaved; append the rows; print a summary."""
    shape = parse_shape(shape_text)
    dtype = getattr(torch, dtype_name)
    logits_bytes = shape[0] * shape[1] * shape[2] * torch.empty((), dtype=dtype).element_size()
    meta = {"run_id": uuid.uuid4().hex[:8], **provenance(), "shape": shape_text, "dtype": dtype_name,
            "logits_bytes": logits_bytes}
    rows: list[dict[str, Any]] = []
    order = list(CONTENDERS)
    for round_index in range(rounds):
        random.shuffle(order)
        for contender in order:
            rows.append({**meta, "contender": contender, "round": round_index,
                         **measure(contender, shape_text, dtype_name)})
    append_csv(rows, csv_path, CSV_FIELDS)
    _summarise(rows, meta, rounds, csv_path)
    return rows


def _summarise(rows: list[dict[str, Any]], meta: dict[str, Any], rounds: int, csv_path: Path) -> None:
    def median(contender: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in rows if r["contender"] == contender)

    reference, exact = median("huggingface", "peak_extra_bytes"), median("huggingface", "reference_loss")
    print(f"loss step (forward + backward) on {meta['shape']} {meta['dtype']} logits "
          f"({meta['logits_bytes'] / 2**20:.0f} MiB), causal shift, 10% padding; "
          f"median of {rounds} runs per contender, each in its own process, interleaved")
    print(f"{'contender':<14}{'peak extra MiB':>16}{'x huggingface':>15}{'x logits':>10}"
          f"{'loss':>12}{'rel. err':>11}{'seconds':>9}")
    for contender in CONTENDERS:
        peak, loss = median(contender, "peak_extra_bytes"), median(contender, "loss")
        ratio = peak / reference if reference else float("nan")
        difference = abs(loss - exact) / abs(exact)
        print(f"{contender:<14}{peak / 2**20:>16.1f}{ratio:>15.3f}{peak / meta['logits_bytes']:>10.3f}"
              f"{loss:>12.6f}{difference:>11.2e}{median(contender, 'seconds'):>9.2f}")
    print(f"exact loss (float64) {exact:.6f}")
    print(f"{meta['machine']}, torch {meta['torch_version']}, transformers {meta['transformers_version']}, "
          f"commit {meta['git_commit']}; rows appended to {csv_path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8x1024x32000", help="logits B x T x V (default 8x1024x32000)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--probe", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parse_shape(args.shape)
    if args.probe:
        print(json.dumps(probe(args.probe, parse_shape(args.shape), getattr(torch, args.dtype))))
        return
    run(args.shape, args.dtype, args.rounds, args.csv)


if __name__ == "__main__":
    main()
