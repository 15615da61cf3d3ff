"""Trainer metrics against independent float64 references: accuracy, ECE (15 bins), NLL."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import HostSyncRecorder
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import LabelSmoothing, Trainer
from labelsmooth.metrics import calibration_histogram, expected_calibration_error
from labelsmooth.trainer.metrics import ClassificationMetrics, _index_rows


def _reference(logits: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Guo et al.'s ECE written out: equal-width bins over (0, 1] of the top probability."""
    probabilities = logits.double().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).double()
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.double().mean().item() * abs(correct[inside].mean() - confidence[inside].mean()).item()
    nll = -probabilities.log()[torch.arange(len(targets)), targets].mean().item()
    return {"accuracy": correct.mean().item(), "ece": ece, "nll": nll}


def _check(actual: dict[str, float], expected: dict[str, float]) -> None:
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("buffer_elements", [1, 700, 2**20])
def test_metrics_match_the_reference_over_several_batches(buffer_elements: int) -> None:
    """Whether batches are added to the sums one by one, two at a time or all at the end."""
    logits, targets = torch.randn(300, 5) * 2, torch.randint(0, 5, (300,))
    metrics = ClassificationMetrics(device="cpu", buffer_elements=buffer_elements)
    for part in range(3):
        rows = slice(100 * part, 100 * (part + 1))
        metrics.update(logits[rows], targets[rows])
    _check(metrics.compute(), _reference(logits, targets))
    metrics.reset()
    metrics.update(logits[:10], targets[:10])
    _check(metrics.compute(), _reference(logits[:10], targets[:10]))


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_the_nll_and_confidences_from_one_exp_pass_match_float64_softmax(scale: float) -> None:
    """Large logits (exp would overflow without the shift) and ignored positions included: each
    row's bin, confidence, correctness and NLL against float64 softmax, and ignored rows in the
    spare bin."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(257, 7, generator=generator) * scale
    labels = torch.randint(0, 7, (257,), generator=generator)
    labels[::5] = -100
    bins, values = _index_rows(logits, labels, -100, torch.float64)
    kept = labels != -100
    log_probs = logits.double().log_softmax(dim=1)[kept]
    top, classes = log_probs.exp().max(dim=1)
    assert values.dtype == torch.float64 and values.shape == (4, 257)
    assert torch.equal(values[0], torch.ones(257, dtype=torch.float64))
    torch.testing.assert_close(values[1, kept], top, rtol=1e-6, atol=0)
    assert torch.equal(values[2, kept], (classes == labels[kept]).double())
    expected_nll = -log_probs.gather(1, labels[kept].unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(values[3, kept], expected_nll, rtol=1e-6, atol=1e-5)
    assert torch.equal(bins[kept], (top * 15).long().clamp(max=14))
    assert torch.equal(bins[~kept], torch.full(((~kept).sum(),), 15))


def test_the_per_bin_sums_are_the_calibration_histogram_with_the_nll_beside_it() -> None:
    """The sums a flush adds, less the spare bin, against the library's histogram and NLL."""
    logits, labels = torch.randn(300, 6) * 3, torch.randint(0, 6, (300,))
    labels[::7] = -100
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, labels)
    metrics._flush()
    table = metrics._table[:, :15]
    torch.testing.assert_close(
        table[:3], calibration_histogram(logits.double().softmax(dim=1), labels, ignore_index=-100))
    kept = labels != -100
    nll = F.cross_entropy(logits.double()[kept], labels[kept], reduction="sum")
    torch.testing.assert_close(table[3].sum(), nll)


def test_ignored_positions_and_extra_dimensions() -> None:
    logits, targets = torch.randn(4, 3, 7), torch.randint(0, 3, (4, 7))
    targets[0, :3] = -100
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, targets)
    rows, flat = logits.movedim(1, -1).reshape(-1, 3), targets.reshape(-1)
    kept = flat != -100
    _check(metrics.compute(), _reference(rows[kept], flat[kept]))


def test_dense_targets_use_argmax_and_soft_nll() -> None:
    logits = torch.randn(50, 4)
    dense = torch.softmax(torch.randn(50, 4) * 3, dim=1)
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, dense)
    result = metrics.compute()
    reference = _reference(logits, dense.argmax(dim=1))
    assert result["accuracy"] == pytest.approx(reference["accuracy"])
    assert result["ece"] == pytest.approx(reference["ece"], abs=1e-5)
    soft_nll = -(dense.double() * logits.double().log_softmax(dim=1)).sum(dim=1).mean().item()
    assert result["nll"] == pytest.approx(soft_nll, abs=1e-5)


def test_index_and_dense_batches_mix() -> None:
    """An index batch, a dense batch and an index batch in a row count as one set of examples."""
    logits = torch.randn(3, 20, 4) * 2
    index, dense = torch.randint(0, 4, (20,)), torch.softmax(torch.randn(20, 4) * 3, dim=1)
    metrics = ClassificationMetrics(device="cpu")
    for batch_logits, batch_targets in [(logits[0], index), (logits[1], dense), (logits[2], index)]:
        metrics.update(batch_logits, batch_targets)
    result = metrics.compute()
    labels = torch.cat([index, dense.argmax(dim=1), index])
    reference = _reference(logits.reshape(60, 4), labels)
    assert result["accuracy"] == pytest.approx(reference["accuracy"])
    assert result["ece"] == pytest.approx(reference["ece"], abs=1e-5)
    log_p = logits.double().log_softmax(dim=2)
    nll = torch.cat([-log_p[0].gather(1, index[:, None]).squeeze(1), -(dense * log_p[1]).sum(dim=1),
                     -log_p[2].gather(1, index[:, None]).squeeze(1)]).mean().item()
    assert result["nll"] == pytest.approx(nll, abs=1e-5)


@pytest.mark.parametrize("written", ["logits", "targets"])
def test_a_kept_batch_written_in_place_is_refused_not_misread(written: str) -> None:
    """On the CPU the metrics keep the batch's own tensors until they add them up: a batch
    written to in place before that (here: the logits overwritten with NaN, or the targets
    shifted) is refused in one line naming it, instead of counting the new values."""
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits, targets)
    if written == "logits":
        logits.fill_(float("nan"))
    else:
        targets.add_(1).remainder_(3)
    with pytest.raises(ValueError, match=r"^logits: expected the logits and targets given to "
                                         r"ClassificationMetrics.update left unchanged .*got "
                                         r"tensors written to in place after the update$"):
        metrics.compute()


@pytest.mark.parametrize(("device", "refused"), [("cpu", True), ("meta", False)])
def test_off_the_cpu_a_copy_is_kept(device: str, refused: bool) -> None:
    """Off the CPU (``meta`` standing in for an accelerator, whose outputs may be overwritten
    by the next step, as with CUDA graphs) the metrics keep a copy, so writing to the batch
    after the update is harmless there; on the CPU it is refused when the batch is added up
    (at the next update, with ``buffer_elements`` already reached)."""
    metrics = ClassificationMetrics(device=device, buffer_elements=30)
    logits = torch.randn(4, 5, device=device)
    targets = torch.zeros(4, dtype=torch.long, device=device)
    metrics.update(logits, targets)
    logits.fill_(1.0)
    context = pytest.raises(ValueError, match="written to in place") if refused else contextlib.nullcontext()
    with context:
        metrics.update(torch.randn(4, 5, device=device), targets.clone())


def test_a_batch_is_kept_without_a_copy_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """An update on the CPU copies nothing (no clone, no allocation of the batch's size); the
    values still match the float64 reference once the batch is added up."""
    logits, targets = torch.randn(40, 5), torch.randint(0, 5, (40,))
    metrics = ClassificationMetrics(device="cpu", track_loss=True)
    clones: list[torch.Tensor] = []
    original_clone = torch.Tensor.clone

    def counting_clone(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        clones.append(self)
        return original_clone(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "clone", counting_clone)
    metrics.update(logits, targets, loss=torch.tensor(1.0))
    assert clones == []
    monkeypatch.undo()
    _check(metrics.compute(), _reference(logits, targets))


def test_loss_is_averaged_per_example() -> None:
    metrics = ClassificationMetrics(device="cpu", track_loss=True)
    metrics.update(torch.randn(3, 2), torch.tensor([0, 1, 0]), loss=torch.tensor(1.0))
    metrics.update(torch.randn(1, 2), torch.tensor([1]), loss=torch.tensor(5.0))
    assert metrics.compute()["loss"] == pytest.approx((3 * 1.0 + 5.0) / 4)
    with pytest.raises(TypeError, match="loss: expected the batch's training loss"):
        metrics.update(torch.randn(1, 2), torch.tensor([1]))
    with pytest.raises(TypeError, match=r"loss: expected .*a scalar tensor .*got a tensor of shape \(2,\)"):
        metrics.update(torch.randn(2, 2), torch.tensor([1, 0]), loss=torch.ones(2))


def test_losses_kept_across_flushes_and_resets_are_weighted_by_batch_size() -> None:
    """Batch losses are added to the sums when the kept logits are: the mean over examples
    equals the float64 sum by hand across buffer flushes, and a reset forgets kept losses."""
    losses = torch.rand(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    sizes = [3, 1, 4, 2, 5, 1, 3]
    metrics = ClassificationMetrics(device="cpu", track_loss=True, buffer_elements=8)
    metrics.update(torch.randn(2, 2), torch.tensor([0, 1]), loss=torch.tensor(100.0))
    metrics.reset()
    for size, loss in zip(sizes, losses, strict=True):
        metrics.update(torch.randn(size, 2), torch.zeros(size, dtype=torch.long), loss=loss.float())
    expected = sum(size * float(loss.float()) for size, loss in zip(sizes, losses, strict=True)) / sum(sizes)
    assert metrics.compute()["loss"] == pytest.approx(expected, rel=1e-12)


def test_a_nan_logit_makes_the_nll_nan_instead_of_being_dropped() -> None:
    """torchmetrics' MeanMetric drops NaN values with a warning (after an ``if nans.any()`` on
    every update, a GPU host sync); the means here keep them, so a broken model shows."""
    logits = torch.randn(4, 3)
    logits[1, 0] = float("nan")
    metrics = ClassificationMetrics(device="cpu", track_loss=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.update(logits, torch.tensor([0, 1, 2, 0]), loss=torch.tensor(float("nan")))
    result = metrics.compute()
    assert math.isnan(result["nll"]) and math.isnan(result["loss"])


def test_a_batch_with_every_position_ignored_gives_nan_means() -> None:
    """Nothing counted: accuracy, ECE and NLL are means over no examples, NaN (``0 / 0``), and
    the loss is still the mean of the batch losses."""
    metrics = ClassificationMetrics(device="cpu", track_loss=True)
    metrics.update(torch.randn(3, 4), torch.full((3,), -100), loss=torch.tensor(2.5))
    result = metrics.compute()
    assert [math.isnan(result[name]) for name in ("accuracy", "ece", "nll")] == [True] * 3
    assert result["loss"] == 2.5


def test_means_check_nothing_per_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NaN check (torch.isnan, then a Python ``if``: a host sync on a GPU) per update."""
    logits, targets = torch.randn(40, 5), torch.randint(0, 5, (40,))
    metrics = ClassificationMetrics(device="cpu", track_loss=True)

    def no_isnan(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.isnan called during a metrics update")

    monkeypatch.setattr(torch, "isnan", no_isnan)
    for rows in (slice(0, 25), slice(25, 40)):
        metrics.update(logits[rows], targets[rows], loss=torch.tensor(2.0))
    monkeypatch.undo()
    _check(metrics.compute(), _reference(logits, targets))
    assert metrics.compute()["loss"] == pytest.approx(2.0)


def test_bad_targets_and_changing_class_counts_raise() -> None:
    metrics = ClassificationMetrics(device="cpu")
    with pytest.raises(ValueError, match=r"^targets: expected dense targets with 3 classes on dim 1 "
                                         r"\(shape \(4, 3\)\), got 2 classes \(shape \(4, 2\)\)$"):
        metrics.update(torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^targets: expected class indices of shape \(4,\) or dense "
                                         r"targets of shape \(4, 3\) .*got shape \(4, 3, 1\)$"):
        metrics.update(torch.randn(4, 3), torch.zeros(4, 3, 1))
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor of class indices, "
                                        r"got dtype torch.float32$"):
        metrics.update(torch.randn(4, 3), torch.zeros(4))
    metrics.update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits: expected 3 classes, as in earlier batches, got 5"):
        metrics.update(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    # a batch of the shapes already checked, with targets of another dtype, is checked again
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor of class indices, "
                                        r"got dtype torch.float32$"):
        metrics.update(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(TypeError, match=r"^targets: expected a torch.Tensor, got list$"):
        metrics.update(torch.randn(4, 3), [0, 1, 2, 0])  # type: ignore[arg-type]


def test_integer_dense_targets_count_as_distributions() -> None:
    logits, labels = torch.randn(6, 4), torch.tensor([0, 3, 1, 1, 2, 0])
    as_ints, as_floats = ClassificationMetrics(device="cpu"), ClassificationMetrics(device="cpu")
    as_ints.update(logits, F.one_hot(labels, 4))
    as_floats.update(logits, F.one_hot(labels, 4).float())
    assert as_ints.compute() == as_floats.compute()
    _check(as_ints.compute(), _reference(logits, labels))


def test_out_of_range_index_targets_raise() -> None:
    """Named by the NLL's soft_cross_entropy check, not an IndexError from deep inside torch."""
    metrics = ClassificationMetrics(device="cpu")
    with pytest.raises(ValueError, match=r"expected class indices in \[0, 3\) or ignore_index=-100, "
                                         r"got 7 at position \(2,\)"):
        metrics.update(torch.randn(4, 3), torch.tensor([0, 1, 7, 2]))


def test_training_metrics_are_unsmoothed_and_on_the_original_targets() -> None:
    """With a learning rate of 0 the model never changes: the epoch's training accuracy, ECE and
    NLL equal an evaluation on the same data, and the loss is the smoothed cross-entropy."""
    data, model = make_dataset(48), make_model()
    trainer = Trainer(model, make_loader(data, 16), max_duration="1ep", device="cpu",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
                      algorithms=[LabelSmoothing(0.3)], eval_dataloader=make_loader(data, 48),
                      progress_bar=False)
    trainer.fit()
    train, evaluation = trainer.history
    inputs, targets = data.tensors
    with torch.no_grad():
        logits = model(inputs)
    _check(train, _reference(logits, targets))
    _check(evaluation, _reference(logits, targets))
    smoothed = F.cross_entropy(logits.double(), targets, label_smoothing=0.3).item()
    assert train["loss"] == pytest.approx(smoothed, abs=1e-5)
    assert train["loss"] > train["nll"]


def test_missing_rich_names_the_extra_and_metrics_need_only_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelsmooth.trainer.progress import ProgressBar

    monkeypatch.setitem(sys.modules, "rich.progress", None)
    with pytest.raises(ImportError, match=r"pip install 'labelsmooth\[trainer\]'"):
        ProgressBar(3)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert set(metrics.compute()) == {"accuracy", "ece", "nll"}


def test_confidence_of_exactly_one_is_in_the_last_bin_as_in_labelsmooth_metrics() -> None:
    """Saturated rows (softmax exactly 1.0 in float32) are in the last bin [14/15, 1], by hand:
    two saturated rows (one right, one wrong) and one right row of confidence 0.95 fill the last
    bin with accuracy 2/3 and confidence (1 + 1 + 0.95) / 3; a row of confidence 0.5 (wrong) is
    alone in bin 7. ECE = 3/4 * |2/3 - 2.95/3| + 1/4 * |0 - 0.5| = 0.3625 (torchmetrics gives
    the saturated rows a bin of their own and reports 0.3875)."""
    logits = torch.tensor([[200.0, 0.0], [0.0, 200.0], [math.log(19.0), 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 0, 0, 1])
    assert logits.softmax(dim=1).max(dim=1).values[:2].tolist() == [1.0, 1.0]
    metrics = ClassificationMetrics(device="cpu")
    metrics.update(logits[:2], targets[:2])
    metrics.update(logits[2:], targets[2:])
    result = metrics.compute()
    hand = 3 / 4 * abs(2 / 3 - 2.95 / 3) + 1 / 4 * 0.5
    assert result["ece"] == pytest.approx(hand, abs=1e-6)
    ours = expected_calibration_error(logits.softmax(dim=1), targets)
    assert result["ece"] == pytest.approx(float(ours), abs=1e-7)
    assert result["accuracy"] == 0.5


@pytest.mark.parametrize("buffer_elements", [1, 2**20])
def test_updates_never_wait_for_the_device(buffer_elements: int) -> None:
    """On ``meta`` tensors (standing in for an accelerator's), an update reads no value back,
    neither when it keeps the batch nor when it adds the kept batches to the sums."""
    metrics = ClassificationMetrics(device="meta", track_loss=True, buffer_elements=buffer_elements)
    logits = torch.randn(8, 5, 3, device="meta")
    targets = torch.randint(0, 5, (8, 3), device="meta")
    with HostSyncRecorder() as recorder:
        for _ in range(3):
            metrics.update(logits, targets, loss=logits.sum())
            metrics.update(logits, logits.softmax(dim=1), loss=logits.sum())
    assert recorder.syncs == []


def test_metrics_can_be_turned_off() -> None:
    data = make_dataset(48)
    trainer = Trainer(make_model(), make_loader(data, 16), max_duration="2ep", device="cpu",
                      train_metrics=False, progress_bar=False)
    trainer.fit()
    assert [sorted(record) for record in trainer.history] == [
        ["batch", "epoch", "lr", "sample", "split"]] * 2
    with pytest.raises(TypeError, match="train_metrics: expected a bool, got no"):
        Trainer(make_model(), make_loader(data, 16), max_duration="2ep", train_metrics="no")  # type: ignore[arg-type]
