"""``labelsmooth run --method``: the methods side by side, the extra calibration measures and the
bootstrap intervals of the summary, recomputed here from the saved test-set logits."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from cli_invoke import invoke
from helpers import assert_close
from torch.utils.data import DataLoader, TensorDataset

import labelsmooth.cli.command as cli_main
from labelsmooth.cli import main
from labelsmooth.cli.experiment import (
    METHODS,
    METRICS,
    NUM_BINS,
    RunConfig,
    build_algorithms,
    build_loss,
)
from labelsmooth.cli.report import group_runs, summary_table
from labelsmooth.functional import smoothed_cross_entropy, soft_cross_entropy
from labelsmooth.metrics import expected_calibration_error
from labelsmooth.metrics.extra import (
    adaptive_calibration_error,
    bootstrap_interval,
    classwise_calibration_error,
)
from labelsmooth.trainer import Callback, State, Trainer, TrainingTargets

TINY = ["run", "--dataset", "digits", "--epochs", "1", "--seeds", "2", "--batch-size", "256"]
TRAINED = ["ce", "ls", "confidence-penalty", "ts"]


@pytest.fixture(scope="module")
def method_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("methods") / "out"
    assert main([*TINY, "--method", *TRAINED, "--penalty", "0.3", "--out", str(folder)]) == 0
    return folder


def _runs(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "results.json").read_text())["runs"])


def _table_rows(folder: Path) -> dict[str, dict[str, str]]:
    """summary.md's table: {row label: {header: cell}}."""
    lines = [line for line in (folder / "summary.md").read_text().splitlines() if line.startswith("| ")]
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    return {row[0]: dict(zip(headers, row, strict=True)) for row in rows}


def test_every_method_is_trained_for_every_seed_and_named_with_its_strength(method_run: Path) -> None:
    runs = _runs(method_run)
    assert [(run["method"], run["strength"], run["seed"]) for run in runs] == [
        (method, strength, seed) for seed in (0, 1)
        for method, strength in (("ce", 0.0), ("ls", 0.1), ("confidence-penalty", 0.3), ("ts", 0.0))]
    assert all(run["smoothing"] == 0.0 and run["mixup"] == 0.0 for run in runs)
    assert list(_table_rows(method_run)) == ["ce", "ls s=0.1", "confidence-penalty beta=0.3", "ts"]
    summary = (method_run / "summary.md").read_text()
    assert "## What changed" in summary
    assert "**Top-1 accuracy**: " in summary and " at ce → " in summary and " at ts (" in summary


def test_ts_is_the_ce_model_divided_by_its_fitted_temperature(method_run: Path) -> None:
    runs = _runs(method_run)
    for seed in (0, 1):
        ce = next(r for r in runs if r["method"] == "ce" and r["seed"] == seed)
        ts = next(r for r in runs if r["method"] == "ts" and r["seed"] == seed)
        # Both trained the same way from the same seed; ts's logits are ce's over ce's T. Both are
        # saved to 4 decimals: ce's rounding error 5e-5 is divided by T, ts's is not.
        expected = torch.tensor(ce["test_logits"]) / ce["temperature"]
        rounding = 5e-5 * (1 + 1 / ce["temperature"]) * 1.01
        torch.testing.assert_close(torch.tensor(ts["test_logits"]), expected, rtol=1e-6, atol=rounding)
        assert ts["accuracy"] == ce["accuracy"]
        assert ts["nll"] == pytest.approx(ce["nll_ts"], abs=1e-3)
        assert ts["temperature"] == pytest.approx(1.0, abs=0.02)


def test_the_metrics_of_every_run_are_those_of_its_saved_logits(method_run: Path) -> None:
    for run in _runs(method_run):
        logits = torch.tensor(run["test_logits"])
        targets = torch.tensor(run["test_targets"])
        probs = logits.softmax(dim=1)
        assert run["ece_adaptive"] == float(adaptive_calibration_error(probs, targets, num_bins=15))
        assert run["ece_classwise"] == float(classwise_calibration_error(probs, targets, num_bins=15))
        assert run["nll"] == pytest.approx(float(F.cross_entropy(logits.double(), targets)), rel=1e-5)
        assert run["accuracy"] == float((logits.argmax(dim=1) == targets).double().mean())


def _seed_mean(metric: Any, temperatures: list[float] | None = None) -> Any:
    def mean(logits: torch.Tensor, targets: torch.Tensor) -> float:
        values = []
        for seed in range(logits.shape[1]):
            z = logits[:, seed] if temperatures is None else logits[:, seed] / temperatures[seed]
            values.append(float(metric(z.softmax(dim=1), targets, num_bins=15)))
        return sum(values) / len(values)
    return mean


@pytest.mark.parametrize(("column", "metric", "scaled"), [
    ("adaptive ECE (%)", adaptive_calibration_error, False),
    ("classwise ECE (%)", classwise_calibration_error, False),
    ("ECE after TS (%)", expected_calibration_error, True),
])
def test_summary_cells_are_the_metrics_of_the_saved_logits_with_their_bootstrap_interval(
        method_run: Path, column: str, metric: Any, scaled: bool) -> None:
    rows = _table_rows(method_run)
    digits = 2 if column.startswith("classwise") else 1
    for variant in group_runs(_runs(method_run)):
        runs = variant.runs
        targets = torch.tensor(runs[0]["test_targets"])
        logits = torch.stack([torch.tensor(run["test_logits"]) for run in runs], dim=1)
        temperatures = [run["temperature"] for run in runs] if scaled else None
        per_seed = [_seed_mean(metric, None if temperatures is None else [t])(logits[:, [s]], targets)
                    for s, t in enumerate(temperatures or [1.0] * len(runs))]
        mean = sum(per_seed) / len(per_seed)
        std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1))
        interval = bootstrap_interval(_seed_mean(metric, temperatures), logits, targets, num_samples=200,
                                      confidence=0.95, generator=torch.Generator().manual_seed(0))
        assert interval.estimate == pytest.approx(mean, abs=1e-12)
        assert interval.low <= mean <= interval.high
        expected = (f"{mean * 100:.{digits}f} ± {std * 100:.{digits}f} "
                    f"[{interval.low * 100:.{digits}f}, {interval.high * 100:.{digits}f}]")
        assert rows[variant.label][column].removesuffix(" ⚠") == expected, variant.label


def test_the_summary_keeps_its_seed_noise_sentences_against_ce(method_run: Path) -> None:
    summary = (method_run / "summary.md").read_text()
    lines = [line for line in summary.splitlines() if line.startswith("- **Adaptive ECE**")]
    assert len(lines) == 3  # ls, confidence-penalty and ts against ce
    assert all(line.endswith(("seed noise).", "seed noise). ⚠ Temperature scaling failed, see the warning."))
               for line in lines)


def test_report_redraws_the_same_summary(method_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_bytes((method_run / "results.json").read_bytes())
    status, out, err = invoke(["report", str(copy)], capsys)
    assert status == 0, err
    assert (copy / "summary.md").read_text() == (method_run / "summary.md").read_text()
    assert "bootstrap interval" in out


def test_all_is_every_method_in_the_table_order_with_the_default_strengths() -> None:
    args = cli_main.build_parser().parse_args([*TINY, "--method", "all"])
    configs = cli_main._configs(args, "cpu")
    assert [config.method for config in configs] == [*METHODS, *METHODS]  # seed-major
    assert {config.method: config.strength for config in configs} == {
        "ce": 0.0, "ls": 0.1, "ls-prior": 0.1, "ols": 0.5, "negative-ls": -0.2, "confidence-penalty": 0.1,
        "ts": 0.0}
    assert {config.method: config.warmup for config in configs} == {**dict.fromkeys(METHODS, 0.0),
                                                                     "negative-ls": 0.5}


def test_method_strengths_come_from_their_options() -> None:
    args = cli_main.build_parser().parse_args(
        [*TINY, "--method", "ts", "ls", "ols", "--smoothing", "0.3", "--ols-alpha", "0.7"])
    configs = cli_main._configs(args, "cpu")
    assert [(c.method, c.strength) for c in configs[:3]] == [("ls", 0.3), ("ols", 0.7), ("ts", 0.0)]


def test_without_method_the_grid_is_as_before() -> None:
    configs = cli_main._configs(cli_main.build_parser().parse_args(["run", "--seeds", "1"]), "cpu")
    assert [(c.smoothing, c.method, c.strength) for c in configs] == [(0.0, "", 0.0), (0.1, "", 0.0)]


def test_the_confidence_penalty_loss_is_cross_entropy_minus_beta_entropy() -> None:
    config = RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="confidence-penalty", strength=0.3)
    logits, targets = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = build_loss(config, targets, 4)
    assert loss is not None
    p = logits.double().softmax(dim=1)
    expected = (-p.log()[torch.arange(6), targets] + 0.3 * (p * p.log()).sum(dim=1)).mean()
    assert float(loss(logits, targets)) == pytest.approx(float(expected), rel=1e-5)
    assert build_loss(RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="ls", strength=0.1),
                      targets, 4) is None


def test_the_confidence_penalty_loss_is_the_fused_one_with_the_unfused_values() -> None:
    """The method trains on smoothed_cross_entropy's fused penalty; on a batch large enough for
    the fused pass its loss and gradient equal cross-entropy + confidence_penalty."""
    from labelsmooth.functional import confidence_penalty

    config = RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="confidence-penalty", strength=0.3)
    generator = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(512, 200, generator=generator), torch.randint(200, (512,), generator=generator)
    loss_fn = build_loss(config, targets, 200)
    assert isinstance(loss_fn, functools.partial) and loss_fn.func is smoothed_cross_entropy
    assert loss_fn.keywords == {"smoothing": 0.0, "confidence_penalty": 0.3}
    fused_x, unfused_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fused = loss_fn(fused_x, targets)
    fused.backward()
    unfused = F.cross_entropy(unfused_x, targets) + confidence_penalty(unfused_x, 0.3)
    unfused.backward()
    assert_close(fused, unfused, torch.float32, what="loss")
    assert_close(fused_x.grad, unfused_x.grad, torch.float32, what="gradient")


def _dense_smoothed(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                    prior: torch.Tensor) -> torch.Tensor:
    """float64 ``CE((1 - s) onehot(y) + s prior)``, the dense target written out."""
    target = (1 - smoothing) * F.one_hot(targets, logits.shape[1]).double() + smoothing * prior.double()
    return -(target * logits.double().log_softmax(dim=1)).sum(dim=1).mean()


def test_ls_prior_smooths_towards_the_class_frequencies_of_the_labels_trained_on() -> None:
    config = RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="ls-prior", strength=0.2)
    fit_targets = torch.tensor([0, 0, 0, 1, 2, 2, 0, 1])  # frequencies 4/8, 2/8, 2/8, 0/8
    logits, targets = torch.randn(5, 4, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 3, 0])
    loss = build_loss(config, fit_targets, 4)
    assert loss is not None
    expected = _dense_smoothed(logits, targets, 0.2, torch.tensor([0.5, 0.25, 0.25, 0.0]))
    assert float(loss(logits, targets)) == pytest.approx(float(expected), rel=1e-5)


class _StepLosses(Callback):
    """The logits, index targets and loss of every training step."""

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.losses: list[float] = []

    def before_loss(self, state: State, logger: Any) -> None:
        targets = state.batch[1]
        self.steps.append((state.outputs.detach().clone(),
                           targets.targets if isinstance(targets, TrainingTargets) else targets))

    def after_loss(self, state: State, logger: Any) -> None:
        self.losses.append(float(state.loss.detach()))  # type: ignore[union-attr]


def test_negative_ls_is_cross_entropy_then_negative_smoothing_after_its_warm_up() -> None:
    config = RunConfig("digits", "mlp", 0.0, 0, 2, 32, 1e-3, method="negative-ls", strength=-0.5, warmup=0.5)
    assert build_loss(config, torch.tensor([0, 1]), 4) is None  # the Trainer's fused loss
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(24, 5, generator=generator), torch.randint(0, 4, (24,), generator=generator)
    watch = _StepLosses()
    trainer = Trainer(torch.nn.Linear(5, 4), DataLoader(TensorDataset(x, y), batch_size=8),
                      max_duration=f"{config.epochs}ep", algorithms=build_algorithms(config),
                      callbacks=[watch], loss_fn=soft_cross_entropy, device="cpu", progress_bar=False)
    trainer.fit()
    # 6 steps, progress t = k / 5: plain cross-entropy while t < 0.5 (the first epoch), then s = -0.5.
    smoothing = [0.0, 0.0, 0.0, -0.5, -0.5, -0.5]
    uniform = torch.full((4,), 0.25)
    expected = [float(_dense_smoothed(logits, targets, s, uniform))
                for (logits, targets), s in zip(watch.steps, smoothing, strict=True)]
    assert watch.losses == pytest.approx(expected, rel=1e-5)
    assert expected[0] == pytest.approx(float(F.cross_entropy(*watch.steps[0])), rel=1e-6)
    without_warmup = build_algorithms(RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="negative-ls",
                                                strength=-0.2))
    assert [(a.smoothing, a.schedule) for a in without_warmup] == [(-0.2, None)]  # type: ignore[attr-defined]


def test_the_methods_that_change_the_loss_or_the_targets_run_end_to_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "out"
    status, _, err = invoke([*TINY[:-4], "--seeds", "1", "--method", "ls-prior", "ols", "negative-ls",
                             "--negative-smoothing", "-0.4", "--ols-alpha", "0.6", "--out", str(folder)],
                            capsys)
    assert status == 0, err
    runs = _runs(folder)
    assert [(run["method"], run["strength"]) for run in runs] == [("ls-prior", 0.1), ("ols", 0.6),
                                                                  ("negative-ls", -0.4)]
    assert list(_table_rows(folder)) == ["ls-prior s=0.1", "ols alpha=0.6", "negative-ls s=-0.4 warmup=0.5"]


def test_ls_and_ols_are_their_algorithms() -> None:
    ls = build_algorithms(RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="ls", strength=0.2))
    ols = build_algorithms(RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="ols", strength=0.7))
    assert [type(a).__name__ for a in ls] == ["LabelSmoothing"] and ls[0].smoothing == 0.2  # type: ignore[attr-defined]
    assert [type(a).__name__ for a in ols] == ["OnlineLabelSmoothing"] and ols[0].alpha == 0.7  # type: ignore[attr-defined]
    assert build_algorithms(RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="ce")) == []


@pytest.mark.parametrize(("extra", "line"), [
    (["--method", "lsx"], "argument --method: expected one of ce, ls, ls-prior, ols, negative-ls, "
     "confidence-penalty, ts, all, got 'lsx'"),
    (["--penalty", "0.5"], "--penalty: expected --method to go with it, got none"),
    (["--negative-smoothing", "-0.5"], "--negative-smoothing: expected --method to go with it, got none"),
    (["--negative-warmup", "0.2"], "--negative-warmup: expected --method to go with it, got none"),
    (["--method", "negative-ls", "--negative-warmup", "1"], "argument --negative-warmup: expected a "
     "fraction in [0, 1), got '1'"),
    (["--method", "negative-ls", "--negative-warmup", "-0.1"], "argument --negative-warmup: expected a "
     "fraction in [0, 1), got '-0.1'"),
    (["--method", "ce", "--mixup", "0.2"], "--mixup: expected 0 with --method (methods are compared "
     "without mixing), got 0.2"),
    (["--method", "ls", "--smoothing", "0", "0.1"], "--smoothing: expected one value with --method (the "
     "smoothing of ls and ls-prior), got 0 0.1"),
    (["--method", "negative-ls", "--negative-smoothing", "0.2"], "argument --negative-smoothing: expected "
     "a finite negative number, got '0.2'"),
    (["--method", "confidence-penalty", "--penalty", "nan"], "argument --penalty: expected a finite "
     "positive number, got 'nan'"),
])
def test_bad_method_options_are_one_line(extra: list[str], line: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = invoke([*TINY, *extra, "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and out == ""
    assert err == f"labelsmooth: error: {line}\n"
    assert not (tmp_path / "out").exists()


def test_resume_keeps_the_method_and_refuses_another_strength(
        method_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_bytes((method_run / "results.json").read_bytes())
    argv = [*TINY, "--method", *TRAINED, "--out", str(folder), "--resume"]
    status, _, err = invoke([*argv, "--penalty", "0.5"], capsys)
    assert status == 2
    assert "got --penalty 0.5 where that run has 0.3;" in err
    status, _, err = invoke([*argv[:-4], "--method", "ce", "ls", "--penalty", "0.3", "--out", str(folder),
                             "--resume"], capsys)
    assert status == 2 and "got --method ce ls where that run has ce ls confidence-penalty ts;" in err
    status, out, err = invoke([*argv, "--penalty", "0.3"], capsys)
    assert status == 0, err
    assert out.endswith("Nothing left to train: every training of the run is in results.json\n")


def test_report_refuses_an_unknown_method(method_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    payload = json.loads((method_run / "results.json").read_text())
    payload["runs"][1]["method"] = "label-relaxation"
    (tmp_path / "results.json").write_text(json.dumps(payload))
    status, _, err = invoke(["report", str(tmp_path)], capsys)
    assert status == 2
    assert err.startswith("labelsmooth: error: RUN_DIR: expected 'method' of run 2 in ")
    assert 'to be one of ce, ls, ls-prior, ols, negative-ls, confidence-penalty, ts or "", got ' \
        '"label-relaxation"' in err


def test_a_results_json_without_logits_has_no_intervals() -> None:
    run = {"accuracy": 0.9, "nll": 0.3, "ece": 0.05, "brier": 0.1, "confidence": 0.9, "temperature": 1.2,
           "ece_ts": 0.02, "nll_ts": 0.28, "train_time_s": 1.0, "samples_per_s": 100.0, "smoothing": 0.0}
    headers, rows = summary_table(group_runs([run | {"seed": 0}, run | {"seed": 1}]))
    assert "adaptive ECE (%)" not in headers
    assert rows[0][2] == "90.0 ± 0.0"


def test_a_run_folder_from_before_methods_is_drawn_and_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    trained: list[RunConfig] = []

    def fake_run_one(config: RunConfig, data: object, *, on_epoch: object = None) -> dict[str, Any]:
        trained.append(config)
        return {**asdict(config), **dict.fromkeys(METRICS, 0.5), "temperature": 1.5, "nll_ts": 0.4,
                "history": {"train_loss": [1.0], "test_accuracy": [0.5], "test_nll": [1.0]},
                "reliability": {"count": [1.0] * NUM_BINS, "accuracy": [0.5] * NUM_BINS,
                                "confidence": [0.5] * NUM_BINS},
                "projection": None}

    folder = tmp_path / "run"
    argv = [*TINY[:-4], "--seeds", "1", "--out", str(folder)]
    monkeypatch.setattr(cli_main, "run_one", fake_run_one)
    assert invoke(argv, capsys)[0] == 0
    assert len(trained) == 2
    payload = json.loads((folder / "results.json").read_text())
    for run in payload["runs"]:
        del run["method"], run["strength"], run["warmup"]
    for name in ("method", "negative_smoothing", "negative_warmup", "penalty", "ols_alpha"):
        del payload["settings"][name]
    (folder / "results.json").write_text(json.dumps(payload))
    status, _, err = invoke(["report", str(folder)], capsys)
    assert status == 0, err
    assert "| smoothing | seeds | top-1 (%) |" in (folder / "summary.md").read_text()
    status, out, err = invoke([*argv, "--resume"], capsys)
    assert status == 0, err
    assert len(trained) == 2 and out.endswith("every training of the run is in results.json\n")


def test_a_negative_ls_run_stays_finite_and_resumes_only_with_its_warm_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "out"
    argv = [*TINY[:3], "--epochs", "2", *TINY[5:], "--method", "ce", "negative-ls", "--out", str(folder)]
    status, _, err = invoke(argv, capsys)
    assert status == 0, err
    runs = _runs(folder)
    assert [(run["method"], run["seed"], run["warmup"]) for run in runs] == [
        ("ce", 0, 0.0), ("negative-ls", 0, 0.5), ("ce", 1, 0.0), ("negative-ls", 1, 0.5)]
    for ce, negative in (runs[:2], runs[2:]):
        values = [*negative["history"]["train_loss"], *negative["history"]["test_nll"], negative["nll"]]
        assert all(math.isfinite(value) for value in values)
        # The first of the two epochs is the warm-up: the same training as ce (same seed).
        assert negative["history"]["train_loss"][0] == pytest.approx(ce["history"]["train_loss"][0], rel=1e-4)
    assert list(_table_rows(folder)) == ["ce", "negative-ls s=-0.2 warmup=0.5"]
    assert json.loads((folder / "results.json").read_text())["settings"]["negative_warmup"] == 0.5
    status, _, err = invoke([*argv, "--resume", "--negative-warmup", "0.25"], capsys)
    assert status == 2 and "got --negative-warmup 0.25 where that run has 0.5;" in err
    status, out, err = invoke([*argv, "--resume"], capsys)
    assert status == 0, err
    assert out.endswith("every training of the run is in results.json\n")
    # A run folder from before the warm-up (negative-ls from the first step) is not continued.
    payload = json.loads((folder / "results.json").read_text())
    del payload["settings"]["negative_warmup"]
    (folder / "results.json").write_text(json.dumps(payload))
    status, _, err = invoke([*argv, "--resume"], capsys)
    assert status == 2 and "got --negative-warmup 0.5 where that run has none;" in err
