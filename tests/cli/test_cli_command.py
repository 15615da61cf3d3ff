"""The ``labelsmooth`` command end to end on a tiny budget, and every error case."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_invoke import invoke

import labelsmooth.cli.command as cli_main
from labelsmooth.cli import main
from labelsmooth.cli.experiment import METRICS, RunConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("reliability.png", "penultimate.png", "curves.png")
TINY = ["run", "--dataset", "digits", "--epochs", "1", "--seeds", "1", "--batch-size", "256"]
# What results.json and results.csv promise per smoothing value and seed (written out
# here, not taken from the code's METRICS, so a dropped column fails the test).
PROMISED_FIELDS = ("smoothing", "seed", "accuracy", "nll", "ece", "brier", "ece_ts", "nll_ts",
                   "train_time_s", "samples_per_s")
# digits: 1437 training images, round(0.1 * 1437) = 144 of them held out for the temperature.
DIGITS_FIT = 1437 - 144



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "out"
    assert main([*TINY, "--smoothing", "0", "0.2", "--label-noise", "0.2", "--out", str(folder)]) == 0
    return folder


def test_every_output_file_exists_and_parses(tiny_run: Path) -> None:
    for name in PICTURES:
        assert (tiny_run / name).read_bytes()[:8] == PNG_SIGNATURE, name
    payload = json.loads((tiny_run / "results.json").read_text())
    assert payload["status"] == "complete"
    assert payload["environment"]["torch"]
    runs = payload["runs"]
    assert [(r["smoothing"], r["seed"]) for r in runs] == [(0.0, 0), (0.2, 0)]
    for run in runs:
        assert set(RunConfig.__dataclass_fields__) | set(METRICS) <= set(run)
        assert set(PROMISED_FIELDS) <= set(run)
        assert run["label_noise"] == 0.2 and run["val_fraction"] == 0.1
        # One epoch: samples/s is the training samples over the training time.
        assert run["train_time_s"] > 0
        assert run["samples_per_s"] * run["train_time_s"] == pytest.approx(DIGITS_FIT, rel=1e-9)
        assert 0 <= run["accuracy"] <= 1 and 0 <= run["ece"] <= 1 and 0 <= run["brier"] <= 2
        assert run["nll"] > 0 and run["temperature"] > 0 and run["samples_per_s"] > 0
        assert all(len(v) == 1 for v in run["history"].values())
        assert sum(run["reliability"]["count"]) == 360 and len(run["reliability"]["count"]) == 15
        assert len(run["projection"]["points"]) == len(run["projection"]["labels"]) > 0
        assert set(run["projection"]["labels"]) == {0, 1, 2}
    with (tiny_run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*RunConfig.__dataclass_fields__, *METRICS]
    assert set(PROMISED_FIELDS) <= set(rows[0])
    assert len(rows) == 2
    for row, run in zip(rows, runs, strict=True):
        for metric in METRICS:
            assert float(row[metric]) == pytest.approx(run[metric], rel=1e-12)
    summary = (tiny_run / "summary.md").read_text()
    assert "| smoothing | seeds | top-1 (%) |" in summary
    assert "label noise 0.2;" in summary
    for title in ("Top-1 accuracy", "NLL", "ECE", "Brier score", "ECE after temperature scaling",
                  "NLL after temperature scaling", "Training throughput (samples/s)"):
        assert f"**{title}**: " in summary and "at smoothing=0 → " in summary, title


def test_report_redraws_the_same_summary_and_pictures(tiny_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tiny_run / "results.json", copy)
    status, out, err = invoke(["report", str(copy)], capsys)
    assert status == 0, err
    assert (copy / "summary.md").read_text() == (tiny_run / "summary.md").read_text()
    for name in PICTURES:
        assert (copy / name).read_bytes()[:8] == PNG_SIGNATURE
        # Drawn from results.json alone, the pictures come out byte for byte as the run drew them.
        assert (copy / name).read_bytes() == (tiny_run / name).read_bytes(), name
    assert "top-1 (%)" in out


def test_report_draws_a_run_without_a_projection(tiny_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    payload = json.loads((tiny_run / "results.json").read_text())
    payload["runs"][1]["projection"] = None
    (tmp_path / "results.json").write_text(json.dumps(payload))
    status, _, err = invoke(["report", str(tmp_path)], capsys)
    assert status == 0, err
    assert (tmp_path / "penultimate.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "RUN_DIR: cannot read "),
        ('{"runs": {}}', "RUN_DIR: "),
        ('{"runs": []}', "RUN_DIR: "),
        ('{"runs": [{"dataset": "digits"}]}', "RUN_DIR: expected every run in "),
    ],
)
def test_report_on_a_malformed_results_file(content: str, message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text(content)
    status, _, err = invoke(["report", str(tmp_path)], capsys)
    assert status == 2
    assert err.startswith(f"labelsmooth: error: {message}") and err.count("\n") == 1, err


def test_console_script_and_module_run(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("labelsmooth")
    done = subprocess.run([str(script), *TINY, "--smoothing", "0.1", "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "summary.md").exists()
    failed = subprocess.run([sys.executable, "-m", "labelsmooth", "run", "--dataset", "cifar10"],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2
    assert failed.stderr.startswith("labelsmooth: error: argument --dataset: invalid choice: 'cifar10'")
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["run", "--dataset", "cifar10"], 2, "argument --dataset: invalid choice: 'cifar10'"),
        (["run", "--model", "resnet"], 2, "argument --model: invalid choice: 'resnet'"),
        (["run", "--smoothing", "1.5"], 2,
         "argument --smoothing: expected a real number in [0, 1], got '1.5'"),
        (["run", "--smoothing", "0", "-0.1"], 2,
         "argument --smoothing: expected a real number in [0, 1], got '-0.1'"),
        (["run", "--smoothing", "nan"], 2, "argument --smoothing: expected a real number in [0, 1], got 'nan'"),
        (["run", "--label-noise", "2"], 2, "argument --label-noise: expected a fraction in [0, 1], got '2'"),
        (["run", "--val-fraction", "1"], 2,
         "argument --val-fraction: expected a fraction strictly between 0 and 1, got '1'"),
        (["run", "--epochs", "two"], 2, "argument --epochs: expected a positive integer, got 'two'"),
        (["run", "--lr", "-1"], 2, "argument --lr: expected a finite positive number, got '-1'"),
        (["run", "--seeds", "0"], 2, "argument --seeds: expected an integer from 1 to 1000, got '0'"),
        (["run", "--seeds", "1001"], 2, "argument --seeds: expected an integer from 1 to 1000, got '1001'"),
        (["run", "--lr", "inf"], 2, "argument --lr: expected a finite positive number, got 'inf'"),
        (["run", "--lr", "nan"], 2, "argument --lr: expected a finite positive number, got 'nan'"),
        (["run", "--out", ""], 2, "argument --out: expected a folder name, got ''"),
        (["run", "--resume", "--overwrite"], 2, "argument --overwrite: not allowed with argument --resume"),
        (["run", "--device", "tpu9"], 1, "--device: expected auto, cpu, cuda or cuda:N, got 'tpu9'"),
        (["run", "--device", "meta"], 1, "--device: expected a device that holds data (auto, cpu, cuda or cuda:N), got 'meta'"),
        (["report", "/nonexistent/run"], 2,
         "RUN_DIR: expected a folder written by `labelsmooth run`, got '/nonexistent/run'"),
        ([], 2, "the following arguments are required: command"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_status(argv: list[str], status: int, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    got, _, err = invoke(argv, capsys)
    assert got == status
    assert err == f"labelsmooth: error: {message}\n" or (err.startswith(f"labelsmooth: error: {message}")
                                                         and err.count("\n") == 1), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = invoke([*TINY, "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert status == 1
    assert err == ("labelsmooth: error: --device: expected an available device, got 'cuda' "
                   "(CUDA is not available here)\n")


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = invoke([*TINY, "--out", str(blocker / "run")], capsys)
    assert status == 1
    assert err.startswith(f"labelsmooth: error: --out: cannot write to '{blocker / 'run'}' (")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("module", "package"), [("matplotlib.figure", "matplotlib"), ("rich.progress", "rich"),
                                                 ("mnist1d.data", "mnist1d"), ("numpy", "numpy")])
def test_missing_optional_dependency_names_the_fix(module: str, package: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    status, _, err = invoke(["run", "--out", str(tmp_path / "run")], capsys)
    assert status == 1
    assert err.startswith(f"labelsmooth: error: the command needs {package}, which is not installed")
    assert err.rstrip().endswith("install it with: pip install 'labelsmooth[cli]'")
    assert err.count("\n") == 1


def test_missing_scikit_learn_for_digits_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    status, _, err = invoke([*TINY, "--out", str(tmp_path / "run")], capsys)
    assert status == 1
    assert err == ("labelsmooth: error: the command needs scikit-learn, which is not installed (import of "
                   "sklearn.datasets halted; None in sys.modules); install it with: pip install 'labelsmooth[cli]'\n")


@pytest.mark.parametrize(("module", "package"), [("matplotlib.figure", "matplotlib"), ("rich.console", "rich")])
def test_report_without_an_optional_dependency_rewrites_nothing(module: str, package: str, tiny_run: Path,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(tiny_run / "results.json", tmp_path)
    monkeypatch.setitem(sys.modules, module, None)
    status, _, err = invoke(["report", str(tmp_path)], capsys)
    assert status == 1
    assert err == (f"labelsmooth: error: the command needs {package}, which is not installed "
                   f"(import of {module} halted; None in sys.modules); install it with: "
                   "pip install 'labelsmooth[cli]'\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]


def test_interrupt_keeps_the_finished_trainings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    real_run_one = cli_main.run_one
    calls = []

    def interrupted_second_time(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_main, "run_one", interrupted_second_time)
    folder = tmp_path / "run"
    status, _, err = invoke([*TINY, "--smoothing", "0", "0.1", "--out", str(folder)], capsys)
    assert status == 130
    assert err == (f"labelsmooth: interrupted; the 1 finished training(s) are saved in {folder}, with their "
                   "summary and pictures; the same command with --resume continues the run\n")
    payload = json.loads((folder / "results.json").read_text())
    assert payload["status"] == "interrupted" and len(payload["runs"]) == 1
    assert len((folder / "results.csv").read_text().splitlines()) == 2
    # The summary of the interrupted run describes exactly the finished training.
    assert "; 1 trainings (interrupted)." in (folder / "summary.md").read_text()
    assert main(["report", str(folder)]) == 0
    assert (folder / "reliability.png").read_bytes()[:8] == PNG_SIGNATURE


def _finished_runs(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["runs"])
    except (OSError, ValueError):  # not written yet (each write is atomic, so never half a file)
        return 0


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_a_real_ctrl_c_keeps_the_finished_trainings(tmp_path: Path) -> None:
    # The console script under a real SIGINT, sent while the second of three trainings runs.
    folder = tmp_path / "run"
    script = Path(sys.executable).with_name("labelsmooth")
    argv = ["run", "--dataset", "digits", "--epochs", "20", "--seeds", "1", "--smoothing", "0", "0.1", "0.2",
            "--out", str(folder)]
    # SIGINT back to its default in the child: under a shell's background job (`cmd &`) it is
    # inherited as ignored, and Python then installs no KeyboardInterrupt handler at all.
    process = subprocess.Popen([str(script), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while _finished_runs(folder / "results.json") < 1 and process.poll() is None:
            assert time.monotonic() < deadline, "the first training did not finish"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    payload = json.loads((folder / "results.json").read_text())
    assert payload["status"] == "interrupted" and 1 <= len(payload["runs"]) < 3
    assert err.startswith(f"labelsmooth: interrupted; the {len(payload['runs'])} finished training(s) are saved")
    with (folder / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(payload["runs"])


def _set(payload: dict[str, object], key: str, value: object) -> dict[str, object]:
    """``payload`` with ``key`` of its first run set to ``value`` (``...`` removes the key)."""
    runs = json.loads(json.dumps(payload["runs"]))
    if value is ...:
        del runs[0][key]
    else:
        runs[0][key] = value
    return {**payload, "runs": runs}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("accuracy", float("nan"), "'accuracy' of run 1 in {path} to be a finite number in [0, 1], got NaN"),
        ("accuracy", 1.5, "'accuracy' of run 1 in {path} to be a finite number in [0, 1], got 1.5"),
        ("nll", "0.3", "'nll' of run 1 in {path} to be a finite number in [0, inf], got \"0.3\""),
        ("temperature", float("inf"), "'temperature' of run 1 in {path} to be a finite number in [0, inf], "
                                      "got Infinity"),
        ("seed", "0", "'seed' of run 1 in {path} to be an integer, got \"0\""),
        ("smoothing", None, "'smoothing' of run 1 in {path} to be a finite number, got null"),
        ("dataset", 3, "'dataset' of run 1 in {path} to be a string, got 3"),
        ("history", {"train_loss": [1.0]}, "'history' of run 1 in {path} to be an object of lists of finite "
                                           "numbers: train_loss, test_accuracy, test_nll, got {\"train_loss\": [1.0]}"),
        ("reliability", {"count": [1], "accuracy": [1], "confidence": [1]},
         "'reliability' of run 1 in {path} to be an object of 15 finite numbers each: count, accuracy, "
         "confidence, got {\"count\": [1], \"accuracy\": [1], \"confidence\": [1]}"),
        ("projection", {"classes": [0, 1, 2]}, "'projection' of run 1 in {path} to be null or an object of "
                                               "classes, labels, points and templates, got {\"classes\": [0, 1, 2]}"),
        ("ece_ts", ..., "every run in {path} to have "),
    ],
)
def test_report_on_a_results_file_with_a_bad_value_names_the_field(
        key: str, value: object, expected: str, tiny_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    payload = json.loads((tiny_run / "results.json").read_text())
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_set(payload, key, value)))
    status, _, err = invoke(["report", str(tmp_path)], capsys)
    assert status == 2
    assert err.startswith("labelsmooth: error: RUN_DIR: expected " + expected.replace("{path}", str(path))), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.parametrize("option", [["--label-noise", "1.0"], ["--val-fraction", "0.001"]])
def test_a_temperature_that_could_not_be_fitted_is_a_warning(option: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Labels all wrong: the best temperature is infinite (uniform predictions). One validation
    # example: it is separable, so the NLL falls without end as T -> 0.
    status, _, err = invoke([*TINY, "--smoothing", "0", *option, "--out", str(tmp_path)], capsys)
    assert status == 0, err
    (run,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert run["temperature"] in (0.01, 100.0)
    assert err.startswith("labelsmooth: warning: temperature scaling failed at smoothing=0, seed 0: the fitted "
                          f"temperature {run['temperature']:g} is the end of its search range [0.01, 100]; ")
    assert err.count("\n") == 1
    summary = (tmp_path / "summary.md").read_text()
    assert f"> **Warning**: {err.removeprefix('labelsmooth: warning: ').rstrip()}\n" in summary
    assert summary.count("⚠") >= 4
