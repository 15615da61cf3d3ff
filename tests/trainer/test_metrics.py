"""Trainer metrics against independent float64 references: accuracy, ECE (15 bins), NLL."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.trainer.metrics import ClassificationMetrics


def _reference(logits: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Guo et al.'s ECE written out: equal-width bins over (0, 1] of the top probability."""
    probabilities = logits.double().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).double()
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.double().mean().item() * abs(correct[inside].mean() - confidence[inside].mean()).item()
    nll = -probabilities.log()[torch.arange(len(targets)), targets].mean().item()
    return {"accuracy": correct.mean().item(), "ece": ece, "nll": nll}


def _check(actual: dict[str, float], expected: dict[str, float]) -> None:
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-5), name


def test_metrics_match_the_reference_over_several_batches() -> None:
    logits, targets = torch.randn(300, 5) * 2, torch.randint(0, 5, (300,))
    metrics = ClassificationMetrics(device="cpu")
    for part in range(3):
        rows = slice(100 * part, 100 * (part + 1))
        metrics.update(logits[rows], targets[rows])
    _check(metrics.compute(), _reference(logits, targets))
    metrics.reset()
    metrics.update(logits[:10], targets[:10])
    _check(metrics.compute(), _reference(logits[:10], targets[:10]))


def test_ignored_positions_and_extra_dimensions() -> None:
    logits, targets = torch.randn(4, 3, 7), torch.randint(0, 3, (4, 7))
    targets[0, :3] = -100
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, targets)
    rows, flat = logits.movedim(1, -1).reshape(-1, 3), targets.reshape(-1)
    kept = flat != -100
    _check(metrics.compute(), _reference(rows[kept], flat[kept]))


def test_dense_targets_use_argmax_and_soft_nll() -> None:
    logits = torch.randn(50, 4)
    dense = torch.softmax(torch.randn(50, 4) * 3, dim=1)
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, dense)
    result = metrics.compute()
    reference = _reference(logits, dense.argmax(dim=1))
    assert result["accuracy"] == pytest.approx(reference["accuracy"])
    assert result["ece"] == pytest.approx(reference["ece"], abs=1e-5)
    soft_nll = -(dense.double() * logits.double().log_softmax(dim=1)).sum(dim=1).mean().item()
    assert result["nll"] == pytest.approx(soft_nll, abs=1e-5)


def test_loss_is_averaged_per_example() -> None:
    metrics = ClassificationMetrics(device="cpu", track_loss=True)
    metrics.update(torch.randn(3, 2), torch.tensor([0, 1, 0]), loss=torch.tensor(1.0))
    metrics.update(torch.randn(1, 2), torch.tensor([1]), loss=torch.tensor(5.0))
    assert metrics.compute()["loss"] == pytest.approx((3 * 1.0 + 5.0) / 4)
    with pytest.raises(TypeError, match="loss: expected the batch's training loss"):
        metrics.update(torch.randn(1, 2), torch.tensor([1]))


def test_bad_targets_and_changing_class_counts_raise() -> None:
    metrics = ClassificationMetrics(device="cpu")
    with pytest.raises(ValueError, match=r"targets: expected class indices of shape \(4,\)"):
        metrics.update(torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long))
    metrics.update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits: expected 3 classes, as in earlier batches, got 5"):
        metrics.update(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))


def test_training_metrics_are_unsmoothed_and_on_the_original_targets() -> None:
    """With a learning rate of 0 the model never changes: the epoch's training accuracy, ECE and
    NLL equal an evaluation on the same data, and the loss is the smoothed cross-entropy."""
    data, model = make_dataset(48), make_model()
    trainer = Trainer(model, make_loader(data, 16), max_duration="1ep", device="cpu",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
                      algorithms=[LabelSmoothing(0.3)], eval_dataloader=make_loader(data, 48),
                      progress_bar=False)
    trainer.fit()
    train, evaluation = trainer.history
    inputs, targets = data.tensors
    with torch.no_grad():
        logits = model(inputs)
    _check(train, _reference(logits, targets))
    _check(evaluation, _reference(logits, targets))
    smoothed = F.cross_entropy(logits.double(), targets, label_smoothing=0.3).item()
    assert train["loss"] == pytest.approx(smoothed, abs=1e-5)
    assert train["loss"] > train["nll"]


@pytest.mark.parametrize(("module", "build"), [
    ("torchmetrics", lambda: ClassificationMetrics(device="cpu")),
    ("rich.progress", lambda: __import__("labelsmooth.trainer.progress", fromlist=["x"]).ProgressBar(3)),
])
def test_missing_optional_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch, module: str,
                                                  build: object) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install 'labelsmooth\[trainer\]'"):
        build()  # type: ignore[operator]
