"""docs/trainer.md: the seed's Trainer example runs as written, and so does the algorithm example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth.trainer import Event, State

DOC = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_seed_trainer_example_runs_as_written(capsys: Any) -> None:
    text = DOC.read_text()
    marker = text.index("<!-- seed-trainer-example -->")
    block = re.search(r"```python\n(.*?)```", text[marker:], flags=re.DOTALL)
    assert block is not None
    code = block.group(1)
    assert "from labelsmooth.algorithms import LabelSmoothing" in code
    assert "from labelsmooth.trainer import Trainer" in code
    namespace: dict[str, Any] = {
        "model": make_model(),
        "train_dataloader": make_loader(make_dataset(64), 16, shuffle=True),
        "eval_dataloader": make_loader(make_dataset(32, seed=1), 16),
    }
    exec(compile(code, str(DOC), "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.timestamp.epoch == 1
    assert [r["split"] for r in trainer.history] == ["train", "eval"]
    assert namespace["label_smoothing"].smoothing == 0.1
    capsys.readouterr()  # the progress bar's output


def test_algorithm_example_registers_and_removes_a_transform() -> None:
    code = next(block for block in _python_blocks() if "class Negate" in block)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    state = State(torch.nn.Identity(), batch=(torch.zeros(2, 1), targets))
    algorithm = namespace["Negate"]()
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    assert torch.equal(state.batch[1], 1 - targets)
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert state.batch[1] is targets
