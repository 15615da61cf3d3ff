"""Batch keys follow Composer's semantics: int index, str key or attribute, (getter, setter)."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch

from labelsmooth.trainer import batch_get_item, batch_set_item, get_logits
from labelsmooth.trainer.batch import batch_size, split_batch

Pair = namedtuple("Pair", ["inputs", "targets"])


def test_tuple_is_rebuilt_and_original_untouched() -> None:
    batch = ("x", "y")
    new = batch_set_item(batch, 1, "z")
    assert new == ("x", "z") and batch == ("x", "y")
    assert batch_get_item(new, -1) == "z"


@pytest.mark.parametrize("key", [0, 1, 2, -1, -2, -3])
def test_every_index_of_a_tuple_or_list_reads_and_writes_like_indexing(key: int) -> None:
    items = ["a", "b", "c"]
    expected = items.copy()
    expected[key] = "z"
    assert batch_get_item(tuple(items), key) == items[key]
    assert batch_get_item(items, key) == items[key]
    assert batch_set_item(tuple(items), key, "z") == tuple(expected)
    assert batch_set_item(list(items), key, "z") == expected


@pytest.mark.parametrize("key", [3, -4, True])
def test_an_index_outside_a_tuple_is_refused(key: object) -> None:
    error = TypeError if key is True else ValueError
    with pytest.raises(error, match="key: expected"):
        batch_get_item(("a", "b", "c"), key)  # type: ignore[arg-type]
    with pytest.raises(error, match="key: expected"):
        batch_set_item(("a", "b", "c"), key, "z")  # type: ignore[arg-type]


def test_named_tuple_keeps_its_type_and_attribute_keys_read() -> None:
    batch = Pair("x", "y")
    new = batch_set_item(batch, 1, "z")
    assert isinstance(new, Pair) and new.targets == "z"
    assert batch_get_item(batch, "targets") == "y"


def test_list_and_dict_are_set_in_place() -> None:
    as_list, as_dict = ["x", "y"], {"inputs": "x", "labels": "y"}
    assert batch_set_item(as_list, 1, "z") is as_list and as_list == ["x", "z"]
    assert batch_set_item(as_dict, "labels", "z") is as_dict and as_dict["labels"] == "z"


def test_attribute_batch_is_copied_not_changed() -> None:
    batch = SimpleNamespace(inputs="x", labels="y")
    assert batch_get_item(batch, "labels") == "y"
    updated = batch_set_item(batch, "labels", "z")
    assert updated is not batch and updated.labels == "z" and updated.inputs == "x"
    assert batch.labels == "y"


def test_batch_size_of_an_object_with_tensor_attributes() -> None:
    assert batch_size(SimpleNamespace(name="b", inputs=torch.zeros(3, 2), labels=torch.zeros(3))) == 3
    with pytest.raises(TypeError, match="batch: expected a tensor, or a tuple, list, mapping or object"):
        batch_size(SimpleNamespace(name="b"))


def test_getter_setter_pair() -> None:
    key = (lambda b: b["nested"][0], lambda b, v: {"nested": (v,)})
    assert batch_get_item({"nested": ("y",)}, key) == "y"
    assert batch_set_item({"nested": ("y",)}, key, "z") == {"nested": ("z",)}


@pytest.mark.parametrize(("batch", "key"), [
    (("x", "y"), 2), (["x"], -2), ({"inputs": "x"}, "labels"), ({"inputs": "x"}, 0),
    (SimpleNamespace(inputs="x"), "labels"), (("x", "y"), "labels"),
])
def test_missing_key_raises_naming_it(batch: object, key: object) -> None:
    with pytest.raises(ValueError, match=rf"target_key: expected an index, key or attribute of the batch .*got {key!r}"):
        batch_get_item(batch, key, argument="target_key")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_key: expected an index, key or attribute"):
        batch_set_item(batch, key, "z", argument="target_key")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [1.0, True, None, (1, 2), ("a",)])
def test_bad_key_type_raises(key: object) -> None:
    with pytest.raises(TypeError, match="key: expected an int index, a str key or attribute"):
        batch_get_item(("x", "y"), key)  # type: ignore[arg-type]


def test_get_logits_from_tensor_mapping_and_attribute() -> None:
    logits = torch.zeros(2, 3)
    assert get_logits(logits) is logits
    assert get_logits({"logits": logits, "aux": 1}) is logits
    assert get_logits(SimpleNamespace(logits=logits)) is logits


@pytest.mark.parametrize("outputs", [{"scores": torch.zeros(1)}, SimpleNamespace(x=1), (torch.zeros(1),),
                                     None, {"logits": [1.0]}])
def test_outputs_with_no_logits_raise(outputs: object) -> None:
    with pytest.raises(TypeError, match="outputs: expected a logits tensor, a mapping with a 'logits'"):
        get_logits(outputs)


def test_split_batch_into_microbatches() -> None:
    inputs, targets = torch.arange(10).reshape(5, 2), torch.arange(5)
    parts = split_batch({"x": inputs, "y": [targets], "name": "b"}, 2)
    assert [p["y"][0].tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert torch.equal(torch.cat([p["x"] for p in parts]), inputs)
    assert all(p["name"] == "b" for p in parts)
    assert len(split_batch((inputs, targets), 8)) == 5
    assert batch_size(Pair(inputs, targets)) == 5


def test_batch_size_of_a_batch_without_tensors_raises() -> None:
    with pytest.raises(TypeError, match="batch: expected a tensor, or a tuple, list, mapping or object"):
        batch_size(("a", "b"))
