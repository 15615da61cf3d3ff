"""examples/lightning_classifier.py trains with a real pytorch_lightning.Trainer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lightning_example_trains_with_mixing_and_smoothing() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "lightning_classifier.py"), "--epochs", "3"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    match = re.search(r"steps=(\d+)\s+val_accuracy=(\S+)\s+val_confidence=(\S+)", out)
    assert match is not None, out
    steps, accuracy, confidence = int(match[1]), float(match[2]), float(match[3])
    assert steps == 3 * 22  # 1400 training digits in batches of 64, three epochs
    assert accuracy > 0.5, out  # ten classes: chance is 0.1
    # Smoothing 0.1 with mixing caps the targets well below one-hot: confidence stays moderate.
    assert 0.1 < confidence < 0.95, out
