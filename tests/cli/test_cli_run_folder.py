"""The run folder: refusal of a folder that holds a run, --overwrite, --resume, the lock, signals.

Most tests replace the training by a cheap stand-in (``fake_run``: a well-formed result row whose
numbers depend on the configuration), so that what is tested is the folder handling; the lock
and the signals are tested with real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from cli_invoke import invoke

import labelsmooth.cli.command as cli_main
from labelsmooth.cli.experiment import NUM_BINS, RunConfig
from labelsmooth.cli.folder import LOCK_FILE, FolderLock, atomic_write
from labelsmooth.cli.report import write_results

PICTURES = ("reliability.png", "penultimate.png", "curves.png")
FAKE = ["run", "--dataset", "digits", "--epochs", "1", "--batch-size", "256"]
SCRIPT = Path(sys.executable).with_name("labelsmooth")


def fake_run(config: RunConfig, data: object = None, *, on_epoch: object = None) -> dict[str, Any]:
    """A result row as ``run_one`` writes it; its accuracy encodes smoothing and seed."""
    accuracy = 0.5 + config.smoothing / 4 + config.seed / 100
    return {
        **asdict(config),
        "accuracy": accuracy, "nll": 1.0, "ece": 0.05, "brier": 0.5, "confidence": 0.6,
        "temperature": 1.5, "ece_ts": 0.02, "nll_ts": 0.9, "train_time_s": 1.0, "samples_per_s": 1000.0,
        "history": {"train_loss": [1.0] * config.epochs, "test_accuracy": [accuracy] * config.epochs,
                    "test_nll": [1.0] * config.epochs},
        "reliability": {"count": [10.0] * NUM_BINS, "accuracy": [0.5] * NUM_BINS,
                        "confidence": [0.6] * NUM_BINS},
        "projection": None,
    }


class Trainings:
    """Stands in for ``run_one``: records each configuration; raises ``stop`` at call ``stop_at``."""

    def __init__(self, stop_at: int | None = None, stop: type[BaseException] = KeyboardInterrupt) -> None:
        self.configs: list[RunConfig] = []
        self.stop_at = stop_at
        self.stop = stop

    def __call__(self, config: RunConfig, data: object, *, on_epoch: object = None) -> dict[str, Any]:
        self.configs.append(config)
        if len(self.configs) == self.stop_at:
            raise self.stop
        return fake_run(config)



def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def fake_folder(folder: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Trainings:
    trainings = Trainings()
    monkeypatch.setattr(cli_main, "run_one", trainings)
    status, _, err = invoke([*argv, "--out", str(folder)], capsys)
    assert status == 0, err
    return trainings


def summary_trainings(folder: Path) -> str:
    """The "N trainings (status)" part of summary.md's first paragraph."""
    text = (folder / "summary.md").read_text()
    return text.split("; ", 1)[1].split(".", 1)[0]


def test_a_folder_that_holds_a_run_is_refused_and_left_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    fake_folder(folder, [*FAKE, "--seeds", "2"], monkeypatch, capsys)
    before = snapshot(folder)
    assert set(before) == {"results.json", "results.csv", "summary.md", *PICTURES}
    status, _, err = invoke([*FAKE, "--seeds", "1", "--smoothing", "0.3", "--out", str(folder)], capsys)
    assert status == 2
    assert err == (f"labelsmooth: error: --out: expected a folder without a run in it, got '{folder}' (it holds "
                   "results.json, results.csv, summary.md, reliability.png, penultimate.png, curves.png); add "
                   "--resume to continue that run, --overwrite to replace it, or choose another --out\n")
    assert snapshot(folder) == before


def test_a_folder_with_only_a_summary_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "summary.md").write_text("mine")
    status, _, err = invoke([*FAKE, "--out", str(tmp_path)], capsys)
    assert status == 2 and "(it holds summary.md)" in err and err.count("\n") == 1
    assert (tmp_path / "summary.md").read_text() == "mine"


def test_overwrite_replaces_the_run_and_keeps_other_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    fake_folder(folder, [*FAKE, "--seeds", "2", "--smoothing", "0", "0.1"], monkeypatch, capsys)
    (folder / "notes.txt").write_text("the user's own file")
    fake_folder(folder, [*FAKE, "--seeds", "1", "--smoothing", "0.3", "--overwrite"], monkeypatch, capsys)
    payload = json.loads((folder / "results.json").read_text())
    assert [(run["smoothing"], run["seed"]) for run in payload["runs"]] == [(0.3, 0)]
    assert payload["status"] == "complete"
    assert summary_trainings(folder) == "1 trainings (complete)"
    assert "| 0.3 | 1 |" in (folder / "summary.md").read_text()
    assert (folder / "notes.txt").read_text() == "the user's own file"
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.parametrize("finished", [0, 1])
def test_an_interrupted_overwrite_leaves_no_summary_or_picture_of_the_old_run(
        finished: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    fake_folder(folder, [*FAKE, "--seeds", "2"], monkeypatch, capsys)
    monkeypatch.setattr(cli_main, "run_one", Trainings(stop_at=finished + 1))
    status, _, _ = invoke([*FAKE, "--seeds", "1", "--smoothing", "0.3", "0.4", "--overwrite",
                           "--out", str(folder)], capsys)
    assert status == 130
    payload = json.loads((folder / "results.json").read_text())
    assert payload["status"] == "interrupted" and len(payload["runs"]) == finished
    if finished:
        # Summary and pictures drawn from exactly the finished training.
        assert summary_trainings(folder) == "1 trainings (interrupted)"
        assert "| 0.3 | 1 |" in (folder / "summary.md").read_text()
        assert all((folder / name).exists() for name in PICTURES)
    else:
        assert not any((folder / name).exists() for name in ("summary.md", *PICTURES))


def test_resume_trains_only_what_results_json_lacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    argv = [*FAKE, "--seeds", "2", "--smoothing", "0", "0.1", "--out", str(folder)]
    first = Trainings(stop_at=2)
    monkeypatch.setattr(cli_main, "run_one", first)
    assert invoke(argv, capsys)[0] == 130
    kept = json.loads((folder / "results.json").read_text())["runs"]
    assert len(kept) == 1 and summary_trainings(folder) == "1 trainings (interrupted)"

    second = Trainings()
    monkeypatch.setattr(cli_main, "run_one", second)
    status, _, err = invoke([*argv, "--resume"], capsys)
    assert status == 0, err
    # The interrupted training and the two never started; not the finished one.
    assert [(c.smoothing, c.seed) for c in second.configs] == [(0.1, 0), (0.0, 1), (0.1, 1)]
    payload = json.loads((folder / "results.json").read_text())
    assert payload["status"] == "complete"
    assert payload["runs"][0] == kept[0]
    assert [(r["smoothing"], r["seed"]) for r in payload["runs"]] == [(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)]
    assert payload["resumed"][0]["command"][-1] == "--resume"
    assert summary_trainings(folder) == "4 trainings (complete)"
    assert len((folder / "results.csv").read_text().splitlines()) == 5

    # Resuming a complete run trains nothing and redraws the same summary.
    third = Trainings()
    monkeypatch.setattr(cli_main, "run_one", third)
    summary = (folder / "summary.md").read_text()
    status, out, _ = invoke([*argv, "--resume"], capsys)
    assert status == 0 and out.endswith("Nothing left to train: every training of the run is in results.json\n")
    assert third.configs == [] and (folder / "summary.md").read_text() == summary


@pytest.mark.parametrize(
    ("change", "named"),
    [(["--epochs", "2"], "--epochs 2 where that run has 1"),
     (["--smoothing", "0", "0.2"], "--smoothing 0 0.2 where that run has 0 0.1"),
     (["--label-noise", "0.2"], "--label-noise 0.2 where that run has 0.0"),
     (["--model", "cnn"], "--model cnn where that run has mlp")],
)
def test_resume_with_other_options_is_refused_naming_the_option(
        change: list[str], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    fake_folder(folder, [*FAKE, "--seeds", "1"], monkeypatch, capsys)
    before = snapshot(folder)
    status, _, err = invoke([*FAKE, "--seeds", "1", *change, "--resume", "--out", str(folder)], capsys)
    assert status == 2
    assert err == (f"labelsmooth: error: --resume: expected the options of the run in '{folder}', got {named}; "
                   "resume with its options, or use --overwrite or another --out\n")
    assert snapshot(folder) == before


def test_resume_needs_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = invoke([*FAKE, "--resume", "--out", str(tmp_path)], capsys)
    assert status == 2
    assert err == (f"labelsmooth: error: --resume: expected a folder written by `labelsmooth run`, got "
                   f"'{tmp_path}' (no results.json)\n")


def test_a_folder_locked_by_this_process_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FolderLock(tmp_path, "--out"):
        status, _, err = invoke([*FAKE, "--out", str(tmp_path)], capsys)
        report_status, _, report_err = invoke(["report", str(tmp_path)], capsys)
    assert status == 2
    host = json.dumps(os.uname().nodename)[1:-1]
    assert err == (f"labelsmooth: error: --out: expected a folder no other labelsmooth command is using, got "
                   f"'{tmp_path}' (locked by process {os.getpid()} on host {host}); wait for it to end or "
                   "choose another folder\n")
    assert report_status == 2 and "RUN_DIR: " in report_err  # no results.json: refused before the lock
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    # Fixed temporary names made one writer rename the other's file away (FileNotFoundError).
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for _ in range(40):
                write_results(tmp_path, {"status": "running", "runs": [fake_run(RunConfig(
                    "digits", "mlp", 0.1, number, 1, 32, 1e-3))]})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.csv", "results.json"]
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["seed"] in range(4)


def test_atomic_write_gives_the_usual_permissions_and_leaves_nothing_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", "text")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644

        def broken_replace(source: str, target: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError, match="No space left"):
            atomic_write(tmp_path / "a.txt", "other")
    finally:
        os.umask(mask)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "text"


def _wait_for(condition: Any, process: subprocess.Popen[str], what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the command ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finished_runs(path: Path) -> int:
    try:
        return len(json.loads(path.read_text())["runs"])
    except (OSError, ValueError):
        return 0


def _default_signals() -> None:
    # Under a shell's background job SIGINT is inherited as ignored; give the child the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")
def test_a_second_process_is_refused_and_a_killed_holder_s_lock_is_taken_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from labelsmooth.cli.folder import FolderLock; FolderLock(Path(sys.argv[1]), '--out').__enter__(); "
         "print('locked', flush=True); time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        second = subprocess.run([str(SCRIPT), *FAKE, "--out", str(tmp_path)], capture_output=True, text=True,
                                timeout=240)
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait(timeout=60)
    finally:
        holder.kill()
    assert second.returncode == 2, second.stderr
    host = json.dumps(os.uname().nodename)[1:-1]
    assert second.stderr == (f"labelsmooth: error: --out: expected a folder no other labelsmooth command is "
                             f"using, got '{tmp_path}' (locked by process {holder.pid} on host {host}); wait "
                             "for it to end or choose another folder\n")
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    fake_folder(tmp_path, [*FAKE, "--seeds", "1"], monkeypatch, capsys)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "complete"
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM")
def test_sigterm_keeps_the_finished_trainings_with_their_summary(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    argv = [str(SCRIPT), "run", "--dataset", "digits", "--epochs", "20", "--seeds", "1",
            "--smoothing", "0", "0.1", "0.2", "--out", str(folder)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_signals)
    try:
        _wait_for(lambda: _finished_runs(folder / "results.json") >= 1, process, "the first training")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    payload = json.loads((folder / "results.json").read_text())
    finished = len(payload["runs"])
    assert payload["status"] == "interrupted" and 1 <= finished < 3
    assert err == (f"labelsmooth: terminated; the {finished} finished training(s) are saved in {folder}, with "
                   "their summary and pictures; the same command with --resume continues the run\n")
    assert summary_trainings(folder) == f"{finished} trainings (interrupted)"
    assert all((folder / name).exists() for name in PICTURES)
    assert sorted(path.name for path in folder.iterdir() if path.name.startswith(".")) == []


def _torch_is_loading(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps")
@pytest.mark.parametrize(("signum", "status", "line"), [(signal.SIGINT, 130, "labelsmooth: interrupted\n"),
                                                         (signal.SIGTERM, 143, "labelsmooth: terminated\n")])
def test_a_signal_while_torch_imports_is_one_line(signum: int, status: int, line: str, tmp_path: Path) -> None:
    process = subprocess.Popen([str(SCRIPT), *FAKE, "--out", str(tmp_path / "run")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    try:
        _wait_for(lambda: _torch_is_loading(process.pid), process, "torch to load", seconds=120)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status, err
    assert err == line


def test_more_threads_than_cores_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cli_main, "run_one", Trainings())
    monkeypatch.setattr(cli_main.torch, "set_num_threads", lambda threads: None)
    status, _, err = invoke([*FAKE, "--seeds", "1", "--threads", "3", "--out", str(tmp_path)], capsys)
    assert status == 0
    assert err == ("labelsmooth: warning: --threads 3 is more than the 2 CPU cores here; the threads will wait "
                   "for each other (use at most the core count)\n")
    status, _, err = invoke([*FAKE, "--seeds", "1", "--threads", "2", "--out", str(tmp_path / "b")], capsys)
    assert status == 0 and err == ""


def test_minus_zero_smoothing_is_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    trainings = fake_folder(tmp_path, [*FAKE, "--seeds", "1", "--smoothing", "-0", "0.1", "--mixup", "-0"],
                            monkeypatch, capsys)
    assert [str(config.smoothing) for config in trainings.configs] == ["0.0", "0.1"]
    assert str(trainings.configs[0].mixup) == "0.0"
    assert "\n| 0 | 1 |" in (tmp_path / "summary.md").read_text()
    assert "-0" not in (tmp_path / "summary.md").read_text()


def test_a_failed_training_keeps_the_finished_ones_and_marks_the_run_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    monkeypatch.setattr(cli_main, "run_one", Trainings(stop_at=2, stop=RuntimeError))
    status, _, err = invoke([*FAKE, "--seeds", "1", "--out", str(folder)], capsys)
    assert status == 1 and err.startswith("labelsmooth: error: RuntimeError") and err.count("\n") == 1
    payload = json.loads((folder / "results.json").read_text())
    assert payload["status"] == "failed"
    assert [(run["smoothing"], run["seed"]) for run in payload["runs"]] == [(0.0, 0)]
    assert not (folder / LOCK_FILE).exists()
    # The same command with --resume trains only the training that failed.
    second = Trainings()
    monkeypatch.setattr(cli_main, "run_one", second)
    status, _, err = invoke([*FAKE, "--seeds", "1", "--out", str(folder), "--resume"], capsys)
    assert status == 0, err
    assert [(config.smoothing, config.seed) for config in second.configs] == [(0.1, 0)]
    assert json.loads((folder / "results.json").read_text())["status"] == "complete"


def test_resume_without_out_is_refused_naming_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = invoke([*FAKE, "--resume"], capsys)
    assert status == 2
    assert err == "labelsmooth: error: --resume: expected --out naming the run folder to continue, got none\n"
    assert list(tmp_path.iterdir()) == []
