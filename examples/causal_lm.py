"""A small causal language model trained with label smoothing, without materialising the logits.

Trains a two-layer causal transformer (plain PyTorch) on the Python standard library's own
sources (no download), with a byte-level BPE vocabulary of about 16k tokens trained on the spot
with Hugging Face's ``tokenizers``, once with smoothing 0 and once with 0.1. The output layer is
tied to the embedding, and the loss is :class:`labelsmooth.SmoothedLinearCrossEntropyLoss`: it
takes the hidden states and the output weight, and never builds tokens x vocabulary logits.
Prints held-out perplexity (plain cross-entropy on files never trained on), tokens per second,
and the peak memory of the loss (forward + backward of one batch) next to that of the
materialised path (``F.linear`` then ``F.cross_entropy``).

Run: ``python examples/causal_lm.py`` (about 2-3 minutes on 2 CPU cores) or ``--quick`` (a few
seconds: a 2k vocabulary, a tiny model, a few steps). Needs ``pip install 'labelsmooth[examples]'``.
"""

from __future__ import annotations

import argparse
import math
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labelsmooth import SmoothedLinearCrossEntropyLoss
from labelsmooth.functional import smoothed_linear_cross_entropy


@dataclass(frozen=True)
class Config:
    vocab: int = 16000
    text_bytes: int = 3_000_000
    width: int = 96
    layers: int = 2
    heads: int = 4
    context: int = 64
    batch: int = 8
    steps: int = 150
    lr: float = 3e-3
    eval_batches: int = 20


QUICK = Config(vocab=2000, text_bytes=300_000, width=32, layers=1, heads=2, context=32, batch=8,
               steps=80, lr=1e-2, eval_batches=4)


def stdlib_sources(limit: int) -> tuple[str, str]:
    """About ``limit`` bytes of the standard library's ``.py`` files: (train, held-out) text.

    The files come in sorted order; the last tenth of the bytes (whole files) is held out, so
    the held-out text is code the model never saw. Files above a tenth of ``limit`` are
    skipped, so that no single file decides the split.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(p for p in root.glob("*.py") if p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > limit // 10:
            continue
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    train, seen = [], 0
    while texts and seen + len(texts[0]) <= 0.9 * total:
        seen += len(texts[0])
        train.append(texts.pop(0))
    return "\n".join(train), "\n".join(texts)


def train_tokenizer(text: str, vocab: int):
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as error:
        raise SystemExit("this example needs Hugging Face tokenizers: "
                         "pip install 'labelsmooth[examples]'") from error
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.splitlines(keepends=True)
    chunks = ("".join(lines[i:i + 200]) for i in range(0, len(lines), 200))
    tokenizer.train_from_iterator(chunks, trainer=trainer)
    return tokenizer


class CausalLM(nn.Module):
    """Token and position embeddings, pre-norm transformer blocks, an output layer tied to the
    token embedding. ``forward`` returns hidden states ``(B, T, width)``; the loss applies the
    output layer (``self.embed.weight``)."""

    def __init__(self, vocab: int, config: Config) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, config.width)
        self.position = nn.Parameter(torch.zeros(config.context, config.width))
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        hidden = self.embed(tokens) + self.position[:length]
        return self.norm(self.blocks(hidden, mask=mask, is_causal=True))


def batches(ids: torch.Tensor, config: Config, generator: torch.Generator):
    """Random windows of ``context + 1`` tokens: inputs and next-token targets."""
    while True:
        starts = torch.randint(len(ids) - config.context - 1, (config.batch,), generator=generator)
        window = torch.stack([ids[s:s + config.context + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]


def held_out_perplexity(model: CausalLM, ids: torch.Tensor, config: Config) -> float:
    """exp of the mean plain cross-entropy over consecutive held-out windows."""
    total, count = 0.0, 0
    step = config.context
    with torch.no_grad():
        for b in range(config.eval_batches):
            starts = range(b * config.batch * step, (b + 1) * config.batch * step, step)
            windows = [ids[s:s + step + 1] for s in starts if s + step + 1 <= len(ids)]
            if not windows:
                break
            window = torch.stack(windows)
            hidden = model(window[:, :-1])
            total += float(smoothed_linear_cross_entropy(
                hidden, model.embed.weight, window[:, 1:], 0.0, reduction="sum"))
            count += window[:, 1:].numel()
    return math.exp(total / count)


def peak_memory_mib(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> float:
    """Peak resident-memory growth (MiB) over one loss forward + backward; NaN off Linux."""
    hidden = hidden.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets the peak-RSS mark to the current RSS
        before = _status_kib("VmRSS")
        loss_of(hidden, weight).backward()
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return math.nan


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def train(smoothing: float, ids: torch.Tensor, held_out: torch.Tensor, vocab: int,
          config: Config) -> dict[str, float]:
    torch.manual_seed(0)
    model = CausalLM(vocab, config)
    criterion = SmoothedLinearCrossEntropyLoss(smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    data = batches(ids, config, torch.Generator().manual_seed(1))
    start = time.perf_counter()
    for _ in range(config.steps):
        tokens, target = next(data)
        loss = criterion(model(tokens), model.embed.weight, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    elapsed = time.perf_counter() - start
    tokens, target = next(data)
    with torch.no_grad():
        hidden = model(tokens)
    ours = peak_memory_mib(lambda h, w: criterion(h, w, target), hidden, model.embed.weight,
                           target)
    materialised = peak_memory_mib(
        lambda h, w: F.cross_entropy(F.linear(h, w).flatten(0, 1), target.flatten(),
                                     label_smoothing=smoothing),
        hidden, model.embed.weight, target)
    return {"perplexity": held_out_perplexity(model, held_out, config),
            "tokens_per_s": config.steps * config.batch * config.context / elapsed,
            "loss_mib": ours, "materialised_mib": materialised}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for the tests")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    torch.manual_seed(0)
    began = time.perf_counter()
    train_text, held_text = stdlib_sources(config.text_bytes)
    tokenizer = train_tokenizer(train_text, config.vocab)
    vocab = tokenizer.get_vocab_size()
    ids = torch.tensor(tokenizer.encode(train_text).ids)
    held_out = torch.tensor(tokenizer.encode(held_text).ids)
    print(f"vocabulary {vocab}, {len(ids)} training tokens, {len(held_out)} held-out tokens, "
          f"{config.steps} steps of {config.batch}x{config.context} tokens")
    for smoothing in (0.0, 0.1):
        result = train(smoothing, ids, held_out, vocab, config)
        print(f"smoothing={smoothing}  held-out perplexity={result['perplexity']:.2f}  "
              f"tokens/s={result['tokens_per_s']:.0f}  "
              f"peak loss memory={result['loss_mib']:.1f} MiB "
              f"(materialised logits: {result['materialised_mib']:.1f} MiB)")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
