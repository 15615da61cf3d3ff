"""Shared test helpers: tolerances by dtype, declared once, and a comparison that shows mismatches.

Low-precision results are compared against a float64 reference computed from the same (rounded)
inputs, so the tolerance only has to cover the one rounding of the result to its dtype (and the
float32 arithmetic underneath): about 2**-11 relative for float16 and 2**-8 for bfloat16.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "assert_close"]

# dtype -> (rtol, atol). float32 and float64 are the project's promises (1e-5 and 1e-10
# relative); the absolute parts cover entries that cancel to about zero (gradients of classes
# whose probability equals their smoothed target).
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-7),
    torch.float16: (2e-3, 1e-5),
    torch.bfloat16: (1e-2, 1e-4),
}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    *,
    what: str = "values",
    shown: int = 5,
) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, NaN matching NaN.

    ``dtype`` picks the tolerance (default: ``actual.dtype``); both tensors are compared in
    float64 so a float64 reference can check a low-precision result. On failure the message
    lists the first ``shown`` mismatching indices with both values.
    """
    dtype = actual.dtype if dtype is None else dtype
    rtol, atol = TOLERANCES[dtype]
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    got = actual.detach().to(torch.float64).cpu()
    want = expected.detach().to(torch.float64).cpu()
    both_nan = torch.isnan(got) & torch.isnan(want)
    same_inf = torch.isinf(got) & torch.isinf(want) & (got == want)
    close = (got - want).abs() <= atol + rtol * want.abs()
    bad = ~(close | both_nan | same_inf)
    if bool(bad.any()):
        indices = bad.nonzero()[:shown].tolist()
        lines = [
            f"  at {tuple(i)}: got {got[tuple(i)].item():.10g}, "
            f"expected {want[tuple(i)].item():.10g}"
            for i in indices
        ]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ beyond "
            f"rtol={rtol}, atol={atol} ({dtype}); first mismatches:\n" + "\n".join(lines)
        )
