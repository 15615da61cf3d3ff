"""How one call of the fused cross-entropy runs: a :class:`Plan`, chosen by :func:`plan`.

Strategies: PyTorch's own ``F.cross_entropy`` for tiny CPU problems and rows of few classes
(faster there)
and for meta tensors; the Triton kernel for CUDA tensors when Triton imports; otherwise the
chunked pass of :mod:`labelsmooth._ops.chunked_cross_entropy`, whose chunk size and worker
count the plan fixes. The constants below were measured on one machine;
the tables and the command that measures them are in ``docs/fused.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["GradientTarget", "Plan", "compute_dtype", "plan"]

Strategy = Literal["native", "chunked", "triton"]
GradientTarget = Literal["fresh", "inplace", "none"]

# Chunk size in compute-dtype bytes: read from memory once, then re-read from cache.
CHUNK_BYTES = 4 * 2**20
# A per-worker scratch chunk stays within 1/SCRATCH_FRACTION of the logits (the in-place
# memory promise), unless that makes chunks smaller than MIN_CHUNK_BYTES.
SCRATCH_FRACTION = 32
MIN_CHUNK_BYTES = 256 * 2**10
# Up to this many float32/float64 CPU logits, PyTorch's own loss has the lower fixed cost.
NATIVE_MAX_ELEMENTS = 65536
# Rows of fewer classes: PyTorch's own loss is faster at any row count (the chunked pass's
# per-row work does not vectorise over so few classes).
NATIVE_BELOW_CLASSES = 32
# From this many compute-dtype bytes of logits on, chunks run on single-threaded workers.
WORKER_MIN_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Plan:
    """How one call of :func:`fused_smoothed_cross_entropy` runs.

    Attributes:
        strategy: ``"native"`` (PyTorch's ``F.cross_entropy``), ``"triton"`` (the CUDA kernel)
            or ``"chunked"`` (the CPU pass over row chunks).
        chunk_rows: chunked: rows per chunk, at least 1.
        workers: chunked: 1 runs the chunks in the calling thread with PyTorch's intra-op
            threads; more runs them on that many single-threaded worker threads.
    """

    strategy: Strategy
    chunk_rows: int = 1
    workers: int = 1


# The plans without parameters, made once (a frozen dataclass is slow to build, and the native
# plan is chosen on every step of a small model).
_NATIVE = Plan("native")
_TRITON = Plan("triton")


def plan(num_rows: int, num_classes: int, dtype: torch.dtype, device: torch.device, *,
         gradient: GradientTarget = "fresh", threads: int | None = None,
         native: bool = True) -> Plan:
    """The plan for ``(num_rows, num_classes)`` logits of ``dtype`` on ``device``.

    ``gradient``: where the gradient goes: a fresh buffer, the logits (``"inplace"``), or
    nowhere (no gradient wanted). ``threads``: PyTorch's intra-op thread count (default
    ``torch.get_num_threads()``). ``native``: whether PyTorch's own loss can compute the call
    (not with a prior, per-row smoothing or mixed targets); when not, small problems run the
    chunked pass too. Every plan gives the same values (the tests run each one).
    """
    kind = device.type
    if kind == "meta":
        return _NATIVE  # shape inference only: PyTorch's loss has meta kernels
    if kind == "cuda" and dtype != torch.float64 and _triton_available():
        return _TRITON  # float64 stays chunked: the kernel computes in float32
    if (native and kind == "cpu" and gradient != "inplace"
            and dtype in (torch.float32, torch.float64)
            and (num_rows * num_classes <= NATIVE_MAX_ELEMENTS or num_classes < NATIVE_BELOW_CLASSES)):
        return _NATIVE
    threads = max(1, torch.get_num_threads() if threads is None else threads)
    row_bytes = max(1, num_classes * compute_dtype(dtype).itemsize)
    scratch = _needs_scratch(dtype, gradient)
    if kind == "cpu" and threads > 1 and num_rows * row_bytes >= WORKER_MIN_BYTES:
        rows = _chunk_rows(num_rows, row_bytes, threads, scratch=scratch)
        if num_rows > rows:
            return Plan("chunked", rows, min(threads, -(-num_rows // rows)))
    rows = _chunk_rows(num_rows, row_bytes, 1, scratch=scratch)
    # PyTorch's CPU softmax parallelises over rows: a multiple of the thread count keeps every
    # thread busy on every chunk.
    return Plan("chunked", max(threads, rows - rows % threads), 1)


def _chunk_rows(num_rows: int, row_bytes: int, workers: int, *, scratch: bool) -> int:
    rows = CHUNK_BYTES // row_bytes
    if scratch:
        within_fraction = -(-num_rows // (SCRATCH_FRACTION * workers))
        rows = min(rows, max(within_fraction, MIN_CHUNK_BYTES // row_bytes))
    return max(1, rows)


def _needs_scratch(dtype: torch.dtype, gradient: GradientTarget) -> bool:
    """Whether the exponentials need a chunk of their own rather than the gradient rows: the
    float32 copy of low-precision logits, or no gradient to write them into."""
    return compute_dtype(dtype) != dtype or gradient == "none"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fused pass computes in: float64 for float64 logits, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
