"""docs/trainer.md and the README: the Composer-style Trainer example runs as written, as does the
custom training loop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "trainer.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", [DOC, ROOT / "README.md"], ids=["docs", "readme"])
def test_seed_trainer_example_runs_as_written(page: Path, capsys: Any) -> None:
    text = page.read_text()
    marker = text.index("<!-- composer-trainer-example -->")
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
    exec(compile(code, str(page), "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.timestamp.epoch == 1
    assert [r["split"] for r in trainer.history] == ["train", "eval"]
    assert namespace["label_smoothing"].smoothing == 0.1
    capsys.readouterr()  # the progress bar's output


def test_custom_loop_example_trains_and_gives_the_targets_back() -> None:
    text = DOC.read_text()
    marker = text.index("<!-- custom-loop-example -->")
    block = re.search(r"```python\n(.*?)```", text[marker:], flags=re.DOTALL)
    assert block is not None
    model = make_model()
    before = [p.clone() for p in model.parameters()]
    loader = make_loader(make_dataset(32), 16)
    namespace: dict[str, Any] = {"model": model, "train_dataloader": loader,
                                 "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)
    state, (_, last_targets) = namespace["state"], list(loader)[-1]
    assert torch.isfinite(namespace["loss"])
    assert torch.equal(state.batch[1], last_targets) and type(state.batch[1]) is torch.Tensor
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
