"""One training run of the command: configuration, data preparation, training, scoring.

:class:`RunConfig` is the whole description of one run; a new option (a later ``--mixup``) is one
more field here plus its entry in :data:`TREATMENTS` if runs are compared by it. ``run_one``
turns a config into a flat result row (config fields, metrics) plus the arrays the pictures need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from labelsmooth.cli.data import Dataset, flip_labels, split_validation
from labelsmooth.cli.models import Classifier, build_model
from labelsmooth.metrics import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    project_onto_plane,
    reliability_bins,
    template_plane,
)

__all__ = [
    "METRICS",
    "NUM_BINS",
    "PROJECTED_CLASSES",
    "TREATMENTS",
    "RunConfig",
    "run_one",
    "score",
]

# Fields of RunConfig whose values define the variants being compared (one summary row each).
TREATMENTS = ("smoothing",)
# What every run reports, in the order of the CSV columns.
METRICS = (
    "accuracy",
    "nll",
    "ece",
    "brier",
    "confidence",
    "temperature",
    "ece_ts",
    "nll_ts",
    "train_time_s",
    "samples_per_s",
)
NUM_BINS = 15
# The three classes of the penultimate-layer picture (Mueller et al. also use three).
PROJECTED_CLASSES = (0, 1, 2)
# Cap on the points per class kept for the picture, so results.json stays small.
_POINTS_PER_CLASS = 150


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run.

    Attributes:
        dataset: ``"mnist1d"`` or ``"digits"``.
        model: ``"mlp"`` or ``"cnn"``.
        smoothing: label smoothing in [0, 1].
        seed: seeds the model's initialisation, the batch order, the label noise and the split.
        epochs: passes over the training split.
        batch_size: examples per step.
        lr: AdamW's peak learning rate (cosine-decayed to 0 over the run).
        label_noise: share of training labels replaced by a different class, in [0, 1].
        val_fraction: share of the training set held out to fit the temperature.
        device: torch device string.
    """

    dataset: str
    model: str
    smoothing: float
    seed: int
    epochs: int
    batch_size: int
    lr: float
    label_noise: float = 0.0
    val_fraction: float = 0.1
    device: str = "cpu"

    def label(self) -> str:
        """A short name of the variant, e.g. ``"smoothing=0.1"``."""
        return ", ".join(f"{name}={getattr(self, name):g}" for name in TREATMENTS)


@dataclass(frozen=True)
class Splits:
    """The data one run trains, calibrates and tests on."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_splits(data: Dataset, config: RunConfig) -> Splits:
    """Add the label noise to the whole training set, then hold out the validation split.

    The validation labels are as noisy as the training labels: temperature scaling only ever
    sees the labels a user would have. The noise and the split depend on the seed only, so runs
    that differ in smoothing see the same data.
    """
    generator = torch.Generator().manual_seed(config.seed)
    labels = data.y_train
    if config.label_noise > 0:
        labels, _ = flip_labels(labels, config.label_noise, num_classes=data.num_classes,
                                generator=generator)
    fit, val = split_validation(len(labels), config.val_fraction, generator=generator)
    return Splits(data.x_train[fit], labels[fit], data.x_train[val], labels[val],
                  data.x_test, data.y_test)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> DataLoader[Any]:
    # Index the tensors once per batch (a BatchSampler with batch_size=None) instead of collating
    # batch_size single examples: on these tiny models collation would dominate the step time.
    sampler = BatchSampler(
        RandomSampler(range(len(y)), generator=torch.Generator().manual_seed(seed)),
        batch_size,
        drop_last=False,
    )
    return DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None)


@torch.no_grad()
def predict(
    model: Classifier, x: torch.Tensor, *, device: str, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate activations of ``x``, in float32 on the CPU."""
    model.eval()
    logits, features = [], []
    for start in range(0, len(x), chunk):
        hidden = model.features(x[start:start + chunk].to(device))
        features.append(hidden.float().cpu())
        logits.append(model.head(hidden).float().cpu())
    return torch.cat(logits), torch.cat(features)


def score(
    logits: torch.Tensor, targets: torch.Tensor, val_logits: torch.Tensor, val_targets: torch.Tensor
) -> dict[str, float]:
    """Test-set metrics, before and after temperature scaling fitted on the validation split.

    Returns ``accuracy`` (top-1), ``nll``, ``ece`` (15 bins), ``brier``, ``confidence`` (mean
    top-1 probability), ``temperature``, ``ece_ts`` and ``nll_ts``.
    """
    probs = logits.softmax(dim=1)
    temperature = fit_temperature(val_logits, val_targets)
    scaled = logits / temperature
    return {
        "accuracy": float((logits.argmax(dim=1) == targets).float().mean()),
        "nll": float(F.cross_entropy(logits, targets)),
        "ece": float(expected_calibration_error(probs, targets, num_bins=NUM_BINS)),
        "brier": float(brier_score(probs, targets)),
        "confidence": float(probs.max(dim=1).values.mean()),
        "temperature": temperature,
        "ece_ts": float(expected_calibration_error(scaled.softmax(dim=1), targets, num_bins=NUM_BINS)),
        "nll_ts": float(F.cross_entropy(scaled, targets)),
    }


def _projection(model: Classifier, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    classes = list(PROJECTED_CLASSES)
    plane = template_plane(model.head.weight.detach().float().cpu()[classes])
    keep = torch.cat([(targets == c).nonzero().squeeze(1)[:_POINTS_PER_CLASS] for c in classes])
    points = project_onto_plane(features[keep], plane)
    templates = project_onto_plane(model.head.weight.detach().float().cpu()[classes], plane)
    return {
        "classes": classes,
        "labels": targets[keep].tolist(),
        "points": [[round(a, 4), round(b, 4)] for a, b in points.tolist()],
        "templates": [[round(a, 4), round(b, 4)] for a, b in templates.tolist()],
    }


EpochHook = Callable[[int, float], None]


def _train_plain(model: Classifier, splits: Splits, config: RunConfig, on_epoch: EpochHook) -> float:
    """Train with AdamW and a per-step cosine schedule; return the seconds spent in training steps.

    ``on_epoch(epoch, mean_train_loss)`` runs after each epoch, outside the timed part.
    """
    loader = _loader(splits.x_fit, splits.y_fit, config.batch_size, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    seconds = 0.0
    for epoch in range(config.epochs):
        model.train()
        start = time.perf_counter()
        total, count = torch.zeros(()), 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(config.device), targets.to(config.device)
            loss = F.cross_entropy(model(inputs), targets, label_smoothing=config.smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach().cpu() * len(targets)
            count += len(targets)
        seconds += time.perf_counter() - start
        on_epoch(epoch, float(total) / count)
    return seconds


def run_one(
    config: RunConfig, data: Dataset, *, on_epoch: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Train and score one run.

    Args:
        config: the run.
        data: the loaded data set (shared by all runs).
        on_epoch: called after every epoch (for a progress bar).

    Returns:
        A dict with the config's fields, :data:`METRICS`, and ``history`` (per-epoch training
        loss, test accuracy and test NLL), ``reliability`` (the 15 test-set bins) and
        ``projection`` (penultimate activations of :data:`PROJECTED_CLASSES` in their templates'
        plane) for the pictures.
    """
    torch.manual_seed(config.seed)
    splits = make_splits(data, config)
    model = build_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    model.to(config.device)
    history: dict[str, list[float]] = {"train_loss": [], "test_accuracy": [], "test_nll": []}

    def after_epoch(epoch: int, train_loss: float) -> None:
        logits, _ = predict(model, splits.x_test, device=config.device)
        history["train_loss"].append(train_loss)
        history["test_accuracy"].append(float((logits.argmax(dim=1) == splits.y_test).float().mean()))
        history["test_nll"].append(float(F.cross_entropy(logits, splits.y_test)))
        if on_epoch is not None:
            on_epoch()

    seconds = _train_plain(model, splits, config, after_epoch)
    logits, features = predict(model, splits.x_test, device=config.device)
    val_logits, _ = predict(model, splits.x_val, device=config.device)
    metrics = score(logits, splits.y_test, val_logits, splits.y_val)
    metrics["train_time_s"] = seconds
    metrics["samples_per_s"] = config.epochs * len(splits.y_fit) / seconds
    bins = reliability_bins(logits.softmax(dim=1), splits.y_test, num_bins=NUM_BINS)
    return {
        **asdict(config),
        **metrics,
        "history": history,
        "reliability": {
            "count": bins.counts.tolist(),
            "accuracy": bins.accuracy.tolist(),
            "confidence": bins.confidence.tolist(),
        },
        "projection": _projection(model, features, splits.y_test),
    }
