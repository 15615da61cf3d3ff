import pytest
import torch

from labelsmooth._ops import cross_entropy as _fused


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fused_kernel_for_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the fused kernel even on tiny logits.

    In use, float32/float64 CPU problems of at most ``_NATIVE_MAX_ELEMENTS`` logits are handed
    to PyTorch's own ``F.cross_entropy`` (cheaper there); the tests' small cases would then
    compare PyTorch with itself. ``tests/ops/test_cross_entropy.py`` tests that dispatch with
    the real limit (``native_dispatch`` fixture).
    """
    monkeypatch.setattr(_fused, "_NATIVE_MAX_ELEMENTS", 0)
