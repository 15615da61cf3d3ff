"""Mixed precision on CUDA (skipped without a CUDA device): fp16 with a grad scaler, and bf16."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer import Callback, State

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_mixed_precision_trains_on_cuda(precision: str, dtype: torch.dtype) -> None:
    seen: list[tuple[torch.dtype, torch.device]] = []

    class Check(Callback):
        def after_dataloader(self, state: State, logger: Any) -> None:
            self.targets = state.batch[1]

        def after_loss(self, state: State, logger: Any) -> None:
            seen.append((state.outputs.dtype, state.outputs.device))
            assert state.batch[1] is self.targets
            expected = F.cross_entropy(state.outputs.float(), self.targets, label_smoothing=0.1)
            torch.testing.assert_close(state.loss.float(), expected, rtol=2e-2, atol=2e-2)

    model = make_model()
    trainer = Trainer(model, make_loader(make_dataset(64), 16), max_duration="3ep", device="cuda",
                      precision=precision, algorithms=[LabelSmoothing(0.1)], callbacks=[Check()],
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.5), progress_bar=False)
    trainer.fit()
    assert {s[0] for s in seen} == {dtype} and all(s[1].type == "cuda" for s in seen)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())
    losses = [r["loss"] for r in trainer.history]
    assert losses[-1] < losses[0]
    assert (trainer._scaler is not None) == (precision == "fp16")
