"""Private kernels behind the public losses (not a public API: signatures may change).

:mod:`labelsmooth._ops.cross_entropy` holds the fused label-smoothed cross-entropy that
:func:`labelsmooth.functional.smoothed_cross_entropy` calls once it has validated its arguments;
:mod:`labelsmooth._ops.planning` chooses how a call runs; :mod:`labelsmooth._ops.chunked_cross_entropy`
is its CPU pass and :mod:`labelsmooth._ops.triton_cross_entropy` its CUDA kernel, imported only
when Triton is importable and the logits live on a CUDA device.
"""

from __future__ import annotations

from labelsmooth._ops.cross_entropy import fused_smoothed_cross_entropy
from labelsmooth._ops.planning import Plan, plan

__all__ = ["Plan", "fused_smoothed_cross_entropy", "plan"]
