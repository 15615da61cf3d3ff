"""``labelsmooth run --mixup ALPHA ... --cutmix ALPHA ...``: the variants, their results and the
algorithms they train with."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from labelsmooth import CutMix, LabelSmoothing, MixUp
from labelsmooth.cli import main
from labelsmooth.cli.experiment import RunConfig, build_algorithms
from labelsmooth.cli.report import group_runs

TINY = ["run", "--dataset", "digits", "--epochs", "1", "--seeds", "1", "--batch-size", "256"]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixing") / "out"
    assert main([*TINY, "--smoothing", "0.1", "--mixup", "0", "0.4", "--cutmix", "0", "1",
                 "--out", str(folder)]) == 0
    return folder


def test_every_combination_is_run_and_reported(mixed_run: Path) -> None:
    runs = json.loads((mixed_run / "results.json").read_text())["runs"]
    assert [(r["smoothing"], r["mixup"], r["cutmix"]) for r in runs] == [
        (0.1, 0.0, 0.0), (0.1, 0.0, 1.0), (0.1, 0.4, 0.0), (0.1, 0.4, 1.0)]
    with (mixed_run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["mixup"], row["cutmix"]) for row in rows] == [
        ("0.0", "0.0"), ("0.0", "1.0"), ("0.4", "0.0"), ("0.4", "1.0")]
    summary = (mixed_run / "summary.md").read_text()
    assert "| smoothing | mixup | cutmix | seeds | top-1 (%) |" in summary
    assert "| 0.1 | 0.4 | 1 | 1 |" in summary
    assert "at smoothing=0.1, mixup=0, cutmix=0 → " in summary
    assert "at smoothing=0.1, mixup=0.4, cutmix=1 (" in summary


def test_mixing_changes_what_is_trained(mixed_run: Path) -> None:
    """Same seed, same data, same initialisation: only the mixing differs, and so does the
    optimised training loss."""
    runs = json.loads((mixed_run / "results.json").read_text())["runs"]
    losses = [run["history"]["train_loss"][0] for run in runs]
    assert len(set(losses)) == len(losses)


def test_build_algorithms_follows_the_config() -> None:
    config = RunConfig(dataset="digits", model="mlp", smoothing=0.1, seed=3, epochs=1,
                       batch_size=8, lr=1e-3, mixup=0.2, cutmix=1.5)
    mixup, cutmix, smoothing = build_algorithms(config)
    assert isinstance(mixup, MixUp) and mixup.alpha == 0.2 and not mixup.interpolate_loss
    assert isinstance(cutmix, CutMix) and cutmix.alpha == 1.5
    assert isinstance(smoothing, LabelSmoothing) and smoothing.smoothing == 0.1
    assert mixup.generator is cutmix.generator
    # Reproducible: the same seed gives the same first draw.
    again = build_algorithms(config)[0]
    assert isinstance(again, MixUp) and mixup.generator is not None and again.generator is not None
    assert again.generator.initial_seed() == mixup.generator.initial_seed() == 3
    plain = RunConfig(dataset="digits", model="mlp", smoothing=0.0, seed=0, epochs=1,
                      batch_size=8, lr=1e-3)
    assert build_algorithms(plain) == []
    assert plain.label() == "smoothing=0" and config.label() == "smoothing=0.1, mixup=0.2, cutmix=1.5"


def test_smoothing_only_results_keep_their_shape() -> None:
    """Runs without mixing (and results.json files written before these options) group and
    read by smoothing alone."""
    runs = [{"smoothing": 0.0, "seed": 0}, {"smoothing": 0.1, "seed": 0, "mixup": 0.0}]
    assert [v.label for v in group_runs(runs)] == ["smoothing=0", "smoothing=0.1"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--mixup", "-0.2"], "argument --mixup: expected a Beta concentration, a finite number >= 0 "
                          "(0 = off), got '-0.2'"),
    (["--mixup", "nan"], "argument --mixup: expected a Beta concentration"),
    (["--cutmix", "inf"], "argument --cutmix: expected a Beta concentration, a finite number >= 0 "
                          "(0 = off), got 'inf'"),
    (["--cutmix", "one"], "argument --cutmix: expected a Beta concentration"),
])
def test_bad_alpha_is_one_line_and_status_2(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"labelsmooth: error: {message}") and err.count("\n") == 1, err
