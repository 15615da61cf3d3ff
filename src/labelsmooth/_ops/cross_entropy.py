"""Fused label-smoothed cross-entropy: loss and gradient in one pass over the logits.

:func:`fused_smoothed_cross_entropy` returns what
``F.cross_entropy(logits, target, weight=..., ignore_index=..., reduction=..., label_smoothing=s)``
returns, in value and gradient, for 2-d ``(M, C)`` logits, but reads the logits once, allocates
no ``M x C`` buffer other than the gradient it must return (none at all with
``inplace_backward=True``), and does no gradient work when no gradient is wanted. (Tiny
float32/float64 CPU problems, where PyTorch's own call is cheaper than this pass's fixed cost,
are handed to ``F.cross_entropy`` itself: see :func:`choose_path`.)

Derivation (one row; ``x`` its logits, ``y`` its target, ``w`` the class weights, all ones when
``weight`` is None, ``W = sum_c w_c``, ``s`` the smoothing, ``C`` the class count)::

    lse      = log sum_c exp(x_c)           l_c = x_c - lse  (log-probabilities)
    loss     = (1 - s) * w_y * (lse - x_y) + (s / C) * sum_c w_c * (lse - x_c)
             = -(1 - s) * w_y * l_y        - (s / C) * sum_c w_c * l_c

That is PyTorch's definition: the weighted NLL of the target plus ``s / C`` times the weighted
sum of ``-log p`` over all classes. With ``d lse / d x_c = p_c = exp(l_c)``::

    d loss / d x_c = (1 - s) * w_y * (p_c - [c == y]) + (s / C) * (W * p_c - w_c)
                   = a * p_c - (s / C) * w_c - b * [c == y],
    a = (1 - s) * w_y + (s / C) * W,        b = (1 - s) * w_y.

Without weights (``w = 1``, ``W = C``) this is ``softmax - ((1 - s) * onehot + s / C)``.

Reductions and ``ignore_index``: the reduced loss is ``sum_i r_i * loss_i`` with ``r_i = 0`` for
an ignored row, and otherwise ``r_i = 1`` for ``"sum"`` and ``"none"`` and ``r_i = 1 / D`` for
``"mean"``, where ``D = sum_i w_{y_i}`` over the non-ignored rows (the row count without
weights; PyTorch normalises the smoothing term of a weighted mean by the same ``D``). ``D``
depends only on the targets, so it is known before the pass and the gradient of the *reduced*
loss, ``r_i * d loss_i / d x``, is computed during the forward pass. Backward only multiplies it
by ``grad_output`` (a scalar for ``"mean"``/``"sum"``, in place; the row's entry for ``"none"``,
out of place so that backward can run again) and skips even that when ``grad_output`` is one
(``loss.backward()``). An all-ignored ``"mean"``
batch gives ``0 / 0 = NaN`` as loss and a zero gradient, as PyTorch does (``r_i`` is chosen with
``torch.where``, so the infinite ``1 / D`` never reaches the gradient).

Why float32 for float16/bfloat16 logits: the smoothing term adds ``C`` log-probabilities of
magnitude about ``log C``; at ``C = 32000`` the sum is about ``3e5``, beyond float16's 65504,
which is why PyTorch's own float16 loss is ``inf`` there, and float16's 11-bit mantissa would
lose the small terms of ``sum exp`` long before that. Each chunk is therefore staged into a
float32 scratch buffer; all sums, the loss and the gradient are computed in float32, and only
the gradient (bounded by ``max(a, b + s/C * max w) * r``) is rounded to the logits' dtype.

The CPU path walks over chunks of rows small enough (``_CHUNK_BYTES``, see ``_rows_per_chunk``)
to stay in cache between the operations that read them (see ``_chunked_row_statistics``), on
one worker thread per intra-op thread, each running single-threaded operators on whole chunks
(see ``_chunk_plan`` for why). Per chunk the passes are: a row sum (or ``mv`` with weights) and
a gather of ``x_y`` over the logits, the softmax, a gather of ``p_y`` (``lse = x_y - log p_y``;
the row maxima only for a chunk where some ``p_y`` underflowed), and the scale and shift of
the probabilities: one ``torch.add(shift, p, alpha=a)`` without class weights, a column
multiply and an add (or ``addr_``) otherwise (plus a float32 staging copy in and a rounding
copy out for low precision). The target entries of the gradient, which need the ``- b`` term,
are fixed afterwards by one indexed write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth._validation import fail

__all__ = ["choose_path", "fused_smoothed_cross_entropy"]

Path = Literal["triton", "chunked-softmax", "chunked-exp", "native"]

# Bytes of one chunk of float32 rows. A chunk is read from memory once and then re-read from
# cache by the following operations (sums, softmax, scaling), each worker thread on its own
# chunk; a chunk and its scratch, on every worker, stay well inside the L3 cache. Measured on
# the 2-core EPYC (1 MiB L2 per core, 32 MiB L3), in place, medians of 9 interleaved calls:
# 4096 x 32000: 0.5 MiB 84 ms, 1 MiB 58, 2 MiB 48-51, 3 MiB 48-49, 4 MiB 48-49, 8 MiB 51;
# 1024 x 262144: 1 MiB 107, 2 MiB 97, 3 MiB 93, 4 MiB 90, 6 MiB 91; 2048 x 128256: 2 MiB 95,
# 4 MiB 88 (bfloat16: 103 / 97). Smaller chunks pay per-operation overhead (about ten
# operator calls per chunk), larger ones fall out of cache.
_CHUNK_BYTES = 4 * 1024 * 1024
# Scratch stays within 1/32 of the logits (the in-place path's memory promise) unless that
# would make chunks smaller than this, where per-operation overhead would dominate.
_MIN_CHUNK_BYTES = 256 * 1024
_SCRATCH_FRACTION = 32

# PyTorch's CPU softmax kernel vectorises along a row: from this many classes on it beats the
# unfused ``exp(x - m)`` / row-sum pair (its exp is also cheaper than ``torch.exp``); on short
# rows it is slower than the pair. Measured forward + backward, medians of 41 interleaved
# calls, exp / softmax: 8192 x 10 0.39 / 0.86 ms, 8192 x 32 0.43 / 0.45, 8192 x 64 0.56 /
# 0.52, 8192 x 100 0.73 / 0.63, 8192 x 200 1.18 / 0.92; at 2048 rows level from 32 to 100.
_SOFTMAX_MIN_CLASSES = 64
# Up to this many logits (float32/float64 on the CPU, gradient not in place), PyTorch's own
# ``F.cross_entropy`` is cheaper: the fused pass costs about 90 small tensor operations
# (about 0.2 ms here) before its first chunk, PyTorch's one call about 0.1 ms. Measured
# forward + backward, native / fused: 256 x 10 0.11 / 0.21 ms, 256 x 100 0.11 / 0.22,
# 256 x 255 0.12 / 0.24, 2048 x 10 0.26 / 0.27; from 8192 x 10 (0.76 / 0.40) and
# 256 x 1000 (0.59 / 0.35) on the fused pass wins.
_NATIVE_MAX_ELEMENTS = 65536


def choose_path(num_rows: int, num_classes: int, dtype: torch.dtype, device: torch.device, *,
                inplace: bool = False) -> Path:
    """Pick the fastest correct implementation for logits of shape ``(num_rows, num_classes)``.

    ``"triton"``: a CUDA tensor with Triton importable (one program per row, online softmax;
    float64 stays on the chunked path, whose float64 arithmetic the kernel would not match).
    ``"native"``: tiny float32/float64 CPU problems (at most 65536 logits) whose gradient is
    not wanted in place: PyTorch's own ``F.cross_entropy(label_smoothing=s)``, whose fixed
    cost is lower (its values are the reference, so nothing changes but the time).
    ``"chunked-softmax"``: the fused row-chunk pass with PyTorch's softmax kernel for the
    probabilities (``num_classes >= 64``). ``"chunked-exp"``: the same pass with
    ``exp(x - max)`` and a row sum, faster on short rows where the softmax kernel cannot
    vectorise (at ``C = 10`` it is 2x faster). Every fused path gives the same values (the
    tests run each one).
    """
    if device.type == "meta":
        return "native"  # shape inference only: PyTorch's loss has meta kernels
    if device.type == "cuda" and dtype != torch.float64 and _triton_available():
        return "triton"
    if (device.type == "cpu" and not inplace and dtype in (torch.float32, torch.float64)
            and num_rows * num_classes <= _NATIVE_MAX_ELEMENTS):
        return "native"
    if num_classes < _SOFTMAX_MIN_CLASSES:
        return "chunked-exp"
    return "chunked-softmax"


def _under_functorch(logits: Tensor) -> bool:
    """``torch.func`` transforms (``grad``, ``vmap``, ...) are active: PyTorch's own loss has
    their rules; the chunk loop's ``out=`` writes and host reads have none."""
    return bool(torch._C._are_functorch_transforms_active()
                or torch._C._functorch.is_functorch_wrapped_tensor(logits))


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@torch.compiler.disable
def fused_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    smoothing: float,
    *,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    inplace_backward: bool = False,
) -> Tensor:
    """Label-smoothed cross-entropy of 2-d logits, equal to ``F.cross_entropy(label_smoothing=s)``.

    Arguments are trusted (the public ``smoothed_cross_entropy`` validates them).

    Args:
        logits: ``(M, C)`` floating logits, class dimension last. Any strides; non-contiguous
            logits are copied first (and ``inplace_backward`` then writes into that copy).
        target: ``(M,)`` int64 class indices in ``[0, C)`` or equal to ``ignore_index``.
        smoothing: ``s`` in ``[0, 1]``.
        weight: ``(C,)`` floating class weights, or None. It receives no gradient.
        ignore_index: rows whose target equals it contribute nothing.
        reduction: ``"none"`` (shape ``(M,)``), ``"mean"`` or ``"sum"`` (scalars).
        inplace_backward: write the gradient into the logits' storage instead of a new buffer.
            The logits' values are destroyed by the call (their version counter is bumped, so
            an autograd node that saved them raises when it runs backward). Refused with a
            ``ValueError`` for a leaf that requires grad or a view of one. Nothing is written
            when no gradient is wanted (``torch.no_grad()`` or logits not requiring grad).

    Returns:
        The loss in the logits' dtype; differentiable with respect to ``logits``.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x = torch.randn(4, 7, requires_grad=True)
        >>> y = torch.tensor([0, 3, -100, 6])
        >>> loss = fused_smoothed_cross_entropy(x, y, 0.1, weight=None, ignore_index=-100,
        ...                                     reduction="mean")
        >>> torch.allclose(loss, F.cross_entropy(x, y, label_smoothing=0.1))
        True
    """
    # torch.compile traces neither the chunk loop (data-dependent Python control flow, ``out=``
    # writes into a buffer saved for backward) nor a Triton launch it did not generate: the
    # decorator breaks the graph here and runs this eagerly, which keeps results exact.
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    if inplace_backward and wants_grad:
        _check_inplace_allowed(logits)
    path = choose_path(logits.shape[0], logits.shape[1], logits.dtype, logits.device,
                       inplace=inplace_backward and wants_grad)
    if _under_functorch(logits):
        path = "native"
    if path == "native":
        # PyTorch wants the weight in the logits' dtype; the fused pass accepts any float dtype.
        native_weight = None if weight is None else weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=native_weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
    if not logits.is_contiguous():
        logits = logits.contiguous()
    if not wants_grad:
        with torch.no_grad():
            return _forward(logits, target, smoothing, weight, ignore_index, reduction, None,
                            path)
    result: Tensor = _FusedSmoothedCrossEntropy.apply(
        logits, target, smoothing, weight, ignore_index, reduction, inplace_backward, path
    )
    return result


def _check_inplace_allowed(logits: Tensor) -> None:
    # Autograd itself forbids in-place writes to a leaf that requires grad (or a view of one):
    # its values are what the optimiser updates. Tensors saved by other autograd nodes cannot be
    # seen from here; for those the bumped version counter makes their backward raise.
    if logits.is_leaf:
        fail("inplace_backward",
             "logits produced by an operation (the gradient overwrites them), not a leaf "
             "tensor that requires grad; pass inplace_backward=False",
             "a leaf tensor that requires grad")
    base = logits._base
    if base is not None and base.is_leaf and base.requires_grad:
        fail("inplace_backward",
             "logits produced by an operation (the gradient overwrites them), not a view of a "
             "leaf tensor that requires grad; pass inplace_backward=False",
             "a view of a leaf tensor that requires grad")


class _FusedSmoothedCrossEntropy(torch.autograd.Function):
    """Forward computes loss and the reduced-loss gradient; backward only scales the latter.

    The gradient buffer is handed out by the first backward and forgotten: autograd may then
    own it (as a leaf's ``.grad``, accumulated into in place by later backwards). A later
    backward through the same graph (``retain_graph=True``) recomputes the gradient from the
    saved logits, and a backward that records a graph (``create_graph=True``: double backward,
    gradient penalties) takes PyTorch's differentiable formula on them. With
    ``inplace_backward=True`` the logits are gone, so both are refused.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        smoothing: float,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
        inplace: bool,
        path: Path,
    ) -> Tensor:
        # In place, the writes go through ``out=`` views of ``logits``, which bump its version
        # counter: any other autograd node that saved ``logits`` then refuses to run backward.
        # Out of place the gradient is the one fresh M x C allocation.
        grad = logits if inplace else torch.empty_like(logits, memory_format=torch.contiguous_format)
        loss = _forward(logits, target, smoothing, weight, ignore_index, reduction, grad, path)
        ctx.grad = grad
        ctx.options = (smoothing, ignore_index, reduction, path)
        ctx.inplace = inplace
        if not inplace:
            ctx.save_for_backward(logits, target, weight)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled() or grad is None:
            if ctx.inplace:
                raise RuntimeError(
                    "fused smoothed cross-entropy: expected one backward without create_graph "
                    "after inplace_backward=True (the gradient overwrote the logits), got "
                    + ("a backward with create_graph=True" if torch.is_grad_enabled()
                       else "a second backward through the same graph")
                    + "; pass inplace_backward=False")
            grad = _recomputed_gradient(ctx, grad_output)
            return grad, None, None, None, None, None, None, None
        reduction = ctx.options[2]
        if reduction == "none":
            factor = grad_output.unsqueeze(1)
            if not bool(torch.all(factor == 1)):
                grad.mul_(factor.to(grad.dtype))
        elif not bool(grad_output == 1):  # ``loss.backward()`` passes one: nothing to do
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None, None, None, None


def _recomputed_gradient(ctx: Any, grad_output: Tensor) -> Tensor:
    """The gradient from the saved logits, differentiable when backward records a graph."""
    logits, target, weight = ctx.saved_tensors
    smoothing, ignore_index, reduction, path = ctx.options
    if torch.is_grad_enabled():
        # create_graph=True: PyTorch's own loss, whose backward is differentiable, in float32
        # at least (the fused pass's accumulation dtype).
        compute = _compute_dtype(logits.dtype)
        x = logits.to(compute)
        w = None if weight is None else weight.to(logits.device, compute)
        loss = F.cross_entropy(x, target, weight=w, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)
        (grad,) = torch.autograd.grad(loss, logits, grad_output.to(loss.dtype), create_graph=True)
        return grad
    with torch.no_grad():
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        _forward(logits, target, smoothing, weight, ignore_index, reduction, grad, path)
        factor = grad_output.unsqueeze(1) if reduction == "none" else grad_output
        return grad.mul_(factor.to(grad.dtype))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_per_chunk(num_rows: int, num_classes: int, element_size: int, workers: int, *,
                    scratch: bool = True) -> int:
    """Rows per chunk: ``_CHUNK_BYTES`` of float32 rows; with a per-worker ``scratch`` chunk,
    all of them within the logits' 1/32."""
    row_bytes = max(1, num_classes * element_size)
    rows = _CHUNK_BYTES // row_bytes
    if scratch:
        scratch_rows = -(-num_rows // (_SCRATCH_FRACTION * workers))
        rows = min(rows, max(scratch_rows, _MIN_CHUNK_BYTES // row_bytes))
    rows = max(1, rows)
    if workers > 1:
        return rows
    # One worker runs PyTorch's own multi-threaded operators, and its CPU softmax parallelises
    # over rows only: a chunk needs a multiple of the thread count, or a thread idles.
    threads = max(1, torch.get_num_threads())
    return max(threads, rows - rows % threads)


def _chunk_plan(num_rows: int, num_classes: int, element_size: int, device: torch.device, *,
                scratch: bool = True) -> tuple[int, int]:
    """``(workers, rows per chunk)``: one worker thread per intra-op thread on the CPU.

    ``scratch``: each worker holds a scratch chunk (which bounds the chunk size, see
    ``_rows_per_chunk``). ``_is_large`` says whether workers are used at all.

    Why own threads: PyTorch parallelises each operator with OpenMP, ending every operator in
    a barrier. A chunk of a few MiB takes a few microseconds per operator, and a barrier on a
    core shared with any other busy process waits for a scheduler time slice (milliseconds):
    measured on this project's 2-core machine with one niced busy process beside it, the
    in-place pass over 1024 x 262144 went from 140 ms to 0.6-6.8 s. Instead each worker thread
    runs whole chunks with single-threaded operators (no barrier) and takes the next chunk when
    it is done, so a slowed core only does less of the work. Below ``_WORKER_MIN_BYTES`` the
    hand-offs cost more than they save (8192 x 1000 float32 on an idle machine: 9.4 ms with
    workers, 5.6 ms without), and PyTorch's own threads run the chunks.
    """
    threads = max(1, torch.get_num_threads())
    if device.type == "cpu" and threads > 1 and _is_large(num_rows, num_classes, element_size):
        rows = _rows_per_chunk(num_rows, num_classes, element_size, threads, scratch=scratch)
        if num_rows > rows:
            return min(threads, -(-num_rows // rows)), rows
    return 1, _rows_per_chunk(num_rows, num_classes, element_size, 1, scratch=scratch)


def _is_large(num_rows: int, num_classes: int, element_size: int) -> bool:
    """Logits of ``_WORKER_MIN_BYTES`` or more (in the compute dtype): worker threads."""
    return num_rows * num_classes * element_size >= _WORKER_MIN_BYTES


_POOLS: dict[int, ThreadPoolExecutor] = {}
_WORKER_MIN_BYTES = 64 * 1024 * 1024


def _single_threaded_worker() -> None:
    # The first call initialises this thread's OpenMP settings from the global thread count;
    # the second makes this thread's operators single-threaded (OpenMP's thread count is a
    # per-thread setting). The global count is restored by the caller once every worker ran.
    torch.get_num_threads()
    torch.set_num_threads(1)


def _run_workers(workers: int, task: Callable[[], None]) -> None:
    """Run ``task`` on ``workers`` single-threaded worker threads and wait for all of them."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(
            workers, thread_name_prefix="labelsmooth-ce", initializer=_single_threaded_worker)
    threads = torch.get_num_threads()
    try:
        for future in [pool.submit(task) for _ in range(workers)]:
            future.result()
    finally:
        torch.set_num_threads(threads)


if hasattr(os, "register_at_fork"):
    # A forked child (e.g. a DataLoader worker) inherits the pools but not their threads.
    os.register_at_fork(after_in_child=_POOLS.clear)


def _forward(
    logits: Tensor,
    target: Tensor,
    smoothing: float,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    grad: Tensor | None,
    path: Path,
) -> Tensor:
    """Loss of the whole batch; when ``grad`` is given, also write the reduced-loss gradient."""
    num_classes = logits.shape[1]
    compute = _compute_dtype(logits.dtype)
    class_weight = None if weight is None else weight.to(device=logits.device, dtype=compute)
    valid = target != ignore_index
    safe_target = target.masked_fill(~valid, 0)
    # w_y of each row, 0 for ignored rows: the NLL weight and (summed) the mean's denominator.
    if class_weight is None:
        target_weight = valid.to(compute)
        total_weight: Tensor | float = float(num_classes)
    else:
        target_weight = torch.where(valid, class_weight[safe_target], 0.0)
        total_weight = class_weight.sum()
    denominator = target_weight.sum()

    coefficients = None
    if grad is not None:
        # r_i (see the module docstring): 1 / D for mean, 1 otherwise, 0 on ignored rows.
        row_scale = torch.where(
            valid, 1.0 / denominator if reduction == "mean" else 1.0, 0.0
        ).to(compute)
        coefficients = _GradientCoefficients(
            prob=row_scale * ((1.0 - smoothing) * target_weight
                              + (smoothing / num_classes) * total_weight),
            uniform=row_scale * (smoothing / num_classes),
            target=row_scale * (1.0 - smoothing) * target_weight,
        )

    if path == "triton":
        from labelsmooth._ops.triton_cross_entropy import triton_row_statistics

        stats = triton_row_statistics(logits, safe_target, class_weight, grad, coefficients)
    else:
        stats = _chunked_row_statistics(logits, safe_target, class_weight, grad, coefficients,
                                        use_softmax=path == "chunked-softmax", valid=valid)
    lse, target_logit, weighted_logit_sum = stats

    # loss_i = (1 - s) * w_y * (lse - x_y) + (s / C) * (W * lse - sum_c w_c x_c), 0 if ignored.
    target_term = torch.where(valid, (1.0 - smoothing) * target_weight * (lse - target_logit), 0.0)
    if smoothing == 0.0:
        # Not 0 * (W * lse - sum_c w_c x_c): logits masked with -inf make that 0 * inf = NaN,
        # where plain cross-entropy (PyTorch's, without smoothing) is finite.
        uniform_term = torch.zeros_like(target_term)
    else:
        uniform_term = torch.where(
            valid, (smoothing / num_classes) * (total_weight * lse - weighted_logit_sum), 0.0)
    if reduction == "none":
        return (target_term + uniform_term).to(logits.dtype)
    if reduction == "sum":
        return (target_term.sum() + uniform_term.sum()).to(logits.dtype)
    # Each term divided by D on its own, as PyTorch does: when every counted target has weight
    # 0 (D = 0), the target term's 0 / 0 makes the mean NaN, as PyTorch's, not +inf.
    mean = target_term.sum() / denominator + uniform_term.sum() / denominator
    return mean.to(logits.dtype)


class _GradientCoefficients(NamedTuple):
    """Per-row ``r * a``, ``r * s / C`` and ``r * b`` of the module docstring, shape ``(M,)``."""

    prob: Tensor
    uniform: Tensor
    target: Tensor


def _chunked_row_statistics(
    logits: Tensor,
    safe_target: Tensor,
    class_weight: Tensor | None,
    grad: Tensor | None,
    coefficients: _GradientCoefficients | None,
    *,
    use_softmax: bool,
    valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One pass over row chunks: per-row ``lse``, ``x_y`` and ``sum_c w_c x_c``; the gradient.

    Per chunk (in cache after the first read): the weighted row sums and the target logits
    from the logits; then ``softmax`` into a scratch chunk and the target probabilities
    ``p_y`` gathered from it. ``lse = x_y - log p_y``, exact to a few
    ulps wherever ``p_y`` is a normal number, needs no pass of its own (the row-maximum passes
    over the logits and over the probabilities it replaces took ~10% of the in-place time at
    C = 32000). A chunk where some ``p_y`` underflowed (a target logit about 87 below its row's
    maximum in float32) or is NaN also gets the row maxima ``m`` of the logits and of the
    probabilities, and its rows take ``lse = m - log(max_c p_c)``: the largest probability is
    ``1 / sum_c exp(x_c - m)``, never below ``1 / C``. (The ``exp`` path needs ``m`` anyway,
    for ``exp(x - m)``, whose row sum gives ``lse = m + log sum``.) The rows are then scaled to
    ``a * p_c - (s / C) * r * w_c``; the target entries, which also carry ``- b``, are
    overwritten with their full value by one scatter after the loop.

    Without class weights, ``a = r * ((1 - s) + (s / C) * C)`` and the shift ``r * s / C`` are
    the same for every counted row (``r`` is ``1 / D`` or 1), so a chunk without ignored rows
    is scaled and shifted by one ``torch.add(shift, p, alpha=a)`` from the scratch chunk into
    the gradient rows, instead of a multiply by a column and an add (two passes; measured on a
    2 MiB chunk in cache, one core: 42 us against 62 us from scratch, 22 us against 42 us in
    place). Chunks holding an ignored row (``r = 0`` there) take the column path.
    """
    num_rows, num_classes = logits.shape
    compute = _compute_dtype(logits.dtype)
    staged = compute != logits.dtype
    element_size = torch.finfo(compute).bits // 8
    # Where the probabilities go (see process_chunks): straight into the gradient rows out of
    # place in float32/float64, on the exp path and below the worker-thread size; a per-worker
    # scratch chunk otherwise.
    probs_in_grad = (grad is not None and not staged and grad.data_ptr() != logits.data_ptr()
                     and (not use_softmax
                          or not _is_large(num_rows, num_classes, element_size)))
    workers, rows = _chunk_plan(num_rows, num_classes, element_size, logits.device,
                                scratch=not probs_in_grad)
    chunk = min(rows, num_rows)
    row_max = logits.new_empty((num_rows,), dtype=compute)
    normaliser = logits.new_empty((num_rows,), dtype=compute)
    if use_softmax:
        target_prob = logits.new_empty((num_rows, 1), dtype=compute)
        from_maxima = torch.zeros(num_rows, dtype=torch.bool, device=logits.device)
        tiny = torch.finfo(compute).tiny
    weighted_logit_sum = logits.new_empty((num_rows,), dtype=compute)
    target_logit = logits.new_empty((num_rows, 1), dtype=compute)
    column_target = safe_target.unsqueeze(1)
    # One scalar multiply-add (see above) for every chunk but those holding an ignored row.
    scalar_path = False
    mixed_chunks: set[int] = set()
    scalar_coef = 0.0
    if coefficients is not None:
        prob_coef = coefficients.prob.unsqueeze(1)
        neg_uniform = -coefficients.uniform
        neg_uniform_column = neg_uniform.unsqueeze(1)
        if use_softmax and class_weight is None and num_rows > 0:
            scalar_path = True
            mixed_chunks = set((torch.nonzero(~valid).squeeze(1) // rows).tolist())
            # Every counted row holds the same ``a``; ignored rows hold 0. (A host sync.)
            scalar_coef = float(coefficients.prob.max())
    # Each chunk start is taken by exactly one worker: ``next`` on a shared range iterator is
    # atomic under the GIL.
    chunk_starts = iter(range(0, num_rows, rows))

    def process_chunks() -> None:
        # Scratch reused by every chunk of this worker, where the probabilities go: the
        # float32 copy of low-precision logits, which they overwrite (the logits themselves
        # stay intact for the rare maxima below), or else a chunk of its own; the gradient
        # rows are then written once, by the scale-and-shift. Measured, out of place: for
        # large logits on the softmax path, writing the softmax straight into the gradient
        # rows and scaling them in place was 1-2% slower (five interleaved comparisons of 11
        # calls at 4096 x 32000, 2048 x 128256, 1024 x 262144: the fresh rows' page faults then
        # land inside the softmax); below the worker-thread size it is faster, and without
        # scratch the chunks need not fit within 1/32 of the logits (8192 x 1000, 40
        # interleaved calls: 5.7 ms with 1 MiB scratch chunks, 5.0 ms with 4 MiB chunks of
        # gradient rows); on the exp path (short rows) 5-15% faster (8192 x 10: 0.44-0.48 ms
        # against 0.52).
        staging = logits.new_empty((chunk, num_classes), dtype=compute) if staged else None
        probs_buffer = (grad if grad is not None and probs_in_grad
                        else staging if staging is not None
                        else logits.new_empty((chunk, num_classes), dtype=compute))
        with torch.no_grad():  # grad mode is per thread; out= and in-place writes need it off
            for start in chunk_starts:
                stop = min(num_rows, start + rows)
                x = logits[start:stop]
                if staging is not None:
                    x = staging[: stop - start].copy_(x)
                if not use_softmax:
                    torch.amax(x, 1, out=row_max[start:stop])
                if class_weight is None:
                    torch.sum(x, 1, out=weighted_logit_sum[start:stop])
                else:
                    torch.mv(x, class_weight, out=weighted_logit_sum[start:stop])
                torch.gather(x, 1, column_target[start:stop], out=target_logit[start:stop])
                probs = probs_buffer[start:stop] if probs_in_grad else probs_buffer[: stop - start]
                if use_softmax:
                    torch.softmax(x, 1, out=probs)
                    torch.gather(probs, 1, column_target[start:stop],
                                 out=target_prob[start:stop])
                    # ``not >=``: a NaN p_y (from infinite or NaN logits) takes the maxima too.
                    if not bool(torch.all(target_prob[start:stop] >= tiny)):
                        # Rare: some p_y underflowed; the maxima give lse for this chunk.
                        # (Staged, ``x`` now holds the probabilities: read the logits.)
                        row_max[start:stop] = logits[start:stop].amax(1)
                        torch.amax(probs, 1, out=normaliser[start:stop])
                        from_maxima[start:stop] = True
                else:
                    torch.sub(x, row_max[start:stop].unsqueeze(1), out=probs).exp_()
                    torch.sum(probs, 1, out=normaliser[start:stop])
                if grad is None:
                    continue
                rows_grad = grad[start:stop]
                if scalar_path and start // rows not in mixed_chunks:
                    # a * p - r * s / C in one pass; low precision rounded as it is written.
                    torch.add(neg_uniform_column[start:stop], probs, alpha=scalar_coef,
                              out=rows_grad)
                    continue
                rows_coef = prob_coef[start:stop]
                if not use_softmax:
                    rows_coef = rows_coef / normaliser[start:stop].unsqueeze(1)
                # Row-broadcast multiply and add are vectorised (addcmul with a broadcast
                # column is not: 6x slower). Low precision: scale in float32, round once.
                scaled = (probs.mul_(rows_coef) if staged
                          else torch.mul(probs, rows_coef, out=rows_grad))
                if class_weight is None:
                    scaled.add_(neg_uniform_column[start:stop])
                else:
                    scaled.addr_(neg_uniform[start:stop], class_weight)
                if staged:
                    rows_grad.copy_(scaled)

    if workers == 1:
        process_chunks()
    else:
        _run_workers(workers, process_chunks)

    target_logit = target_logit.squeeze(1)
    if use_softmax:
        # lse = x_y - log p_y where p_y is normal; where it is not (the chunks flagged above),
        # lse = m - log(max_c p_c), the largest probability being 1 / sum_c exp(x_c - m).
        lse = torch.where(from_maxima, row_max - torch.log(normaliser),
                          target_logit - torch.log(target_prob.squeeze(1)))
    else:
        # exp: the normaliser is sum_c exp(x_c - m).
        lse = row_max + torch.log(normaliser)
    if grad is not None and coefficients is not None:
        target_class_weight = 1.0 if class_weight is None else class_weight[safe_target]
        target_value = (coefficients.prob * torch.exp(target_logit - lse)
                        - coefficients.uniform * target_class_weight - coefficients.target)
        # index_put_ on the flat view: ``scatter_`` on a bfloat16/float16 CPU tensor makes a
        # float32 copy of the whole tensor (measured: 2x the logits' bytes).
        flat_index = safe_target + torch.arange(num_rows, device=grad.device) * num_classes
        grad.view(-1).index_put_((flat_index,), target_value.to(grad.dtype))
    return lse, target_logit, weighted_logit_sum
