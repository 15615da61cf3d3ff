"""Shared test helpers: one dtype-to-tolerance table and an assertion that shows mismatches.

Low-precision results are best compared against a float64 reference computed from the same
(rounded) inputs: the tolerance then only has to cover float32 accumulation and the one rounding
of the result to its dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# (rtol, atol) per dtype, declared once for the whole suite. float32 and float64 follow the
# library's contract (1e-5 and 1e-10 relative to PyTorch); half precisions are compared after
# float32 accumulation, so their error is that of one rounding of the result.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float16: (2e-3, 1e-3),
}


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


def _looser(first: torch.dtype, second: torch.dtype) -> torch.dtype:
    known = [d for d in (first, second) if d in TOLERANCES]
    return max(known, key=lambda d: TOLERANCES[d]) if known else torch.float32


def assert_close(
    actual: Any,
    expected: Any,
    dtype: torch.dtype | None = None,
    *,
    what: str = "values",
    shown: int = 5,
) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, NaN equal to NaN.

    ``dtype`` picks the tolerance (default: the less precise of the two tensors' dtypes, so a
    float32 result checked against a float64 reference gets float32's). Both are compared in
    float64 on the CPU. On failure the message lists how many elements differ and the first
    ``shown`` mismatching indices with both values.
    """
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    dtype = dtype or _looser(actual.dtype, expected.dtype)
    rtol, atol = TOLERANCES[dtype]
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    got = actual.detach().to("cpu", torch.float64)
    want = expected.detach().to("cpu", torch.float64)
    both_nan = torch.isnan(got) & torch.isnan(want)
    same_inf = torch.isinf(got) & (got == want)
    close = (got - want).abs() <= atol + rtol * want.abs()
    bad = ~(close | both_nan | same_inf)
    if bool(bad.any()):
        lines = [
            f"  at {tuple(index)}: got {got[tuple(index)].item():.10g}, "
            f"expected {want[tuple(index)].item():.10g}"
            for index in bad.nonzero()[:shown].tolist()
        ]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ beyond "
            f"rtol={rtol}, atol={atol} ({dtype}); first mismatches:\n" + "\n".join(lines)
        )


class HostSyncRecorder(TorchDispatchMode):
    """Record the operations that would make the host wait for an accelerator.

    Used with ``meta`` tensors standing in for an accelerator's (no GPU needed): a copy between
    the CPU and another device (a non-pinned host-to-device copy synchronises on CUDA) and a
    read of a tensor's value (``.item()``, ``bool(tensor)``, ``nonzero``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = str(func)
        if any(op in name for op in ("_local_scalar_dense", "nonzero", "is_nonzero")):
            self.syncs.append(name)
        if name.startswith(("aten._to_copy", "aten.copy_")):
            source = args[1] if name.startswith("aten.copy_") else args[0]
            destination = args[0].device if name.startswith("aten.copy_") else kwargs.get(
                "device", source.device)
            if source.device.type != torch.device(destination).type:
                self.syncs.append(f"{name} from {source.device} to {destination}")
        return func(*args, **kwargs)
