"""Private kernels behind the public losses (not a public API: signatures may change).

:mod:`labelsmooth._ops.cross_entropy` holds the fused label-smoothed cross-entropy that
:func:`labelsmooth.functional.smoothed_cross_entropy` calls once it has validated its arguments;
:mod:`labelsmooth._ops.triton_cross_entropy` holds its CUDA kernel, imported only when Triton is
importable and the logits live on a CUDA device.
"""

from __future__ import annotations

from labelsmooth._ops.cross_entropy import Plan, fused_smoothed_cross_entropy, plan

__all__ = ["Plan", "fused_smoothed_cross_entropy", "plan"]
