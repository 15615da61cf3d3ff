"""The Triton kernel against PyTorch: on a CUDA device when there is one, else in Triton's CPU
interpreter when Triton is installed; skipped cleanly otherwise."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

from labelsmooth._ops import Plan, fused_smoothed_cross_entropy, plan

HAS_TRITON = importlib.util.find_spec("triton") is not None
ROOT = Path(__file__).resolve().parents[2]
IGNORE = -100


def _check_against_pytorch(device: str, dtype: torch.dtype, reduction: str, weighted: bool,
                           inplace: bool, num_rows: int = 9, num_classes: int = 5000,
                           chosen: Plan | None = None) -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64) * 3
    target = torch.randint(0, num_classes, (num_rows,), generator=generator)
    target[::4] = IGNORE
    weight = torch.rand(num_classes, generator=generator, dtype=torch.float64) + 0.1 \
        if weighted else None
    logits = base.to(dtype)
    reference_input = logits.double().requires_grad_()
    want = F.cross_entropy(reference_input, target, weight=weight, ignore_index=IGNORE,
                           reduction=reduction, label_smoothing=0.2)
    grad_output = torch.rand(want.shape, generator=generator, dtype=torch.float64) + 0.5
    want.backward(grad_output)

    leaf = logits.to(device).requires_grad_()
    x = leaf * 1 if inplace else leaf
    loss = fused_smoothed_cross_entropy(
        x, target.to(device), 0.2, weight=None if weight is None else weight.to(device, dtype),
        ignore_index=IGNORE, reduction=reduction, inplace_backward=inplace, plan=chosen)
    loss.backward(grad_output.to(device, dtype))
    assert loss.dtype == dtype
    assert_close(loss, want, dtype, what="loss")
    assert_close(leaf.grad, reference_input.grad, dtype, what="gradient")


def _check_variant(device: str, dtype: torch.dtype, smoothing: float | str, with_prior: bool,
                   shares: tuple[float, ...], inplace: bool, chosen: Plan | None = None,
                   num_rows: int = 7, num_classes: int = 700) -> None:
    """A prior, per-row or negative smoothing and K target columns against the float64 dense
    formula ``-sum_c w_c t_c log p_c``, ``t = sum_k h_k ((1 - s) onehot(y_k) + s q)``."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64) * 3
    columns = torch.randint(0, num_classes, (num_rows, len(shares)), generator=generator)
    columns[::3, 0] = IGNORE
    if len(shares) > 1:
        columns[1::3, 1] = columns[1::3, 0]  # the same class twice in a row
    weight = torch.rand(num_classes, generator=generator, dtype=torch.float64) + 0.1
    prior = None
    if with_prior:
        raw = torch.rand(num_classes, generator=generator, dtype=torch.float64)
        prior = raw / raw.sum()
    s = (torch.rand(num_rows, generator=generator, dtype=torch.float64) if smoothing == "rows"
         else torch.tensor(smoothing, dtype=torch.float64))
    logits = base.to(dtype)
    reference_input = logits.double().requires_grad_()
    log_probs = torch.log_softmax(reference_input, 1)
    q = prior if prior is not None else torch.full((num_classes,), 1 / num_classes,
                                                    dtype=torch.float64)
    want = 0
    for share, y in zip(shares, columns.unbind(1), strict=True):
        valid = y != IGNORE
        hot = F.one_hot(y.masked_fill(~valid, 0), num_classes).double()
        t = ((1 - s.reshape(-1, 1)) * hot + s.reshape(-1, 1) * q) * valid.unsqueeze(1)
        want = want + share * -(t * weight * log_probs).sum() / (weight[y.masked_fill(~valid, 0)]
                                                                 * valid).sum()
    want.backward()

    leaf = logits.to(device).requires_grad_()
    x = leaf * 1 if inplace else leaf
    loss = fused_smoothed_cross_entropy(
        x, (columns[:, 0] if len(shares) == 1 else columns).to(device),
        s.to(device) if smoothing == "rows" else float(smoothing), weight=weight.to(device, dtype),
        ignore_index=IGNORE, reduction="mean", inplace_backward=inplace, plan=chosen,
        prior=None if prior is None else prior.to(device), shares=shares)
    loss.backward()
    assert_close(loss, want, dtype, what="loss")
    assert_close(leaf.grad, reference_input.grad, dtype, what="gradient")


def _check_penalty(device: str, dtype: torch.dtype, reduction: str, shares: tuple[float, ...],
                   inplace: bool, chosen: Plan | None = None, num_rows: int = 7,
                   num_classes: int = 5000, masked: bool = False) -> None:
    """The fused confidence penalty against the float64 composition: each component's smoothed
    cross-entropy plus ``beta * sum_c p_c log p_c`` over its non-ignored rows."""
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64) * 3
    columns = torch.randint(0, num_classes, (num_rows, len(shares)), generator=generator)
    columns[::3, 0] = IGNORE
    if masked:  # -inf logits: p log p = 0 there
        base[:, : num_classes // 2] = float("-inf")
        columns[:, :] = columns % (num_classes - num_classes // 2) + num_classes // 2
        columns[::3, 0] = IGNORE
    weight = torch.rand(num_classes, generator=generator, dtype=torch.float64) + 0.1
    smoothing = 0.0 if masked else 0.2
    logits = base.to(dtype)
    reference_input = logits.double().requires_grad_()
    log_probs = torch.log_softmax(reference_input, 1)
    penalty_rows = -0.6 * (log_probs.exp() * log_probs.clamp(min=-1e300)).sum(1)
    want = 0
    for share, y in zip(shares, columns.unbind(1), strict=True):
        valid = y != IGNORE
        part = F.cross_entropy(reference_input, y, weight=weight, ignore_index=IGNORE,
                               reduction=reduction, label_smoothing=smoothing)
        counted = torch.where(valid, penalty_rows, 0.0)
        part = part + {"none": counted, "sum": counted.sum(),
                       "mean": counted.sum() / valid.sum()}[reduction]
        want = want + share * part
    grad_output = torch.rand(want.shape, generator=generator, dtype=torch.float64) + 0.5
    want.backward(grad_output)

    leaf = logits.to(device).requires_grad_()
    x = leaf * 1 if inplace else leaf
    loss = fused_smoothed_cross_entropy(
        x, (columns[:, 0] if len(shares) == 1 else columns).to(device), smoothing,
        weight=weight.to(device, dtype), ignore_index=IGNORE, reduction=reduction,
        inplace_backward=inplace, plan=chosen, shares=shares, confidence_penalty=-0.6)
    loss.backward(grad_output.to(device, dtype))
    assert_close(loss, want, dtype, what="penalised loss")
    assert_close(leaf.grad, reference_input.grad, dtype, what="penalised gradient")


VARIANTS = [  # (smoothing, prior?, shares)
    (0.2, True, (1.0,)),
    ("rows", False, (1.0,)),
    (-2.0, False, (1.0,)),
    (0.1, True, (0.6, 0.4)),
    ("rows", False, (0.4, 0.3, 0.2, 0.1)),
]


def interpreter_check() -> None:
    """Run in a subprocess with ``TRITON_INTERPRET=1``: the kernel on CPU tensors."""
    triton = Plan("triton")  # the kernel on CPU tensors
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for reduction, weighted, inplace in (("mean", False, False), ("sum", True, True),
                                             ("none", True, False), ("mean", False, True)):
            _check_against_pytorch("cpu", dtype, reduction, weighted, inplace, chosen=triton)
    _check_against_pytorch("cpu", torch.float32, "mean", False, False, num_rows=3,
                           num_classes=700, chosen=triton)  # one partial block per row
    with torch.no_grad():
        logits = torch.randn(4, 300)
        target = torch.tensor([1, IGNORE, 299, 0])
        got = fused_smoothed_cross_entropy(logits, target, 0.1, weight=None,
                                           ignore_index=IGNORE, reduction="none", plan=triton)
        want = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.1)
        assert_close(got, want, what="no-grad loss")
    _check_masked_first_block("cpu", triton)
    for dtype in (torch.float32, torch.bfloat16):
        for inplace in (False, True):
            for smoothing, with_prior, shares in VARIANTS:
                _check_variant("cpu", dtype, smoothing, with_prior, shares, inplace, chosen=triton)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for reduction, shares, inplace in (("mean", (1.0,), False), ("sum", (0.7, 0.3), True),
                                           ("none", (1.0,), True), ("mean", (0.6, 0.4), False)):
            _check_penalty("cpu", dtype, reduction, shares, inplace, chosen=triton)
    _check_penalty("cpu", torch.float32, "mean", (1.0,), False, chosen=triton, masked=True)
    with torch.no_grad():
        logits = torch.randn(4, 300, dtype=torch.float64)
        target = torch.tensor([1, IGNORE, 299, 0])
        got = fused_smoothed_cross_entropy(logits.float(), target, 0.1, weight=None,
                                           ignore_index=IGNORE, reduction="none", plan=triton,
                                           confidence_penalty=2.0)
        log_probs = torch.log_softmax(logits, 1)
        want = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.1) + torch.where(
            target != IGNORE, 2.0 * (log_probs.exp() * log_probs).sum(1), 0.0)
        assert_close(got, want, torch.float32, what="no-grad penalised loss")


def _check_masked_first_block(device: str, chosen: Plan | None = None) -> None:
    """Rows whose whole first column block is masked with -inf: the online softmax starts from
    a running maximum of -inf and must not turn exp(-inf - -inf) into NaN."""
    for smoothing in (0.0, 0.1):
        logits = torch.randn(3, 5000, dtype=torch.float64)
        logits[:, :4500] = float("-inf")
        target = torch.tensor([4600, IGNORE, 4999])
        reference_input = logits.clone().requires_grad_()
        want = F.cross_entropy(reference_input, target, ignore_index=IGNORE,
                               label_smoothing=smoothing)
        want.backward()
        leaf = logits.float().to(device).requires_grad_()
        loss = fused_smoothed_cross_entropy(leaf, target.to(device), smoothing, weight=None,
                                            ignore_index=IGNORE, reduction="mean", plan=chosen)
        loss.backward()
        assert_close(loss, want, torch.float32, what=f"masked loss, smoothing {smoothing}")
        assert_close(leaf.grad, reference_input.grad, torch.float32, what="masked gradient")


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
def test_kernel_in_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]))
    script = f"import runpy; runpy.run_path({str(Path(__file__))!r})['interpreter_check']()"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


needs_cuda = pytest.mark.skipif(
    not (HAS_TRITON and torch.cuda.is_available()), reason="needs a CUDA device and Triton")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_kernel_matches_pytorch_on_cuda(dtype, reduction, weighted, inplace):
    assert plan(9, 5000, dtype, torch.device("cuda")).strategy == "triton"
    _check_against_pytorch("cuda", dtype, reduction, weighted, inplace)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_kernel_prior_per_row_negative_and_mixed_on_cuda(variant, dtype, inplace):
    smoothing, with_prior, shares = VARIANTS[variant]
    _check_variant("cuda", dtype, smoothing, with_prior, shares, inplace)


@pytest.mark.cuda
@needs_cuda
def test_kernel_masked_first_block_on_cuda():
    _check_masked_first_block("cuda")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_kernel_confidence_penalty_on_cuda(dtype, reduction, inplace):
    for shares in ((1.0,), (0.6, 0.4)):
        _check_penalty("cuda", dtype, reduction, shares, inplace)
    _check_penalty("cuda", torch.float32, reduction, (1.0,), inplace, masked=True)


@pytest.mark.cuda
@needs_cuda
def test_kernel_float16_large_vocabulary_is_finite_on_cuda():
    logits = torch.randn(4, 32000, device="cuda", dtype=torch.float16, requires_grad=True)
    target = torch.randint(0, 32000, (4,), device="cuda")
    loss = fused_smoothed_cross_entropy(logits, target, 0.1, weight=None, ignore_index=IGNORE,
                                        reduction="mean")
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(logits.grad).all())
    want = F.cross_entropy(logits.double(), target, label_smoothing=0.1)
    assert_close(loss, want, torch.float16)
