"""labelsmooth: label smoothing for PyTorch.

Exact, fused label-smoothed losses, the functional API (:mod:`labelsmooth.functional`), and the
``LabelSmoothing`` algorithm for an event-driven ``Trainer``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
