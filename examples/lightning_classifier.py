"""Label smoothing with MixUp / CutMix in a PyTorch Lightning ``LightningModule``.

A small convolutional network on scikit-learn's bundled 8x8 digits (no download), trained by a
``pytorch_lightning.Trainer`` with :class:`labelsmooth.SmoothedCrossEntropyLoss` (the fused loss:
no dense target) on batches mixed by :func:`labelsmooth.functional.mixup_batch` or
:func:`labelsmooth.functional.cutmix_batch`. Mixing then smoothing is one interpolation of two
smoothed losses, ``(1 - lam) * L(out, y) + lam * L(out, y[perm])``, so nothing else is needed:
no callback, no target transform.

Needs ``pip install 'labelsmooth[lightning,cli]'`` (Lightning, and scikit-learn for the data).
Run: ``python examples/lightning_classifier.py [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import warnings

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labelsmooth import SmoothedCrossEntropyLoss
from labelsmooth.functional import cutmix_batch, mixup_batch


def digits() -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return TensorDataset(images[:1400], labels[:1400]), TensorDataset(images[1400:], labels[1400:])


class MixedSmoothedClassifier(pl.LightningModule):
    """A classifier trained on MixUp / CutMix batches with label-smoothed cross-entropy.

    Each training batch is mixed by MixUp or, with probability ``cutmix_prob``, by CutMix;
    ``mix_prob`` of the batches are mixed at all. The drawn ``lam`` (the partner's share) is
    logged with the loss.
    """

    def __init__(self, *, smoothing: float = 0.1, mixup_alpha: float = 0.4, cutmix_alpha: float = 1.0,
                 mix_prob: float = 0.8, cutmix_prob: float = 0.5, lr: float = 3e-3, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
        )
        self.criterion = SmoothedCrossEntropyLoss(smoothing=smoothing)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _draw(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        images, labels = batch
        hp = self.hparams
        if self._draw() >= hp.mix_prob:
            loss = self.criterion(self(images), labels)
            lam = 0.0
        else:
            if self._draw() < hp.cutmix_prob:
                mixed = cutmix_batch(images, labels, alpha=hp.cutmix_alpha, generator=self.generator)
            else:
                mixed = mixup_batch(images, labels, alpha=hp.mixup_alpha, generator=self.generator)
            logits = self(mixed.inputs)
            lam = mixed.lam
            loss = torch.lerp(self.criterion(logits, mixed.targets),
                              self.criterion(logits, mixed.permuted_targets), lam)
        self.log_dict({"train_loss": loss, "lam": lam}, on_step=True, prog_bar=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val_accuracy", (logits.argmax(1) == labels).float().mean(), on_epoch=True)
        self.log("val_confidence", logits.softmax(1).amax(1).mean(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Label smoothing + MixUp/CutMix in PyTorch Lightning")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--smoothing", type=float, default=0.1)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    pl.seed_everything(0, verbose=False)
    train, validation = digits()
    model = MixedSmoothedClassifier(smoothing=args.smoothing)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(validation, batch_size=256))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(f"steps={trainer.global_step}  val_accuracy={metrics['val_accuracy']:.3f}  "
          f"val_confidence={metrics['val_confidence']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
