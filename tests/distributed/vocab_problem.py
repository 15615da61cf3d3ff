"""The global problem every rank of the vocabulary-parallel tests (and their reference) builds."""

from __future__ import annotations

import itertools

import torch

SHAPE = (3, 5)
HIDDEN = 6
CLASSES = 23
# Uneven contiguous slices of the 23 classes, rank order.
WIDTHS = {1: [23], 2: [9, 14], 4: [4, 7, 5, 7]}
CASES = [(weighted, reduction, 0.1) for weighted, reduction in
         itertools.product([False, True], ["mean", "sum", "none"])] + [(True, "mean", 0.0)]
CHUNK = 4


def problem(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    target = torch.randint(CLASSES, SHAPE, generator=g)
    target.view(-1)[::4] = -100
    return {
        "logits": (3 * torch.randn(*SHAPE, CLASSES, generator=g, dtype=torch.float64)).to(dtype),
        "target": target,
        "input": torch.randn(*SHAPE, HIDDEN, generator=g, dtype=torch.float64).to(dtype),
        "linear_weight": torch.randn(CLASSES, HIDDEN, generator=g, dtype=torch.float64).to(dtype),
        "linear_bias": torch.randn(CLASSES, generator=g, dtype=torch.float64).to(dtype),
        "weight": torch.rand(CLASSES, generator=g, dtype=torch.float64).to(dtype) + 0.1,
        "grad_none": torch.rand(SHAPE, generator=g, dtype=torch.float64).to(dtype),
        "grad_scalar": torch.tensor(0.7, dtype=torch.float64).to(dtype),
    }


def shard(world: int, rank: int) -> slice:
    widths = WIDTHS[world]
    start = sum(widths[:rank])
    return slice(start, start + widths[rank])
