"""The run folder: ``results.json`` / ``results.csv`` written after every training, and the
summary (mean ± std per variant, a bootstrap interval, one plain sentence per metric) as Markdown.

Everything here is computed from the saved rows (and the test-set logits saved with them), so
``labelsmooth report RUN_DIR`` redraws the same summary from disk.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from labelsmooth.cli.errors import CommandError
from labelsmooth.cli.experiment import (
    METHODS,
    METRICS,
    NUM_BINS,
    PROJECTED_CLASSES,
    TEMPERATURE_RANGE,
    TEST_METRICS,
    TREATMENTS,
    RunConfig,
    method_label,
)
from labelsmooth.cli.folder import atomic_write
from labelsmooth.metrics.extra import bootstrap_interval

__all__ = [
    "BOOTSTRAP_CONFIDENCE",
    "BOOTSTRAP_SAMPLES",
    "BOOTSTRAP_SEED",
    "METRIC_RANGES",
    "MetricInfo",
    "RunFolderError",
    "Variant",
    "bootstrap_intervals",
    "group_runs",
    "load_results",
    "metric_sentences",
    "metric_table",
    "read_results",
    "summary_markdown",
    "summary_table",
    "temperature_problem",
    "temperature_warnings",
    "write_results",
    "write_summary",
]

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
SUMMARY_MD = "summary.md"
CONFIG_FIELDS = tuple(RunConfig.__dataclass_fields__)
# Fields a results.json written before ``--method`` lacks (read as a run of the grid), and what
# it lacks from before the adaptive and classwise ECE and the saved logits (then not shown).
_LATER_FIELDS = {"method": "", "strength": 0.0, "warmup": 0.0}
_LATER_METRICS = ("ece_adaptive", "ece_classwise")
_PREDICTIONS = ("test_logits", "test_targets")
# The summary's intervals: percentile bootstrap over the test set, the same resamples (drawn
# from a generator seeded by BOOTSTRAP_SEED) for every seed and variant.
BOOTSTRAP_SAMPLES = 200
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: a name, a scale (100 for percentages), and which way is better."""

    title: str
    scale: float
    unit: str
    digits: int
    higher_is_better: bool | None


METRIC_INFO: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("top-1 accuracy", 100, "%", 1, True),
    "nll": MetricInfo("NLL", 1, "", 3, False),
    "ece": MetricInfo("ECE", 100, "%", 1, False),
    "ece_adaptive": MetricInfo("adaptive ECE", 100, "%", 1, False),
    "ece_classwise": MetricInfo("classwise ECE", 100, "%", 2, False),
    "brier": MetricInfo("Brier score", 1, "", 3, False),
    "confidence": MetricInfo("mean confidence", 100, "%", 1, None),
    "temperature": MetricInfo("fitted temperature", 1, "", 2, None),
    "ece_ts": MetricInfo("ECE after temperature scaling", 100, "%", 1, False),
    "nll_ts": MetricInfo("NLL after temperature scaling", 1, "", 3, False),
    "samples_per_s": MetricInfo("training throughput (samples/s)", 1, "", 0, True),
}
TABLE_METRICS = ("accuracy", "nll", "ece", "ece_adaptive", "ece_classwise", "brier", "ece_ts", "nll_ts",
                 "temperature", "confidence", "samples_per_s")
TABLE_HEADERS = {
    "accuracy": "top-1 (%)",
    "nll": "NLL",
    "ece": "ECE (%)",
    "ece_adaptive": "adaptive ECE (%)",
    "ece_classwise": "classwise ECE (%)",
    "brier": "Brier",
    "ece_ts": "ECE after TS (%)",
    "nll_ts": "NLL after TS",
    "temperature": "T",
    "confidence": "confidence (%)",
    "samples_per_s": "samples/s",
}


def write_results(folder: Path, payload: dict[str, Any]) -> None:
    """Write ``results.json`` (everything) and ``results.csv`` (one row per run: config, metrics).

    Each file is written under a unique temporary name beside its target and renamed over it,
    so an interruption never leaves half a file.

    Args:
        folder: the run folder (must exist).
        payload: ``{"runs": [...], ...}``; every run a dict with the config fields and metrics.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as name:
        ...     write_results(Path(name), {"status": "running", "runs": []})
        ...     sorted(path.name for path in Path(name).iterdir())
        ['results.csv', 'results.json']
    """
    atomic_write(folder / RESULTS_JSON, json.dumps(payload, indent=1) + "\n")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[*CONFIG_FIELDS, *METRICS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(payload["runs"])
    atomic_write(folder / RESULTS_CSV, table.getvalue())


class RunFolderError(CommandError):
    """A run folder whose ``results.json`` is missing or does not hold what the command wrote."""

    exit_status = 2


# Ranges of the metrics a run reports (every one of them is also finite).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0), "nll": (0.0, math.inf), "ece": (0.0, 1.0), "brier": (0.0, 2.0),
    "confidence": (0.0, 1.0), "temperature": (0.0, math.inf), "ece_ts": (0.0, 1.0),
    "nll_ts": (0.0, math.inf), "train_time_s": (0.0, math.inf), "samples_per_s": (0.0, math.inf),
    "ece_adaptive": (0.0, 1.0), "ece_classwise": (0.0, 1.0),
}
_FIELD_TYPES = {field.name: field.type for field in fields(RunConfig)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, length: int | None = None) -> bool:
    """A non-empty list of finite numbers (of ``length`` items when given)."""
    return (isinstance(value, list) and bool(value) and all(_is_number(item) for item in value)
            and (length is None or len(value) == length))


def _field_problem(run: dict[str, Any], key: str) -> str | None:
    """What is wrong with ``run[key]`` (the expectation), or ``None``."""
    value = run[key]
    if key == "method":
        return None if value in ("", *METHODS) else f"one of {', '.join(METHODS)} or \"\""
    if key == "test_logits":
        good = (isinstance(value, list) and bool(value) and isinstance(value[0], list)
                and all(_numbers(row, len(value[0])) for row in value))
        return None if good else "a non-empty list of rows of finite numbers, all of one length"
    if key == "test_targets":
        logits = run.get("test_logits")
        good = (isinstance(value, list) and isinstance(logits, list) and len(value) == len(logits)
                and all(isinstance(item, int) and not isinstance(item, bool)
                        and isinstance(logits[0], list) and 0 <= item < len(logits[0]) for item in value))
        return None if good else "a list of class indices, one per row of test_logits"
    if key in _FIELD_TYPES:
        kind = _FIELD_TYPES[key]
        if kind == "str":
            return None if isinstance(value, str) else "a string"
        if kind == "int":
            return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
        return None if _is_number(value) else "a finite number"
    if key in METRIC_RANGES:
        low, high = METRIC_RANGES[key]
        inside = _is_number(value) and low <= value <= high
        return None if inside else f"a finite number in [{low:g}, {high:g}]"
    if key == "history":
        keys = ("train_loss", "test_accuracy", "test_nll")
        good = isinstance(value, dict) and all(_numbers(value.get(name)) for name in keys)
        return None if good else f"an object of lists of finite numbers: {', '.join(keys)}"
    if key == "reliability":
        keys = ("count", "accuracy", "confidence")
        good = isinstance(value, dict) and all(_numbers(value.get(name), NUM_BINS) for name in keys)
        return None if good else f"an object of {NUM_BINS} finite numbers each: {', '.join(keys)}"
    if key == "projection" and value is not None:
        pairs = ("points", "templates")
        good = (isinstance(value, dict) and _numbers(value.get("classes"), len(PROJECTED_CLASSES))
                and isinstance(value.get("labels"), list) and isinstance(value.get("points"), list)
                and len(value["labels"]) == len(value["points"])
                and all(_numbers(pair, 2) for name in pairs
                        for pair in (value[name] if isinstance(value.get(name), list) else [None])))
        return None if good else "null or an object of classes, labels, points and templates"
    return None


def read_results(folder: Path, argument: str = "RUN_DIR") -> dict[str, Any]:
    """Read a run folder's ``results.json`` and check every value the report uses.

    Args:
        folder: a folder written by ``labelsmooth run``.
        argument: how the folder was named on the command line, for the messages.

    Returns:
        The payload: ``{"runs": [...], "status": ..., ...}``, possibly with no runs yet.

    Raises:
        RunFolderError: the file is missing, not JSON, or a run lacks a field or holds a value the
            command could not have written (NaN, a wrong type, a value out of range), named in
            the message (exit status 2).
        CommandError: the file cannot be read (exit status 1).
    """
    path = folder / RESULTS_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{argument}: expected a folder written by `labelsmooth run`, "
                             f"got {str(folder)!r} (no {RESULTS_JSON})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"{argument}: cannot read {path}: {error}") from None
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise RunFolderError(f"{argument}: cannot read {path}: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("runs"), list):
        raise RunFolderError(f"{argument}: expected {path} to hold a list of runs, got none")
    required = tuple(key for key in (*CONFIG_FIELDS, *METRICS, "history", "reliability", "projection")
                     if key not in _LATER_FIELDS and key not in _LATER_METRICS)
    for number, run in enumerate(payload["runs"], start=1):
        missing = [key for key in required if not isinstance(run, dict) or key not in run]
        if missing:
            raise RunFolderError(f"{argument}: expected every run in {path} to have {', '.join(required)}; "
                                 f"run {number} lacks {', '.join(missing)}")
        for key, value in _LATER_FIELDS.items():
            run.setdefault(key, value)
        later = [key for key in (*_LATER_FIELDS, *_LATER_METRICS, *_PREDICTIONS) if key in run]
        if "test_logits" in run and "test_targets" not in run:
            raise RunFolderError(f"{argument}: expected run {number} in {path} to have test_targets "
                                 "beside its test_logits; it lacks them")
        for key in (*required, *later):
            problem = _field_problem(run, key)
            if problem is not None:
                shown = json.dumps(run[key])
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise RunFolderError(f"{argument}: expected '{key}' of run {number} in {path} to be "
                                     f"{problem}, got {shown}")
    return payload


def load_results(folder: Path) -> dict[str, Any]:
    """:func:`read_results`, and at least one finished training (what the report draws).

    Args:
        folder: a folder written by ``labelsmooth run``.

    Returns:
        The payload, with at least one run.

    Raises:
        RunFolderError: as :func:`read_results`, or no training has finished yet.
        CommandError: the file cannot be read.
    """
    payload = read_results(folder)
    if not payload["runs"]:
        raise RunFolderError(f"RUN_DIR: {folder / RESULTS_JSON} holds no finished training yet")
    return payload


@dataclass(frozen=True)
class Variant:
    """The runs (one per seed) that share their treatment values, e.g. smoothing=0.1, or their
    method and its strength.

    Example:
        >>> variant = Variant({"smoothing": 0.1}, [{"accuracy": 0.9}, {"accuracy": 0.94}])
        >>> variant.label, round(variant.mean("accuracy"), 2), round(variant.std("accuracy"), 4)
        ('smoothing=0.1', 0.92, 0.0283)
        >>> Variant({"method": "ls", "strength": 0.1}, []).label
        'ls s=0.1'
    """

    treatment: dict[str, Any]
    runs: list[dict[str, Any]]

    @property
    def label(self) -> str:
        if "method" in self.treatment:
            return method_label(self.treatment["method"], self.treatment["strength"],
                                self.treatment.get("warmup", 0.0))
        return ", ".join(f"{name}={value:g}" for name, value in self.treatment.items())

    def values(self, metric: str) -> list[float]:
        return [float(run[metric]) for run in self.runs]

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.values(metric))

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (0 with a single seed)."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else 0.0


def group_runs(runs: Sequence[dict[str, Any]]) -> list[Variant]:
    """Group runs by their :data:`TREATMENTS` values, sorted by those values.

    Smoothing is always a treatment; the others (``mixup``, ``cutmix``) only when some run uses
    them, so a smoothing-only comparison (or an older results.json) reads as before. Runs of
    ``--method`` are grouped by method, strength and warm-up instead, in the order of
    :data:`~labelsmooth.cli.experiment.METHODS`.

    Args:
        runs: result rows, each with ``smoothing`` (and optionally ``mixup``, ``cutmix``).

    Returns:
        One :class:`Variant` per distinct treatment, in increasing order.

    Example:
        >>> runs = [{"smoothing": s, "seed": seed} for seed in (0, 1) for s in (0.1, 0.0)]
        >>> [(variant.label, len(variant.runs)) for variant in group_runs(runs)]
        [('smoothing=0', 2), ('smoothing=0.1', 2)]
    """
    if any(run.get("method") for run in runs):
        methods: dict[tuple[int, float, float], list[dict[str, Any]]] = {}
        for run in runs:
            method_key = (METHODS.index(run["method"]), float(run["strength"]) + 0.0,
                          float(run.get("warmup", 0.0)) + 0.0)
            methods.setdefault(method_key, []).append(run)
        return [Variant({"method": METHODS[index], "strength": strength, "warmup": warmup},
                        methods[index, strength, warmup])
                for index, strength, warmup in sorted(methods)]
    names = [name for name in TREATMENTS
             if name == TREATMENTS[0] or any(float(run.get(name, 0.0)) for run in runs)]
    groups: dict[tuple[float, ...], list[dict[str, Any]]] = {}
    for run in runs:
        # + 0.0 turns -0.0 into 0.0, so "--smoothing -0" is labelled "0".
        key = tuple(float(run.get(name, 0.0)) + 0.0 for name in names)
        groups.setdefault(key, []).append(run)
    return [Variant(dict(zip(names, key, strict=True)), groups[key]) for key in sorted(groups)]


def _fmt(value: float, info: MetricInfo) -> str:
    return f"{value * info.scale:.{info.digits}f}"


# The columns that come from the fitted temperature, marked when the fit failed.
TS_METRICS = ("temperature", "ece_ts", "nll_ts")
FAILED_FIT = "⚠"


def temperature_problem(run: dict[str, Any]) -> str | None:
    """Why the run's temperature scaling is not a calibration result, or ``None`` if it is.

    The fit failed when the temperature ends on an end of its search range (the validation NLL
    kept falling: a tiny or separable validation split, or predictions unrelated to the labels)
    or when the test NLL after scaling is worse than before it.

    Example:
        >>> temperature_problem({"temperature": 100.0, "nll": 2.0, "nll_ts": 2.3})
        'the fitted temperature 100 is the end of its search range [0.01, 100]'
        >>> temperature_problem({"temperature": 1.5, "nll": 0.3, "nll_ts": 0.28}) is None
        True
    """
    low, high = TEMPERATURE_RANGE
    temperature = float(run["temperature"])
    if not low * (1 + 1e-6) < temperature < high * (1 - 1e-6):
        return (f"the fitted temperature {temperature:.4g} is the end of its search range "
                f"[{low:g}, {high:g}]")
    if float(run["nll_ts"]) > float(run["nll"]):
        return (f"the test NLL after temperature scaling, {float(run['nll_ts']):.3f}, is worse than "
                f"before it, {float(run['nll']):.3f}")
    return None


def temperature_warnings(variants: Sequence[Variant]) -> list[str]:
    """One warning per training whose temperature scaling failed (see :func:`temperature_problem`)."""
    lines = []
    for variant in variants:
        for run in variant.runs:
            problem = temperature_problem(run)
            if problem is not None:
                lines.append(
                    f"temperature scaling failed at {variant.label}, seed {run.get('seed')}: {problem}; "
                    f"the validation split ({float(run['val_fraction']):g} of the training set) is too "
                    "small or its predictions too poor to fit a temperature, so T, ECE after TS and NLL "
                    f"after TS of {variant.label} (marked {FAILED_FIT}) are not calibration results.")
    return lines


def _fit_failed(variant: Variant) -> bool:
    return any(temperature_problem(run) is not None for run in variant.runs)


def _metric_bootstrap(name: str, temperatures: torch.Tensor) -> Any:
    """``metric(logits, targets)`` of the ``(N, S, C)`` logits of S seeds: the mean over seeds
    of the test-set metric ``name`` (``ece_ts`` and ``nll_ts`` at each seed's temperature)."""
    base, scale = (name[:-3], True) if name in ("ece_ts", "nll_ts") else (name, False)
    metric = TEST_METRICS[base]

    def seed_mean(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = [metric(logits[:, seed] / float(temperatures[seed]) if scale else logits[:, seed], targets)
                  for seed in range(logits.shape[1])]
        return torch.stack([value.double() for value in values]).mean()

    return seed_mean


def bootstrap_intervals(variant: Variant) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the variant's test-set metrics, over the test set.

    Each of :data:`BOOTSTRAP_SAMPLES` resamples draws the test set's rows with replacement (from
    a generator seeded by :data:`BOOTSTRAP_SEED`, so every variant and metric sees the same
    resamples); the metric is computed for every seed on the same rows and averaged over the
    seeds, as in the table. The interval holds the middle :data:`BOOTSTRAP_CONFIDENCE` of those
    means: how much the number would move on another test set of the same size. The fitted
    temperature and the throughput are not test-set metrics and get none.

    Args:
        variant: from :func:`group_runs`; its runs hold ``test_logits`` and ``test_targets``.

    Returns:
        ``{metric: (low, high)}`` for every metric of :data:`TABLE_METRICS` computed on the test
        set that the runs report; empty when the runs hold no logits (a results.json written
        before they were saved).
    """
    runs = variant.runs
    if not runs or not all("test_logits" in run for run in runs):
        return {}
    if any(run["test_targets"] != runs[0]["test_targets"] for run in runs):
        return {}
    logits = torch.stack([torch.tensor(run["test_logits"], dtype=torch.float32) for run in runs], dim=1)
    targets = torch.tensor(runs[0]["test_targets"])
    temperatures = torch.tensor([float(run["temperature"]) for run in runs], dtype=torch.float64)
    intervals = {}
    # Thousands of metrics of a few thousand numbers each: more threads only add synchronisation.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in TABLE_METRICS:
            if name not in (*TEST_METRICS, "ece_ts", "nll_ts") or not all(name in run for run in runs):
                continue
            result = bootstrap_interval(_metric_bootstrap(name, temperatures), logits, targets,
                                        num_samples=BOOTSTRAP_SAMPLES, confidence=BOOTSTRAP_CONFIDENCE,
                                        generator=torch.Generator().manual_seed(BOOTSTRAP_SEED))
            intervals[name] = (result.low, result.high)
    finally:
        torch.set_num_threads(threads)
    return intervals


def _shown_metrics(variants: Sequence[Variant]) -> list[str]:
    """The columns of :data:`TABLE_METRICS` every run reports (an older results.json lacks some)."""
    return [metric for metric in TABLE_METRICS
            if all(metric in run for variant in variants for run in variant.runs)]


def _cell(variant: Variant, metric: str, intervals: dict[str, tuple[float, float]] | None = None) -> str:
    info = METRIC_INFO[metric]
    mark = f" {FAILED_FIT}" if metric in TS_METRICS and _fit_failed(variant) else ""
    text = _fmt(variant.mean(metric), info)
    if len(variant.runs) >= 2:
        text += f" ± {_fmt(variant.std(metric), info)}"
    if intervals and metric in intervals:
        low, high = intervals[metric]
        text += f" [{_fmt(low, info)}, {_fmt(high, info)}]"
    return text + mark


Intervals = Sequence[dict[str, tuple[float, float]]]


def summary_table(
    variants: Sequence[Variant], intervals: Intervals | None = None
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings) of the mean ± std table: one row per variant (``summary.md``).

    Args:
        variants: from :func:`group_runs`.
        intervals: :func:`bootstrap_intervals` of each variant, shown as ``[low, high]`` after
            the mean ± std. Default: none shown.

    Returns:
        ``(headers, rows)``: the treatments, ``seeds``, then the metric columns.

    Example:
        >>> from labelsmooth.cli.experiment import METRICS
        >>> run = dict.fromkeys(METRICS, 1.0) | {"seed": 0}
        >>> runs = [run | {"smoothing": 0.0, "accuracy": 0.90, "confidence": 0.95},
        ...         run | {"smoothing": 0.1, "accuracy": 0.94, "confidence": 0.80}]
        >>> headers, rows = summary_table(group_runs(runs))
        >>> headers[:3], rows[1][:3]
        (['smoothing', 'seeds', 'top-1 (%)'], ['0.1', '1', '94.0'])
    """
    shown = _shown_metrics(variants)
    spans = intervals or [{} for _ in variants]
    if variants and "method" in variants[0].treatment:
        headers = ["method", "seeds", *(TABLE_HEADERS[m] for m in shown)]
        rows = [[v.label, str(len(v.runs)), *(_cell(v, m, span) for m in shown)]
                for v, span in zip(variants, spans, strict=True)]
        return headers, rows
    treatments = variants[0].treatment if variants else TREATMENTS[:1]
    headers = [*treatments, "seeds", *(TABLE_HEADERS[m] for m in shown)]
    rows = [
        [*(f"{value:g}" for value in v.treatment.values()), str(len(v.runs)),
         *(_cell(v, m, span) for m in shown)]
        for v, span in zip(variants, spans, strict=True)
    ]
    return headers, rows


def metric_table(
    variants: Sequence[Variant], intervals: Intervals | None = None
) -> tuple[list[str], list[list[str]]]:
    """The same numbers transposed (one row per metric, one column per variant): narrow enough
    for a terminal.

    Args:
        variants: from :func:`group_runs`.
        intervals: as for :func:`summary_table`.

    Returns:
        ``(headers, rows)``: ``metric`` and the variants' labels, then one row per metric.

    Example:
        >>> from labelsmooth.cli.experiment import METRICS
        >>> run = dict.fromkeys(METRICS, 1.0) | {"seed": 0}
        >>> runs = [run | {"smoothing": 0.0, "accuracy": 0.90, "confidence": 0.95},
        ...         run | {"smoothing": 0.1, "accuracy": 0.94, "confidence": 0.80}]
        >>> headers, rows = metric_table(group_runs(runs))
        >>> headers, rows[0]
        (['metric', 'smoothing=0', 'smoothing=0.1'], ['top-1 (%)', '90.0', '94.0'])
    """
    spans = intervals or [{} for _ in variants]
    headers = ["metric", *(v.label for v in variants)]
    rows = [[TABLE_HEADERS[m], *(_cell(v, m, span) for v, span in zip(variants, spans, strict=True))]
            for m in _shown_metrics(variants)]
    return headers, rows


def _is_baseline(variant: Variant) -> bool:
    if "method" in variant.treatment:
        return bool(variant.treatment["method"] == "ce")
    return all(value == 0 for value in variant.treatment.values())


def _noise_clause(base: Variant, other: Variant, metric: str) -> str:
    n_base, n_other = len(base.runs), len(other.runs)
    if min(n_base, n_other) < 2:
        return "one seed, no noise estimate"
    standard_error = math.sqrt(base.std(metric) ** 2 / n_base + other.std(metric) ** 2 / n_other)
    difference = abs(other.mean(metric) - base.mean(metric))
    if difference > 2 * standard_error:
        return "beyond seed noise"
    return "within seed noise"


def _change(base: Variant, other: Variant, metric: str) -> str:
    info = METRIC_INFO[metric]
    before, after = base.mean(metric), other.mean(metric)
    if metric == "samples_per_s":
        relative = (after / before - 1) * 100 if before else float("nan")
        delta = f"{relative:+.1f}%"
    elif info.unit == "%":
        delta = f"{(after - before) * 100:+.1f} points"
    else:
        delta = f"{after - before:+.{info.digits}f}"
    if _fmt(after, info) == _fmt(before, info):
        verdict = ", the same at this precision"
    elif info.higher_is_better is None:
        verdict = ""
    else:
        verdict = "better" if (after > before) == info.higher_is_better else "worse"
        verdict = f", {verdict}"
    return (f"{_fmt(before, info)}{info.unit} at {base.label} → {_fmt(after, info)}{info.unit} "
            f"at {other.label} ({delta}{verdict}, {_noise_clause(base, other, metric)})")


def _confidence_sentence(variant: Variant) -> str:
    """Over- or under-confident on the test set, and whether the fitted temperature agrees."""
    accuracy, confidence = variant.mean("accuracy"), variant.mean("confidence")
    temperature = variant.mean("temperature")
    gap = (accuracy - confidence) * 100
    state = f"mean confidence {confidence * 100:.1f}% vs. accuracy {accuracy * 100:.1f}%"
    if temperature < 1:
        scaling = f"the fitted temperature T = {temperature:.2f} < 1 sharpens its predictions"
    elif temperature > 1:
        scaling = f"the fitted temperature T = {temperature:.2f} > 1 softens its predictions"
    else:
        scaling = "the fitted temperature is 1"
    if _fit_failed(variant):
        scaling = f"its fitted temperature is not meaningful ({FAILED_FIT}, see the warning)"
    if gap > 1:
        return (f"At {variant.label} the model is **under-confident** on the test set ({state}): "
                f"its ECE measures under-confidence; {scaling}.")
    if gap < -1:
        return (f"At {variant.label} the model is **over-confident** on the test set ({state}): "
                f"its ECE measures over-confidence; {scaling}.")
    return (f"At {variant.label} the model's confidence matches its accuracy on average ({state}); "
            f"{scaling}.")


def metric_sentences(variants: Sequence[Variant]) -> list[str]:
    """One plain sentence per metric and variant, against the no-smoothing baseline.

    The baseline is the variant whose treatments are all 0, or the ``ce`` method (else the
    first); every other variant
    is compared with it, whichever way the metric moved. Then one sentence per variant on
    whether it is over- or under-confident.

    Args:
        variants: from :func:`group_runs`.

    Returns:
        Markdown sentences (bold metric names).

    Example:
        >>> from labelsmooth.cli.experiment import METRICS
        >>> run = dict.fromkeys(METRICS, 1.0) | {"seed": 0}
        >>> runs = [run | {"smoothing": 0.0, "accuracy": 0.90, "confidence": 0.95},
        ...         run | {"smoothing": 0.1, "accuracy": 0.94, "confidence": 0.80}]
        >>> sentences = metric_sentences(group_runs(runs))
        >>> print(sentences[0])
        **Top-1 accuracy**: 90.0% at smoothing=0 → 94.0% at smoothing=0.1
        (+4.0 points, better, one seed, no noise estimate).
        >>> print(sentences[-1])
        At smoothing=0.1 the model is **under-confident** on the test set (mean confidence 80.0% vs.
        accuracy 94.0%): its ECE measures under-confidence; the fitted temperature is 1.
    """
    if not variants:
        return []
    base = next((v for v in variants if _is_baseline(v)), variants[0])
    lines = []
    for other in variants:
        if other is base:
            continue
        for metric in _shown_metrics(variants):
            info = METRIC_INFO[metric]
            failed = metric in TS_METRICS and (_fit_failed(base) or _fit_failed(other))
            mark = f" {FAILED_FIT} Temperature scaling failed, see the warning." if failed else ""
            title = info.title[0].upper() + info.title[1:]
            lines.append(f"**{title}**: {_change(base, other, metric)}.{mark}")
    lines.extend(_confidence_sentence(v) for v in variants)
    return lines


def _intervals_note(intervals: Intervals) -> str:
    if not any(intervals):
        return ""
    return (f" [low, high]: {BOOTSTRAP_CONFIDENCE:.0%} percentile bootstrap interval of the mean over "
            f"seeds, {BOOTSTRAP_SAMPLES} resamples of the test set (the same resamples for every seed "
            "and row): how much the number would move on another test set of this size, not over "
            "seeds; T and samples/s are not test-set metrics and have none.")


def _methods_note(variants: Sequence[Variant]) -> str:
    if not variants or "method" not in variants[0].treatment:
        return ""
    return (" Every method trains the same model on the same data with the same seeds; ts is the ce "
            "model with its logits divided by the temperature fitted on the validation split (its own "
            "T column, fitted again, is then about 1).")


def summary_markdown(payload: dict[str, Any], intervals: Intervals | None = None) -> str:
    """The ``summary.md`` text: what was run, the table, the sentences, the pictures.

    Args:
        payload: as loaded by :func:`load_results`.
        intervals: :func:`bootstrap_intervals` of each variant of ``group_runs(payload["runs"])``.
            Default: computed here.

    Returns:
        Markdown.
    """
    runs = payload["runs"]
    variants = group_runs(runs)
    first = runs[0]
    if intervals is None:
        intervals = [bootstrap_intervals(variant) for variant in variants]
    headers, rows = summary_table(variants, intervals)
    noise = f", label noise {first['label_noise']:g}" if first.get("label_noise") else ""
    lines = [
        "# labelsmooth run summary",
        "",
        f"{first['dataset']}, {first['model']}, {first['epochs']} epochs, batch {first['batch_size']}, "
        f"lr {first['lr']:g}{noise}; {len(runs)} trainings "
        f"({payload.get('status', 'complete')}). Test-set metrics, mean ± std over seeds; "
        f"ECE uses 15 equal-width bins, adaptive ECE 15 equal-mass bins, classwise ECE 15 "
        f"equal-width bins per class (averaged over classes); TS = temperature scaling fitted on a "
        f"{first['val_fraction']:g} validation split of the training set. A change is "
        f"*beyond seed noise* when it exceeds two standard errors of the difference of the means. "
        f"samples/s counts training steps only (no evaluation) and leaves out the first epoch "
        f"(warm-up).{_methods_note(variants)}{_intervals_note(intervals)}",
        "",
        *(f"> **Warning**: {warning}\n" for warning in temperature_warnings(variants)),
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "## What changed" if "method" in variants[0].treatment else "## What smoothing changed",
        "",
        *(f"- {sentence}" for sentence in metric_sentences(variants)),
        "",
        "![reliability](reliability.png)",
        "![penultimate](penultimate.png)",
        "![curves](curves.png)",
        "",
    ]
    return "\n".join(lines)


def write_summary(folder: Path, payload: dict[str, Any], intervals: Intervals | None = None) -> str:
    """Write :func:`summary_markdown` to ``folder/summary.md`` (atomically).

    Args:
        folder: the run folder.
        payload: as loaded by :func:`load_results`.
        intervals: as for :func:`summary_markdown`.

    Returns:
        The text written.
    """
    text = summary_markdown(payload, intervals)
    atomic_write(folder / SUMMARY_MD, text)
    return text
