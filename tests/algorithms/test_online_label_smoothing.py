"""OnlineLabelSmoothing: against a hand-written float64 loop over two epochs (with and without
ignored targets), the DDP sum, a checkpoint round trip and a mid-epoch resume, the refusals."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import HostSyncRecorder, assert_close
from tiny_task import NUM_CLASSES, make_dataset, make_loader, make_model

from labelsmooth import (
    LabelSmoothing,
    MixUp,
    OnlineLabelSmoothing,
    SmoothedCrossEntropyLoss,
    Trainer,
)
from labelsmooth.algorithms import online_label_smoothing as ols_module
from labelsmooth.trainer import Callback, Event, State

WORKER = Path(__file__).with_name("ols_ddp_worker.py")


def _reference_run(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                   alpha: float, s0: float, epochs: int, lr: float, ignore_index: int | None = None
                   ) -> tuple[list[torch.Tensor], list[float]]:
    """OLS written out with Python loops in float64: the matrix after each epoch, every loss.

    A target equal to ``ignore_index`` is skipped in the statistics and in the loss's sum; the
    mean divides by every position (a dense target's ``"mean"``)."""
    C = NUM_CLASSES
    S = [[(1 - s0) * (i == j) + s0 / C for j in range(C)] for i in range(C)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    matrices, losses = [], []
    for _ in range(epochs):
        sums = [[0.0] * C for _ in range(C)]
        counts = [0] * C
        for x, y in batches:
            logits = model(x)
            probabilities = logits.detach().softmax(dim=1)
            log_p = logits.log_softmax(dim=1)
            total = torch.zeros((), dtype=torch.float64)
            for i, label in enumerate(y.tolist()):
                if label == ignore_index:
                    continue
                if int(probabilities[i].argmax()) == label:
                    counts[label] += 1
                    for j in range(C):
                        sums[label][j] += float(probabilities[i, j])
                for j in range(C):
                    target = alpha * (j == label) + (1 - alpha) * S[label][j]
                    total = total - target * log_p[i, j]
            loss = total / len(y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        S = [[sums[c][j] / counts[c] for j in range(C)] if counts[c] else S[c] for c in range(C)]
        matrices.append(torch.tensor(S, dtype=torch.float64))
    return matrices, losses


class _Record(Callback):
    """Each step's loss and the matrix in use after each epoch."""

    def __init__(self, algorithm: OnlineLabelSmoothing) -> None:
        self.algorithm, self.losses, self.matrices = algorithm, [], []  # type: ignore[var-annotated]

    def batch_end(self, state: State, logger: Any) -> None:
        self.losses.append(float(state.loss))  # type: ignore[arg-type]

    def epoch_end(self, state: State, logger: Any) -> None:
        self.matrices.append(self.algorithm.soft_labels.clone())  # type: ignore[union-attr]


def _fit_two_epochs(data: torch.utils.data.Dataset) -> tuple[torch.nn.Module, torch.nn.Module,
                                                             _Record]:
    """A float64 model trained 2 epochs by the Trainer with ``OnlineLabelSmoothing(alpha=0.4,
    initial_smoothing=0.2)`` (SGD, lr 0.5, batches of 8); its untrained copy; the record."""
    model = make_model(seed=3, dtype=torch.float64)
    reference_model = copy.deepcopy(model)
    algorithm = OnlineLabelSmoothing(alpha=0.4, initial_smoothing=0.2)
    record = _Record(algorithm)
    Trainer(model, make_loader(data, 8), max_duration="2ep", device="cpu", progress_bar=False,
            optimizers=torch.optim.SGD(model.parameters(), lr=0.5), algorithms=[algorithm],
            callbacks=[record]).fit()
    return model, reference_model, record


def _assert_same_run(record: _Record, model: torch.nn.Module, matrices: list[torch.Tensor],
                     losses: list[float], reference_model: torch.nn.Module) -> None:
    """The Trainer's soft-label matrices, losses and final weights equal the reference run's."""
    for actual, expected in zip(record.matrices, matrices, strict=True):
        assert_close(actual, expected)
    assert_close(torch.tensor(record.losses), torch.tensor(losses))
    for actual, expected in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert_close(actual, expected)


def test_two_epochs_match_a_hand_written_float64_loop() -> None:
    data = make_dataset(24, dtype=torch.float64)
    model, reference_model, record = _fit_two_epochs(data)
    batches = list(make_loader(data, 8))
    matrices, losses = _reference_run(reference_model, batches, alpha=0.4, s0=0.2, epochs=2, lr=0.5)

    # Some rows measured, and not every class right every time: the test sees both cases.
    assert record.matrices[0].dtype == torch.float64
    assert not torch.equal(matrices[0], matrices[1])
    _assert_same_run(record, model, matrices, losses, reference_model)


def test_ignored_targets_count_nowhere_against_a_hand_written_float64_loop() -> None:
    inputs, targets = make_dataset(24, dtype=torch.float64).tensors
    targets = targets.clone()
    targets[::5] = -100  # ignored positions in every batch of 8, some at a batch's start
    data = torch.utils.data.TensorDataset(inputs, targets)
    model, reference_model, record = _fit_two_epochs(data)
    matrices, losses = _reference_run(reference_model, list(make_loader(data, 8)), alpha=0.4,
                                      s0=0.2, epochs=2, lr=0.5, ignore_index=-100)

    assert not torch.equal(matrices[0], matrices[1])
    _assert_same_run(record, model, matrices, losses, reference_model)


def test_pure_functions_skip_a_custom_ignore_index_over_positions() -> None:
    torch.manual_seed(4)
    logits = torch.randn(3, 4, 5, dtype=torch.float64) * 3  # (N, C, d): classes on dim 1
    targets = torch.randint(0, 4, (3, 5))
    targets[0, 1] = targets[2, 4] = targets[1, 0] = 255
    sums, counts = torch.zeros(4, 4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    ols_module.accumulate_correct(sums, counts, logits, targets, ignore_index=255)
    expected_sums, expected_counts = torch.zeros(4, 4, dtype=torch.float64), [0.0] * 4
    for n in range(3):
        for d in range(5):
            label, row = int(targets[n, d]), logits[n, :, d]
            if label != 255 and int(row.argmax()) == label:
                expected_sums[label] += row.softmax(dim=0)
                expected_counts[label] += 1
    assert_close(sums, expected_sums)
    assert counts.tolist() == expected_counts and sum(expected_counts) > 0

    S = torch.softmax(torch.randn(4, 4, dtype=torch.float64), dim=1)
    dense = ols_module.online_label_targets(S, targets, 0.3, ignore_index=255)
    assert dense.shape == (3, 4, 5)
    for n in range(3):
        for d in range(5):
            label = int(targets[n, d])
            if label == 255:
                assert torch.equal(dense[n, :, d], torch.zeros(4, dtype=torch.float64))
            else:
                assert_close(dense[n, :, d], 0.3 * torch.eye(4, dtype=torch.float64)[label]
                             + 0.7 * S[label])


def test_a_class_never_classified_correctly_keeps_its_row_and_rows_are_distributions() -> None:
    algorithm = OnlineLabelSmoothing(alpha=0.5, num_classes=4, initial_smoothing=0.3)
    logits = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 5.0],
                           [1.0, 0.5, 0.2, 0.1]])
    targets = torch.tensor([0, 2, 3, 0])  # the second is wrong: class 2 has no correct example
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    for event in (Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.EPOCH_END):
        algorithm.apply(event, state, None)
    S = algorithm.soft_labels
    assert S is not None
    probabilities = logits.double().softmax(dim=1)
    assert_close(S[0], ((probabilities[0] + probabilities[3]) / 2).float())
    assert_close(S[3], probabilities[2].float())
    initial = 0.7 * torch.eye(4) + 0.3 / 4
    assert torch.equal(S[1], initial[1]) and torch.equal(S[2], initial[2])
    assert_close(S.sum(dim=1), torch.ones(4))
    assert state.batch[1] is targets


def test_the_loss_is_alpha_ce_plus_soft_ce_and_the_batch_gets_its_targets_back() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3, 4, dtype=torch.float64), torch.randint(0, 3, (5, 4))
    algorithm = OnlineLabelSmoothing(alpha=0.3, initial_smoothing=0.25)
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    algorithm.apply(Event.BEFORE_LOSS, state, None)
    dense = state.batch[1]
    S0 = 0.75 * torch.eye(3, dtype=torch.float64) + 0.25 / 3
    ce = torch.nn.functional.cross_entropy(logits, targets)
    soft = -(S0[targets].movedim(-1, 1) * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert_close(torch.nn.functional.cross_entropy(logits, dense), 0.3 * ce + 0.7 * soft)
    algorithm.apply(Event.AFTER_LOSS, state, None)
    assert state.batch[1] is targets


def test_checkpoint_round_trip_restores_the_matrix_and_the_partial_sums() -> None:
    torch.manual_seed(1)
    first = OnlineLabelSmoothing(alpha=0.5, num_classes=3)
    for _ in range(2):  # an epoch, then half of the next
        state = State(torch.nn.Identity(), batch=(None, torch.randint(0, 3, (16,))),
                      outputs=torch.randn(16, 3) * 3)
        first.apply(Event.BEFORE_LOSS, state, None)
        first.apply(Event.AFTER_LOSS, state, None)
        if _ == 0:
            first.apply(Event.EPOCH_END, state, None)
    saved = first.state_dict()
    second = OnlineLabelSmoothing(alpha=0.5, num_classes=3)
    second.load_state_dict(copy.deepcopy(saved))
    for algorithm in (first, second):
        algorithm.apply(Event.EPOCH_END, State(torch.nn.Identity()), None)
    assert first.soft_labels is not None and second.soft_labels is not None
    assert torch.equal(first.soft_labels, second.soft_labels)
    assert not torch.equal(saved["soft_labels"], first.soft_labels)  # the partial sums counted
    with pytest.raises(ValueError, match=r"^state: expected soft labels for num_classes=4, got a "
                       r"\(3, 3\) matrix$"):
        OnlineLabelSmoothing(num_classes=4).load_state_dict(saved)


class _CrashAt(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def batch_end(self, state: State, logger: Any) -> None:
        if state.timestamp.batch == self.batch:
            raise KeyboardInterrupt


def _resumable_run(folder: Path, *, crash_at: int | None = None,
                   load_path: Path | None = None) -> tuple[Trainer, OnlineLabelSmoothing]:
    algorithm = OnlineLabelSmoothing(alpha=0.5)
    model = make_model(seed=2)
    trainer = Trainer(model, make_loader(make_dataset(40), 4, shuffle=True), max_duration="3ep",
                      optimizers=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
                      algorithms=[algorithm], device="cpu", progress_bar=False, seed=0,
                      callbacks=None if crash_at is None else _CrashAt(crash_at),
                      save_folder=folder, save_interval="3ba", load_path=load_path)
    if crash_at is None:
        trainer.fit()
    else:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    return trainer, algorithm


def test_a_run_stopped_mid_epoch_and_resumed_is_bit_identical(tmp_path: Path) -> None:
    reference, reference_ols = _resumable_run(tmp_path / "reference")
    _resumable_run(tmp_path / "run", crash_at=17)  # epoch 2 is batches 11-20: ba15 is mid-epoch
    resumed, resumed_ols = _resumable_run(tmp_path / "run", load_path=tmp_path / "run" / "ep1-ba15.pt")
    assert resumed_ols.soft_labels is not None and reference_ols.soft_labels is not None
    assert torch.equal(resumed_ols.soft_labels, reference_ols.soft_labels)
    for actual, expected in zip(resumed.state.model.parameters(),
                                reference.state.model.parameters(), strict=True):
        assert torch.equal(actual, expected), (actual - expected).abs().max()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_gloo_processes_sum_to_the_single_process_matrix_and_resume_bit_identically(
        tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sys.path.insert(0, str(WORKER.parent))
    try:
        from ols_ddp_worker import run_epoch, shards
    finally:
        sys.path.remove(str(WORKER.parent))
    logits, targets = (torch.cat(parts) for parts in zip(*shards(), strict=True))
    single = run_epoch(logits, targets, world_size=1)
    for rank in range(2):
        distributed = torch.load(tmp_path / f"rank{rank}.pt")
        assert_close(distributed, single)
    assert not torch.equal(single, run_epoch(*shards()[0], world_size=1))  # both shards count

    # The mid-epoch checkpoint holds each rank's partial sums; each rank resumes from its own.
    checkpoint = torch.load(tmp_path / "run" / "ep1-ba8.pt", weights_only=False)
    partial = [states[0][1]["sums"] for states in checkpoint["algorithms_per_rank"]]
    assert len(partial) == 2 and not torch.equal(partial[0], partial[1])
    for rank in range(2):
        runs = torch.load(tmp_path / f"resume{rank}.pt", weights_only=False)
        reference, resumed = runs["reference"], runs["resumed"]
        assert torch.equal(resumed["soft_labels"], reference["soft_labels"])
        for actual, expected in zip(resumed["params"], reference["params"], strict=True):
            assert torch.equal(actual, expected), (actual - expected).abs().max()


def test_bad_input_is_one_line_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^alpha: expected a real number in \[0, 1\], got 1.5$"):
        OnlineLabelSmoothing(alpha=1.5)
    with pytest.raises(ValueError, match=r"^alpha: expected a real number in \[0, 1\], got -0.1$"):
        OnlineLabelSmoothing(alpha=-0.1)
    with pytest.raises(TypeError, match=r"^num_classes: expected an int, got 2.5$"):
        OnlineLabelSmoothing(num_classes=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^initial_smoothing: expected a real number in \[0, 1\]"):
        OnlineLabelSmoothing(initial_smoothing=2.0)
    state = State(torch.nn.Identity(), batch=(None, torch.tensor([0, 1])), outputs=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^num_classes: expected the logits' number of classes, 3 "
                       r"\(dim 1 of logits of shape \(2, 3\)\), got 5$"):
        OnlineLabelSmoothing(num_classes=5).apply(Event.BEFORE_LOSS, state, None)
    state.batch = (None, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor of class indices"):
        OnlineLabelSmoothing().apply(Event.BEFORE_LOSS, state, None)
    state.batch = (None, torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"^targets: expected an integer tensor"):
        OnlineLabelSmoothing().apply(Event.BEFORE_LOSS, state, None)
    for bad in (3, -100):
        state.batch = (None, torch.tensor([0, bad]))
        with pytest.raises(ValueError, match=rf"^targets: expected class indices in \[0, 3\), got "
                           rf"{bad} at position \(1,\)$"):
            OnlineLabelSmoothing(ignore_index=None).apply(Event.BEFORE_LOSS, state, None)
    state.batch = (None, torch.tensor([0, -100]))
    with pytest.raises(ValueError, match=r"^targets: expected class indices in \[0, 3\) or "
                       r"ignore_index=255, got -100 at position \(1,\)$"):
        OnlineLabelSmoothing(ignore_index=255).apply(Event.BEFORE_LOSS, state, None)
    with pytest.raises(TypeError, match=r"^ignore_index: expected an int, got 1.5$"):
        OnlineLabelSmoothing(ignore_index=1.5)  # type: ignore[arg-type]
    state.batch = (None, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^targets: expected class indices of shape \(2,\)"):
        OnlineLabelSmoothing().apply(Event.BEFORE_LOSS, state, None)


@pytest.mark.parametrize("other", [MixUp(alpha=0.2), LabelSmoothing(0.1)], ids=repr)
def test_fit_refuses_a_second_way_of_setting_the_target(other: Any) -> None:
    data = make_dataset(8)
    trainer = Trainer(make_model(), make_loader(data, 4), max_duration="1ep", device="cpu",
                      progress_bar=False, algorithms=[OnlineLabelSmoothing(), other])
    with pytest.raises(ValueError, match=rf"^algorithms\[1\]: expected no MixUp, CutMix, .*, got "
                       rf"{type(other).__name__}$"):
        trainer.fit()


@pytest.mark.parametrize("loss_fn", [SmoothedCrossEntropyLoss(0.1),
                                     torch.nn.CrossEntropyLoss(label_smoothing=0.1)], ids=repr)
def test_fit_refuses_a_loss_that_smooths_by_itself(loss_fn: Any) -> None:
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, make_loader(make_dataset(8), 4), max_duration="1ep", device="cpu",
                      progress_bar=False, loss_fn=loss_fn, algorithms=[OnlineLabelSmoothing()])
    with pytest.raises(ValueError, match=r"^loss_fn: expected a loss that does not smooth by "
                       r"itself when OnlineLabelSmoothing is among the algorithms \(.*\), got .*, "
                       r"which smooths by 0.1$"):
        trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))


def test_a_loss_without_smoothing_of_its_own_is_accepted() -> None:
    algorithm = OnlineLabelSmoothing(alpha=0.5)
    Trainer(make_model(), make_loader(make_dataset(8), 4), max_duration="1ep", device="cpu",
            progress_bar=False, loss_fn=SmoothedCrossEntropyLoss(0.0),
            algorithms=[algorithm]).fit()
    assert algorithm.soft_labels is not None


def test_pure_functions_agree_with_the_formulas() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    sums, counts = torch.zeros(2, 2), torch.zeros(2)
    ols_module.accumulate_correct(sums, counts, logits, targets)
    p = logits.softmax(dim=1)
    assert torch.equal(counts, torch.tensor([1.0, 1.0]))
    assert_close(sums, torch.stack([p[0], p[1]]))


def test_a_training_step_and_the_epoch_swap_make_no_host_synchronisation() -> None:
    # meta tensors stand in for an accelerator's; the recorder sees every value read and copy.
    algorithm = OnlineLabelSmoothing(alpha=0.5)
    logits = torch.empty(8, 5, device="meta")
    targets = torch.empty(8, dtype=torch.long, device="meta")
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits, device="meta")
    with HostSyncRecorder() as recorder:
        for event in (Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.BEFORE_LOSS, Event.AFTER_LOSS,
                      Event.EPOCH_END):
            algorithm.apply(event, state, None)
    assert recorder.syncs == []
    assert algorithm.soft_labels is not None and algorithm.soft_labels.device.type == "meta"


@pytest.mark.parametrize(("alpha", "s0"), [(1.0, 0.3), (0.5, 0.2), (0.0, 0.1)])
def test_the_first_epoch_is_uniform_smoothing_by_one_minus_alpha_times_s0(alpha: float,
                                                                          s0: float) -> None:
    # alpha onehot + (1 - alpha) ((1 - s0) onehot + s0 / C) = (1 - s) onehot + s / C, s = (1 - alpha) s0
    torch.manual_seed(5)
    logits, targets = torch.randn(6, 4, 3, dtype=torch.float64), torch.randint(0, 4, (6, 3))
    state = State(torch.nn.Identity(), batch=(None, targets), outputs=logits)
    OnlineLabelSmoothing(alpha=alpha, initial_smoothing=s0).apply(Event.BEFORE_LOSS, state, None)
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=(1 - alpha) * s0)
    assert_close(torch.nn.functional.cross_entropy(logits, state.batch[1]), expected)
