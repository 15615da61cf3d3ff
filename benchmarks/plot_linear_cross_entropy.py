"""Draw ``benchmarks/results/linear_cross_entropy.csv`` (the latest full run) as a PNG.

Run ``python -m benchmarks.plot_linear_cross_entropy [--csv PATH] [--output PATH] [--run-id ID]``.
Left panel: forward + backward time relative to the materialised path (logits, then
``F.cross_entropy``) for each shape. Right panel: peak extra memory in units of the float32
logits' bytes, the gradients of input and weight included. Dashed lines: the targets (1.10 and
0.45).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import load_run

__all__ = ["main", "plot"]

RESULTS = Path(__file__).resolve().parent / "results"
CONTENDER_ORDER = ["materialised", "compiled", "torch_chunked_s0", "torch_chunked_s01", "ours"]
TIME_TARGET = 1.10
MEMORY_TARGET = 0.45


def plot(rows: Sequence[dict[str, str]], output: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit("plotting needs matplotlib: pip install 'labelsmooth[cli]'") from error

    def key(row: dict[str, str]) -> str:
        return f"{row['rows']}x{row['hidden']}->{row['classes']}\n{row['dtype']}"

    shapes = list(dict.fromkeys(key(r) for r in rows))
    contenders = [c for c in CONTENDER_ORDER if any(r["contender"] == c for r in rows)]

    def value(shape: str, contender: str, field: str) -> float:
        for row in rows:
            if key(row) == shape and row["contender"] == contender and row[field]:
                return float(row[field])
        return float("nan")

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / len(contenders)
    for index, contender in enumerate(contenders):
        offsets = [i + (index - (len(contenders) - 1) / 2) * width for i in range(len(shapes))]
        left.bar(offsets, [value(s, contender, "ratio_to_materialised") for s in shapes], width,
                 label=contender)
        right.bar(offsets, [value(s, contender, "peak_extra_over_logits") for s in shapes],
                  width, label=contender)
    left.axhline(TIME_TARGET, color="k", linestyle="--", linewidth=1, label="target")
    right.axhline(MEMORY_TARGET, color="k", linestyle="--", linewidth=1)
    left.set_title("forward + backward time / materialised (median)")
    right.set_title("peak extra memory / float32 logits bytes")
    for axis in (left, right):
        axis.set_xticks(range(len(shapes)), shapes)
        axis.grid(axis="y", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
                  frameon=False)
    first = rows[0]
    figure.suptitle(
        f"label-smoothed linear cross-entropy, {first['machine']}, {first['cpu_count']} CPUs, "
        f"torch {first['torch_version']}, {first['date']}, commit {first['git_commit']}",
        fontsize=9)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_linear_cross_entropy")
    parser.add_argument("--csv", type=Path, default=RESULTS / "linear_cross_entropy.csv")
    parser.add_argument("--output", type=Path, default=RESULTS / "linear_cross_entropy.png")
    parser.add_argument("--run-id", default=None,
                        help="the run to draw (default: the latest non-quick run)")
    args = parser.parse_args(argv)
    output = plot(load_run(args.csv, args.run_id), args.output)
    print(f"wrote {output}")
    return output


if __name__ == "__main__":
    main()
