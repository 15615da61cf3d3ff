"""The command's data (MNIST-1D, digits), label noise, validation split and models."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from labelsmooth.cli.data import flip_labels, load_dataset, split_validation
from labelsmooth.cli.experiment import RunConfig, make_splits
from labelsmooth.cli.models import build_model


@pytest.mark.parametrize(("fraction", "n"), [(0.0, 37), (0.1, 37), (0.25, 10), (0.5, 37), (0.3, 1000), (1.0, 9)])
def test_label_noise_flips_exactly_round_p_n_labels_each_to_another_class(fraction: float, n: int) -> None:
    labels = torch.randint(0, 4, (n,))
    original = labels.clone()
    noisy, flipped = flip_labels(labels, fraction, num_classes=4, generator=torch.Generator().manual_seed(3))
    changed = (noisy != labels).nonzero().squeeze(1)
    assert len(changed) == round(fraction * n)
    assert sorted(changed.tolist()) == sorted(flipped.tolist())
    assert ((noisy >= 0) & (noisy < 4)).all()
    assert torch.equal(labels, original)  # not mutated


def test_label_noise_reaches_every_other_class_and_is_reproducible() -> None:
    labels = torch.zeros(3000, dtype=torch.long)
    noisy, _ = flip_labels(labels, 1.0, num_classes=5, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(noisy, minlength=5)
    assert counts[0] == 0 and (counts[1:] > 600).all()  # ~750 each of the 4 other classes
    again, _ = flip_labels(labels, 1.0, num_classes=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_label_noise_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"^label_noise: expected a fraction in \[0, 1\], got 1.5"):
        flip_labels(torch.zeros(3, dtype=torch.long), 1.5, num_classes=3, generator=torch.Generator())


def test_validation_split_partitions_the_training_set() -> None:
    fit, val = split_validation(101, 0.1, generator=torch.Generator().manual_seed(0))
    assert len(val) == 10 and len(fit) == 91
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(101))


def test_noise_and_split_depend_on_the_seed_not_on_smoothing() -> None:
    data = load_dataset("digits")
    config = RunConfig("digits", "mlp", 0.0, 4, 1, 32, 1e-3, label_noise=0.2)
    plain = make_splits(data, config)
    smoothed = make_splits(data, dataclasses.replace(config, smoothing=0.3))
    assert torch.equal(plain.y_fit, smoothed.y_fit) and torch.equal(plain.x_val, smoothed.x_val)
    total = len(data.y_train)
    assert len(plain.y_fit) + len(plain.y_val) == total and len(plain.y_val) == round(0.1 * total)

    def clean_labels(x: torch.Tensor) -> torch.Tensor:
        # Find each example's clean label by matching its pixels against the training set.
        same = (x.flatten(1)[:, None, :] == data.x_train.flatten(1)[None]).all(dim=2)
        assert (same.sum(dim=1) >= 1).all()
        return data.y_train[same.float().argmax(dim=1)]

    # 20% of the labels trained on are wrong; the validation labels are clean.
    assert int((clean_labels(plain.x_fit) != plain.y_fit).sum()) == round(0.2 * len(plain.y_fit))
    assert torch.equal(clean_labels(plain.x_val), plain.y_val)


def test_digits_shapes_and_range() -> None:
    data = load_dataset("digits")
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert set(data.y_train.tolist()) == set(range(10))


def test_mnist1d_shapes_and_global_rng_left_alone() -> None:
    # mnist1d reseeds the legacy global generators, which is exactly what is checked here.
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    expected = random.random(), np.random.random()  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    data = load_dataset("mnist1d")
    assert (random.random(), np.random.random()) == expected  # noqa: NPY002
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.x_train.dtype == torch.float32 and data.num_classes == 10


@pytest.mark.parametrize(("name", "shape"), [("mlp", (1, 40)), ("cnn", (1, 40)), ("mlp", (1, 8, 8)), ("cnn", (1, 8, 8))])
def test_models_expose_features_and_a_linear_head(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, input_shape=shape, num_classes=10)
    x = torch.randn(5, *shape)
    features = model.features(x)
    assert features.shape == (5, 128) and model.head.weight.shape == (10, 128)
    torch.testing.assert_close(model(x), features @ model.head.weight.T + model.head.bias)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^model: expected one of mlp, cnn, got 'resnet'"):
        build_model("resnet", input_shape=(1, 40), num_classes=10)
    with pytest.raises(ValueError, match=r"^dataset: expected one of mnist1d, digits, got 'cifar'"):
        load_dataset("cifar")


def test_runs_smooth_through_the_trainer_algorithm() -> None:
    from labelsmooth.algorithms import LabelSmoothing
    from labelsmooth.cli.experiment import build_algorithms

    config = RunConfig("digits", "mlp", 0.0, 0, 1, 32, 1e-3)
    assert build_algorithms(config) == []
    (algorithm,) = build_algorithms(dataclasses.replace(config, smoothing=0.25))
    assert isinstance(algorithm, LabelSmoothing) and algorithm.smoothing == 0.25


def test_projection_is_skipped_when_the_templates_span_no_plane() -> None:
    from labelsmooth.cli.experiment import _projection

    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    features, targets = torch.randn(30, 128), torch.arange(30) % 10
    assert _projection(model, features, targets) is not None
    with torch.no_grad():
        model.head.weight[1] = model.head.weight[0]
    assert _projection(model, features, targets) is None


def test_the_default_command_is_the_documented_one() -> None:
    # `labelsmooth run`: mnist1d with its CNN, smoothing 0.0 and 0.1, 3 seeds; digits defaults to the MLP.
    from labelsmooth.cli.command import _configs, build_parser

    configs = _configs(build_parser().parse_args(["run"]), "cpu")
    assert [(c.dataset, c.model, c.smoothing, c.seed) for c in configs] == [
        ("mnist1d", "cnn", s, seed) for seed in range(3) for s in (0.0, 0.1)]
    assert {(c.label_noise, c.mixup, c.cutmix) for c in configs} == {(0.0, 0.0, 0.0)}
    (digits,) = _configs(build_parser().parse_args(["run", "--dataset", "digits", "--seeds", "1",
                                                    "--smoothing", "0.2"]), "cpu")
    assert (digits.model, digits.smoothing) == ("mlp", 0.2)
    (overridden,) = _configs(build_parser().parse_args(["run", "--model", "mlp", "--seeds", "1",
                                                        "--smoothing", "0"]), "cpu")
    assert (overridden.dataset, overridden.model) == ("mnist1d", "mlp")
