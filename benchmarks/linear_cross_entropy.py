"""Benchmark: the label-smoothed loss of a linear head, forward + backward, with and without logits.

Run ``python -m benchmarks.linear_cross_entropy`` (``--quick`` for a tiny smoke run), then
``python -m benchmarks.plot_linear_cross_entropy`` for the PNG.

Contenders, all computing the loss of ``F.linear(x, W)`` for index targets and the gradients of
``x`` and ``W``:

* ``materialised``: ``logits = F.linear(x, W)``, then ``F.cross_entropy(label_smoothing=0.1)``.
* ``compiled``: the same two lines under ``torch.compile`` (what a user gets for free; its
  compile time is spent in the warm-up, not timed).
* ``torch_chunked_s0``: ``F.linear_cross_entropy(x, W, y,
  options=LinearCrossEntropyOptions())``, PyTorch's chunked path, without smoothing (it has
  none to offer).
* ``torch_chunked_s01``: the same with ``label_smoothing=0.1`` (PyTorch warns and falls back
  to the full logits).
* ``ours``: :func:`labelsmooth.functional.smoothed_linear_cross_entropy` with smoothing 0.1.

Method (as ``benchmarks.cross_entropy``): every contender runs once per round in an order
shuffled afresh each round, after one warm-up call each; the median over rounds is reported
with its ratio to ``materialised``. Memory: each contender runs once in a fresh subprocess
(glibc's mmap threshold at 64 KiB), after a small warm-up call; the peak RSS mark is reset,
one forward + backward runs and keeps the gradients of ``x`` and ``W``, and the peak RSS minus
the RSS before the call is reported in units of the float32 logits' bytes (``rows x classes x
4``), gradients included. On a GPU (``--device cuda``) the peak comes from the caching
allocator instead. Accuracy: ``ours``' loss and weight gradient are compared with a float64
computation of the same rounded inputs (``--no-accuracy`` skips it: at large shapes the
float64 products cost more than a round). Rows are appended to
``benchmarks/results/linear_cross_entropy.csv`` with provenance.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import (
    CPU,
    ROOT,
    append_csv,
    new_run_id,
    parse_device,
    reset_peak_rss,
    run_probe,
    status_kib,
    synchronize,
)
from benchmarks._common import provenance as common_provenance
from labelsmooth.functional import smoothed_linear_cross_entropy

__all__ = ["CONTENDERS", "Shape", "main", "run_benchmark"]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CSV = RESULTS / "linear_cross_entropy.csv"
DEFAULT_CUDA_CSV = RESULTS / "linear_cross_entropy_cuda.csv"
SMOOTHING = 0.1

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _materialised(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(x, w), y, label_smoothing=SMOOTHING)


_compiled_loss: LossFn | None = None


def _compiled(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    global _compiled_loss
    if _compiled_loss is None:
        _compiled_loss = torch.compile(_materialised)
    return _compiled_loss(x, w, y)


def _torch_chunked(smoothing: float) -> LossFn:
    def loss(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback warning with smoothing
            return F.linear_cross_entropy(x, w, y, label_smoothing=smoothing,
                                          options=torch.nn.LinearCrossEntropyOptions())
    return loss


def _ours(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return smoothed_linear_cross_entropy(x, w, y, SMOOTHING)


CONTENDERS: dict[str, LossFn] = {
    "materialised": _materialised,
    "compiled": _compiled,
    "torch_chunked_s0": _torch_chunked(0.0),
    "torch_chunked_s01": _torch_chunked(SMOOTHING),
    "ours": _ours,
}


@dataclass(frozen=True)
class Shape:
    rows: int
    hidden: int
    classes: int
    dtype: torch.dtype

    @property
    def logits_bytes(self) -> int:
        """Bytes of the float32 logits, the unit of the memory column."""
        return self.rows * self.classes * 4

    def label(self) -> str:
        return f"{self.rows}x{self.hidden}x{self.classes}:{str(self.dtype).removeprefix('torch.')}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        size, _, dtype_name = text.partition(":")
        try:
            rows, hidden, classes = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected ROWSxHIDDENxCLASSES[:floating dtype], got {text!r}") from None
        dtype = getattr(torch, dtype_name or "float32", None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise argparse.ArgumentTypeError(
                f"expected ROWSxHIDDENxCLASSES[:floating dtype], got {text!r}")
        return cls(rows, hidden, classes, dtype)


FULL_SHAPES = [Shape.parse(s) for s in ("4096x1024x32000", "2048x2048x128256:bfloat16")]
QUICK_SHAPES = [Shape.parse(s) for s in ("64x16x500", "32x16x300:bfloat16")]


def _inputs(shape: Shape, device: torch.device = CPU, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.rows, shape.hidden, generator=generator)
    w = torch.randn(shape.classes, shape.hidden, generator=generator) / shape.hidden ** 0.5
    y = torch.randint(shape.classes, (shape.rows,), generator=generator)
    return x.to(device, shape.dtype), w.to(device, shape.dtype), y.to(device)


def _forward_backward(fn: LossFn, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, ...]:
    loss = fn(x, w, y)
    return (loss.detach(), *torch.autograd.grad(loss, (x, w)))


def time_shape(shape: Shape, repeats: int, names: Sequence[str],
               device: torch.device = CPU) -> dict[str, list[float]]:
    """Seconds per forward + backward for each contender, interleaved over ``repeats`` rounds."""
    x, w, y = _inputs(shape, device)
    x.requires_grad_()
    w.requires_grad_()
    times: dict[str, list[float]] = {name: [] for name in names}
    order = list(names)

    def once(name: str) -> float:
        synchronize(device)
        start = time.perf_counter()
        result = _forward_backward(CONTENDERS[name], x, w, y)
        synchronize(device)
        elapsed = time.perf_counter() - start
        del result
        return elapsed

    for name in order:
        once(name)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            times[name].append(once(name))
    return times


def accuracy(shape: Shape, device: torch.device = CPU) -> tuple[float, float]:
    """``ours`` against float64: loss error in units of its dtype's rounding, weight-grad error.

    The first is ``|loss - loss64| / ulp(loss64)`` (at most 0.5 is one correct rounding); the
    second ``||dW - dW64|| / ||dW64||``.
    """
    x, w, y = _inputs(shape, device)
    loss, _, grad_w = _forward_backward(_ours, x.requires_grad_(), w.requires_grad_(), y)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref, _, ref_w = _forward_backward(_materialised, x64, w64, y)
    ulp = torch.finfo(shape.dtype).eps * 2.0 ** torch.floor(torch.log2(ref.abs()))
    loss_error = float((loss.double() - ref).abs() / ulp)
    grad_error = float((grad_w.double() - ref_w).norm() / ref_w.norm())
    return loss_error, grad_error


def _probe_memory(contender: str, shape: Shape) -> int:
    """In this fresh process: peak RSS growth over one forward + backward, in bytes."""
    small = Shape(min(shape.rows, 64), shape.hidden, shape.classes, shape.dtype)
    warm_x, warm_w, warm_y = _inputs(small)
    _forward_backward(CONTENDERS[contender], warm_x.requires_grad_(), warm_w.requires_grad_(),
                      warm_y)
    x, w, y = _inputs(shape)
    x.requires_grad_()
    w.requires_grad_()
    if not reset_peak_rss():
        raise SystemExit("memory probe: needs Linux's /proc/self/clear_refs")
    before = status_kib("VmRSS")
    result = _forward_backward(CONTENDERS[contender], x, w, y)
    peak = status_kib("VmHWM")
    del result
    if before is None or peak is None:
        raise SystemExit("memory probe: needs /proc/self/status")
    return (peak - before) * 1024


def _probe_cuda_memory(contender: str, shape: Shape, device: torch.device) -> int:
    small = Shape(min(shape.rows, 64), shape.hidden, shape.classes, shape.dtype)
    warm_x, warm_w, warm_y = _inputs(small, device)
    _forward_backward(CONTENDERS[contender], warm_x.requires_grad_(), warm_w.requires_grad_(),
                      warm_y)
    x, w, y = _inputs(shape, device)
    x.requires_grad_()
    w.requires_grad_()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = _forward_backward(CONTENDERS[contender], x, w, y)
    torch.cuda.synchronize(device)
    del result
    return torch.cuda.max_memory_allocated(device) - before


def measure_memory(contender: str, shape: Shape, device: torch.device = CPU) -> int:
    """Peak extra bytes of ``contender`` on ``shape``: on the CPU in a subprocess of its own."""
    if device.type == "cuda":
        return _probe_cuda_memory(contender, shape, device)
    payload: dict[str, int] = run_probe("benchmarks.linear_cross_entropy", "--memory-probe",
                                        contender, "--shapes", shape.label())
    return payload["peak_extra_bytes"]


CSV_FIELDS = [
    "run_id", "date", "git_commit", "machine", "cpu_count", "torch_threads", "torch_version",
    "python_version", "quick", "rows", "hidden", "classes", "dtype", "contender", "repeats",
    "median_ms", "min_ms", "ratio_to_materialised", "logits_bytes", "peak_extra_bytes",
    "peak_extra_over_logits", "loss_error_ulps", "weight_grad_rel_error",
]


def run_benchmark(
    shapes: Sequence[Shape], *, repeats: int, contenders: Sequence[str] = tuple(CONTENDERS),
    measure_memory_too: bool = True, measure_accuracy: bool = True, quick: bool = False,
    report: Callable[[str], None] = print, device: torch.device = CPU,
) -> list[dict[str, str]]:
    """Time (and measure) every contender on every shape; return one CSV row per pair."""
    provenance = common_provenance(device)
    run_id = new_run_id()
    rows: list[dict[str, str]] = []
    for shape in shapes:
        times = time_shape(shape, repeats, contenders, device)
        median = {name: statistics.median(values) for name, values in times.items()}
        errors = accuracy(shape, device) if measure_accuracy and "ours" in contenders else None
        report(f"\n{shape.label()}  (float32 logits {shape.logits_bytes / 2**20:.1f} MiB, "
               f"{repeats} rounds, medians)")
        report(f"  {'contender':18s} {'ms':>10s} {'/materialised':>13s} {'peak extra / logits':>20s}")
        for name in contenders:
            peak = measure_memory(name, shape, device) if measure_memory_too else None
            ratio = median[name] / median["materialised"]
            row = {
                **provenance, "run_id": run_id, "quick": str(quick), "rows": str(shape.rows),
                "hidden": str(shape.hidden), "classes": str(shape.classes),
                "dtype": str(shape.dtype).removeprefix("torch."), "contender": name,
                "repeats": str(repeats), "median_ms": f"{median[name] * 1e3:.3f}",
                "min_ms": f"{min(times[name]) * 1e3:.3f}",
                "ratio_to_materialised": f"{ratio:.4f}",
                "logits_bytes": str(shape.logits_bytes),
                "peak_extra_bytes": "" if peak is None else str(peak),
                "peak_extra_over_logits": "" if peak is None
                else f"{peak / shape.logits_bytes:.4f}",
                "loss_error_ulps": f"{errors[0]:.3f}" if errors and name == "ours" else "",
                "weight_grad_rel_error": f"{errors[1]:.3e}" if errors and name == "ours" else "",
            }
            rows.append(row)
            memory = "" if peak is None else f"{peak / shape.logits_bytes:20.3f}"
            report(f"  {name:18s} {median[name] * 1e3:10.1f} {ratio:13.3f} {memory}")
        if errors:
            report(f"  ours against float64: loss off by {errors[0]:.3f} ulp of "
                   f"{shape.dtype}, weight gradient relative error {errors[1]:.2e}")
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.linear_cross_entropy",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and few rounds: a smoke run, not a measurement")
    parser.add_argument("--shapes", nargs="+", type=Shape.parse, default=None,
                        help="shapes as ROWSxHIDDENxCLASSES[:dtype], e.g. 4096x1024x32000")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved rounds per shape (default 5, or 2 with --quick)")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                        default=list(CONTENDERS))
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-contender memory subprocesses")
    parser.add_argument("--no-accuracy", action="store_true",
                        help="skip the float64 comparison of ours")
    parser.add_argument("--device", type=parse_device, default=CPU,
                        help="where the tensors live: cpu (default) or cuda[:N]")
    parser.add_argument("--csv", type=Path, default=None,
                        help=f"CSV to append to (default {DEFAULT_CSV.relative_to(ROOT)}, "
                             f"or {DEFAULT_CUDA_CSV.relative_to(ROOT)} with --device cuda)")
    parser.add_argument("--memory-probe", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if "materialised" not in args.contenders:
        parser.error("--contenders: expected a list that includes materialised (the ratios' base)")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: expected a device this machine has, got {args.device} "
                     "(torch.cuda.is_available() is False)")
    if args.csv is None:
        args.csv = DEFAULT_CUDA_CSV if args.device.type == "cuda" else DEFAULT_CSV
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, str]]:
    args = _parse_args(argv)
    if args.memory_probe:
        print(json.dumps({"peak_extra_bytes": _probe_memory(args.memory_probe, args.shapes[0])}))
        return []
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    repeats = args.repeats or (2 if args.quick else 5)
    rows = run_benchmark(shapes, repeats=repeats, contenders=args.contenders,
                         measure_memory_too=not args.no_memory,
                         measure_accuracy=not args.no_accuracy, quick=args.quick,
                         device=args.device)
    append_csv(rows, args.csv, CSV_FIELDS)
    print(f"\nappended {len(rows)} rows to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
