"""The fused label-smoothed cross-entropy against PyTorch's own, in value and gradient.

The reference is ``F.cross_entropy(..., label_smoothing=s)`` evaluated in float64 on the very
same input values (for float16/bfloat16 logits: their rounded values), so every comparison
checks our arithmetic, not the rounding of the inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCES, assert_close

from labelsmooth._ops import Plan, fused_smoothed_cross_entropy, plan, planning
from labelsmooth._ops import cross_entropy as ce

IGNORE = -100
CPU = torch.device("cpu")
# The chunked pass on small logits: chunks of a few rows, so the loop has a ragged end.
CHUNKED = Plan("chunked", chunk_rows=4)
PLANS = {
    "serial": CHUNKED,  # PyTorch's threads inside each chunk
    "workers": Plan("chunked", chunk_rows=3, workers=2),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _make_case(num_rows, num_classes, ignored, weighted, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64) * 3
    target = torch.randint(0, num_classes, (num_rows,), generator=generator)
    if ignored == "some":
        target[::3] = IGNORE
    elif ignored == "tail":  # padding: whole chunks without an ignored row, then mixed ones
        target[-num_rows // 3:] = IGNORE
    elif ignored == "all":
        target[:] = IGNORE
    weight = None
    if weighted:
        weight = torch.rand(num_classes, generator=generator, dtype=torch.float64) + 0.1
    return logits, target, weight


def _reference(logits, target, smoothing, weight, reduction, grad_output):
    """PyTorch's loss and gradient in float64 on ``logits``' exact values."""
    x = logits.detach().to(torch.float64).requires_grad_()
    w = None if weight is None else weight.to(torch.float64)
    loss = F.cross_entropy(x, target, weight=w, ignore_index=IGNORE, reduction=reduction,
                           label_smoothing=smoothing)
    (grad,) = torch.autograd.grad(loss, x, grad_output.to(torch.float64))
    return loss, grad


def _ours(logits, target, smoothing, weight, reduction, grad_output, *, inplace=False,
          plan=CHUNKED):
    """Our loss and the gradient reaching a leaf, through a non-leaf when ``inplace``."""
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1 if inplace else leaf
    w = None if weight is None else weight.to(logits.dtype)
    loss = fused_smoothed_cross_entropy(x, target, smoothing, weight=w, ignore_index=IGNORE,
                                        reduction=reduction, inplace_backward=inplace, plan=plan)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss, grad


@pytest.fixture(params=list(PLANS))
def path(request):
    """Each way the chunked pass can run on small logits, passed in as a plan."""
    return PLANS[request.param]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignored", ["none", "some", "tail", "all"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_matches_pytorch(path, dtype, reduction, weighted, ignored, inplace):
    logits, target, weight = _make_case(37, 11, ignored, weighted)
    logits = logits.to(dtype)
    if weight is not None:
        weight = weight.to(dtype)
    shape = (37,) if reduction == "none" else ()
    grad_output = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype) + 0.5
    want_loss, want_grad = _reference(logits, target, 0.2, weight, reduction, grad_output)
    loss, grad = _ours(logits, target, 0.2, weight, reduction, grad_output, inplace=inplace,
                       plan=path)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, want_loss, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_float32_equals_pytorch_float32(reduction, weighted, smoothing):
    logits, target, weight = _make_case(300, 1000, "some", weighted, seed=3)
    logits = logits.float()
    weight = None if weight is None else weight.float()
    x = logits.clone().requires_grad_()
    want = F.cross_entropy(x, target, weight=weight, ignore_index=IGNORE, reduction=reduction,
                           label_smoothing=smoothing)
    want.sum().backward()
    got, grad = _ours(logits, target, smoothing, weight, reduction, torch.ones_like(want))
    assert_close(got, want, what="loss")
    assert_close(grad, x.grad, what="gradient")


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (3, 2), (1, 300), (129, 257), (7, 3001)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_odd_shapes_default_chunking(shape, reduction):
    logits, target, _ = _make_case(*shape, "none", False, seed=5)
    logits = logits.float()
    grad_output = torch.ones(shape[:1] if reduction == "none" else ())
    want_loss, want_grad = _reference(logits, target, 0.1, None, reduction, grad_output)
    default = plan(*shape, torch.float32, CPU, gradient="inplace")  # never PyTorch's own
    loss, grad = _ours(logits, target, 0.1, None, reduction, grad_output, plan=default)
    assert_close(loss, want_loss, what="loss")
    assert_close(grad, want_grad, what="gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_empty_batch_matches_pytorch(reduction, weighted):
    logits, target, weight = _make_case(0, 5, "none", weighted)
    x = logits.clone().requires_grad_()
    want = F.cross_entropy(x, target, weight=weight, ignore_index=IGNORE, reduction=reduction,
                           label_smoothing=0.1)
    got = fused_smoothed_cross_entropy(x, target, 0.1, weight=weight, ignore_index=IGNORE,
                                       reduction=reduction, plan=CHUNKED)
    assert_close(got, want, what="loss")  # NaN for "mean", 0 for "sum", empty for "none"
    (grad,) = torch.autograd.grad(got.sum(), x)
    assert grad.shape == (0, 5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_batch_gives_pytorch_nan_and_zero_gradient(reduction):
    logits, target, _ = _make_case(6, 4, "all", False)
    loss, grad = _ours(logits, target, 0.1, None, reduction,
                       torch.ones(6 if reduction == "none" else ()))
    assert bool(torch.isnan(loss).all()) == (reduction == "mean")
    assert torch.equal(grad, torch.zeros_like(grad))


def test_gradcheck_float64():
    logits, target, weight = _make_case(5, 4, "some", True, seed=7)
    for reduction in ("mean", "sum", "none"):
        def loss_of(x, reduction=reduction):
            return fused_smoothed_cross_entropy(x, target, 0.3, weight=weight,
                                                ignore_index=IGNORE, reduction=reduction,
                                                plan=CHUNKED)
        assert torch.autograd.gradcheck(loss_of, (logits.clone().requires_grad_(),))


def test_non_contiguous_logits():
    logits, target, _ = _make_case(13, 9, "some", False)
    transposed = logits.t().contiguous().t()
    assert not transposed.is_contiguous()
    loss, grad = _ours(transposed, target, 0.1, None, "sum", torch.tensor(1.0))
    want_loss, want_grad = _reference(logits, target, 0.1, None, "sum", torch.tensor(1.0))
    assert_close(loss, want_loss)
    assert_close(grad, want_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_large_vocabulary_is_finite(dtype):
    logits, target, _ = _make_case(4, 32000, "none", False, seed=11)
    logits = logits.to(dtype)
    if dtype == torch.float16:
        # Why the float32 accumulation matters: PyTorch's own float16 loss overflows here.
        assert torch.isinf(F.cross_entropy(logits, target, label_smoothing=0.1))
    want_loss, want_grad = _reference(logits, target, 0.1, None, "mean", torch.tensor(1.0))
    loss, grad = _ours(logits, target, 0.1, None, "mean", torch.tensor(1.0, dtype=dtype))
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
    assert_close(loss, want_loss, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")


# float16/bfloat16 chunks: of one row, of a few rows (a ragged end), of all rows; on worker threads.
HALF_PLANS = {
    "rows1": Plan("chunked", chunk_rows=1),
    "rows5": Plan("chunked", chunk_rows=5),
    "all_rows": Plan("chunked", chunk_rows=64),
    "workers": Plan("chunked", chunk_rows=3, workers=2),
}


def _assert_rounded_once(actual, exact, what):
    """``actual`` is ``exact`` rounded once to ``actual.dtype``, up to float32 arithmetic:
    ``|actual - exact| <= ulp / 2 + rtol_32 * |exact|`` (rounding a float32 result that is
    already low-precision, or rounding twice, misses by up to a whole ulp)."""
    info = torch.finfo(actual.dtype)
    exact = exact.detach().to(torch.float64)
    _, exponent = torch.frexp(exact)
    ulp = torch.ldexp(torch.full_like(exact, info.eps), exponent - 1)  # in [2^(e-1), 2^e)
    ulp = ulp.clamp_min(info.smallest_normal * info.eps)  # the spacing of subnormals
    bound = ulp / 2 + TOLERANCES[torch.float32][0] * exact.abs()
    error = (actual.detach().to(torch.float64) - exact).abs()
    worst = int(torch.argmax(error / bound))
    assert bool((error <= bound).all()), (
        f"{what}: {int((error > bound).sum())} of {error.numel()} entries not rounded once; "
        f"worst at flat index {worst}: got {actual.flatten()[worst].item():.10g}, exact "
        f"{exact.flatten()[worst].item():.10g}")


def _far_target_case(dtype, offset=0.0):
    """Targets from 0 to 3000 below their row's maximum, around where ``exp(max - x_y)``
    overflows float32 (88.7), in rows mixed with ordinary ones; ``offset`` added to all."""
    logits, target, _ = _make_case(40, 300, "some", False, seed=7)
    gaps = [30.0, 80.0, 87.0, 88.0, 88.7, 89.0, 90.0, 100.0, 3000.0]
    counted = [row for row in range(40) if target[row] != IGNORE]
    for row, gap in zip(counted[: len(gaps)], gaps, strict=True):
        logits[row, target[row]] = logits[row].max() - gap
    logits[3, 0] = logits[3].max() - 100.0  # an ignored row is shifted by class 0's logit
    return (logits + offset).to(dtype), target


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("chunking", list(HALF_PLANS))
@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centred", "offset1000"])
def test_half_precision_chunks_match_pytorch_and_round_once(dtype, inplace, chunking, offset):
    logits, target = _far_target_case(dtype, offset)
    for reduction in ("mean", "sum"):
        want_loss, want_grad = _reference(logits, target, 0.1, None, reduction, torch.tensor(1.0))
        loss, grad = _ours(logits, target, 0.1, None, reduction, torch.tensor(1.0, dtype=dtype),
                           inplace=inplace, plan=HALF_PLANS[chunking])
        assert_close(loss, want_loss, dtype, what="loss")
        _assert_rounded_once(loss, want_loss, "loss")
        _assert_rounded_once(grad, want_grad, "gradient")


def test_no_gradient_work_under_no_grad_or_without_requires_grad(monkeypatch):
    seen = []
    original = ce.chunked_row_statistics

    def spy(logits, safe_target, class_weight, grad, *args, **kwargs):
        seen.append(grad)
        return original(logits, safe_target, class_weight, grad, *args, **kwargs)

    monkeypatch.setattr(ce, "chunked_row_statistics", spy)
    logits, target, _ = _make_case(8, 6, "some", False)
    want = F.cross_entropy(logits, target, ignore_index=IGNORE, label_smoothing=0.1)
    with torch.no_grad():
        leaf = logits.clone().requires_grad_()
        loss = fused_smoothed_cross_entropy(leaf * 1, target, 0.1, weight=None,
                                            ignore_index=IGNORE, reduction="mean",
                                            inplace_backward=True, plan=CHUNKED)
    plain = fused_smoothed_cross_entropy(logits, target, 0.1, weight=None,
                                         ignore_index=IGNORE, reduction="mean", plan=CHUNKED)
    assert seen == [None, None]
    assert loss.grad_fn is None and plain.grad_fn is None
    assert_close(loss, want)
    assert_close(plain, want)
    assert torch.equal(leaf, logits)  # in place under no_grad writes nothing


def test_inplace_writes_the_gradient_into_the_logits_storage():
    logits, target, _ = _make_case(10, 7, "some", False)
    leaf = logits.clone().requires_grad_()
    x = leaf * 2
    x.retain_grad()
    loss = fused_smoothed_cross_entropy(x, target, 0.1, weight=None, ignore_index=IGNORE,
                                        reduction="mean", inplace_backward=True)
    loss.backward()
    _, want_grad = _reference(logits * 2, target, 0.1, None, "mean", torch.tensor(1.0))
    assert_close(x.detach(), want_grad, what="logits after the call")
    assert_close(x.grad, want_grad, what="gradient of the logits")
    assert_close(leaf.grad, 2 * want_grad, what="gradient through the producer")


def test_inplace_through_a_linear_head_matches_out_of_place():
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(16, 8, generator=generator, dtype=torch.float64)
    head = torch.randn(8, 50, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 50, (16,), generator=generator)
    grads = []
    for inplace in (False, True):
        h = hidden.clone().requires_grad_()
        w = head.clone().requires_grad_()
        loss = fused_smoothed_cross_entropy(h @ w, target, 0.1, weight=None, ignore_index=IGNORE,
                                            reduction="sum", inplace_backward=inplace,
                                            plan=CHUNKED)
        (loss * 0.5).backward()
        grads.append((loss.detach(), h.grad, w.grad))
    for ours, theirs in zip(grads[0], grads[1], strict=True):
        assert_close(theirs, ours)


def test_inplace_refuses_a_leaf_and_a_view_of_a_leaf():
    logits, target, _ = _make_case(4, 5, "none", False)
    leaf = logits.clone().requires_grad_()
    for x, received in ((leaf, "a leaf tensor that requires grad"),
                        (leaf[1:], "a view of a leaf tensor that requires grad")):
        with pytest.raises(ValueError, match=f"inplace_backward: expected .*got {received}"):
            fused_smoothed_cross_entropy(x, target[: x.shape[0]], 0.1, weight=None,
                                         ignore_index=IGNORE, reduction="mean",
                                         inplace_backward=True)
    assert torch.equal(leaf, logits)


def test_inplace_logits_saved_by_another_node_fail_loudly_in_backward():
    logits, target, _ = _make_case(4, 5, "none", False)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    x = logits.clone().requires_grad_() * 1
    other = (x * scale).sum()  # saves x to compute the gradient of ``scale``
    loss = fused_smoothed_cross_entropy(x, target, 0.1, weight=None, ignore_index=IGNORE,
                                        reduction="mean", inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


def test_second_backward_with_unit_grad_output_accumulates():
    logits, target, _ = _make_case(6, 5, "some", False)
    leaf = logits.clone().requires_grad_()
    loss = fused_smoothed_cross_entropy(leaf, target, 0.1, weight=None, ignore_index=IGNORE,
                                        reduction="mean", plan=CHUNKED)
    loss.backward(retain_graph=True)
    loss.backward()
    _, want = _reference(logits, target, 0.1, None, "mean", torch.tensor(1.0))
    assert_close(leaf.grad, 2 * want)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("zero_between", [False, True], ids=["accumulate", "zeroed"])
def test_repeated_backward_on_leaf_logits_accumulates_like_pytorch(path, reduction,
                                                                   zero_between):
    # The first backward hands the gradient buffer to autograd (it becomes x.grad); later
    # backwards through the retained graph must neither reuse nor see that buffer mutated.
    logits, target, _ = _make_case(6, 5, "some", False)
    grad_output = torch.ones(6 if reduction == "none" else ()).double() * 3
    results = []
    for fn in (F.cross_entropy, fused_smoothed_cross_entropy):
        leaf = logits.clone().requires_grad_()
        kwargs = {"label_smoothing": 0.1} if fn is F.cross_entropy else {
            "smoothing": 0.1, "weight": None, "plan": path}
        loss = fn(leaf, target, ignore_index=IGNORE, reduction=reduction, **kwargs)
        loss.backward(grad_output, retain_graph=True)
        if zero_between:
            leaf.grad.zero_()
        loss.backward(grad_output, retain_graph=True)
        loss.backward(grad_output)
        results.append(leaf.grad)
    assert_close(results[1], results[0], what="accumulated gradient")


def test_second_backward_after_inplace_raises_one_clear_line():
    logits, target, _ = _make_case(6, 5, "some", False)
    loss = fused_smoothed_cross_entropy(logits.clone().requires_grad_() * 1, target, 0.1,
                                        weight=None, ignore_index=IGNORE, reduction="sum",
                                        inplace_backward=True)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"got a second backward through the same graph; "
                                           r"pass inplace_backward=False$"):
        loss.backward()


def _penalised_head_gradients(loss_fn, inplace=False):
    """Parameter gradients of ``loss + |d loss / d params|^2`` for a linear head."""
    generator = torch.Generator().manual_seed(6)
    head = torch.nn.Linear(12, 50, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 12, generator=generator, dtype=torch.float64))
        head.bias.copy_(torch.randn(50, generator=generator, dtype=torch.float64))
    hidden = torch.randn(40, 12, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 50, (40,), generator=generator)
    target[::7] = IGNORE
    loss = loss_fn(head(hidden), target)
    grads = torch.autograd.grad(loss, list(head.parameters()), create_graph=True)
    (loss + sum((g ** 2).sum() for g in grads)).backward()
    return [p.grad for p in head.parameters()]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_double_backward_gradient_penalty_matches_pytorch(path, reduction, weighted):
    weight = torch.rand(50, generator=torch.Generator().manual_seed(8),
                        dtype=torch.float64) + 0.5 if weighted else None

    def ours(logits, target):
        return fused_smoothed_cross_entropy(logits, target, 0.2, weight=weight,
                                            ignore_index=IGNORE, reduction=reduction, plan=path)

    def theirs(logits, target):
        return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE,
                               reduction=reduction, label_smoothing=0.2)

    for got, want in zip(_penalised_head_gradients(ours), _penalised_head_gradients(theirs),
                         strict=True):
        assert_close(got, want, what="parameter gradient with a gradient penalty")


def test_double_backward_after_inplace_raises_one_clear_line():
    def ours(logits, target):
        return fused_smoothed_cross_entropy(logits, target, 0.2, weight=None,
                                            ignore_index=IGNORE, reduction="mean",
                                            inplace_backward=True)

    with pytest.raises(RuntimeError, match=r"got a backward with create_graph=True; "
                                           r"pass inplace_backward=False$"):
        _penalised_head_gradients(ours)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_inside_torch_compile(backend):
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.Tanh(), torch.nn.Linear(20, 30))
    inputs = torch.randn(12, 6, generator=generator)
    target = torch.randint(0, 30, (12,), generator=generator)
    target[2] = IGNORE

    def step(inplace):
        logits = model(inputs)
        return fused_smoothed_cross_entropy(logits, target, 0.1, weight=None, ignore_index=IGNORE,
                                            reduction="mean", inplace_backward=inplace,
                                            plan=CHUNKED)

    results = []
    for fn in (step, torch.compile(step, backend=backend)):
        for inplace in (False, True):
            model.zero_grad()
            loss = fn(inplace)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    want_loss = F.cross_entropy(model(inputs), target, ignore_index=IGNORE, label_smoothing=0.1)
    for loss, grads in results:
        assert_close(loss, want_loss, what="loss")
        for got, want in zip(grads, results[0][1], strict=True):
            assert_close(got, want, what="parameter gradient")


@pytest.mark.slow
def test_inside_torch_compile_inductor():
    test_inside_torch_compile("inductor")


def test_plan_by_shape_and_device(monkeypatch):
    assert plan(8192, 10, torch.float32, CPU).strategy == "native"  # few classes: PyTorch's is faster
    assert plan(8192, 32, torch.float32, CPU).strategy == "chunked"
    assert plan(8192, 10, torch.float32, CPU, gradient="inplace").strategy == "chunked"
    assert plan(8192, 10, torch.bfloat16, CPU).strategy == "chunked"  # float32 accumulation
    assert plan(256, 256, torch.float32, CPU).strategy == "native"  # tiny
    assert plan(257, 256, torch.float32, CPU).strategy == "chunked"
    assert plan(1024, 262144, torch.bfloat16, CPU).strategy == "chunked"
    assert plan(4, 5, torch.float32, torch.device("meta")).strategy == "native"
    monkeypatch.setattr(planning, "_triton_available", lambda: True)
    assert plan(4, 32000, torch.float16, torch.device("cuda")).strategy == "triton"
    assert plan(4, 32000, torch.float64, torch.device("cuda")).strategy == "chunked"
    monkeypatch.setattr(planning, "_triton_available", lambda: False)
    assert plan(4, 32000, torch.float16, torch.device("cuda")).strategy == "chunked"


@pytest.mark.parametrize(("shape", "dtype", "gradient", "threads", "rows", "workers"), [
    ((1024, 262144), torch.float32, "inplace", 2, 4, 2),  # 4 MiB chunks on two workers
    ((4096, 32000), torch.float32, "inplace", 2, 32, 2),  # 4 MiB // 128000 bytes a row
    ((65536, 1000), torch.bfloat16, "inplace", 2, 1024, 2),  # scratch within 1/32: 65536 / 64
    ((20000, 1000), torch.bfloat16, "inplace", 2, 313, 2),  # scratch within 1/32 of the logits
    ((2048, 128256), torch.bfloat16, "fresh", 2, 8, 2),  # staged: 4 MiB of float32 rows
    # Below the worker size: PyTorch's threads in each chunk, rows a multiple of the threads.
    ((8192, 1000), torch.bfloat16, "inplace", 2, 256, 1),
    ((8192, 10), torch.bfloat16, "none", 2, 6552, 1),
    # Exponentials into the gradient rows (no scratch chunk): 4 MiB of rows.
    ((8192, 1000), torch.float32, "fresh", 2, 1048, 1),
    ((8192, 1000), torch.float32, "inplace", 2, 1048, 1),
    ((4096, 32000), torch.float32, "fresh", 2, 32, 2),
    ((1024, 2**20), torch.float32, "inplace", 1, 1, 1),
])
def test_plan_chunking(shape, dtype, gradient, threads, rows, workers):
    chosen = plan(*shape, dtype, CPU, gradient=gradient, threads=threads)
    assert (chosen.strategy, chosen.chunk_rows, chosen.workers) == ("chunked", rows, workers)


def test_plan_without_worker_threads_off_the_cpu(monkeypatch):
    monkeypatch.setattr(planning, "_triton_available", lambda: False)
    chosen = plan(1024, 262144, torch.float32, torch.device("cuda"), gradient="inplace",
                  threads=2)
    assert (chosen.chunk_rows, chosen.workers) == (4, 1)


def test_worker_counts_match_the_serial_pass():
    logits, target, weight = _make_case(41, 50, "some", True, seed=9)
    results = [_ours(logits, target, 0.1, weight, "sum", torch.tensor(2.0),
                     plan=Plan("chunked", chunk_rows=3, workers=workers))
               for workers in (1, 2, 3)]
    for loss, grad in results[1:]:
        assert_close(loss, results[0][0], what="loss")
        assert_close(grad, results[0][1], what="gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_zero_weight_on_every_counted_target_matches_pytorch(path, reduction):
    # The weighted mean divides by sum w_y = 0 although the smoothing term is not 0: PyTorch's
    # NLL part is 0 / 0 = NaN, so its loss is NaN (not the smoothing term's +inf).
    logits, _, _ = _make_case(6, 4, "none", False)
    target = torch.tensor([0, 1, IGNORE, 0, 1, 1])
    weight = torch.tensor([0.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    grad_output = torch.ones(6 if reduction == "none" else ())
    loss, grad = _ours(logits, target, 0.1, weight, reduction, grad_output.double(),
                       plan=path)
    ref_loss, ref_grad = _reference(logits, target, 0.1, weight, reduction, grad_output)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad, what="gradient")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_masked_logits_match_pytorch(path, smoothing, weighted):
    # Classes masked out with -inf (a common way to forbid them): plain cross-entropy
    # (smoothing 0) stays finite; with smoothing the uniform term's -log 0 makes it +inf.
    logits, target, weight = _make_case(6, 9, "some", weighted)
    logits[:, :3] = float("-inf")
    target = torch.where(target == IGNORE, target, 3 + target % 6)
    for reduction in ("mean", "sum", "none"):
        grad_output = torch.ones(6 if reduction == "none" else ())
        loss, grad = _ours(logits, target, smoothing, weight, reduction, grad_output.double(),
                           plan=path)
        ref_loss, ref_grad = _reference(logits, target, smoothing, weight, reduction, grad_output)
        assert_close(loss, ref_loss)
        assert_close(grad, ref_grad, what="gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_underflowing_target_probability_matches_pytorch(path, dtype, inplace):
    # The softmax path takes lse = x_y - log p_y; where p_y underflows (a target logit far below
    # the row's maximum: exp(-3000) is 0 even in float64) it falls back to the row maxima. Some
    # chunks mix such rows with ordinary ones, one holds only such rows, one none.
    logits, target, weight = _make_case(37, 11, "some", True)
    far = torch.zeros(37, dtype=torch.bool)
    far[[0, 5, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 30]] = True
    counted = far & (target != IGNORE)
    logits[counted, target[counted]] = -3000.0
    logits[counted, (target[counted] + 1) % 11] = 10.0
    logits = logits.to(dtype)
    weight = weight.to(dtype)
    for reduction in ("mean", "sum", "none"):
        grad_output = torch.ones(37 if reduction == "none" else ()).to(dtype)
        loss, grad = _ours(logits, target, 0.1, weight, reduction, grad_output, inplace=inplace,
                           plan=path)
        ref_loss, ref_grad = _reference(logits, target, 0.1, weight, reduction, grad_output)
        assert torch.isfinite(loss).all()
        assert_close(loss, ref_loss)
        assert_close(grad, ref_grad, what="gradient")


def test_tiny_float_problems_run_pytorchs_own_loss():
    assert plan(256, 256, torch.float32, CPU).strategy == "native"  # 65536 logits
    assert plan(256, 257, torch.float32, CPU).strategy == "chunked"
    assert plan(8192, 32, torch.float64, CPU).strategy == "chunked"
    assert plan(8192, 31, torch.float64, CPU).strategy == "native"  # few classes
    assert plan(16, 10, torch.float64, CPU).strategy == "native"
    assert plan(16, 10, torch.float64, CPU, gradient="none").strategy == "native"
    assert plan(16, 10, torch.float32, CPU, gradient="inplace").strategy == "chunked"
    assert plan(16, 10, torch.bfloat16, CPU).strategy == "chunked"
    assert plan(16, 10, torch.float16, CPU).strategy == "chunked"
    # Dispatched: exactly PyTorch's value and gradient, bit for bit.
    logits, target, weight = _make_case(37, 11, "some", True)
    logits, weight = logits.float(), weight.float()
    for reduction in ("mean", "sum", "none"):
        x = logits.clone().requires_grad_()
        want = F.cross_entropy(x, target, weight=weight, ignore_index=IGNORE,
                               reduction=reduction, label_smoothing=0.2)
        (want_grad,) = torch.autograd.grad(want.sum(), x)
        got = fused_smoothed_cross_entropy(x, target, 0.2, weight=weight, ignore_index=IGNORE,
                                           reduction=reduction)
        (got_grad,) = torch.autograd.grad(got.sum(), x)
        assert torch.equal(got, want) and torch.equal(got_grad, want_grad)


@pytest.mark.parametrize(("dtype", "weight_dtype"), [(torch.float64, torch.float32),
                                                     (torch.float32, torch.float64)], ids=str)
def test_tiny_problems_cast_a_weight_of_another_dtype(dtype, weight_dtype):
    logits, target, weight = _make_case(8, 5, "some", True)
    logits = logits.to(dtype)
    want = F.cross_entropy(logits, target, weight=weight.to(weight_dtype).to(dtype),
                           ignore_index=IGNORE, label_smoothing=0.1)
    got = fused_smoothed_cross_entropy(logits, target, 0.1, weight=weight.to(weight_dtype),
                                       ignore_index=IGNORE, reduction="mean")
    assert got.dtype == dtype
    assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_tiny_problems_in_place_or_half_precision_stay_fused(dtype):
    logits, target, _ = _make_case(37, 11, "none", False)
    logits = logits.to(dtype)
    inplace = dtype == torch.float32
    want_loss, want_grad = _reference(logits, target, 0.1, None, "mean", torch.tensor(1.0))
    leaf = logits.clone().requires_grad_()
    x = leaf * 1
    loss = fused_smoothed_cross_entropy(x, target, 0.1, weight=None, ignore_index=IGNORE,
                                        reduction="mean", inplace_backward=inplace)
    (grad,) = torch.autograd.grad(loss, leaf)
    assert_close(loss, want_loss, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")
    if inplace:  # the fused kernel ran: the gradient was written into the logits
        assert_close(x.detach(), want_grad, dtype, what="logits after the call")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_meta_logits_infer_the_shape_like_pytorch(reduction):
    logits = torch.empty(300, 400, device="meta", requires_grad=True)
    target = torch.empty(300, dtype=torch.long, device="meta")
    weight = torch.empty(400, dtype=torch.float64, device="meta")
    got = fused_smoothed_cross_entropy(logits, target, 0.1, weight=weight, ignore_index=IGNORE,
                                       reduction=reduction)
    want = F.cross_entropy(logits, target, weight=weight.float(), reduction=reduction,
                           label_smoothing=0.1)
    assert got.device.type == "meta" and got.shape == want.shape and got.dtype == want.dtype
    (grad,) = torch.autograd.grad(got.sum(), logits)
    assert grad.device.type == "meta" and grad.shape == logits.shape


def test_torch_func_grad_and_vmap_match_pytorch():
    logits, target, weight = _make_case(300, 400, "some", True, seed=12)

    def ours(x):
        return fused_smoothed_cross_entropy(x, target, 0.1, weight=weight, ignore_index=IGNORE,
                                            reduction="mean")

    def theirs(x):
        return F.cross_entropy(x, target, weight=weight, ignore_index=IGNORE,
                               label_smoothing=0.1)

    assert_close(torch.func.grad(ours)(logits), torch.func.grad(theirs)(logits),
                 what="torch.func.grad")
    batch = torch.stack([logits, 2 * logits])
    assert_close(torch.vmap(ours)(batch), torch.vmap(theirs)(batch), what="vmap")
    assert_close(torch.vmap(torch.func.grad(ours))(batch),
                 torch.vmap(torch.func.grad(theirs))(batch), what="vmap of grad")


# Priors, per-row and negative smoothing, mixed targets: against the dense float64 formula
# -sum_c w_c t_c log p_c with t = sum_k h_k ((1 - s) onehot(y_k) + s q), each component's
# mean divided by its own sum of w_y.

def _dense_reference(logits, targets, shares, smoothing, prior, weight, reduction):
    """The float64 loss of the dense target, component by component (autograd gives the grad)."""
    x = logits.detach().to(torch.float64).requires_grad_()
    num_rows, num_classes = x.shape
    q = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64) if prior is None \
        else prior.to(torch.float64)
    w = torch.ones(num_classes, dtype=torch.float64) if weight is None else weight.to(torch.float64)
    s = torch.as_tensor(smoothing, dtype=torch.float64).expand(num_rows).unsqueeze(1)
    log_probs = torch.log_softmax(x, 1)
    total = 0
    for share, y in zip(shares, targets, strict=True):
        valid = y != IGNORE
        hot = F.one_hot(y.masked_fill(~valid, 0), num_classes).to(torch.float64)
        t = ((1 - s) * hot + s * q) * valid.unsqueeze(1)
        rows = -(t * w * log_probs).sum(1)
        if reduction == "none":
            part = rows
        elif reduction == "sum":
            part = rows.sum()
        else:
            part = rows.sum() / (w[y.masked_fill(~valid, 0)] * valid).sum()
        total = total + share * part
    return x, total


VARIANTS = {
    # name: (smoothing, prior?, weighted, shares)
    "prior": (0.2, True, True, (1.0,)),
    "prior_unweighted": (0.3, True, False, (1.0,)),
    "per_row": ("rows", False, True, (1.0,)),
    "negative": (-0.5, False, False, (1.0,)),
    "negative_prior": (-2.0, True, True, (1.0,)),
    "mixed": (0.1, False, True, (0.6, 0.4)),
    "mixed_per_row_prior": ("rows", True, False, (0.75, 0.25)),
}


def _variant_case(name, num_rows=23, num_classes=13, seed=5):
    smoothing, with_prior, weighted, shares = VARIANTS[name]
    logits, target, weight = _make_case(num_rows, num_classes, "some", weighted, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    prior = None
    if with_prior:
        raw = torch.rand(num_classes, generator=generator, dtype=torch.float64)
        raw[1] = 0.0  # a class the prior never smooths towards
        prior = raw / raw.sum()
    if smoothing == "rows":
        smoothing = torch.rand(num_rows, generator=generator, dtype=torch.float64)
        smoothing[:3] = torch.tensor([0.0, 1.0, 0.5])
    targets = [target]
    if len(shares) == 2:
        partner = target[torch.randperm(num_rows, generator=generator)]
        partner[::4] = target[::4]  # the same class twice in a row: the shares add up
        partner[1] = IGNORE if target[1] != IGNORE else 0
        targets.append(partner)
    return logits, targets, shares, smoothing, prior, weight


def _ours_variant(logits, targets, shares, smoothing, prior, weight, reduction, grad_output, *,
                  inplace, plan):
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1 if inplace else leaf
    target = targets[0] if len(targets) == 1 else torch.stack(targets, 1)
    loss = fused_smoothed_cross_entropy(
        x, target, smoothing, weight=None if weight is None else weight.to(logits.dtype),
        ignore_index=IGNORE, reduction=reduction, inplace_backward=inplace, plan=plan,
        prior=prior, shares=shares)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss, grad


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_variants_match_the_dense_formula(path, variant, dtype, reduction, inplace):
    logits, targets, shares, smoothing, prior, weight = _variant_case(variant)
    logits = logits.to(dtype)
    shape = (logits.shape[0],) if reduction == "none" else ()
    grad_output = torch.rand(shape, generator=torch.Generator().manual_seed(2)).to(dtype) + 0.5
    x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, reduction)
    (want_grad,) = torch.autograd.grad(want, x, grad_output.to(torch.float64))
    loss, grad = _ours_variant(logits, targets, shares, smoothing, prior, weight, reduction,
                               grad_output, inplace=inplace, plan=path)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, want, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")


@pytest.mark.parametrize("variant", ["prior", "per_row", "negative", "mixed"])
def test_variants_on_tiny_problems_run_fused_under_the_default_plan(variant, monkeypatch):
    """PyTorch's loss has no prior, per-row smoothing or second target: the default plan of a
    tiny problem must not hand such a call to it."""
    logits, targets, shares, smoothing, prior, weight = _variant_case(variant, 7, 5)
    monkeypatch.setattr(F, "cross_entropy", None)  # any call to it fails
    assert plan(7, 5, torch.float64, CPU, native=False).strategy == "chunked"
    x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, "mean")
    (want_grad,) = torch.autograd.grad(want, x)
    loss, grad = _ours_variant(logits, targets, shares, smoothing, prior, weight, "mean",
                               torch.ones(()), inplace=False, plan=None)
    assert_close(loss, want, what="loss")
    assert_close(grad, want_grad, what="gradient")


def test_hand_computed_negative_and_prior_cases():
    """One row, three classes, logits (ln 2, 0, 0): p = (1/2, 1/4, 1/4).

    s = -0.5, y = 0, uniform prior: t = (4/3, -1/6, -1/6), loss = -sum t log p = 2/3 ln 2,
    gradient p - t = (-5/6, 5/12, 5/12). s = 0.2, y = 2, q = (1/2, 1/2, 0):
    t = (0.1, 0.1, 0.8), loss = 1.9 ln 2, gradient (0.4, 0.15, -0.55).
    """
    x = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    cases = [(-0.5, None, 0, 2 / 3, [-5 / 6, 5 / 12, 5 / 12]),
             (0.2, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), 2, 1.9, [0.4, 0.15, -0.55])]
    for smoothing, prior, label, loss_in_ln2, gradient in cases:
        for chosen in PLANS.values():
            loss, grad = _ours_variant(x, [torch.tensor([label])], (1.0,), smoothing, prior, None,
                                       "mean", torch.ones((), dtype=torch.float64),
                                       inplace=False, plan=chosen)
            assert_close(loss, torch.tensor(loss_in_ln2 * math.log(2.0), dtype=torch.float64),
                         torch.float64)
            assert_close(grad, torch.tensor([gradient], dtype=torch.float64), torch.float64)


@pytest.mark.parametrize("variant", ["prior", "per_row", "mixed_per_row_prior"])
def test_variants_double_backward_and_meta_use_the_dense_formula(variant):
    logits, targets, shares, smoothing, prior, weight = _variant_case(variant, 6, 5)
    target = targets[0] if len(targets) == 1 else torch.stack(targets, 1)
    options = dict(weight=weight, ignore_index=IGNORE, reduction="sum", prior=prior, shares=shares)
    x = logits.clone().requires_grad_()
    loss = fused_smoothed_cross_entropy(x, target, smoothing, plan=CHUNKED, **options)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    reference_x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, "sum")
    (want_grad,) = torch.autograd.grad(want, reference_x, create_graph=True)
    (want_second,) = torch.autograd.grad(want_grad.square().sum(), reference_x)
    assert_close(second, want_second, what="second derivative")
    meta = fused_smoothed_cross_entropy(
        logits.to("meta"), target.to("meta"),
        smoothing.to("meta") if isinstance(smoothing, torch.Tensor) else smoothing,
        **{**options, "reduction": "none", "prior": None if prior is None else prior.to("meta"),
           "weight": None if weight is None else weight.to("meta")})
    assert meta.shape == (6,) and meta.device.type == "meta"


# The confidence penalty fused in: beta * sum_c p_c log p_c of each row its component counts
# (not ignored), unweighted, each component's "mean" divided by its count of counted rows.

def _dense_penalty_reference(x, targets, shares, beta, reduction):
    """The float64 penalty of ``x`` (a float64 leaf), component by component."""
    log_probs = torch.log_softmax(x, 1)
    finite = log_probs.clamp(min=torch.finfo(torch.float64).min)  # p log p = 0 where p = 0
    rows = beta * (log_probs.exp() * finite).sum(1)
    total = 0
    for share, y in zip(shares, targets, strict=True):
        valid = y != IGNORE
        counted = torch.where(valid, rows, 0.0)
        part = {"none": counted, "sum": counted.sum(), "mean": counted.sum() / valid.sum()}
        total = total + share * part[reduction]
    return total


def _ours_penalised(logits, targets, shares, smoothing, prior, weight, reduction, grad_output,
                    beta, *, inplace=False, plan=CHUNKED):
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1 if inplace else leaf
    target = targets[0] if len(targets) == 1 else torch.stack(targets, 1)
    loss = fused_smoothed_cross_entropy(
        x, target, smoothing, weight=None if weight is None else weight.to(logits.dtype),
        ignore_index=IGNORE, reduction=reduction, inplace_backward=inplace, plan=plan,
        prior=prior, shares=shares, confidence_penalty=beta)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss, grad


PENALTY_VARIANTS = {
    # name: (smoothing, prior?, weighted, shares), as VARIANTS
    "uniform": (0.1, False, False, (1.0,)),
    "uniform_weighted": (0.0, False, True, (1.0,)),
    "prior": VARIANTS["prior"],
    "per_row": VARIANTS["per_row"],
    "negative": VARIANTS["negative"],
    "mixed": VARIANTS["mixed"],
    "mixed_per_row_prior": VARIANTS["mixed_per_row_prior"],
}


def _penalty_case(name, num_rows=23, num_classes=13, seed=5):
    saved = dict(VARIANTS)
    VARIANTS.update(PENALTY_VARIANTS)
    try:
        return _variant_case(name, num_rows, num_classes, seed)
    finally:
        VARIANTS.clear()
        VARIANTS.update(saved)


@pytest.mark.parametrize("variant", list(PENALTY_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_confidence_penalty_matches_the_dense_formula(path, variant, dtype, reduction, inplace):
    logits, targets, shares, smoothing, prior, weight = _penalty_case(variant)
    logits = logits.to(dtype)
    beta = -0.3 if variant == "negative" else 0.7
    shape = (logits.shape[0],) if reduction == "none" else ()
    grad_output = torch.rand(shape, generator=torch.Generator().manual_seed(2)).to(dtype) + 0.5
    x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, reduction)
    want = want + _dense_penalty_reference(x, targets, shares, beta, reduction)
    (want_grad,) = torch.autograd.grad(want, x, grad_output.to(torch.float64))
    loss, grad = _ours_penalised(logits, targets, shares, smoothing, prior, weight, reduction,
                                 grad_output, beta, inplace=inplace, plan=path)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, want, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_confidence_penalty_without_gradient_and_on_tiny_problems(path, dtype):
    logits, targets, shares, smoothing, prior, weight = _penalty_case("mixed")
    logits = logits.to(dtype)
    for reduction in ("mean", "sum", "none"):
        x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, reduction)
        want = want + _dense_penalty_reference(x, targets, shares, 1.5, reduction)
        with torch.no_grad():
            got = fused_smoothed_cross_entropy(
                logits, torch.stack(targets, 1), smoothing, weight=weight.to(dtype),
                ignore_index=IGNORE, reduction=reduction, plan=path, shares=shares,
                confidence_penalty=1.5)
        assert_close(got, want, dtype, what=f"no-grad loss, {reduction}")
    # A tiny float problem with one target runs PyTorch's loss: the penalty must be added.
    logits, targets, shares, smoothing, prior, weight = _penalty_case("uniform_weighted", 6, 5)
    for reduction in ("mean", "sum", "none"):
        grad_output = torch.ones(6 if reduction == "none" else (), dtype=torch.float64)
        x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, reduction)
        want = want + _dense_penalty_reference(x, targets, shares, 0.4, reduction)
        (want_grad,) = torch.autograd.grad(want, x, grad_output)
        assert plan(6, 5, torch.float64, CPU).strategy == "native"
        loss, grad = _ours_penalised(logits, targets, shares, smoothing, prior, weight,
                                     reduction, grad_output, 0.4, plan=None)
        assert_close(loss, want, what="native loss")
        assert_close(grad, want_grad, what="native gradient")


def test_confidence_penalty_hand_computed_row():
    """One row, logits (ln 2, 0, 0): p = (1/2, 1/4, 1/4), sum_c p_c log p_c = -3/2 ln 2 and
    S = sum_c p_c x_c = 1/2 ln 2. With y = 0, s = 0 and beta = 1: loss = ln 2 - 3/2 ln 2 =
    -1/2 ln 2; gradient p - onehot + p * (x - S) = (-1/2 + ln 2 / 4, 1/4 - ln 2 / 8, 1/4 - ln 2 / 8).
    """
    ln2 = math.log(2.0)
    x = torch.tensor([[ln2, 0.0, 0.0]], dtype=torch.float64)
    want_grad = torch.tensor([[-0.5 + ln2 / 4, 0.25 - ln2 / 8, 0.25 - ln2 / 8]],
                             dtype=torch.float64)
    for chosen in (*PLANS.values(), Plan("native")):
        loss, grad = _ours_penalised(x, [torch.tensor([0])], (1.0,), 0.0, None, None, "mean",
                                     torch.ones((), dtype=torch.float64), 1.0, plan=chosen)
        assert_close(loss, torch.tensor(-0.5 * ln2, dtype=torch.float64), torch.float64)
        assert_close(grad, want_grad, torch.float64, what="gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_confidence_penalty_with_masked_logits(path, dtype, inplace):
    # -inf logits: p = 0 there, and p log p and its gradient are 0, not 0 * inf.
    logits, target, _ = _make_case(9, 8, "some", False)
    logits[:, :3] = float("-inf")
    target = torch.where(target == IGNORE, target, 3 + target % 5)
    logits = logits.to(dtype)
    x = logits.double().requires_grad_()
    want = F.cross_entropy(x, target, ignore_index=IGNORE) + _dense_penalty_reference(
        x, [target], (1.0,), 0.5, "mean")
    (want_grad,) = torch.autograd.grad(want, x)
    loss, grad = _ours_penalised(logits, [target], (1.0,), 0.0, None, None, "mean",
                                 torch.ones((), dtype=dtype), 0.5, inplace=inplace, plan=path)
    assert_close(loss, want, dtype, what="loss")
    assert_close(grad, want_grad, dtype, what="gradient")


def test_confidence_penalty_all_ignored_and_zero_is_the_plain_pass(monkeypatch):
    logits, target, _ = _make_case(6, 4, "all", False)
    loss, grad = _ours_penalised(logits, [target], (1.0,), 0.1, None, None, "mean",
                                 torch.ones((), dtype=torch.float64), 2.0)
    assert bool(torch.isnan(loss)) and torch.equal(grad, torch.zeros_like(grad))
    # beta = 0 runs no penalty code at all.
    from labelsmooth._ops import chunked_cross_entropy as chunked

    monkeypatch.setattr(chunked, "_penalty_statistics", None)
    logits, target, weight = _make_case(11, 7, "some", True)
    loss, grad = _ours(logits, target, 0.1, weight, "mean", torch.ones((), dtype=torch.float64))
    want_loss, want_grad = _reference(logits, target, 0.1, weight, "mean", torch.ones(()))
    assert_close(loss, want_loss)
    assert_close(grad, want_grad, what="gradient")


def test_confidence_penalty_double_backward_meta_and_torch_func():
    logits, targets, shares, smoothing, prior, weight = _penalty_case("mixed_per_row_prior", 6, 5)
    target = torch.stack(targets, 1)
    options = dict(weight=weight, ignore_index=IGNORE, reduction="sum", prior=prior,
                   shares=shares, confidence_penalty=0.8)
    x = logits.clone().requires_grad_()
    loss = fused_smoothed_cross_entropy(x, target, smoothing, plan=CHUNKED, **options)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    reference_x, want = _dense_reference(logits, targets, shares, smoothing, prior, weight, "sum")
    want = want + _dense_penalty_reference(reference_x, targets, shares, 0.8, "sum")
    (want_grad,) = torch.autograd.grad(want, reference_x, create_graph=True)
    (want_second,) = torch.autograd.grad(want_grad.square().sum(), reference_x)
    assert_close(second, want_second, what="second derivative")
    meta = fused_smoothed_cross_entropy(
        logits.to("meta"), target.to("meta"), smoothing.to("meta"),
        **{**options, "reduction": "none", "prior": prior.to("meta")})
    assert meta.shape == (6,) and meta.device.type == "meta"

    def ours(z):
        return fused_smoothed_cross_entropy(z, target, smoothing, plan=CHUNKED, **options)

    assert_close(torch.func.grad(ours)(logits), want_grad, what="torch.func.grad")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centred", "offset1000"])
def test_full_precision_far_targets_and_non_finite_logits_match_pytorch(path, dtype, inplace,
                                                                        offset):
    # Targets from 30 to 3000 below their row's maximum (exp(max - x_y) overflows float32 from
    # 88.7 on, float64 from 709.8 on), an ignored row shifted by class 0's logit, a row with a
    # +inf logit and one with a NaN: each row as PyTorch's, NaN where PyTorch's is NaN.
    logits, target = _far_target_case(torch.float64, offset)
    gap_rows = [row for row in range(40) if target[row] != IGNORE]
    for row, gap in zip(gap_rows[9:12], [700.0, 709.0, 720.0], strict=True):
        logits[row, target[row]] = logits[row].max() - gap
    logits[gap_rows[12], 5] = float("inf")
    logits[gap_rows[13], 7] = float("nan")
    logits = logits.to(dtype)
    for reduction in ("none", "sum"):
        grad_output = torch.ones(40 if reduction == "none" else (), dtype=dtype)
        loss, grad = _ours(logits, target, 0.1, None, reduction, grad_output, inplace=inplace,
                           plan=path)
        want_loss, want_grad = _reference(logits, target, 0.1, None, reduction, grad_output)
        assert_close(loss, want_loss, dtype, what=f"{reduction} loss")
        assert_close(grad, want_grad, dtype, what="gradient")
    assert bool(torch.isnan(loss)) and bool(torch.isnan(grad[gap_rows[12]]).any())
