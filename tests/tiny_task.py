"""A tiny synthetic classification task shared by the trainer tests and the DDP worker script."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

NUM_FEATURES, NUM_CLASSES = 6, 3


def make_dataset(n: int = 64, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """Gaussian inputs; the class is decided by two linear scores (learnable to ~100%)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, NUM_FEATURES, generator=generator, dtype=dtype)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0.5).long()
    return TensorDataset(inputs, targets)


def make_model(*, seed: int = 0, dropout: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(NUM_FEATURES, 16), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(16, NUM_CLASSES),
    ).to(dtype)


def make_loader(dataset: TensorDataset, batch_size: int = 16, *, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)
