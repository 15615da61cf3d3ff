"""Target classification and checks shared by every function that takes logits and targets.

A target is either *index* (class indices, the logits' shape without the class dimension) or
*dense* (a distribution over classes, the logits' shape). These helpers decide which, check the
shapes, and check index ranges without a host-device synchronisation unless asked to.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from labelsmooth._validation import check_class_dim, check_index_dtype, check_int, fail, shape_str

__all__ = ["TargetKind", "check_ignore_index", "check_target_range", "classify_targets"]

TargetKind = Literal["index", "dense"]


def check_ignore_index(ignore_index: object, *, optional: bool) -> int | None:
    if ignore_index is None and optional:
        return None
    return check_int(ignore_index, "ignore_index")


def classify_targets(
    logits: torch.Tensor, targets: object, class_dim: int, *, logits_name: str = "logits",
    targets_name: str = "targets",
) -> tuple[TargetKind, int]:
    """Return ``("index" | "dense", class_dim normalised)`` after checking shapes and dtypes.

    Index targets have the logits' shape without ``class_dim``; dense targets have the logits'
    shape. Anything else raises a ``ValueError`` that shows both shapes.
    """
    if not isinstance(targets, torch.Tensor):
        fail(targets_name, "a torch.Tensor", type(targets).__name__, error=TypeError)
    if type(class_dim) is int:  # hashable: a training loop asks the same question every step
        return _classify_shapes(logits.shape, targets.shape, targets.dtype, class_dim,
                                logits_name, targets_name)
    return _classify_shapes.__wrapped__(logits.shape, targets.shape, targets.dtype, class_dim,
                                        logits_name, targets_name)


@functools.lru_cache(maxsize=256)
def _classify_shapes(logits_shape: torch.Size, shape: torch.Size, dtype: torch.dtype,
                     class_dim: int, logits_name: str, targets_name: str) -> tuple[TargetKind, int]:
    """:func:`classify_targets` from the shapes and the targets' dtype, all it depends on (a
    refusal raises, and is not cached)."""
    ndim = len(logits_shape)
    dim = check_class_dim(class_dim, ndim)
    num_classes = logits_shape[dim]
    index_shape = logits_shape[:dim] + logits_shape[dim + 1:]
    if shape == index_shape:
        check_index_dtype(dtype, targets_name)
        return "index", dim
    if len(shape) == ndim:
        if dtype == torch.bool or dtype.is_complex:
            fail(targets_name, "a real-valued dense target", f"dtype {dtype}", error=TypeError)
        if shape[dim] != num_classes:
            fail(targets_name,
                 f"dense targets with {num_classes} classes on dim {dim} (shape {shape_str(logits_shape)})",
                 f"{shape[dim]} classes (shape {shape_str(shape)})")
        if shape != logits_shape:
            fail(targets_name, f"dense targets of shape {shape_str(logits_shape)}",
                 f"shape {shape_str(shape)}")
        return "dense", dim
    fail(targets_name,
         f"class indices of shape {shape_str(index_shape)} or dense targets of shape "
         f"{shape_str(logits_shape)} (for {logits_name} of shape {shape_str(logits_shape)}, "
         f"class_dim={dim})",
         f"shape {shape_str(shape)}")


def check_target_range(
    targets: torch.Tensor, num_classes: int, ignore_index: int | None, *,
    validate_args: bool | None, targets_name: str = "targets",
) -> None:
    """Raise ``ValueError`` for an index outside ``[0, num_classes)`` that is not ``ignore_index``.

    ``validate_args=None`` checks only CPU tensors, where the check costs no device
    synchronisation; ``True`` checks on any device (one sync on CUDA); ``False`` never checks
    (an out-of-range index on CUDA then fails inside the kernel).
    """
    if validate_args is False or targets.numel() == 0:
        return
    if validate_args is None and targets.device.type != "cpu":
        return
    # Usually every index is in range: one min/max pass and two reads tell, and only a batch
    # with an index outside [0, C) (an ignored one, or a mistake) is looked at element-wise.
    lowest, highest = torch.aminmax(targets)
    if lowest.item() >= 0 and highest.item() < num_classes:
        return
    # Compare as int64, the dtype the losses index with: in a narrower dtype ``ignore_index``
    # could wrap around (-6 is 250 in uint8) and excuse an out-of-range index.
    targets = targets.long()
    bad = (targets < 0) | (targets >= num_classes)
    if ignore_index is not None:
        bad &= targets != ignore_index
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        value = int(targets[position])
        allowed = f"[0, {num_classes})"
        if ignore_index is not None:
            allowed += f" or ignore_index={ignore_index}"
        fail(targets_name, f"class indices in {allowed}", f"{value} at position {position}")
