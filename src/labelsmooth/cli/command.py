"""``labelsmooth run`` and ``labelsmooth report``: argument parsing, the run loop, one-line errors.

Every failure the user can cause (an unknown data set or model, a smoothing outside [0, 1], an
output folder that cannot be written or already holds a run, a missing optional package) ends the
command with one line on stderr and a non-zero status: 2 for a bad command line or run folder, 1
for the rest, 130 for Ctrl-C, 143 for SIGTERM. The results of finished trainings are written
after each one, so an interrupted run keeps them, and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch

from _labelsmooth_launcher import TERMINATED, exit_status, handle_sigterm
from labelsmooth import __version__
from labelsmooth._validation import check_smoothing
from labelsmooth.cli import plots
from labelsmooth.cli.data import DATASETS, load_dataset
from labelsmooth.cli.errors import CommandError, require
from labelsmooth.cli.experiment import METHODS, RunConfig, run_one
from labelsmooth.cli.folder import DERIVED_FILES, RESULT_FILES, FolderLock, remove_files, run_files
from labelsmooth.cli.models import DEFAULT_MODEL, MODELS
from labelsmooth.cli.report import (
    CONFIG_FIELDS,
    RunFolderError,
    bootstrap_intervals,
    group_runs,
    load_results,
    metric_sentences,
    metric_table,
    read_results,
    temperature_warnings,
    write_results,
    write_summary,
)

__all__ = ["build_parser", "main"]

DEFAULT_EPOCHS = 40
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 3e-3
# The strengths of the methods of --method (see docs/methods.md for where they come from).
DEFAULT_METHOD_SMOOTHING = 0.1
DEFAULT_NEGATIVE_SMOOTHING = -0.2
# The share of training negative-ls spends on plain cross-entropy first (Wei et al. 2022).
DEFAULT_NEGATIVE_WARMUP = 0.5
DEFAULT_PENALTY = 0.1
DEFAULT_OLS_ALPHA = 0.5
# More seeds than this is a typo (a run trains seeds x variants models), refused before any work.
MAX_SEEDS = 1000
_N = TypeVar("_N", int, float)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"labelsmooth: error: {message}\n")


def _smoothing(text: str) -> float:
    try:
        return check_smoothing(float(text)) + 0.0  # + 0.0: "-0" is 0, and is labelled "0"
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a real number in [0, 1], got {text!r}") from None


def _number(convert: Callable[[str], _N], accept: Callable[[_N], bool], expected: str) -> Callable[[str], _N]:
    """An argparse ``type``: ``convert(text)`` if that works and ``accept`` holds, else an
    ``expected ..., got ...`` error (one message template for every numeric option)."""

    def parse(text: str) -> _N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


# NaN fails every comparison, so it is rejected by each of these.
_fraction = _number(float, lambda value: 0.0 <= value <= 1.0, "a fraction in [0, 1]")
_open_fraction = _number(float, lambda value: 0.0 < value < 1.0, "a fraction strictly between 0 and 1")
_alpha = _number(lambda text: float(text) + 0.0, lambda value: math.isfinite(value) and value >= 0,
                 "a Beta concentration, a finite number >= 0 (0 = off)")
_positive_int = _number(int, lambda value: value >= 1, "a positive integer")
_seed_count = _number(int, lambda value: 1 <= value <= MAX_SEEDS, f"an integer from 1 to {MAX_SEEDS}")
_finite_positive = _number(float, lambda value: 0 < value < math.inf, "a finite positive number")
_negative = _number(lambda text: float(text) + 0.0, lambda value: -math.inf < value < 0,
                    "a finite negative number")
_warmup = _number(lambda text: float(text) + 0.0, lambda value: 0.0 <= value < 1.0, "a fraction in [0, 1)")


def _method(text: str) -> str:
    if text not in (*METHODS, "all"):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(METHODS)}, all, got {text!r}")
    return text


def _folder_name(text: str) -> Path:
    # Path("") is the current folder: an empty --out (an unset shell variable) must not write there.
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a folder name, got {text!r}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``labelsmooth`` command line (sub-commands ``run`` and ``report``).

    Returns:
        The parser; its errors are one line on stderr and exit status 2.

    Example:
        >>> args = build_parser().parse_args(["run", "--smoothing", "0", "0.2"])
        >>> args.dataset, args.model, args.smoothing, args.seeds
        ('mnist1d', None, [0.0, 0.2], 3)
    """
    parser = _Parser(
        prog="labelsmooth",
        description="Train the same model with and without label smoothing and report what changed.",
    )
    parser.add_argument("--version", action="version", version=f"labelsmooth {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="train per smoothing value and seed; write results, summary and pictures",
        description="Train the same model on the same data for each smoothing value and seed, "
        "then write results.json, results.csv, summary.md, reliability.png, penultimate.png and "
        "curves.png into the output folder.",
    )
    run.add_argument("--dataset", choices=DATASETS, default="mnist1d",
                     help="embedded data set, nothing downloaded (default: mnist1d)")
    run.add_argument("--model", choices=MODELS, default=None,
                     help="classifier (default: cnn for mnist1d, mlp for digits)")
    run.add_argument("--method", type=_method, nargs="+", default=None, metavar="M",
                     help=f"compare methods instead of smoothing values: {', '.join(METHODS)}, or all "
                     "(ts: the ce model after temperature scaling); see docs/methods.md")
    run.add_argument("--smoothing", type=_smoothing, nargs="+", default=None, metavar="S",
                     help="label smoothing values in [0, 1] (default: 0.0 0.1); with --method, the one "
                     f"smoothing of ls and ls-prior (default: {DEFAULT_METHOD_SMOOTHING:g})")
    run.add_argument("--negative-smoothing", type=_negative, default=None, metavar="S",
                     help=f"with --method: the smoothing of negative-ls, < 0 (default: "
                     f"{DEFAULT_NEGATIVE_SMOOTHING:g})")
    run.add_argument("--negative-warmup", type=_warmup, default=None, metavar="F",
                     help="with --method: the fraction of training negative-ls spends on plain "
                     f"cross-entropy before its negative smoothing, in [0, 1) (default: "
                     f"{DEFAULT_NEGATIVE_WARMUP:g})")
    run.add_argument("--penalty", type=_finite_positive, default=None, metavar="BETA",
                     help=f"with --method: the weight of confidence-penalty (default: {DEFAULT_PENALTY:g})")
    run.add_argument("--ols-alpha", type=_open_fraction, default=None, metavar="A",
                     help=f"with --method: the weight of the hard labels in ols (default: "
                     f"{DEFAULT_OLS_ALPHA:g})")
    run.add_argument("--mixup", type=_alpha, nargs="+", default=None, metavar="ALPHA",
                     help="MixUp Beta(alpha, alpha) concentrations to compare, 0 = off; combined "
                     "with every smoothing value (default: 0)")
    run.add_argument("--cutmix", type=_alpha, nargs="+", default=None, metavar="ALPHA",
                     help="CutMix Beta(alpha, alpha) concentrations to compare, 0 = off; combined "
                     "with every smoothing and mixup value (default: 0)")
    run.add_argument("--seeds", type=_seed_count, default=3, metavar="N",
                     help=f"number of seeds, 0..N-1, at most {MAX_SEEDS} (default: 3)")
    run.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                     help=f"epochs per training (default: {DEFAULT_EPOCHS})")
    run.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                     help=f"examples per step (default: {DEFAULT_BATCH_SIZE})")
    run.add_argument("--lr", type=_finite_positive, default=DEFAULT_LR,
                     help=f"AdamW peak learning rate, cosine-decayed (default: {DEFAULT_LR:g})")
    run.add_argument("--label-noise", type=_fraction, default=0.0, metavar="P",
                     help="replace round(P * N) of the N labels trained on by a different class; the "
                     "validation split stays clean (default: 0)")
    run.add_argument("--val-fraction", type=_open_fraction, default=0.1, metavar="F",
                     help="share of the training set held out for temperature scaling (default: 0.1)")
    run.add_argument("--out", type=_folder_name, default=None,
                     help="output folder (default: runs/<dataset>-<UTC time>); a folder that already "
                     "holds a run is refused unless --resume or --overwrite is given")
    existing = run.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the run in --out: train only what its results.json lacks "
                          "(the options must be those of that run)")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the run in --out (its results, summary and pictures)")
    run.add_argument("--device", default="auto",
                     help="torch device: auto (cuda if available), cpu, cuda, cuda:1 ... (default: auto)")
    run.add_argument("--threads", type=_positive_int, default=1,
                     help="CPU threads for torch (default: 1: these models are so small that more "
                     "threads mostly add synchronisation); more than the CPU count is warned about")

    report = commands.add_parser(
        "report", help="redraw the summary and pictures of a finished run folder",
        description="Redraw summary.md, reliability.png, penultimate.png and curves.png from the "
        "results.json of a run folder.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    return parser


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "meta":
        raise CommandError(f"--device: expected a device that holds data (auto, cpu, cuda or "
                           f"cuda:N), got {name!r} (meta tensors have no values to train on)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device: expected an available device, got {name!r} "
                           "(CUDA is not available here)")
    return str(device)


def _environment(device: str, threads: int) -> dict[str, Any]:
    return {
        "labelsmooth": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _print_summary(payload: dict[str, Any], folder: Path, intervals: list[dict[str, Any]]) -> None:
    rich_console = require("rich.console", "rich")
    rich_table = require("rich.table", "rich")
    variants = group_runs(payload["runs"])
    headers, rows = metric_table(variants, intervals)
    first = payload["runs"][0]
    shown = " [95% bootstrap interval over the test set]" if any(intervals) else ""
    table = rich_table.Table(title=f"{first['dataset']}, {first['model']}: test set, mean ± std "
                             f"over {len(variants[0].runs)} seed(s){shown}")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        # The interval on a line of its own keeps seven methods' columns narrow enough to read.
        table.add_row(*(cell.replace(" [", "\n[") for cell in row))
    console = rich_console.Console()
    console.print(table)
    for sentence in metric_sentences(variants):
        console.print(f"- {sentence}", markup=False, highlight=False)
    for warning in temperature_warnings(variants):
        print(f"labelsmooth: warning: {warning}", file=sys.stderr)
    console.print(f"Results, summary and pictures in {folder}", markup=False, highlight=False)


def _render(payload: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Write the summary and pictures; return the bootstrap intervals, for the terminal table."""
    variants = group_runs(payload["runs"])
    intervals = [bootstrap_intervals(variant) for variant in variants]
    write_summary(folder, payload, intervals)
    plots.draw_all(variants, folder)
    return intervals


_METHOD_OPTIONS = ("negative_smoothing", "negative_warmup", "penalty", "ols_alpha")


class _OptionError(CommandError):
    """Options that do not go together: a bad command line (exit status 2)."""

    exit_status = 2


def _methods(requested: list[str]) -> list[str]:
    """The methods of ``--method`` in the table's order (``all``: every one)."""
    return [method for method in METHODS if method in requested or "all" in requested]


def _complete_options(args: argparse.Namespace) -> None:
    """Fill in the defaults that depend on ``--method``, refusing options that do not apply
    (in place; a second call changes nothing)."""
    if args.method is None:
        for name in _METHOD_OPTIONS:
            if getattr(args, name) is not None:
                raise _OptionError(f"--{name.replace('_', '-')}: expected --method to go with it, got none")
        args.smoothing = args.smoothing or [0.0, 0.1]
        args.mixup = args.mixup or [0.0]
        args.cutmix = args.cutmix or [0.0]
        return
    args.method = _methods(args.method)
    for name in ("mixup", "cutmix"):
        if getattr(args, name) not in (None, [0.0]):
            shown = " ".join(f"{value:g}" for value in getattr(args, name))
            raise _OptionError(f"--{name}: expected 0 with --method (methods are compared without "
                               f"mixing), got {shown}")
    if args.smoothing is not None and len(args.smoothing) != 1:
        shown = " ".join(f"{value:g}" for value in args.smoothing)
        raise _OptionError(f"--smoothing: expected one value with --method (the smoothing of ls and "
                           f"ls-prior), got {shown}")
    args.smoothing = args.smoothing or [DEFAULT_METHOD_SMOOTHING]
    args.mixup, args.cutmix = [0.0], [0.0]
    defaults = (DEFAULT_NEGATIVE_SMOOTHING, DEFAULT_NEGATIVE_WARMUP, DEFAULT_PENALTY, DEFAULT_OLS_ALPHA)
    for name, default in zip(_METHOD_OPTIONS, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)


def _strength(args: argparse.Namespace, method: str) -> float:
    strengths = {"ls": args.smoothing[0], "ls-prior": args.smoothing[0], "ols": args.ols_alpha,
                 "negative-ls": args.negative_smoothing, "confidence-penalty": args.penalty}
    return float(strengths.get(method, 0.0))


def _configs(args: argparse.Namespace, device: str) -> list[RunConfig]:
    _complete_options(args)
    model = args.model or DEFAULT_MODEL[args.dataset]
    if args.method is not None:
        return [
            RunConfig(dataset=args.dataset, model=model, smoothing=0.0, seed=seed, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, label_noise=args.label_noise,
                      val_fraction=args.val_fraction, device=device, method=method,
                      strength=_strength(args, method),
                      warmup=args.negative_warmup if method == "negative-ls" else 0.0)
            for seed in range(args.seeds)
            for method in args.method
        ]
    # Seed-major order: an interrupted run still holds every variant for its first seeds.
    return [
        RunConfig(dataset=args.dataset, model=model, smoothing=smoothing, seed=seed,
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  label_noise=args.label_noise, val_fraction=args.val_fraction, device=device,
                  mixup=mixup, cutmix=cutmix)
        for seed in range(args.seeds)
        for smoothing in dict.fromkeys(args.smoothing)
        for mixup in dict.fromkeys(args.mixup)
        for cutmix in dict.fromkeys(args.cutmix)
    ]


# The options that decide which trainings a run holds and what they compute; --resume checks them.
# The --method options are None in a run without --method (and in results.json written before them).
_SETTINGS = ("dataset", "model", "method", "smoothing", "negative_smoothing", "negative_warmup", "penalty",
             "ols_alpha", "mixup", "cutmix", "seeds", "epochs", "batch_size", "lr", "label_noise",
             "val_fraction", "device")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(item if isinstance(item, str) else f"{item:g}" for item in value)
    return str(value)


def _settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    values = vars(args) | {"model": args.model or DEFAULT_MODEL[args.dataset], "device": device}
    return {name: list(dict.fromkeys(values[name])) if isinstance(values[name], list) else values[name]
            for name in _SETTINGS}


def _check_same_settings(folder: Path, recorded: Any, settings: dict[str, Any]) -> None:
    """Refuse to resume a run with options other than its own, naming the first that differs."""
    if not isinstance(recorded, dict):
        raise RunFolderError(f"--resume: expected a run that records its options, got {str(folder)!r} "
                             "(its results.json has none); use --overwrite or another --out")
    for name, value in settings.items():
        if recorded.get(name) != value:
            shown = "(none)" if value is None else _shown(value)
            before = recorded.get(name)
            before = "none" if before is None else _shown(before)
            raise RunFolderError(f"--resume: expected the options of the run in {str(folder)!r}, got "
                                 f"--{name.replace('_', '-')} {shown} where that run has {before}; "
                                 "resume with its options, or use --overwrite or another --out")


def _start(folder: Path, args: argparse.Namespace, settings: dict[str, Any], argv: Sequence[str],
           device: str) -> dict[str, Any]:
    """The payload this run starts from, with the folder made ready for it (the lock is held).

    A fresh run needs a folder without a run in it (or ``--overwrite``, which removes that run);
    ``--resume`` continues the run there when its options are the same. Either way the summary
    and pictures are removed until they are drawn again from the new results, so they never
    describe other trainings than results.json.
    """
    present = run_files(folder)
    session = {"command": ["labelsmooth", *argv], "environment": _environment(device, args.threads)}
    if args.resume:
        payload = read_results(folder, "--resume")
        _check_same_settings(folder, payload.get("settings"), settings)
        payload.setdefault("resumed", []).append(session)
        payload["status"] = "running"
        remove_files(folder, DERIVED_FILES)
        return payload
    if present and not args.overwrite:
        raise RunFolderError(f"--out: expected a folder without a run in it, got {str(folder)!r} (it holds "
                             f"{', '.join(present)}); add --resume to continue that run, --overwrite to "
                             "replace it, or choose another --out")
    remove_files(folder, [*RESULT_FILES, *DERIVED_FILES])
    return {**session, "settings": settings, "status": "running", "runs": []}


def _warn_threads(threads: int) -> None:
    cores = os.cpu_count()
    if cores is not None and threads > cores:
        print(f"labelsmooth: warning: --threads {threads} is more than the {cores} CPU cores here; the "
              "threads will wait for each other (use at most the core count)", file=sys.stderr)


def _progress(progress_module: Any) -> Any:
    return progress_module.Progress(
        progress_module.TextColumn("{task.description}"),
        progress_module.BarColumn(),
        progress_module.MofNCompleteColumn(),
        progress_module.TextColumn("epochs"),
        progress_module.TimeElapsedColumn(),
        progress_module.TimeRemainingColumn(),
        transient=False,
    )


def _stopped(payload: dict[str, Any], folder: Path, interrupt: KeyboardInterrupt) -> int:
    """Save what finished, draw its summary and pictures, and say how to continue."""
    payload["status"] = "interrupted"
    write_results(folder, payload)
    finished = len(payload["runs"])
    if finished:
        _render(payload, folder)
    word = "terminated" if exit_status(interrupt) == TERMINATED else "interrupted"
    drawn = ", with their summary and pictures" if finished else ""
    print(f"labelsmooth: {word}; the {finished} finished training(s) are saved in {folder}{drawn}; "
          "the same command with --resume continues the run", file=sys.stderr)
    return exit_status(interrupt)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    # Check every optional dependency before any work, so a missing one fails in a second
    # (not after the first training). numpy comes before
    # matplotlib, which imports it, so the message names the package that is really missing.
    if args.resume and args.out is None:
        # Without --out the folder would be a new runs/<dataset>-<time>, which holds no run.
        raise RunFolderError("--resume: expected --out naming the run folder to continue, got none")
    require("numpy", "numpy")
    progress_module = require("rich.progress", "rich")
    require("matplotlib.figure", "matplotlib")
    _complete_options(args)
    device = _device(args.device)
    _warn_threads(args.threads)
    torch.set_num_threads(args.threads)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = args.out or Path("runs") / f"{args.dataset}-{stamp}"
    configs = _configs(args, device)
    if args.resume:
        read_results(folder, "--resume")  # refuses a folder without a run before the lock would create one
    with FolderLock(folder, "--out"):
        payload = _start(folder, args, _settings(args, device), argv, device)
        write_results(folder, payload)
        done = [{name: run[name] for name in CONFIG_FIELDS} for run in payload["runs"]]
        todo = [config for config in configs if asdict(config) not in done]
        started = time.perf_counter()
        try:
            _train_all(todo, args.dataset, payload, folder, _progress(progress_module))
        except KeyboardInterrupt as interrupt:
            return _stopped(payload, folder, interrupt)
        except Exception:
            # A training that fails (a diverging loss, out of memory) must not leave the run
            # marked "running": the finished trainings stay in results.json, --resume continues.
            payload["status"] = "failed"
            write_results(folder, payload)
            raise
        payload["status"] = "complete"
        payload["wall_time_s"] = payload.get("wall_time_s", 0.0) + time.perf_counter() - started
        write_results(folder, payload)
        intervals = _render(payload, folder)
    _print_summary(payload, folder, intervals)
    if todo:
        print(f"{len(todo)} trainings in {time.perf_counter() - started:.1f} s")
    else:
        print("Nothing left to train: every training of the run is in results.json")
    return 0


def _train_all(todo: list[RunConfig], dataset: str, payload: dict[str, Any], folder: Path,
               progress: Any) -> None:
    """Train ``todo`` in order, appending each result to the payload and writing it at once."""
    if not todo:
        return
    data = load_dataset(dataset)
    with progress:
        task = progress.add_task("training", total=sum(config.epochs for config in todo))
        for number, config in enumerate(todo, start=1):
            progress.update(task, description=f"[{number}/{len(todo)}] {config.label()} seed {config.seed}")
            payload["runs"].append(run_one(config, data, on_epoch=lambda: progress.advance(task)))
            write_results(folder, payload)


def _report(args: argparse.Namespace) -> int:
    # Before anything is rewritten: a missing package must not leave a new summary.md beside
    # the old pictures.
    require("rich.console", "rich")
    require("matplotlib.figure", "matplotlib")
    load_results(args.run_dir)  # refuses a folder without a run before the lock would create one
    with FolderLock(args.run_dir, "RUN_DIR"):
        payload = load_results(args.run_dir)
        try:
            intervals = _render(payload, args.run_dir)
        except OSError as error:
            raise CommandError(f"RUN_DIR: cannot write to {str(args.run_dir)!r} "
                               f"({error.strerror or error})") from None
    _print_summary(payload, args.run_dir, intervals)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``labelsmooth`` command; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for an error the user can fix (one line on stderr), 2 for a bad command
        line or run folder, 130 after Ctrl-C, 143 after SIGTERM.

    Example:
        >>> main(["run", "--dataset", "digits", "--epochs", "1", "--seeds", "1",
        ...       "--out", "runs/quick"])  # doctest: +SKIP
        0
    """
    previous = handle_sigterm()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as interrupt:
        word = "terminated" if exit_status(interrupt) == TERMINATED else "interrupted"
        print(f"labelsmooth: {word}", file=sys.stderr)
        return exit_status(interrupt)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(arguments: list[str]) -> int:
    args = build_parser().parse_args(arguments)
    try:
        if args.command == "run":
            return _run(args, arguments)
        return _report(args)
    except CommandError as error:
        print(f"labelsmooth: error: {error}", file=sys.stderr)
        return error.exit_status
    except Exception as error:
        # Never a traceback for the user; LABELSMOOTH_DEBUG=1 shows it for a bug report.
        if os.environ.get("LABELSMOOTH_DEBUG"):
            raise
        print(f"labelsmooth: error: {type(error).__name__}: {error} "
              "(set LABELSMOOTH_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
