"""docs/methods.md: every example runs as written, and the formulas it states match the code."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from helpers import assert_close

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _smoothed(logits: torch.Tensor, y: torch.Tensor, s: float, prior: torch.Tensor) -> torch.Tensor:
    """``(1 - s) * (-log p_y) + s * sum_k u_k (-log p_k)`` in float64, ``prior`` (C,) or (N, C)."""
    log_p = logits.double().log_softmax(1)
    nll = -log_p.gather(1, y[:, None])[:, 0]
    return ((1 - s) * nll + s * -(prior.double() * log_p).sum(1)).mean()


def test_every_example_runs_and_states_its_formula(capsys: Any) -> None:
    blocks = _python_blocks()
    assert len(blocks) == 11
    namespace: dict[str, Any] = {}
    torch.manual_seed(0)
    checked = 0
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
        logits, y = namespace["logits"], namespace["y"]
        if "smoothing=0.1" in block:
            assert_close(namespace["loss"], _smoothed(logits, y, 0.1, torch.full((5,), 0.2)))
            checked += 1
        if "per_target" in block:
            assert_close(namespace["loss"], _smoothed(logits, y, 0.1, namespace["per_target"][y]))
            checked += 1
        if "s = -0.2" in block:
            assert_close(namespace["loss"], _smoothed(logits, y, -0.2, torch.full((5,), 0.2)))
            checked += 1
        if "confidence_penalty" in block:
            p = logits.double().softmax(1)
            entropy = -(p * p.log()).sum(1)
            expected = torch.nn.functional.cross_entropy(logits.double(), y) - 0.1 * entropy.mean()
            assert_close(namespace["loss"], expected)
            checked += 1
        if "online_label_targets" in block:
            assert_close(namespace["ols"].soft_labels.sum(dim=1), torch.ones(3))
            S = namespace["S"]
            assert_close(namespace["loss"], _smoothed(logits, y, 0.5, S[y]))
            checked += 1
        if "warmup_then_negative" in block:
            schedule, algorithm = namespace["warmup_then_negative"], namespace["algorithm"]
            assert [schedule(t) for t in (0.0, 0.49, 0.5, 1.0)] == [0.0, 0.0, -0.2, -0.2]
            assert algorithm.allow_negative and algorithm.smoothing == 0.0
            checked += 1
        if "schedules.cosine" in block:
            assert_close(namespace["loss"], _smoothed(logits, y, 0.05, torch.full((5,), 0.2)))
            checked += 1
        if "fit_temperature" in block:
            assert math.isfinite(namespace["temperature"]) and namespace["temperature"] > 0
            checked += 1
    assert checked == 8
    assert "adaptive ECE" in capsys.readouterr().out
