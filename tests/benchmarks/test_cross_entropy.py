"""The benchmark's machinery on a tiny shape: well-formed rows, a CSV, a plot (no timing claims)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from benchmarks import cross_entropy as bench
from benchmarks import plot_cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


PENALISED = ("ours_penalty", "ours_penalty_unfused")


@pytest.mark.parametrize(("shape", "names"), [
    (bench.Shape(16, 7, torch.float64), list(bench.CONTENDERS)),
    (bench.Shape(64, 2000, torch.float32), ["ours", "ours_mixed", *PENALISED]),  # chunked pass
], ids=["all", "chunked"])
def test_every_contender_computes_the_same_loss_and_gradient(shape, names):
    """The same loss everywhere, but the penalised pair's, which add the same penalty."""
    results: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {False: [], True: []}
    for name in names:
        fn = bench.CONTENDERS[name]
        pristine, target = bench._inputs(shape)
        leaf = pristine.requires_grad_()
        logits = bench._ModelOutput.apply(leaf)
        loss = fn(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        results[name in PENALISED].append((loss.detach(), grad.clone()))
    for group in results.values():
        for loss, grad in group[1:]:
            torch.testing.assert_close(loss, group[0][0])
            torch.testing.assert_close(grad, group[0][1])
    plain, penalised = results[False][0][0], results[True][0][0]
    assert float(penalised - plain) < -bench.PENALTY * 1.0  # the entropy of these rows is > 1


def test_quick_run_appends_well_formed_rows_and_plots(tmp_path):
    path = tmp_path / "results.csv"
    rows = bench.main(["--quick", "--shapes", "24x10", "--repeats", "2", "--csv", str(path),
                       "--contenders", "native", "ours", "ours_inplace"])
    with path.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert written == rows
    assert [row["contender"] for row in written] == [
        "native", "ours", "ours_inplace", "copy", "clone", "softmax"]
    for row in written:
        assert set(row) == set(bench.CSV_FIELDS)
        assert row["quick"] == "True" and row["rows"] == "24" and row["classes"] == "10"
        assert row["torch_version"] == torch.__version__ and row["git_commit"]
        assert float(row["median_ms"]) > 0 and float(row["min_ms"]) <= float(row["median_ms"])
        assert math.isfinite(float(row["ratio_to_copy"]))
        memory = row["peak_extra_bytes"]
        assert (memory == "") == (row["contender"] in bench.FLOORS)
        if memory:
            assert int(memory) >= 0
    assert float(written[0]["ratio_to_native"]) == 1.0
    bench.main(["--quick", "--shapes", "8x5", "--repeats", "1", "--csv", str(path),
                "--no-memory", "--contenders", "native", "timm_logsoftmax"])
    with path.open(newline="") as handle:
        # two contenders and three floors of the second run
        assert len(list(csv.DictReader(handle))) == len(rows) + 5
    image = plot_cross_entropy.main(["--csv", str(path), "--output", str(tmp_path / "p.png")])
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_lines_compare_medians_of_the_same_run():
    median = {"ours": 0.8, "ours_inplace": 0.45, "compiled": 1.0, "clone": 0.3, "softmax": 0.4}
    assert bench.target_lines(median) == [
        "  target ours / compiled: 0.800 (<= 0.85) met",
        "  target ours / clone+softmax: 1.143 (<= 1.15) met",
        "  target ours_inplace / compiled: 0.450 (<= 0.5) met",
        "  target ours_inplace / softmax: 1.125 (<= 1.6) met",
    ]
    median["compiled"] = 0.5
    assert bench.target_lines(median)[0] == "  target ours / compiled: 1.600 (<= 0.85) MISSED"
    del median["compiled"]
    assert len(bench.target_lines(median)) == 2  # targets without their baseline are left out


def test_variant_lines_compare_the_general_paths_with_ours_of_the_same_round():
    # Round 2 is slow for everyone: paired ratios are unmoved by it.
    times = {"ours": [1.0, 3.0, 1.0, 1.0, 1.0], "ours_prior": [1.05, 3.15, 1.0, 1.1, 1.05],
             "ours_mixed": [1.2, 3.6, 1.2, 1.2, 1.2]}
    assert bench.variant_lines(times) == [
        "  target ours_prior / ours: 1.050 (paired over 5 rounds, quartiles 1.050-1.050) "
        "(<= 1.1) met",
        "  target ours_mixed / ours: 1.200 (paired over 5 rounds, quartiles 1.200-1.200) "
        "(<= 1.1) MISSED",
    ]
    times["ours_penalty"] = [1.1, 3.3, 1.1, 1.1, 1.1]
    times["ours_penalty_unfused"] = [2.2, 6.6, 2.2, 2.2, 2.2]
    assert bench.penalty_lines(times) == [
        "  ours_penalty / ours: 1.100 (paired over 5 rounds, quartiles 1.100-1.100)",
        "  ours_penalty / ours_penalty_unfused: 0.500 (paired over 5 rounds, quartiles "
        "0.500-0.500)",
    ]


def test_small_calls_get_rounds_until_each_contender_has_min_seconds():
    times = bench.time_shape(bench.Shape(8, 5, torch.float32), 2, ["native", "ours"],
                             min_seconds=0.002)
    rounds = {len(values) for values in times.values()}
    assert len(rounds) == 1 and rounds.pop() >= 2
    assert min(sum(values) for values in times.values()) >= 0.002 or \
        len(times["native"]) == bench.MAX_ROUNDS
    assert len(bench.time_shape(bench.Shape(8, 5, torch.float32), 3, ["native"])["native"]) == 3


def test_shape_parsing():
    assert bench.Shape.parse("4096x32000") == bench.Shape(4096, 32000, torch.float32)
    assert bench.Shape.parse("2x3:bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="--shapes: expected"):
        bench.Shape.parse("2x3:int64")


@pytest.mark.parametrize("device", ["meta", "tpu", "not-a-device"])
def test_device_option_rejects_what_it_cannot_run(device, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--quick", "--device", device, "--no-memory"])
    assert stopped.value.code == 2
    assert f"argument --device: expected cpu or cuda[:N], got '{device}'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--quick", "--device", "cuda", "--no-memory"])
    assert stopped.value.code == 2
    assert "--device: expected a device this machine has, got cuda" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_run_on_cuda_writes_rows_with_the_gpu_and_its_memory(tmp_path):
    path = tmp_path / "cuda.csv"
    rows = bench.main(["--quick", "--shapes", "64x1000", "--repeats", "2", "--csv", str(path),
                       "--device", "cuda"])
    assert torch.cuda.get_device_name() in rows[0]["machine"]
    ours = next(row for row in rows if row["contender"] == "ours")
    # the gradient (64 x 1000 float32) plus O(N) row vectors and the caching allocator's rounding
    assert 256_000 <= int(ours["peak_extra_bytes"]) <= 2 * 256_000


@pytest.mark.parametrize("text", ["8192x10", "8192x1000", "4096x32000", "16x10", "300x256"])
def test_memory_warm_up_takes_the_measured_shapes_code_path(text):
    from labelsmooth._ops import plan

    shape = bench.Shape.parse(text)
    warm = bench._warm_up_shape(shape)
    assert warm.classes == shape.classes and warm.rows <= shape.rows
    cpu = torch.device("cpu")
    warm_plan = plan(warm.rows, warm.classes, warm.dtype, cpu)
    shape_plan = plan(shape.rows, shape.classes, shape.dtype, cpu)
    assert warm_plan.strategy == shape_plan.strategy
