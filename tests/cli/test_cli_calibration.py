"""The command scores with labelsmooth.metrics, and fits the temperature on a held-out split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from labelsmooth.metrics import fit_temperature


def _numpy_brier(probs: np.ndarray, targets: np.ndarray) -> float:
    total = 0.0
    for i in range(probs.shape[0]):
        for k in range(probs.shape[1]):
            total += (probs[i, k] - (1.0 if k == targets[i] else 0.0)) ** 2
    return total / probs.shape[0]


def test_the_command_scores_with_these_metrics() -> None:
    from labelsmooth.cli.experiment import score

    generator = torch.Generator().manual_seed(7)
    logits, val_logits = 3 * torch.randn(300, 10, generator=generator), 3 * torch.randn(100, 10, generator=generator)
    targets, val_targets = torch.randint(0, 10, (300,), generator=generator), torch.randint(0, 10, (100,), generator=generator)
    metrics = score(logits, targets, val_logits, val_targets)
    temperature = fit_temperature(val_logits, val_targets)
    assert metrics["temperature"] == temperature
    for key, scaled in (("ece", logits), ("ece_ts", logits / temperature)):
        reference = multiclass_calibration_error(scaled.softmax(dim=1), targets, num_classes=10, n_bins=15)
        assert metrics[key] == pytest.approx(float(reference), rel=1e-5), key
    assert metrics["brier"] == pytest.approx(_numpy_brier(logits.softmax(dim=1).double().numpy(), targets.numpy()),
                                             rel=1e-5)
    assert metrics["nll_ts"] == pytest.approx(float(F.cross_entropy(logits / temperature, targets)), rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == targets).double().mean()))


def _row_index(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """For each row of ``rows``, its index in ``table`` (-1 when absent)."""
    same = (rows.flatten(1)[:, None, :] == table.flatten(1)[None]).all(dim=2)
    assert (same.sum(dim=1) <= 1).all()
    return torch.where(same.any(dim=1), same.float().argmax(dim=1), -1)


def test_run_one_fits_the_temperature_on_a_held_out_validation_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # Random inputs, so every example is identifiable by its pixels; 20% label noise, so the
    # labels trained on differ from the clean ones the temperature must be fitted to.
    from labelsmooth.cli import experiment
    from labelsmooth.cli.data import Dataset

    generator = torch.Generator().manual_seed(11)
    data = Dataset("synthetic", torch.randn(200, 1, 8, 8, generator=generator),
                   torch.randint(0, 10, (200,), generator=generator),
                   torch.randn(50, 1, 8, 8, generator=generator),
                   torch.randint(0, 10, (50,), generator=generator), 10)
    seen: dict[str, list[Any]] = {"trained_on": [], "predicted": [], "fitted": []}

    class RecordingTrainer(experiment.Trainer):
        def __init__(self, model: Any, train_dataloader: Any, **kwargs: Any) -> None:
            seen["trained_on"].append(train_dataloader.dataset.tensors)
            super().__init__(model, train_dataloader, **kwargs)

    def recording_predict(model: Any, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = experiment_predict(model, x, **kwargs)
        seen["predicted"].append((x, logits))
        return logits, features

    def recording_fit(logits: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> float:
        temperature = fit_temperature(logits, targets, **kwargs)
        seen["fitted"].append((logits, targets, temperature))
        return temperature

    experiment_predict = experiment.predict
    monkeypatch.setattr(experiment, "Trainer", RecordingTrainer)
    monkeypatch.setattr(experiment, "predict", recording_predict)
    monkeypatch.setattr(experiment, "fit_temperature", recording_fit)
    config = experiment.RunConfig("synthetic", "mlp", 0.1, 3, 1, 64, 1e-3, label_noise=0.2)
    result = experiment.run_one(config, data)

    ((x_fit, y_fit),) = seen["trained_on"]
    ((val_logits, val_targets, temperature),) = seen["fitted"]
    (x_val,) = [x for x, logits in seen["predicted"] if torch.equal(logits, val_logits)]
    fit_index, val_index = _row_index(x_fit, data.x_train), _row_index(x_val, data.x_train)
    # The validation split: 10% of the training set, none of it trained on, none of it test data.
    assert len(val_index) == 20 and (val_index >= 0).all()
    assert sorted(torch.cat([fit_index, val_index]).tolist()) == list(range(200))
    assert (_row_index(x_val, data.x_test) == -1).all()
    # Its clean labels are what the temperature is fitted to; 36 of the 180 trained-on labels are noisy.
    assert torch.equal(val_targets, data.y_train[val_index])
    assert int((y_fit != data.y_train[fit_index]).sum()) == round(0.2 * 180)
    assert result["temperature"] == temperature
