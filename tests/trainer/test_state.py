"""State: its fields, and batch_get_item / batch_set_item on the current batch
(tuples rebuilt, lists and dicts set in place, attribute names and (getter, setter) pairs)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import Trainer
from labelsmooth.trainer import Duration, State, Timestamp, TimeUnit


def test_fields_of_a_hand_built_state() -> None:
    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    loader = [(torch.zeros(1, 2), torch.tensor([0]))]
    state = State(model, optimizers=optimizer, schedulers=[scheduler], max_duration="7ba",
                  train_dataloader=loader, eval_dataloader=loader, device="cpu", rank=1,
                  world_size=2, batch="b", outputs="o", loss=torch.tensor(2.0))
    assert state.model is model
    assert state.optimizers == [optimizer] and state.schedulers == [scheduler]
    assert state.max_duration == Duration(7, TimeUnit.BATCH)
    assert state.train_dataloader is loader and state.eval_dataloader is loader
    assert state.device == torch.device("cpu") and (state.rank, state.world_size) == (1, 2)
    assert (state.batch, state.outputs, float(state.loss)) == ("b", "o", 2.0)
    assert state.timestamp == Timestamp(epoch=0, batch=0, sample=0)
    assert State(model).optimizers == [] and State(model).max_duration is None


def test_the_trainers_state() -> None:
    model, train, evaluate = make_model(), make_loader(make_dataset(16), 8), make_loader(make_dataset(8))
    trainer = Trainer(model, train, max_duration="2ep", eval_dataloader=evaluate, device="cpu",
                      progress_bar=False)
    state = trainer.state
    assert state.model is model and len(state.optimizers) == 1 and state.schedulers == []
    assert state.train_dataloader is train and state.eval_dataloader is evaluate
    assert state.max_duration == Duration(2, TimeUnit.EPOCH)
    assert (state.rank, state.world_size, state.device) == (0, 1, torch.device("cpu"))
    trainer.fit()
    assert (state.timestamp.epoch, state.timestamp.batch, state.timestamp.sample) == (2, 4, 32)
    assert state.loss is not None and state.outputs.shape == (8, 3)


def test_batch_set_item_rebuilds_a_tuple_and_leaves_the_users_tuple_alone() -> None:
    x, y, z = torch.zeros(2), torch.ones(2), torch.full((2,), 2.0)
    batch = (x, y)
    state = State(torch.nn.Identity(), batch=batch)
    state.batch_set_item(1, z)
    assert isinstance(state.batch, tuple) and state.batch is not batch
    assert state.batch[0] is x and state.batch[1] is z
    assert batch[1] is y
    assert state.batch_get_item(-1) is z


def test_batch_set_item_on_an_object_sets_the_attribute_of_a_copy() -> None:
    batch = SimpleNamespace(inputs=torch.zeros(2), labels=torch.ones(2))
    labels = batch.labels
    state = State(torch.nn.Identity(), batch=batch)
    new = torch.full((2,), 5.0)
    state.batch_set_item("labels", new)
    assert state.batch is not batch and state.batch_get_item("labels") is new
    assert batch.labels is labels and state.batch.inputs is batch.inputs


@pytest.mark.parametrize(("batch", "key"), [
    ([torch.zeros(2), torch.ones(2)], 1),
    ({"inputs": torch.zeros(2), "labels": torch.ones(2)}, "labels"),
])
def test_batch_set_item_sets_lists_and_dicts_in_place(batch: Any, key: Any) -> None:
    state = State(torch.nn.Identity(), batch=batch)
    original = state.batch_get_item(key)
    new = torch.full((2,), 5.0)
    state.batch_set_item(key, new)
    assert state.batch is batch
    assert state.batch_get_item(key) is new
    state.batch_set_item(key, original)
    assert state.batch_get_item(key) is original


def test_batch_set_item_with_a_getter_setter_pair() -> None:
    key = (lambda b: b["nested"][1], lambda b, v: {"nested": (b["nested"][0], v)})
    state = State(torch.nn.Identity(), batch={"nested": ("x", "y")})
    assert state.batch_get_item(key) == "y"
    state.batch_set_item(key, "z")
    assert state.batch == {"nested": ("x", "z")}


def test_batch_items_that_do_not_exist_raise() -> None:
    state = State(torch.nn.Identity(), batch=(torch.zeros(2), torch.ones(2)))
    with pytest.raises(ValueError, match=r"key: expected an index, key or attribute of the batch "
                                         r"\(a tuple of 2 items\), got 2"):
        state.batch_get_item(2)
    with pytest.raises(ValueError, match=r"key: expected an index, key or attribute"):
        state.batch_set_item("labels", torch.zeros(2))
