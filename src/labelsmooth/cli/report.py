"""The run folder: ``results.json`` / ``results.csv`` written after every training, and the
summary (mean ± std per variant, one plain sentence per metric) as Markdown.

Everything here is plain Python on the saved rows, so ``labelsmooth report RUN_DIR`` redraws the
same summary from disk.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelsmooth.cli.errors import CommandError
from labelsmooth.cli.experiment import METRICS, TREATMENTS, RunConfig

__all__ = [
    "MetricInfo",
    "Variant",
    "group_runs",
    "load_results",
    "metric_sentences",
    "metric_table",
    "summary_markdown",
    "summary_table",
    "write_results",
    "write_summary",
]

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
SUMMARY_MD = "summary.md"
CONFIG_FIELDS = tuple(RunConfig.__dataclass_fields__)


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
    "brier": MetricInfo("Brier score", 1, "", 3, False),
    "confidence": MetricInfo("mean confidence", 100, "%", 1, None),
    "temperature": MetricInfo("fitted temperature", 1, "", 2, None),
    "ece_ts": MetricInfo("ECE after temperature scaling", 100, "%", 1, False),
    "nll_ts": MetricInfo("NLL after temperature scaling", 1, "", 3, False),
    "samples_per_s": MetricInfo("training throughput (samples/s)", 1, "", 0, True),
}
TABLE_METRICS = ("accuracy", "nll", "ece", "brier", "ece_ts", "nll_ts", "temperature",
                 "confidence", "samples_per_s")
TABLE_HEADERS = {
    "accuracy": "top-1 (%)",
    "nll": "NLL",
    "ece": "ECE (%)",
    "brier": "Brier",
    "ece_ts": "ECE after TS (%)",
    "nll_ts": "NLL after TS",
    "temperature": "T",
    "confidence": "confidence (%)",
    "samples_per_s": "samples/s",
}


def _atomic_write(path: Path, text: str) -> None:
    # Write beside the target and rename, so an interrupted write never leaves half a file.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_results(folder: Path, payload: dict[str, Any]) -> None:
    """Write ``results.json`` (everything) and ``results.csv`` (one row per run: config, metrics)."""
    _atomic_write(folder / RESULTS_JSON, json.dumps(payload, indent=1) + "\n")
    columns = [*CONFIG_FIELDS, *METRICS]
    temporary = folder / (RESULTS_CSV + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(payload["runs"])
    os.replace(temporary, folder / RESULTS_CSV)


def load_results(folder: Path) -> dict[str, Any]:
    """Read a run folder's ``results.json``; a missing or malformed file is a :class:`CommandError`."""
    path = folder / RESULTS_JSON
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"RUN_DIR: expected a folder written by `labelsmooth run`, "
                           f"got {str(folder)!r} (no {RESULTS_JSON})") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"RUN_DIR: cannot read {path}: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("runs"), list):
        raise CommandError(f"RUN_DIR: {path} has no list of runs")
    if not payload["runs"]:
        raise CommandError(f"RUN_DIR: {path} holds no finished training yet")
    required = (*CONFIG_FIELDS, *METRICS, "history", "reliability", "projection")
    for number, run in enumerate(payload["runs"], start=1):
        missing = [key for key in required if not isinstance(run, dict) or key not in run]
        if missing:
            raise CommandError(f"RUN_DIR: expected every run in {path} to have {', '.join(required)}; "
                               f"run {number} lacks {', '.join(missing)}")
    return payload


@dataclass(frozen=True)
class Variant:
    """The runs (one per seed) that share their treatment values, e.g. smoothing=0.1."""

    treatment: dict[str, float]
    runs: list[dict[str, Any]]

    @property
    def label(self) -> str:
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
    them, so a smoothing-only comparison (or an older results.json) reads as before.
    """
    names = [name for name in TREATMENTS
             if name == TREATMENTS[0] or any(float(run.get(name, 0.0)) for run in runs)]
    groups: dict[tuple[float, ...], list[dict[str, Any]]] = {}
    for run in runs:
        key = tuple(float(run.get(name, 0.0)) for name in names)
        groups.setdefault(key, []).append(run)
    return [Variant(dict(zip(names, key, strict=True)), groups[key]) for key in sorted(groups)]


def _fmt(value: float, info: MetricInfo) -> str:
    return f"{value * info.scale:.{info.digits}f}"


def _cell(variant: Variant, metric: str) -> str:
    info = METRIC_INFO[metric]
    if len(variant.runs) < 2:
        return _fmt(variant.mean(metric), info)
    return f"{_fmt(variant.mean(metric), info)} ± {_fmt(variant.std(metric), info)}"


def summary_table(variants: Sequence[Variant]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings) of the mean ± std table."""
    treatments = variants[0].treatment if variants else TREATMENTS[:1]
    headers = [*treatments, "seeds", *(TABLE_HEADERS[m] for m in TABLE_METRICS)]
    rows = [
        [*(f"{value:g}" for value in v.treatment.values()), str(len(v.runs)),
         *(_cell(v, m) for m in TABLE_METRICS)]
        for v in variants
    ]
    return headers, rows


def metric_table(variants: Sequence[Variant]) -> tuple[list[str], list[list[str]]]:
    """The same numbers transposed (one row per metric, one column per variant): narrow enough
    for a terminal."""
    headers = ["metric", *(v.label for v in variants)]
    rows = [[TABLE_HEADERS[m], *(_cell(v, m) for v in variants)] for m in TABLE_METRICS]
    return headers, rows


def _is_baseline(variant: Variant) -> bool:
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

    The baseline is the variant whose treatments are all 0 (else the first); every other variant
    is compared with it, whichever way the metric moved. Then one sentence per variant on
    whether it is over- or under-confident.
    """
    if not variants:
        return []
    base = next((v for v in variants if _is_baseline(v)), variants[0])
    lines = []
    for other in variants:
        if other is base:
            continue
        for metric in TABLE_METRICS:
            info = METRIC_INFO[metric]
            lines.append(f"**{info.title[0].upper() + info.title[1:]}**: {_change(base, other, metric)}.")
    lines.extend(_confidence_sentence(v) for v in variants)
    return lines


def summary_markdown(payload: dict[str, Any]) -> str:
    """The ``summary.md`` text: what was run, the table, the sentences, the pictures."""
    runs = payload["runs"]
    variants = group_runs(runs)
    first = runs[0]
    headers, rows = summary_table(variants)
    noise = f", label noise {first['label_noise']:g}" if first.get("label_noise") else ""
    lines = [
        "# labelsmooth run summary",
        "",
        f"{first['dataset']}, {first['model']}, {first['epochs']} epochs, batch {first['batch_size']}, "
        f"lr {first['lr']:g}{noise}; {len(runs)} trainings "
        f"({payload.get('status', 'complete')}). Test-set metrics, mean ± std over seeds; "
        f"ECE uses 15 equal-width bins; TS = temperature scaling fitted on a "
        f"{first['val_fraction']:g} validation split of the training set. A change is "
        f"*beyond seed noise* when it exceeds two standard errors of the difference of the means. "
        f"samples/s counts training steps only (no evaluation) and leaves out the first epoch "
        f"(warm-up).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "## What smoothing changed",
        "",
        *(f"- {sentence}" for sentence in metric_sentences(variants)),
        "",
        "![reliability](reliability.png)",
        "![penultimate](penultimate.png)",
        "![curves](curves.png)",
        "",
    ]
    return "\n".join(lines)


def write_summary(folder: Path, payload: dict[str, Any]) -> str:
    text = summary_markdown(payload)
    _atomic_write(folder / SUMMARY_MD, text)
    return text
