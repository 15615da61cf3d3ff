"""One training run of the command: configuration, data preparation, training, scoring.

:class:`RunConfig` is the whole description of one run; a new option is one more field here plus
its entry in :data:`TREATMENTS` if runs are compared by it (as ``mixup`` and ``cutmix`` are). A run
of ``labelsmooth run --method`` names its :data:`METHODS` entry and that method's strength instead.
``run_one`` turns a config into a flat result row (config fields, metrics) plus the arrays the
pictures and the bootstrap intervals need (the test-set logits).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from labelsmooth import schedules
from labelsmooth.algorithms import CutMix, LabelSmoothing, MixUp, OnlineLabelSmoothing
from labelsmooth.cli.data import Dataset, flip_labels, split_validation
from labelsmooth.cli.models import Classifier, build_model
from labelsmooth.functional import class_prior, smoothed_cross_entropy, soft_cross_entropy
from labelsmooth.metrics import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    project_onto_plane,
    reliability_bins,
    template_plane,
)
from labelsmooth.metrics.extra import adaptive_calibration_error, classwise_calibration_error
from labelsmooth.trainer import Algorithm, Callback, Logger, State, Trainer

__all__ = [
    "METHODS",
    "METRICS",
    "NUM_BINS",
    "PROJECTED_CLASSES",
    "STRENGTH_NAMES",
    "TEMPERATURE_RANGE",
    "TEST_METRICS",
    "TREATMENTS",
    "RunConfig",
    "build_algorithms",
    "build_loss",
    "method_label",
    "negative_smoothing",
    "run_one",
    "score",
    "steady_throughput",
]

# Fields of RunConfig whose values define the variants being compared (one summary row each).
# ``mixup`` and ``cutmix`` (Beta concentrations, 0 = off) are shown only when a run uses them.
TREATMENTS = ("smoothing", "mixup", "cutmix")
# What `labelsmooth run --method` compares, in the order of the table. ``ts`` is the ``ce`` model
# with its logits divided by the temperature fitted on the validation split.
METHODS = ("ce", "ls", "ls-prior", "ols", "negative-ls", "confidence-penalty", "ts")
# The name of each method's strength (RunConfig.strength); ce and ts have none.
STRENGTH_NAMES = {"ls": "s", "ls-prior": "s", "ols": "alpha", "negative-ls": "s",
                  "confidence-penalty": "beta"}
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
    "ece_adaptive",
    "ece_classwise",
)
NUM_BINS = 15
# Where the temperature is searched; a fit that ends on either end did not find a minimum.
TEMPERATURE_RANGE = (0.01, 100.0)
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
        label_noise: share of the labels trained on replaced by a different class, in [0, 1]
            (the validation split keeps its clean labels).
        val_fraction: share of the training set held out to fit the temperature.
        device: torch device string.
        mixup: MixUp's Beta(alpha, alpha) concentration, 0 for no MixUp.
        cutmix: CutMix's Beta(alpha, alpha) concentration, 0 for no CutMix.
        method: one of :data:`METHODS` (then ``smoothing``, ``mixup`` and ``cutmix`` are 0), or
            ``""`` for a run of the smoothing/mixup/cutmix grid.
        strength: the method's strength (:data:`STRENGTH_NAMES`): the smoothing of ``ls``,
            ``ls-prior`` and ``negative-ls``, OLS's ``alpha``, the confidence penalty's ``beta``;
            0 for ``ce``, ``ts`` and the grid.
        warmup: ``negative-ls`` only: the fraction of training, in ``[0, 1)``, done with plain
            cross-entropy before the negative smoothing starts (0 elsewhere).

    Example:
        >>> config = RunConfig("digits", "mlp", smoothing=0.1, seed=0, epochs=1, batch_size=32, lr=1e-3)
        >>> config.label(), config.val_fraction
        ('smoothing=0.1', 0.1)
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
    mixup: float = 0.0
    cutmix: float = 0.0
    method: str = ""
    strength: float = 0.0
    warmup: float = 0.0

    def label(self) -> str:
        """A short name of the variant, e.g. ``"smoothing=0.1"``, ``"smoothing=0.1, mixup=0.2"``
        or ``"negative-ls s=-0.2 warmup=0.5"``."""
        if self.method:
            return method_label(self.method, self.strength, self.warmup)
        return ", ".join(f"{name}={getattr(self, name):g}" for name in TREATMENTS
                         if name == "smoothing" or getattr(self, name))


def method_label(method: str, strength: float, warmup: float = 0.0) -> str:
    """The name of a method's row: ``"ce"``, ``"ts"``, ``"ls s=0.1"``, ``"confidence-penalty beta=0.1"``,
    and a warm-up when there is one: ``"negative-ls s=-0.2 warmup=0.5"``.

    Example:
        >>> method_label("ols", 0.5), method_label("ce", 0.0), method_label("negative-ls", -0.2, 0.5)
        ('ols alpha=0.5', 'ce', 'negative-ls s=-0.2 warmup=0.5')
    """
    name = STRENGTH_NAMES.get(method)
    label = method if name is None else f"{method} {name}={strength:g}"
    return f"{label} warmup={warmup:g}" if warmup else label


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
    """Hold out the validation split, then add the label noise to the rest of the training set.

    Only the labels the model trains on are noisy: the validation labels stay clean like the
    test labels, so the temperature is fitted to the same kind of labels it is scored on. The
    split and the noise depend on the seed only, so runs that differ in smoothing see the same
    data.
    """
    generator = torch.Generator().manual_seed(config.seed)
    fit, val = split_validation(len(data.y_train), config.val_fraction, generator=generator)
    fit_labels = data.y_train[fit]
    if config.label_noise > 0:
        fit_labels, _ = flip_labels(fit_labels, config.label_noise, num_classes=data.num_classes,
                                    generator=generator)
    return Splits(data.x_train[fit], fit_labels, data.x_train[val], data.y_train[val],
                  data.x_test, data.y_test)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int | None) -> DataLoader[Any]:
    """Shuffled batches (seeded) or, with ``seed=None``, batches in order."""
    # Index the tensors once per batch (a BatchSampler with batch_size=None) instead of collating
    # batch_size single examples: on these tiny models collation would dominate the step time.
    order: RandomSampler | SequentialSampler = (
        SequentialSampler(range(len(y))) if seed is None
        else RandomSampler(range(len(y)), generator=torch.Generator().manual_seed(seed)))
    sampler = BatchSampler(order, batch_size, drop_last=False)
    return DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None)


def _saved(logits: torch.Tensor) -> tuple[torch.Tensor, list[list[float]]]:
    """The logits rounded to 4 decimals, as the tensor scored and the lists saved in results.json:
    every metric of a run is computed from exactly the numbers saved with it."""
    rows = [[round(value, 4) for value in row] for row in logits.tolist()]
    return torch.tensor(rows, dtype=torch.float32).reshape(logits.shape), rows


def _accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == targets).double().mean()


def _confidence(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).max(dim=1).values.mean()


# The test-set metrics, each a function of (logits, targets): score() and the summary's
# bootstrap intervals compute them with the same functions.
TEST_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "accuracy": _accuracy,
    "nll": lambda z, y: F.cross_entropy(z, y),
    "ece": lambda z, y: expected_calibration_error(z.softmax(dim=1), y, num_bins=NUM_BINS),
    "ece_adaptive": lambda z, y: adaptive_calibration_error(z.softmax(dim=1), y, num_bins=NUM_BINS),
    "ece_classwise": lambda z, y: classwise_calibration_error(z.softmax(dim=1), y, num_bins=NUM_BINS),
    "brier": lambda z, y: brier_score(z.softmax(dim=1), y),
    "confidence": _confidence,
}


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

    Args:
        logits: ``(N, C)`` test-set logits.
        targets: ``(N,)`` test-set class indices.
        val_logits: ``(M, C)`` logits of the held-out validation split (never trained on).
        val_targets: ``(M,)`` its clean class indices.

    Returns:
        The :data:`TEST_METRICS`: ``accuracy`` (top-1), ``nll``, ``ece`` (15 equal-width bins),
        ``ece_adaptive`` (15 equal-mass bins), ``ece_classwise`` (15 bins per class), ``brier``,
        ``confidence`` (mean top-1 probability); then ``temperature`` (fitted on the validation
        split by :func:`~labelsmooth.metrics.fit_temperature`), ``ece_ts`` and ``nll_ts`` (the
        test set's ECE and NLL at that temperature), as Python floats.

    Example:
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> metrics = score(z, torch.tensor([0, 1, 0]), z, torch.tensor([0, 1, 1]))
        >>> metrics["accuracy"], round(metrics["temperature"], 3)
        (1.0, 2.885)
    """
    temperature = fit_temperature(val_logits, val_targets, min_temperature=TEMPERATURE_RANGE[0],
                                  max_temperature=TEMPERATURE_RANGE[1])
    scaled = logits / temperature
    return {
        **{name: float(metric(logits, targets)) for name, metric in TEST_METRICS.items()},
        "temperature": temperature,
        "ece_ts": float(TEST_METRICS["ece"](scaled, targets)),
        "nll_ts": float(TEST_METRICS["nll"](scaled, targets)),
    }


def _projection(model: Classifier, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any] | None:
    """The picture's points, or ``None`` when the three templates do not span a plane (a model
    trained on uniform targets, smoothing 1, can end there)."""
    classes = list(PROJECTED_CLASSES)
    templates = model.head.weight.detach().float().cpu()[classes]
    try:
        plane = template_plane(templates)
    except ValueError:
        return None
    keep = torch.cat([(targets == c).nonzero().squeeze(1)[:_POINTS_PER_CLASS] for c in classes])
    points = project_onto_plane(features[keep], plane)
    return {
        "classes": classes,
        "labels": targets[keep].tolist(),
        "points": [[round(a, 4), round(b, 4)] for a, b in points.tolist()],
        "templates": [[round(a, 4), round(b, 4)] for a, b in project_onto_plane(templates, plane).tolist()],
    }


def build_algorithms(config: RunConfig) -> list[Algorithm]:
    """The Trainer algorithms of a run: ``MixUp`` when ``mixup > 0``, ``CutMix`` when
    ``cutmix > 0``, ``LabelSmoothing`` when ``smoothing > 0``; for a method, ``LabelSmoothing``
    for ``ls``, ``OnlineLabelSmoothing`` for ``ols`` and, for ``negative-ls``, a
    ``LabelSmoothing`` that is 0 (plain cross-entropy) for the first ``warmup`` of training and
    then ``s < 0`` (see :func:`negative_smoothing`); the other methods change the loss (see
    :func:`build_loss`).

    The baseline gets no algorithm at all (index targets, plain cross-entropy), so that the
    throughput comparison includes whatever smoothing costs. The mixers share one generator
    seeded by the run's seed, so runs that differ only in smoothing mix the same pairs with the
    same ``lam``; every mixed target is smoothed whatever the list order (see
    :mod:`labelsmooth.trainer.targets`).

    Args:
        config: the run.

    Returns:
        The algorithms, in the order above (empty for the baseline).

    Example:
        >>> config = RunConfig("digits", "mlp", 0.1, 0, 1, 32, 1e-3, mixup=0.2)
        >>> [type(algorithm).__name__ for algorithm in build_algorithms(config)]
        ['MixUp', 'LabelSmoothing']
    """
    if config.method == "ls":
        return [LabelSmoothing(smoothing=config.strength)]
    if config.method == "ols":
        return [OnlineLabelSmoothing(alpha=config.strength)]
    if config.method == "negative-ls":
        return [LabelSmoothing(negative_smoothing(config.strength, config.warmup), allow_negative=True)]
    algorithms: list[Algorithm] = []
    generator = torch.Generator().manual_seed(config.seed)
    if config.mixup > 0:
        algorithms.append(MixUp(alpha=config.mixup, generator=generator))
    if config.cutmix > 0:
        algorithms.append(CutMix(alpha=config.cutmix, generator=generator))
    if config.smoothing > 0:
        algorithms.append(LabelSmoothing(smoothing=config.smoothing))
    return algorithms


def negative_smoothing(smoothing: float, warmup: float) -> float | schedules.StepSchedule:
    """The smoothing of ``negative-ls``: 0 (plain cross-entropy) while the training progress
    ``t`` is below ``warmup``, then ``smoothing`` (< 0); a constant without a warm-up.

    The loss of a target with negative entries has no minimum: trained from the start, it drives
    the logits of the other classes to ``-inf``. Wei et al. (2022) first train with plain
    cross-entropy, then switch to negative smoothing. ``t = step / (steps - 1)`` (see
    :func:`~labelsmooth.algorithms.label_smoothing.schedule_progress`), so with ``warmup=0.5``
    and an even number of epochs the switch falls on the first step of the second half.

    Example:
        >>> schedule = negative_smoothing(-0.2, 0.5)
        >>> schedule(0.0), schedule(0.49), schedule(0.5), negative_smoothing(-0.2, 0.0)
        (0.0, 0.0, -0.2, -0.2)

    References:
        Wei, Liu, Liu, Liu, Zhang and Liu, "To smooth or not? When label smoothing meets noisy
        labels", ICML 2022.
    """
    if warmup == 0.0:
        return smoothing
    return schedules.step([0.0, smoothing], [warmup], allow_negative=True)


def build_loss(config: RunConfig, fit_targets: torch.Tensor, num_classes: int) -> Callable[..., Any] | None:
    """The training loss of a method that changes it, else ``None`` (the Trainer's default).

    * ``ls-prior``: ``smoothed_cross_entropy(smoothing=s, prior=class_prior(fit_targets))``,
      the prior the frequencies of the labels trained on (noisy ones included);
    * ``confidence-penalty``: ``smoothed_cross_entropy(smoothing=0, confidence_penalty=beta)``,
      cross-entropy plus ``beta * sum_c p_c log p_c`` in one pass (Pereyra et al. 2017).

    Args:
        config: the run.
        fit_targets: ``(N,)`` the labels trained on.
        num_classes: ``C``.

    Returns:
        ``loss_fn(logits, targets)`` or ``None``.

    Example:
        >>> config = RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3, method="confidence-penalty",
        ...                    strength=0.5)
        >>> loss_fn = build_loss(config, torch.tensor([0, 1]), 2)
        >>> round(float(loss_fn(torch.zeros(2, 2), torch.tensor([0, 1]))), 4)  # log 2 - 0.5 log 2
        0.3466
    """
    if config.method == "ls-prior":
        prior = class_prior(fit_targets, num_classes)
        return functools.partial(smoothed_cross_entropy, smoothing=config.strength, prior=prior)
    if config.method == "confidence-penalty":
        return functools.partial(smoothed_cross_entropy, smoothing=0.0,
                                 confidence_penalty=config.strength)
    return None


class _EpochClock(Callback):
    """Times the training part of every epoch (``EPOCH_START`` to ``EPOCH_END``, evaluation
    excluded) and reports each finished epoch after its evaluation."""

    def __init__(self, on_epoch: Callable[[], None] | None) -> None:
        self.seconds: list[float] = []
        self._started = 0.0
        self._on_epoch = on_epoch

    def epoch_start(self, state: State, logger: Logger | None) -> None:
        self._started = time.perf_counter()

    def epoch_end(self, state: State, logger: Logger | None) -> None:
        self.seconds.append(time.perf_counter() - self._started)

    def eval_end(self, state: State, logger: Logger | None) -> None:
        if self._on_epoch is not None:
            self._on_epoch()


def _train(
    model: Classifier, splits: Splits, config: RunConfig, on_epoch: Callable[[], None] | None,
    num_classes: int,
) -> tuple[list[float], dict[str, list[float]]]:
    """Train with the project's ``Trainer``: AdamW, a per-step cosine schedule, the run's
    algorithms, evaluation on the test set after every epoch.

    Returns:
        The seconds spent in each training epoch, and the per-epoch history: ``train_loss`` (the
        loss that was optimised, smoothed or not), ``test_accuracy`` and ``test_nll``.
    """
    loader = _loader(splits.x_fit, splits.y_fit, config.batch_size, config.seed)
    test_loader = _loader(splits.x_test, splits.y_test, 1024, None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    clock = _EpochClock(on_epoch)
    loss_fn = build_loss(config, splits.y_fit, num_classes)
    trainer = Trainer(model, loader, max_duration=f"{config.epochs}ep", optimizers=optimizer,
                      schedulers=[scheduler], algorithms=build_algorithms(config), callbacks=[clock],
                      eval_dataloader=test_loader, eval_interval="1ep", device=config.device,
                      seed=config.seed, progress_bar=False, loss_fn=loss_fn or soft_cross_entropy)
    trainer.fit()
    trainer.close()
    train = [record for record in trainer.history if record["split"] == "train"]
    test = [record for record in trainer.history if record["split"] == "eval"]
    history = {
        "train_loss": [record["loss"] for record in train],
        "test_accuracy": [record["accuracy"] for record in test],
        "test_nll": [record["nll"] for record in test],
    }
    return clock.seconds, history


def steady_throughput(epoch_seconds: list[float], samples_per_epoch: int) -> float:
    """Training samples per second, leaving out the first epoch when there are more.

    The first epoch pays one-off costs (allocator growth, kernel selection) that would be
    charged to whichever run happens to come first.

    Args:
        epoch_seconds: training time of each epoch, evaluation excluded.
        samples_per_epoch: training examples per epoch.

    Returns:
        Samples per second over the epochs kept.

    Example:
        >>> steady_throughput([5.0, 1.0, 1.0], 100)
        100.0
    """
    steady = epoch_seconds[1:] or epoch_seconds
    return len(steady) * samples_per_epoch / sum(steady)


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
        plane) for the pictures, ``test_logits`` (rounded to 4 decimals, the numbers every
        metric was computed from) and ``test_targets`` for the bootstrap intervals. The ``ts``
        method trains as ``ce`` and is scored on the logits divided by the temperature fitted
        on the validation split (its own fitted temperature is then about 1).
    """
    torch.manual_seed(config.seed)
    splits = make_splits(data, config)
    model = build_model(config.model, input_shape=data.input_shape, num_classes=data.num_classes)
    seconds, history = _train(model, splits, config, on_epoch, data.num_classes)
    logits, features = predict(model, splits.x_test, device=config.device)
    val_logits, _ = predict(model, splits.x_val, device=config.device)
    if config.method == "ts":
        temperature = fit_temperature(val_logits, splits.y_val, min_temperature=TEMPERATURE_RANGE[0],
                                      max_temperature=TEMPERATURE_RANGE[1])
        logits, val_logits = logits / temperature, val_logits / temperature
    logits, saved_logits = _saved(logits)
    metrics = score(logits, splits.y_test, val_logits, splits.y_val)
    metrics["train_time_s"] = sum(seconds)
    metrics["samples_per_s"] = steady_throughput(seconds, len(splits.y_fit))
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
        "test_logits": saved_logits,
        "test_targets": splits.y_test.tolist(),
    }
