"""Integrations with the frameworks where people already train.

Each lives in its own submodule and is imported only when asked for, so ``import labelsmooth``
imports none of these frameworks:

- :mod:`labelsmooth.integrations.transformers`: the fused loss for Hugging Face's ``Trainer``
  (``pip install 'labelsmooth[transformers]'``);
- :mod:`labelsmooth.integrations.timm`: losses for timm's MixUp / CutMix targets, and the
  index-target route that never builds them (``pip install 'labelsmooth[timm]'``).

PyTorch Lightning needs no adapter: a ``LightningModule`` calls the losses and the mixing
functions directly (``examples/lightning_classifier.py``, ``pip install 'labelsmooth[lightning]'``).
"""

__all__: list[str] = []
