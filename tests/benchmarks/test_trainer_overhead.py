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
        assert row["quick"] == "True" and row["torch_threads"] == "1" and row["rounds"] == "2"
        assert row["samples"] == "512" and row["batch_size"] == "128" and row["epochs"] == "1"
        assert row["method"] == "rebuilt" and row["steps_per_run"] == "4"
        assert row["torch_version"] == torch.__version__ and row["git_commit"]
        assert row["baseline"] == bench.BASELINES[row["contender"]]
        seconds, fastest = float(row["median_s"]), float(row["min_s"])
        assert 0 < fastest <= seconds
        assert float(row["samples_per_s"]) == pytest.approx(512 / seconds, rel=1e-3)
        assert float(row["median_step_us"]) == pytest.approx(seconds / 4 * 1e6, rel=1e-3)
        assert float(row["min_step_us"]) == pytest.approx(fastest / 4 * 1e6, rel=1e-3)
        assert float(row["median_cpu_s"]) > 0
        paired = [float(row[f"paired_ratio_{key}"]) for key in ("min", "q1", "median", "q3", "max")]
        assert 0 < paired[0] <= paired[1] <= paired[2] <= paired[3] <= paired[4]
        if row["contender"] == row["baseline"]:
            assert float(row["ratio_to_baseline"]) == 1.0 and float(row["cpu_ratio_to_baseline"]) == 1.0
            assert float(row["ratio_of_min"]) == 1.0 and paired == [1.0] * 5
    bench.main(["--quick", "--csv", str(path), "--contenders", "trainer_ls", "--rounds", "1"])
    with path.open(newline="") as handle:
        # the contender and its baseline
        assert [row["contender"] for row in csv.DictReader(handle)][len(rows):] == ["trainer_ls", "loop_ls"]


def test_one_round_gives_one_paired_ratio_equal_to_the_ratio_of_the_runs(tmp_path):
    rows = bench.main(["--quick", "--csv", str(tmp_path / "r.csv"), "--rounds", "1", "--epochs", "2",
                       "--contenders", "trainer"])
    trainer = next(row for row in rows if row["contender"] == "trainer")
    assert trainer["rounds"] == "1" and trainer["steps_per_run"] == "8"
    ratio = float(trainer["ratio_to_baseline"])
    for key in ("paired_ratio_min", "paired_ratio_q1", "paired_ratio_median", "paired_ratio_q3",
                "paired_ratio_max", "ratio_of_min"):
        assert float(trainer[key]) == pytest.approx(ratio, abs=2e-4)


def test_rounds_are_spread_over_fresh_builds(monkeypatch) -> None:
    builds: list[str] = []
    runs: list[str] = []

    def prepare(name):
        def build(task, data):
            builds.append(name)
            return lambda epochs: runs.append(name)
        return build

    for name in ("loop", "trainer"):
        monkeypatch.setitem(bench.CONTENDERS, name, prepare(name))
    wall, cpu = bench.time_contenders(bench.QUICK_TASK, ["loop", "trainer"], 5, rounds_per_build=2)
    assert sorted(builds) == ["loop"] * 3 + ["trainer"] * 3  # rounds 1-2, 3-4, 5
    assert len(runs) == 2 * (3 + 5)  # one warm-up run per build, one run per round
    assert [len(wall[name]) for name in ("loop", "trainer")] == [5, 5]
    assert [len(cpu[name]) for name in ("loop", "trainer")] == [5, 5]


def test_bad_rounds_per_build_is_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--rounds-per-build", "0"])
    assert "--rounds-per-build: expected a positive int, got 0" in capsys.readouterr().err


def test_quartiles_of_the_paired_ratios() -> None:
    assert bench.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    assert bench.quartiles([0.9]) == (0.9, 0.9)


def test_paired_ratios_pair_each_round_with_its_baseline() -> None:
    times = {"loop": [1.0, 2.0, 4.0], "trainer": [2.0, 2.0, 2.0]}
    assert bench.paired_ratios(times, "trainer") == [0.5, 1.0, 2.0]


def test_an_older_header_is_extended_before_rows_are_appended(tmp_path):
    path = tmp_path / "results.csv"
    old_fields = bench.CSV_FIELDS[:-10]
    path.write_text(",".join(old_fields) + "\n" + ",".join(["x"] * len(old_fields)) + "\n")
    bench.main(["--quick", "--csv", str(path), "--contenders", "loop"])
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == bench.CSV_FIELDS
    assert rows[0] == {**dict.fromkeys(old_fields, "x"),
                       **dict.fromkeys(bench.CSV_FIELDS[-10:], "")}
    assert rows[1]["contender"] == "loop" and rows[1]["paired_ratio_median"] == "1.0000"
