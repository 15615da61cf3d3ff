"""The command's embedded data sets, label noise and the validation split (nothing is downloaded).

* ``mnist1d``: the MNIST-1D benchmark (Greydanus 2020), generated on the spot by the ``mnist1d``
  package with its default arguments: 4000 training and 1000 test signals of length 40.
* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn),
  split 80/20 by a fixed permutation.

References:
    Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439.
    Lukasik, Bhojanapalli, Menon and Kumar (2020), "Does label smoothing mitigate label noise?", ICML.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from labelsmooth._validation import fail
from labelsmooth.cli.errors import require

__all__ = ["DATASETS", "Dataset", "flip_labels", "load_dataset", "split_validation"]

DATASETS = ("mnist1d", "digits")
# The digits split must not depend on the run's seed: every run sees the same test set.
_DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Inputs ``(N, 1, *spatial)`` float32 and integer labels ``(N,)`` for training and test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _mnist1d() -> Dataset:
    data = require("mnist1d.data", "mnist1d")
    np = require("numpy", "numpy")
    # make_dataset reseeds Python's and numpy's global RNGs (mnist1d.utils.set_seed); put them back
    # so that loading the data does not change anything else the user's process draws.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        raw: dict[str, Any] = data.make_dataset(data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    def signals(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32)).unsqueeze(1)

    return Dataset(
        "mnist1d",
        signals(raw["x"]),
        torch.as_tensor(raw["y"]).long(),
        signals(raw["x_test"]),
        torch.as_tensor(raw["y_test"]).long(),
        10,
    )


def _digits() -> Dataset:
    datasets = require("sklearn.datasets", "scikit-learn")
    bunch = datasets.load_digits()
    # Pixel values are 0..16; scale to [0, 1].
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_DIGITS_SPLIT_SEED))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return Dataset("digits", images[train], labels[train], images[test], labels[test], 10)


def load_dataset(name: str) -> Dataset:
    """Build the data set called ``name`` (one of :data:`DATASETS`) in memory.

    Example:
        >>> load_dataset("digits").x_train.shape
        torch.Size([1437, 1, 8, 8])
    """
    if name == "mnist1d":
        return _mnist1d()
    if name == "digits":
        return _digits()
    fail("dataset", f"one of {', '.join(DATASETS)}", repr(name))


def flip_labels(
    labels: torch.Tensor, fraction: float, *, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the labels of exactly ``round(fraction * N)`` examples by a different random class.

    The examples are a uniformly random subset; each gets a class drawn uniformly from the
    ``num_classes - 1`` classes other than its own (adding an offset in ``1..C-1`` modulo ``C``).

    Args:
        labels: ``(N,)`` integer labels in ``[0, num_classes)``; not modified.
        fraction: share of labels to flip, in [0, 1].
        num_classes: number of classes ``C >= 2``.
        generator: the source of randomness (so the flips are reproducible).

    Returns:
        ``(noisy_labels, flipped)``: a new label tensor and the indices of the flipped examples.

    Example:
        >>> noisy, flipped = flip_labels(torch.zeros(10, dtype=torch.long), 0.3, num_classes=3,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> len(flipped), int((noisy != 0).sum())
        (3, 3)
    """
    if not 0.0 <= fraction <= 1.0:
        fail("label_noise", "a fraction in [0, 1]", fraction)
    if num_classes < 2:
        fail("num_classes", "at least 2 classes to flip between", num_classes)
    count = round(fraction * len(labels))
    flipped = torch.randperm(len(labels), generator=generator)[:count]
    offsets = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    return noisy, flipped


def split_validation(
    count: int, fraction: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(count)`` into (fit, validation) index tensors; ``round(fraction * count)``
    examples go to validation (at least one).

    Example:
        >>> fit, val = split_validation(10, 0.2, generator=torch.Generator().manual_seed(0))
        >>> len(fit), len(val), sorted(torch.cat([fit, val]).tolist()) == list(range(10))
        (8, 2, True)
    """
    size = max(1, round(fraction * count))
    order = torch.randperm(count, generator=generator)
    return order[size:], order[:size]
