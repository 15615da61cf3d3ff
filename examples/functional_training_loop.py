"""A functional training loop with labelsmooth that smooths its targets.

Trains a small MLP on scikit-learn's bundled 8x8 digits (no download) with and without label
smoothing and prints test accuracy and mean confidence. Run: ``python examples/functional_training_loop.py``.
"""

from __future__ import annotations

import torch
from torch import nn

import labelsmooth.functional as lf


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def training_loop(model: nn.Module, train_loader, num_epochs: int, smoothing: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = lf.soft_cross_entropy
    for _ in range(num_epochs):
        for X, y in train_loader:
            y_hat = model(X)
            # y itself is left untouched: smooth_labels returns a new dense target.
            smoothed_targets = lf.smooth_labels(y_hat, y, smoothing=smoothing)
            loss = loss_fn(y_hat, smoothed_targets)
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    x_train, y_train, x_test, y_test = load_digits_tensors()
    for smoothing in (0.0, 0.1):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
        training_loop(model, loader, num_epochs=15, smoothing=smoothing)
        with torch.no_grad():
            probs = model(x_test).softmax(1)
        accuracy = (probs.argmax(1) == y_test).float().mean().item()
        confidence = probs.max(1).values.mean().item()
        print(f"smoothing={smoothing:.1f}  test accuracy={accuracy:.3f}  mean confidence={confidence:.3f}")


if __name__ == "__main__":
    main()
