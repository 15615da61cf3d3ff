"""labelsmooth.integrations.transformers against Hugging Face's own LabelSmoother and Trainer.

The model is a tiny GPT-2 built from a config (random weights, nothing downloaded) in float64.
Our loss is checked at float64 tolerance against PyTorch's own loss and against itself (gradient
accumulation). Against Hugging Face's LabelSmoother the tolerance is float32's: it sums the
log-probabilities over the vocabulary with ``dtype=torch.float32`` whatever the logits' dtype, so
its smoothing term carries float32 rounding even for float64 logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LabelSmoother as HFLabelSmoother

from labelsmooth.integrations import transformers as lst

VOCAB, SEQ = 1000, 12
LENGTHS = [12, 3, 9, 5, 12, 7, 2, 10]  # non-padded tokens of the 8 examples: micro-batches differ


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=64, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).double()


def examples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    rows = []
    for length in LENGTHS:
        ids = torch.randint(VOCAB, (SEQ,), generator=generator)
        mask = (torch.arange(SEQ) < length).long()
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return rows


def batch(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def train(tmp_path: Path, *, loss: str, batch_size: int = 8, accumulation: int = 1,
          steps: int = 1) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train a fresh tiny GPT-2 with plain SGD; return its parameters and the logged losses."""
    model = tiny_gpt2()
    args = TrainingArguments(
        output_dir=str(tmp_path / loss), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=steps, learning_rate=0.5,
        lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
        label_smoothing_factor=0.1 if loss == "huggingface" else 0.0,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    compute = lst.compute_loss_func(0.1, shift_labels=True) if loss == "compute_loss_func" else None
    trainer = Trainer(model=model, args=args, train_dataset=examples(), optimizers=(optimizer, None),
                      compute_loss_func=compute)
    if loss == "label_smoother":
        trainer.label_smoother = lst.LabelSmoother(0.1)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {name: p.detach().clone() for name, p in model.named_parameters()}, losses


def assert_same_parameters(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float64) -> None:
    for name in first:
        assert_close(first[name], second[name], dtype, what=name)


# --- the loss of one batch -------------------------------------------------------------------


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("num_items", [None, 57])
def test_loss_and_gradient_equal_hugging_face_label_smoother(shift: bool, num_items: int | None) -> None:
    inputs = batch(examples())
    grads, losses = [], []
    for smoother in (HFLabelSmoother(epsilon=0.1), lst.LabelSmoother(0.1)):
        model = tiny_gpt2()
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss = smoother(outputs, inputs["labels"], shift_labels=shift, num_items_in_batch=num_items)
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert_close(losses[1], losses[0], torch.float32, what="loss")
    assert_same_parameters(grads[1], grads[0], torch.float32)
    logits = tiny_gpt2()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.detach()
    labels = inputs["labels"]
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    kept = labels != -100
    reference = F.cross_entropy(logits[kept], labels[kept], label_smoothing=0.1, reduction="sum")
    reference = reference / (num_items if num_items is not None else kept.sum())
    assert_close(losses[1], reference, torch.float64, what="loss against PyTorch")


def test_causal_shift_and_padding_against_pytorch() -> None:
    # Position t predicts label t + 1, -100 contributes nothing: PyTorch's loss on exactly the
    # pairs that count is the independent reference, and the rows that do not count get no gradient.
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(3, 7, 13, generator=generator, dtype=torch.float64)
    labels = torch.randint(13, (3, 7), generator=generator)
    labels[0, 5:] = -100
    labels[2, 1] = -100
    leaf = base.clone().requires_grad_()
    logits = leaf * 1
    logits.retain_grad()
    loss = lst.smoothed_loss({"logits": logits}, labels, 0.2, shift_labels=True)
    kept = labels[:, 1:] != -100
    reference = F.cross_entropy(base[:, :-1][kept], labels[:, 1:][kept], label_smoothing=0.2)
    assert_close(loss.detach(), reference, torch.float64, what="loss")
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, -1] == 0)  # the last position predicts nothing
    assert torch.all(logits.grad[0, 4:] == 0)  # predicts labels[0, 5:] == -100
    assert torch.all(logits.grad[2, 0] == 0)  # predicts labels[2, 1] == -100
    expected = torch.autograd.grad(
        F.cross_entropy(leaf[:, :-1][kept], labels[:, 1:][kept], label_smoothing=0.2), leaf)[0]
    assert_close(leaf.grad, expected, torch.float64, what="gradient")


def test_in_place_writes_the_gradient_into_the_logits_storage_only_when_training() -> None:
    weight = torch.randn(16, 50, requires_grad=True)
    hidden, labels = torch.randn(4, 6, 16), torch.randint(50, (4, 6))
    logits = hidden @ weight
    logits.retain_grad()
    loss_func = lst.compute_loss_func(0.1, shift_labels=True)
    loss_func({"logits": logits}, labels).backward()
    assert logits.grad is not None
    assert torch.equal(logits.detach(), logits.grad)  # the logits' storage now holds the gradient
    expected = torch.autograd.grad(lst.smoothed_loss((hidden @ weight,), labels, 0.1, shift_labels=True,
                                                     inplace_backward=False), weight)[0]
    assert_close(weight.grad, expected, what="weight gradient")
    with torch.no_grad():  # evaluation reads the logits after the loss: they stay as they are
        logits = hidden @ weight
        kept = logits.clone()
        loss_func({"logits": logits}, labels)
    assert torch.equal(logits, kept)
    leaf = torch.randn(4, 6, 50, requires_grad=True)  # a leaf cannot be overwritten: out of place
    loss_func((leaf,), labels).backward()
    assert leaf.grad is not None and not torch.equal(leaf.detach(), leaf.grad)


# --- the real Trainer ------------------------------------------------------------------------


@pytest.mark.parametrize("ours", ["compute_loss_func", "label_smoother"])
def test_trainer_steps_equal_hugging_face_label_smoothing(tmp_path: Path, ours: str) -> None:
    reference, reference_losses = train(tmp_path, loss="huggingface", batch_size=4, steps=3)
    params, losses = train(tmp_path, loss=ours, batch_size=4, steps=3)
    assert len(losses) == 3
    assert losses == pytest.approx(reference_losses, rel=1e-5)
    assert_same_parameters(params, reference, torch.float32)


def test_gradient_accumulation_equals_one_large_batch(tmp_path: Path) -> None:
    large, _ = train(tmp_path, loss="compute_loss_func", batch_size=8, accumulation=1)
    accumulated, _ = train(tmp_path, loss="compute_loss_func", batch_size=2, accumulation=4)
    assert_same_parameters(accumulated, large)
    # The micro-batches hold different numbers of tokens, so averaging per micro-batch (what a
    # loss without num_items_in_batch gives) would be a different update: the check can fail.
    start = tiny_gpt2()
    rows = examples()
    for rows_of in (rows[i:i + 2] for i in range(0, 8, 2)):
        inputs = batch(rows_of)
        out = start(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        (lst.smoothed_loss(out, inputs["labels"], 0.1, shift_labels=True) / 4).backward()
    naive = {name: p.detach() - 0.5 * p.grad for name, p in start.named_parameters()}
    gap = max(float((naive[n] - large[n]).abs().max()) for n in large)
    assert gap > 1e-6


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [{"loss": torch.tensor(1.0)}, None, (), ("text",),
                                    {"logits": torch.zeros(2, 3, dtype=torch.long)}])
def test_model_output_without_logits(output: object) -> None:
    with pytest.raises(TypeError, match=r"^model_output: expected a model output with floating-point logits"):
        lst.LabelSmoother(0.1)(output, torch.zeros(2, 3, dtype=torch.long))


def test_labels_of_the_wrong_shape_name_the_shift() -> None:
    logits = torch.randn(2, 5, 11)
    with pytest.raises(ValueError) as caught:  # already shifted by the user, and shifted again
        lst.compute_loss_func(0.1, shift_labels=True)({"logits": logits}, torch.zeros(2, 4, dtype=torch.long))
    assert str(caught.value) == ("labels: expected shape (2, 5), the logits' (2, 5, 11) without the class "
                                 "dimension (unshifted: shift_labels=True shifts them), got shape (2, 4)")
    with pytest.raises(TypeError, match=r"^labels: expected an integer tensor of class indices"):
        lst.LabelSmoother()({"logits": logits}, torch.zeros(2, 5))
    with pytest.raises(TypeError, match=r"^labels: expected a tensor of class indices of shape \(2, 5\)"):
        lst.LabelSmoother()({"logits": logits}, None)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, float("nan")])
def test_smoothing_outside_the_unit_interval(smoothing: float) -> None:
    with pytest.raises(ValueError, match=r"^smoothing: expected a real number in \[0, 1\]"):
        lst.compute_loss_func(smoothing)
    with pytest.raises(ValueError, match=r"^epsilon: expected a real number in \[0, 1\]"):
        lst.LabelSmoother(smoothing)


def test_other_bad_options() -> None:
    with pytest.raises(TypeError, match=r"^shift_labels: expected a bool, got 'yes'"):
        lst.compute_loss_func(0.1, shift_labels="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^num_items_in_batch: expected None, a number or a tensor"):
        lst.smoothed_loss(torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.long), num_items_in_batch="8")


def test_too_old_transformers_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.45.2")
    with pytest.raises(ImportError) as caught:
        lst.compute_loss_func(0.1)
    assert str(caught.value) == ("labelsmooth.integrations.transformers needs transformers>=4.46, found "
                                 "4.45.2; install it with: pip install -U 'labelsmooth[transformers]'")


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"needs transformers, which is not installed .*"
                                          r"pip install 'labelsmooth\[transformers\]'$"):
        lst.LabelSmoother(0.1)


def test_prediction_logits_are_left_intact_and_eval_loss_equals_hugging_face(tmp_path: Path) -> None:
    # Evaluation computes the loss under torch.no_grad() and then returns the logits: the
    # in-place loss must not have written into them.
    rows = examples()
    results = {}
    for loss in ("huggingface", "compute_loss_func"):
        model = tiny_gpt2()
        args = TrainingArguments(output_dir=str(tmp_path / loss), per_device_eval_batch_size=4, report_to="none",
                                 use_cpu=True, disable_tqdm=True,
                                 label_smoothing_factor=0.1 if loss == "huggingface" else 0.0)
        compute = lst.compute_loss_func(0.1, shift_labels=True) if loss == "compute_loss_func" else None
        results[loss] = Trainer(model=model, args=args, compute_loss_func=compute).predict(rows)
    inputs = batch(rows)
    with torch.no_grad():
        expected = tiny_gpt2()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    ours = results["compute_loss_func"]
    assert_close(torch.as_tensor(ours.predictions), expected, torch.float64, what="predictions")
    assert ours.metrics["test_loss"] == pytest.approx(results["huggingface"].metrics["test_loss"], rel=1e-5)
