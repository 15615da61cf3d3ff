"""The functional API: pure functions in one flat namespace (like ``composer.functional``).

Example:
    >>> import torch
    >>> import labelsmooth.functional as lf
    >>> logits, y = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    >>> smoothed = lf.smooth_labels(logits, y, smoothing=0.1)
    >>> loss = lf.soft_cross_entropy(logits, smoothed)
    >>> torch.allclose(loss, lf.smoothed_cross_entropy(logits, y, smoothing=0.1))
    True
"""

from labelsmooth.functional.cross_entropy import (
    mixed_smoothed_cross_entropy,
    smoothed_binary_cross_entropy_with_logits,
    smoothed_cross_entropy,
    soft_cross_entropy,
)
from labelsmooth.functional.linear_cross_entropy import (
    plan_chunk_rows,
    smoothed_linear_cross_entropy,
)
from labelsmooth.functional.mixing import (
    MixedBatch,
    cutmix_batch,
    mix_targets,
    mixup_batch,
    paste_box,
)
from labelsmooth.functional.penalties import confidence_penalty, entropy
from labelsmooth.functional.priors import class_prior, confusion_prior, similarity_prior
from labelsmooth.functional.smoothing import one_hot, smooth_binary_labels, smooth_labels

__all__ = [
    "MixedBatch",
    "class_prior",
    "confidence_penalty",
    "confusion_prior",
    "cutmix_batch",
    "entropy",
    "mix_targets",
    "mixed_smoothed_cross_entropy",
    "mixup_batch",
    "one_hot",
    "paste_box",
    "plan_chunk_rows",
    "similarity_prior",
    "smooth_binary_labels",
    "smooth_labels",
    "smoothed_binary_cross_entropy_with_logits",
    "smoothed_cross_entropy",
    "smoothed_linear_cross_entropy",
    "soft_cross_entropy",
]
