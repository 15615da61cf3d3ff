"""labelsmooth with timm's MixUp / CutMix, against the installed timm's own functions.

timm's package import needs torchvision; its ``data/mixup.py`` and ``loss/cross_entropy.py``
need only numpy and torch, so they are loaded from the installed timm by file path (the test
environment installs timm without torchvision, whose PyPI wheel does not import beside torch's
CPU build).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from helpers import assert_close

from labelsmooth import SoftCrossEntropyLoss
from labelsmooth.functional import cutmix_batch, mix_targets, mixup_batch
from labelsmooth.integrations.timm import flip_partners, mixed_smoothed_cross_entropy


def _timm_module(relative: str) -> ModuleType:
    spec = importlib.util.find_spec("timm")  # finds the package without running its __init__
    assert spec is not None and spec.origin is not None, "timm is not installed (scripts/test.sh installs it)"
    path = Path(spec.origin).parent / relative
    module_spec = importlib.util.spec_from_file_location(f"timm_{relative.replace('/', '_')[:-3]}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


timm_mixup = _timm_module("data/mixup.py")
timm_loss = _timm_module("loss/cross_entropy.py")

C = 10


@pytest.fixture(autouse=True)
def _numpy_state_restored():  # type: ignore[no-untyped-def]
    state = np.random.get_state()  # noqa: NPY002 (timm draws from numpy's global generator)
    yield
    np.random.set_state(state)  # noqa: NPY002


def seed_timm(seed: int) -> None:
    np.random.seed(seed)  # noqa: NPY002 (timm draws from numpy's global generator)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 16, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(C, (8,), generator=generator)
    logits = torch.randn(8, C, generator=generator, dtype=torch.float64)
    return images, labels, logits


def loss_and_grad(fn, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    leaf = logits.clone().requires_grad_()
    loss = fn(leaf)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


@pytest.mark.parametrize(("mixup_alpha", "cutmix_alpha"), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_soft_cross_entropy_equals_timm_soft_target_on_timm_mixup(mixup_alpha: float, cutmix_alpha: float) -> None:
    images, labels, logits = batch()
    mixer = timm_mixup.Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=0.1, num_classes=C)
    seed_timm(0)
    _, dense = mixer(images.clone(), labels)
    ours = loss_and_grad(lambda x: SoftCrossEntropyLoss(class_dim=-1)(x, dense.double()), logits)
    theirs = loss_and_grad(lambda x: timm_loss.SoftTargetCrossEntropy()(x, dense.double()), logits)
    assert_close(ours[0], theirs[0], torch.float64, what="loss")
    assert_close(ours[1], theirs[1], torch.float64, what="gradient")


@pytest.mark.parametrize("timm_lam", [0.0, 0.37, 1.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_index_route_equals_timm_mixup_target(timm_lam: float, smoothing: float) -> None:
    _, labels, logits = batch(1)
    expected_target = timm_mixup.mixup_target(labels, C, lam=timm_lam, smoothing=smoothing)
    partners = flip_partners(8)
    ours_target = mix_targets(labels, labels[partners], 1 - timm_lam, num_classes=C, smoothing=smoothing)
    assert_close(ours_target, expected_target, torch.float32, what="target")
    ours = loss_and_grad(lambda x: mixed_smoothed_cross_entropy(x, labels, labels[partners], 1 - timm_lam,
                                                                smoothing=smoothing), logits)
    theirs = loss_and_grad(lambda x: timm_loss.SoftTargetCrossEntropy()(x, expected_target.double()), logits)
    # timm builds its target in float32: its off / on values carry float32 rounding.
    assert_close(ours[0], theirs[0], torch.float32, what="loss")
    assert_close(ours[1], theirs[1], torch.float32, what="gradient")


def test_mixup_batch_reproduces_timm_mixup() -> None:
    images, labels, _ = batch(2)
    mixer = timm_mixup.Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=C)
    seed_timm(5)
    timm_images, timm_target = mixer(images.clone(), labels)
    seed_timm(5)  # the same draw again: timm's lam (the share of the example itself)
    timm_lam, use_cutmix = mixer._params_per_batch()
    assert not use_cutmix and 0.0 < timm_lam < 1.0
    ours = mixup_batch(images, labels, lam=1 - timm_lam, indices=flip_partners(8))
    assert_close(ours.inputs, timm_images, torch.float64, what="images")
    target = mix_targets(ours.targets, ours.permuted_targets, ours.lam, num_classes=C, smoothing=0.1)
    assert_close(target, timm_target, torch.float32, what="target")


def test_cutmix_batch_reproduces_timm_cutmix() -> None:
    images, labels, _ = batch(3)
    mixer = timm_mixup.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=C)
    seed_timm(11)
    timm_images, timm_target = mixer(images.clone(), labels)
    seed_timm(11)  # the same draws again: lam, then the box
    lam, use_cutmix = mixer._params_per_batch()
    (yl, yh, xl, xh), timm_lam = timm_mixup.cutmix_bbox_and_lam(images.shape, lam, correct_lam=True)
    assert use_cutmix and 0.0 < timm_lam < 1.0
    ours = cutmix_batch(images, labels, bbox=((int(yl), int(yh)), (int(xl), int(xh))), indices=flip_partners(8))
    assert torch.equal(ours.inputs, timm_images)
    assert ours.lam == pytest.approx(1 - timm_lam, abs=1e-12)
    target = mix_targets(ours.targets, ours.permuted_targets, ours.lam, num_classes=C, smoothing=0.1)
    assert_close(target, timm_target, torch.float32, what="target")


def test_class_dim_and_ignore_index_pass_through() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 6, C, generator=generator, dtype=torch.float64)  # (N, T, C): classes last
    labels = torch.randint(C, (4, 6), generator=generator)
    partners = labels.flip(0)
    got = mixed_smoothed_cross_entropy(logits, labels, partners, 0.25, smoothing=0.2, class_dim=-1)
    expected = 0.75 * torch.nn.functional.cross_entropy(logits.movedim(-1, 1), labels, label_smoothing=0.2) \
        + 0.25 * torch.nn.functional.cross_entropy(logits.movedim(-1, 1), partners, label_smoothing=0.2)
    assert_close(got, expected, torch.float64)


def test_bad_input() -> None:
    logits, labels = torch.randn(4, C), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"^lam: expected a real number in \[0, 1\], got 1.5$"):
        mixed_smoothed_cross_entropy(logits, labels, labels, 1.5)
    with pytest.raises(ValueError, match=r"^smoothing: expected a real number in \[0, 1\]; negative smoothing needs allow_negative=True, got -0.1$"):
        mixed_smoothed_cross_entropy(logits, labels, labels, 0.5, smoothing=-0.1)
    with pytest.raises(ValueError, match=r"^permuted_target: expected a tensor of target's shape \(4,\), got shape \(3,\)$"):
        mixed_smoothed_cross_entropy(logits, labels, labels[:3], 0.5)
    with pytest.raises(TypeError, match=r"^target: expected class indices"):
        mixed_smoothed_cross_entropy(logits, torch.zeros(4, C), torch.zeros(4, C), 0.5)
    with pytest.raises(ValueError, match=r"^batch_size: expected an int >= 0, got -1$"):
        flip_partners(-1)
