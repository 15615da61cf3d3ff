"""The README's example scripts run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_functional_training_loop_example_trains_and_smoothing_lowers_confidence() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "functional_training_loop.py")],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = re.findall(r"smoothing=(\S+)\s+test accuracy=(\S+)\s+mean confidence=(\S+)", out)
    assert [r[0] for r in rows] == ["0.0", "0.1"], out
    accuracy = {s: float(a) for s, a, _ in rows}
    confidence = {s: float(c) for s, _, c in rows}
    assert min(accuracy.values()) > 0.85, out
    # A target of 0.91 on the true class caps what the smoothed model is pushed towards.
    assert confidence["0.1"] < confidence["0.0"], out


def test_causal_lm_example_quick_mode_learns_and_keeps_the_loss_small() -> None:
    pytest.importorskip("tokenizers")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "causal_lm.py"), "--quick"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    vocab = int(re.search(r"vocabulary (\d+)", out).group(1))
    rows = re.findall(r"smoothing=(\S+)\s+held-out perplexity=(\S+)\s+tokens/s=(\S+)\s+"
                      r"peak loss memory=(\S+) MiB \(materialised logits: (\S+) MiB\)", out)
    assert [r[0] for r in rows] == ["0.0", "0.1"], out
    for _, perplexity, tokens_per_s, _, _ in rows:
        # Learnt something: below the uniform model's perplexity (the vocabulary size).
        assert 1.0 < float(perplexity) < vocab, out
        assert float(tokens_per_s) > 0, out
