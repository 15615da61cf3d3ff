"""Benchmark: label-smoothed cross-entropy, forward + backward, against the usual ways to write it.

Run ``python -m benchmarks.cross_entropy`` (``--quick`` for a tiny smoke run), then
``python -m benchmarks.plot_cross_entropy`` for the PNG.

Contenders, all computing the loss and the gradient of the logits from index targets:

* ``native``: ``F.cross_entropy(x, y, label_smoothing=s)``.
* ``compiled``: the same through ``torch.compile`` (inductor generates a fused C++ kernel on
  the CPU); compiled afresh for each shape and warmed up before anything is measured.
* ``composer_dense``: Composer's recipe, a dense ``one_hot * (1 - s) + s / C`` target (one-hot
  built as int64 as ``F.one_hot`` returns it) passed to ``F.cross_entropy``.
* ``timm_logsoftmax``: timm's ``LabelSmoothingCrossEntropy``: ``log_softmax``, the gathered
  NLL and the row mean of ``-log p``, mixed with ``1 - s`` and ``s``.
* ``ours``: :func:`labelsmooth._ops.fused_smoothed_cross_entropy` (what
  ``labelsmooth.functional.smoothed_cross_entropy`` runs).
* ``ours_inplace``: the same with ``inplace_backward=True``.
* ``ours_prior``, ``ours_per_sample``, ``ours_mixed``: ``ours`` with a ``prior`` vector, with a
  per-row smoothing tensor, and with two target columns and shares (a MixUp batch). Their
  values are chosen so that the loss is the same as everyone's (the uniform prior as a vector,
  ``s`` repeated per row, the target twice with shares 1/2), so every contender still computes
  one loss, but each runs the general code path (a matrix-vector product with the prior, per-row
  coefficients, a second target column). Their time is printed as a ratio to ``ours`` of the
  same run from ``VARIANT_MIN_CLASSES`` classes on.
* ``ours_penalty``: ``ours`` with ``confidence_penalty=PENALTY`` (the confidence penalty fused
  into the pass), and ``ours_penalty_unfused``: ``ours`` plus
  :func:`labelsmooth.functional.confidence_penalty` as a separate term, what a user writes
  without the fused option. These two compute another loss than the others (cross-entropy plus
  the penalty); ``ours_penalty`` is printed as a ratio to ``ours`` and to
  ``ours_penalty_unfused``.

Plan variants, run only when named with ``--contenders`` (they measure the choices of
:func:`labelsmooth._ops.planning.plan` against the alternatives): ``ours_pytorch_threads`` and
``ours_inplace_pytorch_threads`` (the chunks on PyTorch's intra-op threads instead of
single-threaded workers) and ``ours_chunked`` (the chunked pass also where PyTorch's own loss is chosen).

Three floors put the times in proportion: ``copy`` (one read and one write of the logits, into a
buffer already touched) and ``clone`` (the same into fresh memory, so with its page faults: what
any out-of-place gradient costs at least) bound the memory traffic; ``softmax`` (PyTorch's own
``torch.softmax`` of the logits into a touched buffer of their dtype, on its own threads) bounds
the arithmetic: every gradient entry needs one exponential, and this is the cheapest
exponential-per-element pass PyTorch offers on the device.

Method. Time: every contender runs once per round, in an order shuffled afresh each round (the
machine is shared and noisy, and a call is slowed by what ran just before it, e.g. the memory
another contender freed, so neither position nor neighbour may be fixed); the logits are
restored from a pristine copy before each call (outside the timing, since the in-place contender
destroys them), handed over as a non-leaf tensor that requires grad (as a model's output would
be), and ``torch.autograd.grad`` returns the gradient. The median over rounds is reported, with
its ratio to ``native`` and to the two floors. Small calls get more rounds: after ``--repeats``
rounds, rounds go on until every contender has ``--min-seconds`` of samples (at most
``MAX_ROUNDS``), so that a 10 ms call has about a hundred. The ratios of the general paths to
``ours`` are paired: the median over rounds of the two calls' ratio within a round, printed with
its quartiles, so that a slow stretch of the shared machine slows both sides of a ratio. Memory:
each contender runs once in its own fresh subprocess (glibc's mmap threshold fixed at 64 KiB, so
freed buffers leave the resident set); after the inputs are built and a small warm-up call has
run, the kernel's peak RSS mark is reset (``/proc/self/clear_refs``), one forward + backward
runs and keeps its gradient, and the peak RSS minus the RSS before the call is the peak extra
memory, reported in units of the logits' bytes (``ru_maxrss`` differences where ``/proc`` is
unavailable).
Rows are appended to ``benchmarks/results/cross_entropy.csv`` with provenance.

On a GPU (``--device cuda``; rows go to ``benchmarks/results/cross_entropy_cuda.csv`` unless
``--csv`` says otherwise, and the machine column names the GPU) the same contenders run on the
device, ``ours`` being the Triton kernel where Triton imports: every timed call is bracketed by
``torch.cuda.synchronize()``, and the peak extra memory is measured in this process from the
caching allocator's peak (``torch.cuda.max_memory_allocated`` after a reset, minus what was
allocated before the call), which counts tensors, not the allocator's cached blocks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from labelsmooth._ops import fused_smoothed_cross_entropy, planning
from labelsmooth.functional import confidence_penalty

__all__ = ["CONTENDERS", "Shape", "main", "run_benchmark"]

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CSV = RESULTS / "cross_entropy.csv"
DEFAULT_CUDA_CSV = RESULTS / "cross_entropy_cuda.csv"
SMOOTHING = 0.1
PENALTY = 0.1  # the confidence penalty's beta

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _native(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(x, y, label_smoothing=SMOOTHING)


_COMPILED: dict[tuple[tuple[int, ...], torch.dtype, torch.device], LossFn] = {}


def _compiled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    key = (tuple(x.shape), x.dtype, x.device)
    if key not in _COMPILED:
        torch._dynamo.reset()  # a fresh compilation per shape, never a recompile limit
        _COMPILED.clear()
        _COMPILED[key] = torch.compile(_native, dynamic=False)
    return _COMPILED[key](x, y)


def _composer_dense(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    num_classes = x.shape[1]
    dense = F.one_hot(y, num_classes) * (1.0 - SMOOTHING) + SMOOTHING / num_classes
    return F.cross_entropy(x, dense.to(x.dtype))


def _timm_logsoftmax(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logprobs = F.log_softmax(x, dim=-1)
    nll = -logprobs.gather(-1, y.unsqueeze(1)).squeeze(1)
    smooth = -logprobs.mean(dim=-1)
    return ((1.0 - SMOOTHING) * nll + SMOOTHING * smooth).mean()


def _ours(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, y, SMOOTHING, weight=None, ignore_index=-100,
                                        reduction="mean")


def _ours_inplace(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, y, SMOOTHING, weight=None, ignore_index=-100,
                                        reduction="mean", inplace_backward=True)


_GENERAL_INPUTS: dict[tuple[str, int, torch.dtype, torch.device], torch.Tensor] = {}


def _cached(kind: str, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The uniform prior or the per-row smoothing, made once per shape (not timed)."""
    key = (kind, size, dtype, device)
    if key not in _GENERAL_INPUTS:
        value = 1.0 / size if kind == "prior" else SMOOTHING
        _GENERAL_INPUTS[key] = torch.full((size,), value, dtype=dtype, device=device)
    return _GENERAL_INPUTS[key]


def _ours_prior(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, y, SMOOTHING, weight=None, ignore_index=-100,
                                        reduction="mean",
                                        prior=_cached("prior", x.shape[1], x.dtype, x.device))


def _ours_per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, y, _cached("smoothing", x.shape[0], x.dtype, x.device),
                                        weight=None, ignore_index=-100, reduction="mean")


def _ours_mixed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, torch.stack([y, y], 1), SMOOTHING, weight=None,
                                        ignore_index=-100, reduction="mean", shares=(0.5, 0.5))


def _ours_penalty(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fused_smoothed_cross_entropy(x, y, SMOOTHING, weight=None, ignore_index=-100,
                                        reduction="mean", confidence_penalty=PENALTY)


def _ours_penalty_unfused(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ours(x, y) + confidence_penalty(x, PENALTY)


def _variant(inplace: bool, **changes: Any) -> LossFn:
    """``ours`` (in place or not) with the plan's fields ``changes`` replaced."""
    gradient: planning.GradientTarget = "inplace" if inplace else "fresh"

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        chosen = planning.plan(x.shape[0], x.shape[1], x.dtype, x.device, gradient=gradient)
        if chosen.strategy == "native":  # the chunked plan, as for logits written in place
            chosen = planning.plan(x.shape[0], x.shape[1], x.dtype, x.device,
                                   gradient="inplace")
        return fused_smoothed_cross_entropy(x, y, SMOOTHING, weight=None, ignore_index=-100,
                                            reduction="mean", inplace_backward=inplace,
                                            plan=dataclasses.replace(chosen, **changes))
    return loss


DEFAULT_CONTENDERS = ("native", "compiled", "composer_dense", "timm_logsoftmax", "ours",
                      "ours_inplace", "ours_prior", "ours_per_sample", "ours_mixed",
                      "ours_penalty", "ours_penalty_unfused")
CONTENDERS: dict[str, LossFn] = {
    "native": _native,
    "compiled": _compiled,
    "composer_dense": _composer_dense,
    "timm_logsoftmax": _timm_logsoftmax,
    "ours": _ours,
    "ours_inplace": _ours_inplace,
    "ours_prior": _ours_prior,
    "ours_per_sample": _ours_per_sample,
    "ours_mixed": _ours_mixed,
    "ours_penalty": _ours_penalty,
    "ours_penalty_unfused": _ours_penalty_unfused,
    "ours_pytorch_threads": _variant(False, workers=1),
    "ours_inplace_pytorch_threads": _variant(True, workers=1),
    "ours_chunked": _variant(False),
}
FLOORS = ("copy", "clone", "softmax")


@dataclass(frozen=True)
class Shape:
    rows: int
    classes: int
    dtype: torch.dtype

    @property
    def logits_bytes(self) -> int:
        return self.rows * self.classes * torch.finfo(self.dtype).bits // 8

    def label(self) -> str:
        return f"{self.rows}x{self.classes}:{str(self.dtype).removeprefix('torch.')}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        size, _, dtype_name = text.partition(":")
        rows, classes = (int(v) for v in size.lower().split("x"))
        dtype = getattr(torch, dtype_name or "float32")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"--shapes: expected ROWSxCLASSES[:floating dtype], got {text!r}")
        return cls(rows, classes, dtype)


FULL_SHAPES = [Shape.parse(s) for s in (
    "8192x10", "8192x1000", "4096x32000", "2048x128256", "1024x262144", "2048x128256:bfloat16",
)]
QUICK_SHAPES = [Shape.parse(s) for s in ("512x10", "256x1000", "32x32000:bfloat16")]


class _ModelOutput(torch.autograd.Function):
    """Hands the logits over as a model output: a non-leaf requiring grad, sharing storage."""

    @staticmethod
    def forward(ctx: Any, leaf: torch.Tensor) -> torch.Tensor:
        return leaf.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _inputs(shape: Shape, seed: int = 0, device: torch.device | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.empty(shape.rows, shape.classes, dtype=shape.dtype)
    logits.normal_(generator=generator)
    target = torch.randint(0, shape.classes, (shape.rows,), generator=generator)
    if device is not None and device.type != "cpu":
        return logits.to(device), target.to(device)
    return logits, target


def _forward_backward(fn: LossFn, leaf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = _ModelOutput.apply(leaf)
    loss = fn(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


# Rounds stop here even if some contender has fewer than ``min_seconds`` of samples.
MAX_ROUNDS = 400


def time_shape(shape: Shape, repeats: int, names: Sequence[str],
               device: torch.device = CPU, min_seconds: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call for each contender and floor, interleaved over at least ``repeats``
    rounds and until each has ``min_seconds`` of samples (at most ``MAX_ROUNDS`` rounds)."""
    pristine, target = _inputs(shape, device=device)
    leaf = pristine.clone().requires_grad_()
    touched = torch.zeros_like(pristine)
    times: dict[str, list[float]] = {name: [] for name in (*names, *FLOORS)}
    order = list(times)

    def once(name: str) -> float:
        with torch.no_grad():
            leaf.copy_(pristine)
        synchronize(device)
        result: torch.Tensor | None = None
        start = time.perf_counter()
        if name == "copy":
            touched.copy_(pristine)
        elif name == "softmax":
            torch.softmax(pristine, 1, out=touched)
        elif name == "clone":
            result = pristine.clone()
        else:
            result = _forward_backward(CONTENDERS[name], leaf, target)
        synchronize(device)
        elapsed = time.perf_counter() - start
        del result  # freed outside the timed interval
        return elapsed

    for name in order:  # warm-up: first-call costs (lazy init, thread pool) are not measured
        once(name)
    shuffler = random.Random(0)
    rounds = 0
    while rounds < repeats or (rounds < MAX_ROUNDS
                               and min(sum(values) for values in times.values()) < min_seconds):
        shuffler.shuffle(order)
        for name in order:
            times[name].append(once(name))
        rounds += 1
    return times


def _warm_up_shape(shape: Shape) -> Shape:
    """A small shape that takes the same code path as ``shape``, for a first call whose
    one-time costs (lazy initialisation, thread pools) must not count as the call's memory:
    more logits than the fused loss hands to PyTorch's own (``NATIVE_MAX_ELEMENTS``) unless
    ``shape`` itself is that small."""
    rows = max(64, planning.NATIVE_MAX_ELEMENTS // shape.classes + 1)
    return Shape(min(shape.rows, rows), shape.classes, shape.dtype)


def _probe_memory(contender: str, shape: Shape) -> int:
    """In this (fresh) process: growth of the peak RSS, in bytes, over one forward + backward.

    On Linux the peak mark is reset right before the call (``/proc/self/clear_refs``), so the
    result is the peak during the call minus the resident size before it; elsewhere the
    ``ru_maxrss`` difference, which cannot see below an earlier, higher peak.
    """
    # The compiled contender is compiled for each shape: it warms up on the measured one.
    warm_shape = shape if contender == "compiled" else _warm_up_shape(shape)
    warm_leaf, warm_target = _inputs(warm_shape)
    _forward_backward(CONTENDERS[contender], warm_leaf.requires_grad_(), warm_target)
    del warm_leaf, warm_target
    pristine, target = _inputs(shape)
    leaf = pristine.requires_grad_()
    if reset_peak_rss():
        before = status_kib("VmRSS")
        grad = _forward_backward(CONTENDERS[contender], leaf, target)
        peak = status_kib("VmHWM")
        if before is not None and peak is not None:
            return (peak - before) * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = _forward_backward(CONTENDERS[contender], leaf, target)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del grad
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    return (after - before) * (1 if sys.platform == "darwin" else 1024)


def _probe_cuda_memory(contender: str, shape: Shape, device: torch.device) -> int:
    """Peak bytes allocated on the GPU during one forward + backward beyond those before it."""
    warm_shape = shape if contender == "compiled" else _warm_up_shape(shape)
    warm_leaf, warm_target = _inputs(warm_shape, device=device)
    _forward_backward(CONTENDERS[contender], warm_leaf.requires_grad_(), warm_target)
    del warm_leaf, warm_target
    leaf, target = _inputs(shape, device=device)
    leaf.requires_grad_()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    grad = _forward_backward(CONTENDERS[contender], leaf, target)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del grad, leaf
    return peak - before


def measure_memory(contender: str, shape: Shape,
                   device: torch.device = CPU) -> int:
    """Peak extra bytes of ``contender`` on ``shape``: on the CPU in a subprocess of its own."""
    if device.type == "cuda":
        return _probe_cuda_memory(contender, shape, device)
    payload: dict[str, int] = run_probe("benchmarks.cross_entropy", "--memory-probe", contender,
                                        "--shapes", shape.label())
    return payload["peak_extra_bytes"]


CSV_FIELDS = [
    "run_id", "date", "git_commit", "machine", "cpu_count", "torch_threads", "torch_version",
    "python_version", "quick", "rows", "classes", "dtype", "contender", "repeats", "median_ms",
    "min_ms", "ratio_to_native", "ratio_to_copy", "ratio_to_clone", "logits_bytes",
    "peak_extra_bytes", "peak_extra_over_logits",
]


def run_benchmark(
    shapes: Sequence[Shape],
    *,
    repeats: int,
    contenders: Sequence[str] = DEFAULT_CONTENDERS,
    measure_memory_too: bool = True,
    quick: bool = False,
    report: Callable[[str], None] = print,
    device: torch.device = CPU,
    min_seconds: float = 0.0,
) -> list[dict[str, str]]:
    """Time (and measure) every contender on every shape; return one CSV row per pair."""
    provenance = common_provenance(device)
    run_id = new_run_id()
    rows: list[dict[str, str]] = []
    for shape in shapes:
        times = time_shape(shape, repeats, contenders, device, min_seconds)
        rounds = len(times["native"])
        median = {name: statistics.median(values) for name, values in times.items()}
        report(f"\n{shape.label()}  (logits {shape.logits_bytes / 2**20:.1f} MiB, "
               f"{rounds} rounds, medians)")
        report(f"  {'contender':28s} {'ms':>10s} {'/native':>8s} {'/copy':>7s} {'/clone':>7s}"
               f" {'/softmax':>8s} {'peak extra / logits':>20s}")
        for name in (*contenders, *FLOORS):
            peak = measure_memory(name, shape, device) \
                if measure_memory_too and name in CONTENDERS else None
            ratio_native = median[name] / median["native"] if "native" in median else float("nan")
            row = {
                **provenance, "run_id": run_id, "quick": str(quick), "rows": str(shape.rows),
                "classes": str(shape.classes), "dtype": str(shape.dtype).removeprefix("torch."),
                "contender": name, "repeats": str(rounds),
                "median_ms": f"{median[name] * 1e3:.4f}",
                "min_ms": f"{min(times[name]) * 1e3:.4f}",
                "ratio_to_native": f"{ratio_native:.4f}",
                "ratio_to_copy": f"{median[name] / median['copy']:.4f}",
                "ratio_to_clone": f"{median[name] / median['clone']:.4f}",
                "logits_bytes": str(shape.logits_bytes),
                "peak_extra_bytes": "" if peak is None else str(peak),
                "peak_extra_over_logits": "" if peak is None
                else f"{peak / shape.logits_bytes:.4f}",
            }
            rows.append(row)
            memory = "" if peak is None else f"{peak / shape.logits_bytes:20.3f}"
            report(f"  {name:28s} {median[name] * 1e3:10.2f} {ratio_native:8.3f} "
                   f"{median[name] / median['copy']:7.2f} {median[name] / median['clone']:7.2f}"
                   f" {median[name] / median['softmax']:8.2f} {memory}")
        if shape.classes >= TARGET_MIN_CLASSES:
            for line in target_lines(median):
                report(line)
        if shape.classes >= VARIANT_MIN_CLASSES:
            for line in variant_lines(times):
                report(line)
        for line in penalty_lines(times):
            report(line)
    return rows


# Targets for C >= TARGET_MIN_CLASSES, as (contender, baseline, bound); a baseline "a+b" is the
# sum of two medians of the same run.
TARGET_MIN_CLASSES = 32000
TARGETS = (
    ("ours", "compiled", 0.85),
    ("ours", "clone+softmax", 1.15),
    ("ours_inplace", "compiled", 0.5),
    ("ours_inplace", "softmax", 1.6),
)


def target_lines(median: dict[str, float]) -> list[str]:
    """One line per target whose contender and baselines ran: the ratio, the bound, met or not."""
    lines = []
    for contender, baseline, bound in TARGETS:
        parts = baseline.split("+")
        if contender not in median or any(part not in median for part in parts):
            continue
        ratio = median[contender] / sum(median[part] for part in parts)
        verdict = "met" if ratio <= bound else "MISSED"
        lines.append(f"  target {contender} / {baseline}: {ratio:.3f} (<= {bound}) {verdict}")
    return lines


# The general code paths (prior, per-row smoothing, mixed targets) against the uniform fused
# path of the same run, from this many classes on.
VARIANT_MIN_CLASSES = 1000
VARIANT_BOUND = 1.1
VARIANTS = ("ours_prior", "ours_per_sample", "ours_mixed")


def paired_ratio(times: dict[str, list[float]], name: str, base: str
                 ) -> tuple[float, float, float]:
    """Median and quartiles over rounds of ``name``'s time over ``base``'s in the same round."""
    ratios = [mine / theirs for mine, theirs in zip(times[name], times[base], strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    low, middle, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return middle, low, high


def _ratio_text(times: dict[str, list[float]], name: str, base: str) -> tuple[float, str]:
    ratio, low, high = paired_ratio(times, name, base)
    return ratio, (f"{name} / {base}: {ratio:.3f} (paired over {len(times[name])} rounds, "
                   f"quartiles {low:.3f}-{high:.3f})")


def variant_lines(times: dict[str, list[float]]) -> list[str]:
    """One line per general-path contender that ran with ``ours``: its paired time ratio."""
    lines = []
    for name in VARIANTS:
        if name in times and "ours" in times:
            ratio, text = _ratio_text(times, name, "ours")
            verdict = "met" if ratio <= VARIANT_BOUND else "MISSED"
            lines.append(f"  target {text} (<= {VARIANT_BOUND}) {verdict}")
    return lines


def penalty_lines(times: dict[str, list[float]]) -> list[str]:
    """The fused confidence penalty's paired time ratios to ``ours`` and to the unfused sum."""
    return [f"  {_ratio_text(times, 'ours_penalty', base)[1]}"
            for base in ("ours", "ours_penalty_unfused")
            if "ours_penalty" in times and base in times]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cross_entropy",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and few rounds: a smoke run, not a measurement")
    parser.add_argument("--shapes", nargs="+", type=Shape.parse, default=None,
                        help="shapes as ROWSxCLASSES[:dtype], e.g. 4096x32000 2048x128256:bfloat16")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved rounds per shape (default 7, or 3 with --quick)")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="after --repeats rounds, go on until every contender has this many "
                             f"seconds of samples, at most {MAX_ROUNDS} rounds (default 1, or 0 "
                             "with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's intra-op threads (default: PyTorch's own choice); one "
                             "thread is less disturbed by other processes on a shared machine")
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                        default=list(DEFAULT_CONTENDERS))
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-contender memory subprocesses")
    parser.add_argument("--device", type=parse_device, default=CPU,
                        help="where the logits live: cpu (default) or cuda[:N]")
    parser.add_argument("--csv", type=Path, default=None,
                        help=f"CSV to append to (default {DEFAULT_CSV.relative_to(ROOT)}, "
                             f"or {DEFAULT_CUDA_CSV.relative_to(ROOT)} with --device cuda)")
    parser.add_argument("--memory-probe", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if "native" not in args.contenders:
        parser.error("--contenders: expected a list that includes native (the ratios' base)")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: expected a device this machine has, got {args.device} "
                     "(torch.cuda.is_available() is False)")
    if args.csv is None:
        args.csv = DEFAULT_CUDA_CSV if args.device.type == "cuda" else DEFAULT_CSV
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, str]]:
    args = _parse_args(argv)
    if args.memory_probe:
        shape = args.shapes[0]
        print(json.dumps({"peak_extra_bytes": _probe_memory(args.memory_probe, shape)}))
        return []
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    repeats = args.repeats or (3 if args.quick else 7)
    rows = run_benchmark(shapes, repeats=repeats, contenders=args.contenders,
                         measure_memory_too=not args.no_memory, quick=args.quick,
                         device=args.device,
                         min_seconds=args.min_seconds if args.min_seconds is not None
                         else 0.0 if args.quick else 1.0)
    append_csv(rows, args.csv, CSV_FIELDS)
    print(f"\nappended {len(rows)} rows to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
