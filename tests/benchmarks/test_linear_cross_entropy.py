"""The linear benchmark's machinery on tiny shapes: same results, well-formed rows, a plot."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from benchmarks import linear_cross_entropy as bench
from benchmarks import plot_linear_cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("name", ["torch_chunked_s01", "ours"])
def test_smoothing_contenders_compute_the_materialised_loss_and_gradients(name):
    shape = bench.Shape(16, 8, 37, torch.float64)
    x, w, y = bench._inputs(shape)
    want = bench._forward_backward(bench.CONTENDERS["materialised"], x.requires_grad_(),
                                   w.requires_grad_(), y)
    got = bench._forward_backward(bench.CONTENDERS[name], x, w, y)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)


def test_quick_run_appends_well_formed_rows_and_plots(tmp_path):
    path = tmp_path / "results.csv"
    rows = bench.main(["--quick", "--shapes", "24x8x50", "16x8x40:bfloat16", "--repeats", "1",
                       "--csv", str(path), "--contenders", "materialised", "ours"])
    with path.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert written == rows
    assert [row["contender"] for row in written] == ["materialised", "ours"] * 2
    for row in written:
        assert set(row) == set(bench.CSV_FIELDS)
        assert row["quick"] == "True" and row["torch_version"] == torch.__version__
        assert float(row["median_ms"]) > 0 and int(row["peak_extra_bytes"]) >= 0
        assert row["logits_bytes"] == str(int(row["rows"]) * int(row["classes"]) * 4)
    assert float(written[0]["ratio_to_materialised"]) == 1.0
    ours_bf16 = written[3]
    # The accuracy columns are ours' alone: one rounding of bfloat16, weight gradient 1e-2.
    assert float(ours_bf16["loss_error_ulps"]) <= 1.0
    assert float(ours_bf16["weight_grad_rel_error"]) <= 1e-2
    assert math.isfinite(float(ours_bf16["ratio_to_materialised"]))
    image = plot_linear_cross_entropy.main(["--csv", str(path), "--output",
                                            str(tmp_path / "p.png")])
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shape_parse_refuses_a_bad_shape():
    with pytest.raises(Exception, match="expected ROWSxHIDDENxCLASSES"):
        bench.Shape.parse("10x20")
