"""The run folder's pictures, drawn from the saved rows (so ``labelsmooth report`` can redraw them).

* ``reliability.png``: one reliability diagram per variant, bins pooled over seeds.
* ``penultimate.png``: penultimate activations of three classes in the plane of their templates
  (Mueller, Kornblith and Hinton 2019, figure 1), one panel per variant, first seed.
* ``curves.png``: training loss, test accuracy and test NLL per epoch (mean over seeds, min-max band).

matplotlib is imported lazily, through its object-oriented ``Figure`` (no pyplot global state).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelsmooth.cli.errors import require
from labelsmooth.cli.folder import atomic_write
from labelsmooth.cli.report import Variant

__all__ = ["draw_all", "draw_curves", "draw_penultimate", "draw_reliability"]

_CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def _figure(panels: int, *, width: float = 3.6, height: float = 3.4) -> tuple[Any, list[Any]]:
    figure_module = require("matplotlib.figure", "matplotlib")
    figure = figure_module.Figure(figsize=(width * panels, height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Any, path: Path) -> None:
    # Rendered in memory, then written atomically: never half a picture on disk.
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=80)
    atomic_write(path, image.getvalue())


def _pooled_bins(variant: Variant) -> tuple[list[float], list[float], list[float]]:
    """Counts, accuracy and confidence per bin, pooled over the variant's seeds."""
    per_run = [run["reliability"] for run in variant.runs]
    bins = len(per_run[0]["count"])
    counts = [sum(r["count"][b] for r in per_run) for b in range(bins)]
    accuracy = [sum(r["count"][b] * r["accuracy"][b] for r in per_run) / counts[b] if counts[b] else 0.0
                for b in range(bins)]
    confidence = [sum(r["count"][b] * r["confidence"][b] for r in per_run) / counts[b] if counts[b]
                  else 0.0 for b in range(bins)]
    return counts, accuracy, confidence


def draw_reliability(variants: Sequence[Variant], path: Path) -> None:
    """Bars: accuracy per confidence bin; red hatching: the gap to the bin's mean confidence
    (above the bar: over-confident, inside it: under-confident).

    Args:
        variants: from :func:`~labelsmooth.cli.report.group_runs`, one panel each.
        path: the PNG file to write.
    """
    figure, axes = _figure(len(variants))
    for ax, variant in zip(axes, variants, strict=True):
        counts, accuracy, confidence = _pooled_bins(variant)
        width = 1.0 / len(counts)
        lefts = [b * width for b in range(len(counts))]
        filled = [b for b in range(len(counts)) if counts[b]]
        ax.bar([lefts[b] for b in filled], [accuracy[b] for b in filled], width=width, align="edge",
               color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
        # Hatched, unfilled: an under-confident gap lies over the accuracy bar and must stay visible.
        ax.bar([lefts[b] for b in filled], [confidence[b] - accuracy[b] for b in filled],
               bottom=[accuracy[b] for b in filled], width=width, align="edge", facecolor="none",
               edgecolor="tab:red", hatch="////", linewidth=0.8, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1)
        ece = variant.mean("ece") * 100
        ax.set_title(f"{variant.label}\nECE {ece:.1f}%, accuracy {variant.mean('accuracy') * 100:.1f}%",
                     fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_aspect("equal")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    _save(figure, path)


def draw_penultimate(variants: Sequence[Variant], path: Path) -> None:
    """Scatter of projected activations per class (first seed), templates as crosses.

    Args:
        variants: from :func:`~labelsmooth.cli.report.group_runs`, one panel each.
        path: the PNG file to write.
    """
    figure, axes = _figure(len(variants))
    for ax, variant in zip(axes, variants, strict=True):
        run = min(variant.runs, key=lambda r: r["seed"])
        projection = run["projection"]
        if projection is None:
            ax.set_title(f"{variant.label} (seed {run['seed']})", fontsize=10)
            ax.text(0.5, 0.5, "the three templates\ndo not span a plane", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        for colour, cls in zip(_CLASS_COLOURS, projection["classes"], strict=True):
            points = [p for p, label in zip(projection["points"], projection["labels"], strict=True)
                      if label == cls]
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=6, alpha=0.6, color=colour,
                       label=f"class {cls}")
        for colour, (x, y) in zip(_CLASS_COLOURS, projection["templates"], strict=True):
            ax.scatter([x], [y], marker="X", s=90, color=colour, edgecolor="black", linewidth=1)
        ax.set_title(f"{variant.label} (seed {run['seed']})", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("template plane, axis 1")
    axes[0].set_ylabel("template plane, axis 2")
    axes[0].legend(loc="best", fontsize=8, markerscale=2)
    figure.suptitle("Penultimate activations projected onto the plane of three class templates "
                    "(X = template)", fontsize=10)
    _save(figure, path)


def draw_curves(variants: Sequence[Variant], path: Path) -> None:
    """Training loss, test accuracy and test NLL per epoch: mean over seeds with a min-max band,
    one colour per variant, one panel per quantity.

    Args:
        variants: from :func:`~labelsmooth.cli.report.group_runs`.
        path: the PNG file to write.
    """
    panels = (("train_loss", "training loss (as optimised)"), ("test_accuracy", "test accuracy"),
              ("test_nll", "test NLL"))
    figure, axes = _figure(len(panels), width=3.8)
    for index, variant in enumerate(variants):
        colour = f"C{index}"
        for ax, (key, _) in zip(axes, panels, strict=True):
            series = [run["history"][key] for run in variant.runs]
            epochs = range(1, min(len(s) for s in series) + 1)
            columns = [[s[e - 1] for s in series] for e in epochs]
            ax.plot(list(epochs), [sum(c) / len(c) for c in columns], color=colour, label=variant.label)
            if len(series) > 1:
                ax.fill_between(list(epochs), [min(c) for c in columns], [max(c) for c in columns],
                                color=colour, alpha=0.2, linewidth=0)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(figure, path)


def draw_all(variants: Sequence[Variant], folder: Path) -> list[Path]:
    """Draw ``reliability.png``, ``penultimate.png`` and ``curves.png`` into ``folder``.

    Args:
        variants: from :func:`~labelsmooth.cli.report.group_runs`.
        folder: the run folder.

    Returns:
        The three paths.
    """
    paths = [folder / "reliability.png", folder / "penultimate.png", folder / "curves.png"]
    draw_reliability(variants, paths[0])
    draw_penultimate(variants, paths[1])
    draw_curves(variants, paths[2])
    return paths
