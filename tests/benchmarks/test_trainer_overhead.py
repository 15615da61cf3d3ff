"""The trainer-overhead benchmark's machinery in its quick mode: well-formed rows (no timing claims)."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks import trainer_overhead as bench


def test_quick_run_appends_well_formed_rows(tmp_path):
    path = tmp_path / "results.csv"
    rows = bench.main(["--quick", "--csv", str(path)])
    with path.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert written == rows
    assert sorted(row["contender"] for row in written) == sorted(bench.CONTENDERS)
    for row in written:
        assert set(row) == set(bench.CSV_FIELDS)
        assert row["quick"] == "True" and row["torch_threads"] == "1" and row["rounds"] == "1"
        assert row["samples"] == "512" and row["batch_size"] == "128" and row["epochs"] == "1"
        assert row["torch_version"] == torch.__version__ and row["git_commit"]
        assert row["baseline"] == bench.BASELINES[row["contender"]]
        seconds = float(row["median_s"])
        assert seconds > 0 and float(row["samples_per_s"]) == pytest.approx(512 / seconds, rel=1e-3)
        assert float(row["median_cpu_s"]) > 0
        if row["contender"] == row["baseline"]:
            assert float(row["ratio_to_baseline"]) == 1.0 and float(row["cpu_ratio_to_baseline"]) == 1.0
    bench.main(["--quick", "--csv", str(path), "--contenders", "trainer_ls"])
    with path.open(newline="") as handle:
        # the contender and its baseline
        assert [row["contender"] for row in csv.DictReader(handle)][len(rows):] == ["trainer_ls", "loop_ls"]
