"""MixUp and CutMix as pure functions that return what they drew.

Both methods pair every example ``i`` of a batch with a partner ``indices[i]`` (a permutation of
the batch) and a mixing weight ``lam`` in [0, 1], the share of the *partner*:

.. math::

    \\text{MixUp:}\\quad \\tilde x_i = (1 - \\lambda)\\, x_i + \\lambda\\, x_{\\pi(i)}, \\qquad
    \\text{CutMix:}\\quad \\tilde x_i = x_i \\text{ with a box pasted from } x_{\\pi(i)},
    \\quad \\lambda = \\frac{\\text{box area}}{\\text{image area}},

and the training target is the same convex combination of the (smoothed) labels,

.. math::

    \\tilde y_i = (1 - \\lambda)\\, \\mathrm{smooth}_s(y_i) + \\lambda\\, \\mathrm{smooth}_s(y_{\\pi(i)}),
    \\qquad \\mathrm{smooth}_s(y) = (1 - s)\\, y + s / C .

Because smoothing is affine and the mixing weights sum to one, smoothing then mixing equals
mixing then smoothing: this is what lets the algorithms compose in any order.

Randomness: ``lam`` is drawn from Beta(alpha, alpha) and ``indices`` from a uniform random
permutation. Every draw goes through the optional ``generator`` (on the generator's device), so a
seeded generator reproduces a batch exactly and leaves torch's global RNG untouched; without one,
torch's global CPU generator is used (``torch.manual_seed`` makes it reproducible). PyTorch's own
Beta and Gamma samplers cannot take a generator, so Beta is built here from two Gamma variates
drawn by Marsaglia and Tsang's rejection method from the generator's normal and uniform draws;
the one ``lam`` of a batch is computed in Python floats from a block of such draws.

The results come back as a :class:`MixedBatch`: the named 4-tuple ``(inputs, targets,
permuted_targets, lam)``, which also carries what was drawn as the attributes ``indices`` and
(CutMix) ``bbox``. Inputs and targets are never modified in place.

References:
    Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
    Features", ICCV 2019.
    Marsaglia and Tsang, "A Simple Method for Generating Gamma Variables", ACM TOMS 26(3), 2000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from labelsmooth._validation import (
    check_class_dim,
    check_int,
    check_smoothing,
    check_unit_interval,
    describe,
    fail,
)
from labelsmooth.functional.smoothing import smooth_labels

__all__ = ["MixedBatch", "cutmix_batch", "mix_targets", "mixup_batch", "paste_box"]

Box = tuple[tuple[int, int], ...]


class _MixedFields(NamedTuple):
    inputs: Tensor
    targets: Tensor
    permuted_targets: Tensor
    lam: float


class MixedBatch(_MixedFields):
    """What :func:`mixup_batch` and :func:`cutmix_batch` return.

    A 4-tuple ``(inputs, targets, permuted_targets, lam)``, so ``x, y, y_perm, lam =
    mixup_batch(...)`` unpacks, that also carries what was drawn as the attributes ``indices``
    and ``bbox``.

    Attributes:
        inputs: the mixed inputs, a new tensor of the input's shape and dtype.
        targets: the original targets (the very object passed in, untouched).
        permuted_targets: ``targets[indices]``, the partner of every example.
        lam: the partner's share in [0, 1]; for CutMix the exact pasted area fraction.
        indices: the permutation used, a 1-D int64 tensor on the inputs' device.
        bbox: CutMix only (``None`` for MixUp): the pasted box as one half-open
            ``(start, stop)`` pair per spatial dimension, in the tensor's order, e.g.
            ``((top, bottom), (left, right))`` for ``(N, C, H, W)``.

    Example:
        >>> out = MixedBatch(torch.zeros(2, 1), torch.tensor([0, 1]), torch.tensor([1, 0]), 0.5,
        ...                  torch.tensor([1, 0]))
        >>> x, y, y_perm, lam = out
        >>> lam, out.indices.tolist(), out.bbox
        (0.5, [1, 0], None)
    """

    indices: Tensor
    bbox: Box | None

    def __new__(cls, inputs: Tensor, targets: Tensor, permuted_targets: Tensor, lam: float,
                indices: Tensor, bbox: Box | None = None) -> MixedBatch:
        self = super().__new__(cls, inputs, targets, permuted_targets, lam)
        self.indices = indices
        self.bbox = bbox
        return self

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, indices={self.indices!r}, bbox={self.bbox!r})"


# --------------------------------------------------------------------------------------------
# Random draws through an optional torch.Generator
# --------------------------------------------------------------------------------------------


def _draw_device(generator: torch.Generator | None) -> torch.device:
    # Draws must be made on the generator's own device; the global generator used without one
    # is torch's CPU generator, so that ``torch.manual_seed`` alone reproduces a run.
    return generator.device if generator is not None else torch.device("cpu")


def _log_standard_gamma(
    concentration: float, num_samples: int, *, generator: torch.Generator | None
) -> Tensor:
    """Logs of ``num_samples`` Gamma(concentration, 1) variates, in float64, using ``generator``.

    Marsaglia and Tsang (2000) for a >= 1: with d = a - 1/3 and c = 1 / sqrt(9 d), draw
    x ~ N(0, 1) and u ~ U(0, 1), set v = (1 + c x)^3, and accept d v when v > 0 and
    log u < x^2 / 2 + d - d v + d log v (acceptance is above 95 %, so a few rounds suffice).
    For a < 1 the same paper's boost Gamma(a) = Gamma(a + 1) * U^(1/a) is used, in log space
    because U^(1/a) underflows float64 for the small alphas MixUp uses (0.2 gives U^5, 0.01
    gives U^100). Rejected slots are redrawn in rounds, so the draws are a deterministic
    function of the generator's state.
    """
    device = _draw_device(generator)
    boosted = concentration < 1.0
    shape = concentration + 1.0 if boosted else concentration
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    log_gamma = torch.empty(num_samples, dtype=torch.float64, device=device)
    pending = torch.arange(num_samples, device=device)
    while pending.numel() > 0:
        count = pending.numel()
        x = torch.randn(count, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(count, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * x) ** 3
        # log of a non-positive v is NaN, and NaN compares False: those candidates are rejected.
        accepted = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v))
        log_gamma[pending[accepted]] = math.log(d) + torch.log(v[accepted])
        pending = pending[~accepted]
    if boosted:
        # 1 - U lies in (0, 1], so its log is finite.
        u = torch.rand(num_samples, generator=generator, dtype=torch.float64, device=device)
        log_gamma = log_gamma + torch.log1p(-u) / concentration
    return log_gamma


def _sample_beta(
    a: float, b: float, num_samples: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """``num_samples`` Beta(a, b) variates in float64 from ``generator`` (on its device).

    Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b); computed as
    sigmoid(log X - log Y), which stays finite when both Gamma variates underflow.
    """
    log_x = _log_standard_gamma(a, num_samples, generator=generator)
    log_y = _log_standard_gamma(b, num_samples, generator=generator)
    return torch.sigmoid(log_x - log_y)


class _ScalarDraws:
    """Standard normal and uniform float64 draws from ``generator``, read as Python floats.

    They are fetched in blocks (one ``randn`` and one ``rand`` call each), so that a scalar
    rejection sampler costs two tensor operations per block instead of a dozen per round. The
    draws are a deterministic function of the generator's state: a reseeded generator, or one
    restored from a checkpoint, gives the same floats.
    """

    BLOCK = 8  # candidates per refill: both Gamma variates of a Beta draw usually fit in one

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.device = _draw_device(generator)
        self.normals: list[float] = []
        self.uniforms: list[float] = []

    def _refill(self) -> None:
        options: dict[str, Any] = dict(generator=self.generator, dtype=torch.float64,
                                       device=self.device)
        self.normals += torch.randn(self.BLOCK, **options).tolist()
        self.uniforms += torch.rand(self.BLOCK, **options).tolist()

    def normal(self) -> float:
        if not self.normals:
            self._refill()
        return self.normals.pop()

    def uniform(self) -> float:
        if not self.uniforms:
            self._refill()
        return self.uniforms.pop()


def _log_standard_gamma_scalar(concentration: float, draws: _ScalarDraws) -> float:
    """The log of one Gamma(concentration, 1) variate: :func:`_log_standard_gamma`'s method
    (Marsaglia and Tsang, with the boost for a < 1 in log space) in Python floats."""
    boosted = concentration < 1.0
    shape = concentration + 1.0 if boosted else concentration
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x, u = draws.normal(), draws.uniform()
        v = (1.0 + c * x) ** 3
        # u == 0 has log -inf: the candidate is accepted, as the tensor version does.
        if v > 0.0 and (u == 0.0 or math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v)):
            break
    log_gamma = math.log(d) + math.log(v)
    if boosted:
        # 1 - U lies in (0, 1], so its log is finite.
        log_gamma += math.log1p(-draws.uniform()) / concentration
    return log_gamma


def _sample_beta_scalar(a: float, b: float, *, generator: torch.Generator | None = None) -> float:
    """One Beta(a, b) variate from ``generator``: ``sigmoid(log X - log Y)`` as in
    :func:`_sample_beta`, in Python floats (a few draws instead of dozens of tensor operations)."""
    draws = _ScalarDraws(generator)
    t = _log_standard_gamma_scalar(a, draws) - _log_standard_gamma_scalar(b, draws)
    # The logistic function written so that exp never overflows.
    if t >= 0.0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def _random_permutation(n: int, *, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator, device=_draw_device(generator)).to(device)


# --------------------------------------------------------------------------------------------
# Validation shared by the functional API and the algorithms
# --------------------------------------------------------------------------------------------


def check_alpha(alpha: Any, argument: str = "alpha") -> float:
    """``alpha`` must be a finite real number > 0 (the Beta(alpha, alpha) concentration)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        fail(argument, "a finite real number > 0", alpha, error=TypeError)
    value = float(alpha)
    if not math.isfinite(value) or value <= 0.0:
        fail(argument, "a finite real number > 0", alpha)
    return value


def check_generator(generator: Any) -> torch.Generator | None:
    """``generator`` must be a ``torch.Generator`` or ``None``; returned unchanged."""
    if generator is not None and not isinstance(generator, torch.Generator):
        fail("generator", "a torch.Generator or None", type(generator).__name__, error=TypeError)
    return generator


def _check_batch(inputs: Any, targets: Any, *, min_ndim: int, shape_doc: str) -> int:
    if not isinstance(inputs, torch.Tensor):
        fail("inputs", "a torch.Tensor", type(inputs).__name__, error=TypeError)
    if not isinstance(targets, torch.Tensor):
        fail("targets", "a torch.Tensor", type(targets).__name__, error=TypeError)
    if inputs.ndim < min_ndim:
        fail("inputs", f"a tensor of shape {shape_doc}", describe(inputs))
    if targets.ndim == 0 or targets.shape[0] != inputs.shape[0]:
        fail("targets", f"a tensor whose first dimension is the batch size {inputs.shape[0]}",
             describe(targets))
    return int(inputs.shape[0])


def _check_indices(indices: Any, batch_size: int, device: torch.device) -> Tensor:
    if not isinstance(indices, torch.Tensor):
        fail("indices", "a torch.Tensor", type(indices).__name__, error=TypeError)
    if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
        fail("indices", "an integer tensor", f"dtype {indices.dtype}", error=TypeError)
    if indices.shape != (batch_size,):
        fail("indices", f"a permutation of range({batch_size}), shape ({batch_size},)",
             describe(indices))
    indices = indices.to(device=device, dtype=torch.long)
    # One host sync, paid only when the caller supplies the permutation.
    if not torch.equal(torch.sort(indices).values, torch.arange(batch_size, device=device)):
        fail("indices", f"a permutation of range({batch_size})", str(indices.tolist()))
    return indices


def _draw_lam(alpha: float, lam: Any, generator: torch.Generator | None) -> float:
    if lam is not None:
        return check_unit_interval(lam, "lam")
    return _sample_beta_scalar(alpha, alpha, generator=generator)


# --------------------------------------------------------------------------------------------
# MixUp
# --------------------------------------------------------------------------------------------


def mixup_batch(
    inputs: Tensor,
    targets: Tensor,
    *,
    alpha: float = 0.2,
    lam: float | None = None,
    indices: Tensor | None = None,
    generator: torch.Generator | None = None,
    lam_at_most_half: bool = True,
) -> MixedBatch:
    """Mix every example with a partner from the same batch: ``(1 - lam) x + lam x[indices]``.

    .. math::

        \\tilde x_i = (1 - \\lambda)\\, x_i + \\lambda\\, x_{\\pi(i)},
        \\qquad \\lambda = \\min(z, 1 - z),\\ z \\sim \\mathrm{Beta}(\\alpha, \\alpha),
        \\ \\pi \\text{ uniform}.

    As in Composer, the drawn ``lam`` is folded into [0, 1/2] (Beta(alpha, alpha) is symmetric,
    so this changes which example of a pair is called the partner, not the mixture): every
    mixed example is mostly its original self, and training accuracy on the original labels
    stays meaningful.

    Train on :func:`mix_targets` ``(targets, permuted_targets, lam, ...)``, or interpolate the
    loss, ``(1 - lam) * L(out, targets) + lam * L(out, permuted_targets)``.

    Args:
        inputs: floating-point ``(N, *)`` batch; not modified.
        targets: ``(N, *)`` targets of any dtype (indices or dense); not modified.
        alpha: Beta concentration, a finite number > 0. Default 0.2. Small values give ``lam``
            near 0 or 1 (mild mixing); 1 gives a uniform ``lam``. Checked even when ``lam`` is given.
        lam: the partner's share in [0, 1]; drawn from Beta(alpha, alpha) when ``None``.
        indices: the partner of each example, a permutation of ``range(N)``; drawn uniformly
            when ``None``.
        generator: a ``torch.Generator`` for every draw (made on its device); ``None`` uses
            torch's global CPU generator.
        lam_at_most_half: fold a drawn ``lam`` into [0, 1/2], ``min(z, 1 - z)`` (default
            ``True``, Composer's choice); ``False`` uses the raw draw ``z``. A given ``lam`` is
            used as it is.

    Returns:
        A :class:`MixedBatch` ``(inputs, targets, permuted_targets, lam)`` with ``.indices``
        (and ``.bbox`` = ``None``).
        A batch of one example is mixed with itself: a documented no-op that returns the inputs'
        values unchanged (``torch.lerp`` is exact when both ends are equal).

    Example:
        >>> import torch
        >>> from labelsmooth.functional import mixup_batch
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> y = torch.tensor([0, 1])
        >>> out = mixup_batch(x, y, lam=0.25, indices=torch.tensor([1, 0]))
        >>> out.inputs
        tensor([[0.2500, 0.2500],
                [0.7500, 0.7500]])
        >>> out.permuted_targets, out.lam
        (tensor([1, 0]), 0.25)

    References:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    """
    alpha = check_alpha(alpha)
    generator = check_generator(generator)
    batch_size = _check_batch(inputs, targets, min_ndim=1, shape_doc="(N, *)")
    if not inputs.is_floating_point():
        fail("inputs", "a floating-point tensor (MixUp averages inputs)", f"dtype {inputs.dtype}",
             error=TypeError)
    if not isinstance(lam_at_most_half, bool):
        fail("lam_at_most_half", "a bool", lam_at_most_half, error=TypeError)
    drawn = lam is None
    lam = _draw_lam(alpha, lam, generator)
    if drawn and lam_at_most_half:
        lam = min(lam, 1.0 - lam)
    if indices is None:
        indices = _random_permutation(batch_size, generator=generator, device=inputs.device)
    else:
        indices = _check_indices(indices, batch_size, inputs.device)
    mixed = torch.lerp(inputs, inputs[indices], lam)
    return MixedBatch(mixed, targets, targets[indices], lam, indices)


# --------------------------------------------------------------------------------------------
# CutMix
# --------------------------------------------------------------------------------------------


def _box_area_fraction(bbox: Box, spatial: Sequence[int]) -> float:
    return math.prod(stop - start for start, stop in bbox) / math.prod(spatial)


def _random_box(lam: float, spatial: Sequence[int], generator: torch.Generator | None, *,
                uniform_sampling: bool = False) -> Box:
    """A box of about ``lam`` of the area, placed at random and clipped to the image.

    Every side is ``round(size * lam ** (1 / k))`` for ``k`` spatial dimensions, so the unclipped
    box covers ``lam`` of the image; clipping at the border shrinks it, which is why the caller
    recomputes ``lam`` from the box (Yun et al. 2019, section 3.1 and their reference code).
    By default the centre is uniform over the image, as in the paper, so border pixels are
    pasted less often than central ones. With ``uniform_sampling`` the start of a side ``L`` is
    uniform over the ``size + L - 1`` positions where the box still overlaps the image, so every
    pixel is inside the box with the same probability ``L / (size + L - 1)`` (Composer's option).
    """
    device = _draw_device(generator)
    box = []
    for size in spatial:
        side = round(size * lam ** (1.0 / len(spatial)))
        if uniform_sampling and side > 0:
            start = int(torch.randint(size + side - 1, (1,), generator=generator, device=device)
                        .item()) - (side - 1)
        else:
            start = int(torch.randint(size, (1,), generator=generator, device=device).item()) - side // 2
        box.append((min(max(start, 0), size), min(max(start + side, 0), size)))
    return tuple(box)


def paste_box(target: Tensor, source: Tensor, box: Box) -> Tensor:
    """A copy of ``target`` with ``source`` inside ``box`` (on the trailing dimensions).

    CutMix's labels for per-pixel targets (segmentation ``(N, H, W)``): the partner's labels
    inside the pasted box, the example's own outside. ``box`` holds one half-open
    ``(start, stop)`` pair per trailing dimension; neither tensor is modified.

    Example:
        >>> paste_box(torch.zeros(1, 2, 3, dtype=torch.long), torch.ones(1, 2, 3, dtype=torch.long),
        ...           ((0, 1), (1, 3)))
        tensor([[[0, 1, 1],
                 [0, 0, 0]]])
    """
    region: tuple[Any, ...] = (Ellipsis, *(slice(start, stop) for start, stop in box))
    pasted = target.clone()
    pasted[region] = source[region]
    return pasted


def _check_bbox(bbox: Any, spatial: Sequence[int]) -> Box:
    expected = (f"{len(spatial)} (start, stop) int pairs with 0 <= start <= stop <= size "
                f"for spatial size {tuple(spatial)}")
    if not isinstance(bbox, Sequence) or len(bbox) != len(spatial):
        fail("bbox", expected, bbox)
    box = []
    for pair, size in zip(bbox, spatial, strict=True):
        if (
            not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        ):
            fail("bbox", expected, bbox, error=TypeError)
        start, stop = pair
        if not 0 <= start <= stop <= size:
            fail("bbox", expected, bbox)
        box.append((start, stop))
    return tuple(box)


def cutmix_batch(
    inputs: Tensor,
    targets: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    bbox: Sequence[Sequence[int]] | None = None,
    indices: Tensor | None = None,
    generator: torch.Generator | None = None,
    uniform_sampling: bool = False,
) -> MixedBatch:
    """Paste a box from each example's partner into it; ``lam`` is the pasted area fraction.

    .. math::

        \\tilde x_i = (1 - M) \\odot x_i + M \\odot x_{\\pi(i)},
        \\qquad \\lambda = \\frac{\\sum M}{H W} \\text{ (exact, after clipping)},

    where the box mask ``M`` is drawn to cover about ``lam_0 ~ Beta(alpha, alpha)`` of the image
    with a uniformly random centre, then clipped to the image; the returned ``lam`` is the area
    actually pasted, so it is the right weight for the partner's label.

    Args:
        inputs: ``(N, C, H, W)`` images or ``(N, C, L)`` sequences (any number of trailing
            spatial dimensions works the same way), any dtype; not modified.
        targets: ``(N, *)`` targets (indices or dense); not modified.
        alpha: Beta concentration, a finite number > 0. Default 1.0 (``lam_0`` uniform).
        lam: the requested area fraction in [0, 1] instead of a Beta draw; the box is still
            placed at random and clipped, so the returned ``lam`` can be smaller. Give at most
            one of ``lam`` and ``bbox``.
        bbox: the box to paste, one half-open ``(start, stop)`` pair per spatial dimension,
            ``((top, bottom), (left, right))`` for images, ``((start, stop),)`` for sequences;
            must lie inside the input. Fixes ``lam`` to its area fraction.
        indices: the partner of each example, a permutation of ``range(N)``; drawn when ``None``.
        generator: a ``torch.Generator`` for every draw (made on its device); ``None`` uses
            torch's global CPU generator.
        uniform_sampling: place the box so that every pixel is pasted with the same
            probability, instead of centring it uniformly (which pastes border pixels less
            often). Default ``False`` (the paper's sampling).

    Returns:
        A :class:`MixedBatch` ``(inputs, targets, permuted_targets, lam)`` with ``.indices``
        and ``.bbox``. For per-pixel targets, the training labels are
        ``paste_box(targets, permuted_targets, bbox)``.
        A batch of one example pastes from itself: a documented no-op on the values.

    Example:
        >>> import torch
        >>> from labelsmooth.functional import cutmix_batch
        >>> x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
        >>> out = cutmix_batch(x, torch.tensor([0, 1]), bbox=((0, 2), (0, 2)),
        ...                    indices=torch.tensor([1, 0]))
        >>> out.lam
        0.25
        >>> out.inputs[0, 0]
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 0., 0.]])

    References:
        Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
        Localizable Features", ICCV 2019.
    """
    alpha = check_alpha(alpha)
    generator = check_generator(generator)
    batch_size = _check_batch(inputs, targets, min_ndim=3, shape_doc="(N, C, H, W) or (N, C, L)")
    spatial = tuple(int(size) for size in inputs.shape[2:])
    if bbox is not None:
        if lam is not None:
            fail("lam", "None when bbox is given (the box fixes lam)", lam)
        box = _check_bbox(bbox, spatial)
    else:
        if not isinstance(uniform_sampling, bool):
            fail("uniform_sampling", "a bool", uniform_sampling, error=TypeError)
        box = _random_box(_draw_lam(alpha, lam, generator), spatial, generator,
                          uniform_sampling=uniform_sampling)
    if indices is None:
        indices = _random_permutation(batch_size, generator=generator, device=inputs.device)
    else:
        indices = _check_indices(indices, batch_size, inputs.device)
    region = (slice(None), slice(None), *(slice(start, stop) for start, stop in box))
    mixed = inputs.clone()
    mixed[region] = inputs[region][indices]
    return MixedBatch(mixed, targets, targets[indices], _box_area_fraction(box, spatial), indices,
                      box)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _smoothed(
    targets: Tensor, *, num_classes: int, smoothing: float, class_dim: int, dtype: torch.dtype,
) -> Tensor:
    """``smooth_labels`` of index or dense targets, without logits.

    The core's :func:`~labelsmooth.functional.smooth_labels` reads only the shape, dtype and
    device of its ``logits``, so a zero-stride template of the result's shape stands in for them
    (no memory is allocated for it) and the smoothing formula stays in one place.
    """
    shape = list(targets.shape)
    if targets.is_floating_point():
        dim = check_class_dim(class_dim, targets.ndim)
        if shape[dim] != num_classes:
            fail("targets", f"dense targets with {num_classes} classes on dim {dim}",
                 describe(targets))
    else:
        shape.insert(check_class_dim(class_dim, targets.ndim + 1), num_classes)
    template = torch.empty((), dtype=dtype, device=targets.device).expand(shape)
    return smooth_labels(template, targets, smoothing, class_dim=class_dim)


def mix_targets(
    targets: Tensor,
    permuted_targets: Tensor,
    lam: float,
    *,
    num_classes: int,
    smoothing: float = 0.0,
    class_dim: int = 1,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The mixed, smoothed training target ``(1 - lam) smooth(y) + lam smooth(y_perm)``.

    .. math::

        \\tilde y = (1 - \\lambda)\\,\\big[(1 - s)\\, y + s / C\\big]
                  + \\lambda\\,\\big[(1 - s)\\, y_{\\pi} + s / C\\big]
                  = (1 - s)\\big[(1 - \\lambda)\\, y + \\lambda\\, y_{\\pi}\\big] + s / C,

    so smoothing and mixing commute: whichever is applied first, every example's target is the
    same distribution, and every row sums to one.

    Args:
        targets: class indices ``(N, *)`` in ``[0, num_classes)`` or dense probabilities
            ``(N, C, *)`` with ``C = num_classes`` on ``class_dim``.
        permuted_targets: the partners' targets, same shape and kind (``targets[indices]``).
        lam: the partner's share in [0, 1], as returned by :func:`mixup_batch` /
            :func:`cutmix_batch`.
        num_classes: ``C``, a positive int.
        smoothing: ``s`` in [0, 1]. Default 0 (plain MixUp/CutMix targets).
        class_dim: where the class axis is in the result (and in dense targets). Default 1.
        dtype: floating dtype of the result; default the dense targets' dtype, float32 for
            index targets.

    Returns:
        A new dense ``(N, C, *)`` tensor; the inputs are not modified.

    Example:
        >>> import torch
        >>> from labelsmooth.functional import mix_targets
        >>> mix_targets(torch.tensor([0]), torch.tensor([2]), 0.25, num_classes=3, smoothing=0.3)
        tensor([[0.6250, 0.1000, 0.2750]])

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", 2015.
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
    """
    lam = check_unit_interval(lam, "lam")
    smoothing = check_smoothing(smoothing)
    check_int(num_classes, "num_classes", minimum=1)
    for name, value in (("targets", targets), ("permuted_targets", permuted_targets)):
        if not isinstance(value, torch.Tensor):
            fail(name, "a torch.Tensor", type(value).__name__, error=TypeError)
    if permuted_targets.shape != targets.shape or (
        permuted_targets.is_floating_point() != targets.is_floating_point()
    ):
        fail("permuted_targets", f"targets of the same shape and kind as targets ({describe(targets)})",
             describe(permuted_targets))
    if dtype is None:
        dtype = targets.dtype if targets.is_floating_point() else torch.float32
    elif not dtype.is_floating_point:
        fail("dtype", "a floating dtype", dtype, error=TypeError)

    def smooth(y: Tensor) -> Tensor:
        return _smoothed(y, num_classes=num_classes, smoothing=smoothing, class_dim=class_dim,
                         dtype=dtype)

    return torch.lerp(smooth(targets), smooth(permuted_targets), lam)
