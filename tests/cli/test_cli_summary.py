"""The summary's sentences on hand-made results: honest whichever way a metric moved."""

from __future__ import annotations

from typing import Any

from labelsmooth.cli.report import group_runs, metric_sentences, summary_markdown


def _runs(smoothing: float, **metrics: list[float]) -> list[dict[str, Any]]:
    """One run per seed; metrics not given get the same value in every variant."""
    defaults = {"accuracy": [0.9] * 3, "nll": [0.3] * 3, "ece": [0.05] * 3, "brier": [0.1] * 3,
                "confidence": [0.9] * 3, "temperature": [1.0] * 3, "ece_ts": [0.02] * 3,
                "nll_ts": [0.25] * 3, "train_time_s": [1.0] * 3, "samples_per_s": [1000.0] * 3}
    values = {**defaults, **metrics}
    return [{"dataset": "digits", "model": "mlp", "smoothing": smoothing, "seed": seed, "epochs": 1,
             "batch_size": 32, "lr": 1e-3, "label_noise": 0.0, "val_fraction": 0.1,
             **{name: series[seed] for name, series in values.items()}}
            for seed in range(3)]


BASELINE = _runs(0.0, accuracy=[0.89, 0.90, 0.91], confidence=[0.95] * 3, temperature=[1.5] * 3,
                 ece=[0.03, 0.04, 0.05], nll=[0.31, 0.32, 0.33])
# Better accuracy and NLL, worse ECE, slower, under-confident.
SMOOTHED = _runs(0.1, accuracy=[0.93, 0.94, 0.95], confidence=[0.80] * 3, temperature=[0.5] * 3,
                 ece=[0.14, 0.15, 0.16], nll=[0.20, 0.30, 0.40], nll_ts=[0.15] * 3, samples_per_s=[950.0] * 3)
# Worse accuracy, confidence matching it.
OVERSMOOTHED = _runs(0.5, accuracy=[0.80] * 3, confidence=[0.805] * 3)


def test_each_metric_is_said_to_get_better_or_worse_whichever_way_it_moved() -> None:
    sentences = metric_sentences(group_runs(BASELINE + SMOOTHED + OVERSMOOTHED))
    # Hand-computed: accuracy difference 0.04 against two standard errors 2 * sqrt(2 * 0.01^2 / 3) = 0.016;
    # NLL difference 0.02 against 2 * sqrt((0.1^2 + 0.01^2) / 3) = 0.116.
    expected = [
        "**Top-1 accuracy**: 90.0% at smoothing=0 → 94.0% at smoothing=0.1 (+4.0 points, better, beyond seed noise).",
        "**ECE**: 4.0% at smoothing=0 → 15.0% at smoothing=0.1 (+11.0 points, worse, beyond seed noise).",
        "**NLL**: 0.320 at smoothing=0 → 0.300 at smoothing=0.1 (-0.020, better, within seed noise).",
        "**Brier score**: 0.100 at smoothing=0 → 0.100 at smoothing=0.1 (+0.000, the same at this precision, "
        "within seed noise).",
        "**Training throughput (samples/s)**: 1000 at smoothing=0 → 950 at smoothing=0.1 (-5.0%, worse, "
        "beyond seed noise).",
        "**Top-1 accuracy**: 90.0% at smoothing=0 → 80.0% at smoothing=0.5 (-10.0 points, worse, beyond seed noise).",
        "At smoothing=0 the model is **over-confident** on the test set (mean confidence 95.0% vs. accuracy "
        "90.0%): its ECE measures over-confidence; the fitted temperature T = 1.50 > 1 softens its predictions.",
        "At smoothing=0.1 the model is **under-confident** on the test set (mean confidence 80.0% vs. accuracy "
        "94.0%): its ECE measures under-confidence; the fitted temperature T = 0.50 < 1 sharpens its predictions.",
        "At smoothing=0.5 the model's confidence matches its accuracy on average (mean confidence 80.5% vs. "
        "accuracy 80.0%); the fitted temperature is 1.",
    ]
    missing = [sentence for sentence in expected if sentence not in sentences]
    assert not missing, "\n".join(["missing:", *missing, "got:", *sentences])


def test_a_single_seed_makes_no_noise_claim() -> None:
    runs = [BASELINE[0], SMOOTHED[0]]
    sentences = metric_sentences(group_runs(runs))
    assert ("**Top-1 accuracy**: 89.0% at smoothing=0 → 93.0% at smoothing=0.1 "
            "(+4.0 points, better, one seed, no noise estimate).") in sentences
    assert not any("seed noise" in sentence for sentence in sentences)


def test_the_summary_says_under_confident_when_it_happens() -> None:
    text = summary_markdown({"status": "complete", "runs": BASELINE + SMOOTHED})
    assert "- At smoothing=0.1 the model is **under-confident** on the test set" in text
    assert "- At smoothing=0 the model is **over-confident** on the test set" in text
    assert "| 0.1 | 3 | 94.0 ± 1.0 | 0.300 ± 0.100 | 15.0 ± 1.0 |" in text


def test_failed_temperature_scaling_is_a_warning_and_its_cells_are_marked() -> None:
    on_bound = _runs(0.1, temperature=[1.2, 100.0, 1.3])  # seed 1's fit ended on the upper bound
    worse = _runs(0.2, nll_ts=[0.25, 0.25, 0.35])  # seed 2: NLL 0.30 before scaling, 0.35 after
    text = summary_markdown({"status": "complete", "runs": BASELINE + on_bound + worse})
    warnings = [line for line in text.splitlines() if line.startswith("> **Warning**: ")]
    assert warnings == [
        "> **Warning**: temperature scaling failed at smoothing=0.1, seed 1: the fitted temperature 100 is the "
        "end of its search range [0.01, 100]; the validation split (0.1 of the training set) is too small or "
        "its predictions too poor to fit a temperature, so T, ECE after TS and NLL after TS of smoothing=0.1 "
        "(marked ⚠) are not calibration results.",
        "> **Warning**: temperature scaling failed at smoothing=0.2, seed 2: the test NLL after temperature "
        "scaling, 0.350, is worse than before it, 0.300; the validation split (0.1 of the training set) is too "
        "small or its predictions too poor to fit a temperature, so T, ECE after TS and NLL after TS of "
        "smoothing=0.2 (marked ⚠) are not calibration results.",
    ]
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| 0")}
    assert "⚠" not in rows["| 0"]
    # ECE after TS, NLL after TS and T are marked; the metrics that do not use the temperature are not.
    assert rows["| 0.1"].count("⚠") == 3 and rows["| 0.2"].count("⚠") == 3
    assert "| 2.0 ± 0.0 ⚠ | 0.250 ± 0.000 ⚠ | 34.17 ± 57.01 ⚠ | 90.0 ± 0.0 | 1000 ± 0 |" in rows["| 0.1"]
    assert ("- **NLL after temperature scaling**: 0.250 at smoothing=0 → 0.283 at smoothing=0.2 (+0.033, "
            "worse, within seed noise). ⚠ Temperature scaling failed, see the warning.\n") in text
    assert ("- **NLL**: 0.320 at smoothing=0 → 0.300 at smoothing=0.2 (-0.020, better, beyond seed "
            "noise).\n") in text
    assert "its fitted temperature is not meaningful (⚠, see the warning)." in text


def test_a_negative_zero_is_labelled_zero() -> None:
    runs = [run | {"smoothing": -0.0} for run in BASELINE] + SMOOTHED
    assert [variant.label for variant in group_runs(runs)] == ["smoothing=0", "smoothing=0.1"]
    assert "\n| 0 | 3 |" in summary_markdown({"status": "complete", "runs": runs})
