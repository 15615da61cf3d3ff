"""Reading and writing parts of a batch, finding logits in model outputs, splitting microbatches.

A *key* names one part of a batch, with Composer's semantics:

- an ``int`` index (``batch[1]`` of an ``(inputs, targets)`` tuple or list),
- a ``str`` key of a mapping (``batch["labels"]``) or, failing that, an attribute (``batch.labels``),
- a ``(getter, setter)`` pair of callables: ``getter(batch)`` reads, ``setter(batch, value)``
  returns the updated batch.

Writing rebuilds a tuple (tuples are immutable; named tuples keep their type), sets lists and
mappings in place, and sets an attribute on a shallow copy of the object (the user's batch object
is never changed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import torch

from labelsmooth._validation import fail

__all__ = [
    "BatchKey",
    "batch_get_item",
    "batch_set_item",
    "batch_size",
    "check_batch_key",
    "get_logits",
    "split_batch",
]

BatchKey = int | str | tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]


def _describe_batch(batch: Any) -> str:
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return f"a {type(batch).__name__}"


_SEQUENCES = (tuple, list)


def _is_getter_setter(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and all(callable(part) for part in key)


def check_batch_key(key: Any, argument: str = "key") -> BatchKey:
    """Raise ``TypeError`` unless ``key`` is an int, a str or a ``(getter, setter)`` pair."""
    if isinstance(key, bool) or not (isinstance(key, (int, str)) or _is_getter_setter(key)):
        fail(argument, "an int index, a str key or attribute, or a (getter, setter) pair", key,
             error=TypeError)
    return key


def _missing(batch: Any, key: Any, argument: str) -> Any:
    fail(argument, f"an index, key or attribute of the batch ({_describe_batch(batch)})", repr(key))


def batch_get_item(batch: Any, key: BatchKey, *, argument: str = "key") -> Any:
    """Return the part of ``batch`` that ``key`` names.

    Args:
        batch: a tuple, list, mapping or any object with attributes.
        key: an ``int`` index, a ``str`` key or attribute name, or a ``(getter, setter)`` pair.
        argument: the name shown in error messages (e.g. ``"target_key"``).

    Returns:
        The item, unchanged (the same object).

    Raises:
        ValueError: if ``batch`` has no such item. TypeError: if ``key`` has an unsupported type.

    Example:
        >>> batch_get_item(("x", "y"), 1)
        'y'
        >>> batch_get_item({"labels": 3}, "labels")
        3
    """
    # The common case first, read on every step: an int index into a tuple or list.
    if type(key) is int and type(batch) in _SEQUENCES and -len(batch) <= key < len(batch):
        return batch[key]
    check_batch_key(key, argument)
    if isinstance(key, tuple):
        return key[0](batch)
    if isinstance(batch, (tuple, list)):
        if isinstance(key, int) and -len(batch) <= key < len(batch):
            return batch[key]
    elif isinstance(batch, Mapping):
        if key in batch:
            return batch[key]
    elif isinstance(key, int) and isinstance(batch, torch.Tensor):
        if -len(batch) <= key < len(batch):
            return batch[key]
    if isinstance(key, str) and not isinstance(batch, Mapping) and hasattr(batch, key):
        return getattr(batch, key)
    return _missing(batch, key, argument)


def batch_set_item(batch: Any, key: BatchKey, value: Any, *, argument: str = "key") -> Any:
    """Write ``value`` where ``key`` points and return the batch.

    Tuples are rebuilt (a new tuple, or named tuple of the same type, is returned); an object
    with attributes is shallow-copied and the copy gets the new attribute; lists and mappings are
    set in place and the same batch object is returned. The item must already exist: a misspelt
    key raises instead of adding a new entry.

    Args:
        batch: a tuple, list, mapping or object.
        key: as for :func:`batch_get_item`.
        value: the new item.
        argument: the name shown in error messages.

    Returns:
        The updated batch (assign it back: ``batch = batch_set_item(batch, 1, y)``).

    Example:
        >>> batch_set_item(("x", "y"), 1, "z")
        ('x', 'z')
    """
    if type(key) is int and type(batch) is tuple and -len(batch) <= key < len(batch):
        position = key % len(batch)
        return (*batch[:position], value, *batch[position + 1:])
    check_batch_key(key, argument)
    if isinstance(key, tuple):
        return key[1](batch, value)
    if isinstance(batch, tuple) and isinstance(key, int) and -len(batch) <= key < len(batch):
        items = list(batch)
        items[key] = value
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list) and isinstance(key, int) and -len(batch) <= key < len(batch):
        batch[key] = value
        return batch
    if isinstance(batch, MutableMapping) and key in batch:
        batch[key] = value
        return batch
    if isinstance(key, str) and not isinstance(batch, (Mapping, tuple, list)) and hasattr(batch, key):
        updated = copy.copy(batch)
        setattr(updated, key, value)
        return updated
    return _missing(batch, key, argument)


def get_logits(outputs: Any, *, argument: str = "outputs") -> torch.Tensor:
    """Find the logits in a model's outputs.

    Args:
        outputs: a tensor (the logits themselves), a mapping with a ``"logits"`` entry, or an
            object with a ``.logits`` tensor attribute (e.g. a Hugging Face model output).
        argument: the name shown in error messages.

    Returns:
        The logits tensor (the same object).

    Raises:
        TypeError: if no logits tensor is found.

    Example:
        >>> get_logits({"logits": torch.zeros(2, 3)}).shape
        torch.Size([2, 3])
    """
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    else:
        logits = getattr(outputs, "logits", None)
    if not isinstance(logits, torch.Tensor):
        shown = _describe_batch(outputs) if isinstance(outputs, (Mapping, tuple, list)) else outputs
        fail(argument, "a logits tensor, a mapping with a 'logits' tensor, or an object with a "
             ".logits tensor", shown, error=TypeError)
    return logits


def batch_size(batch: Any) -> int:
    """The number of examples in ``batch``: the first dimension of its first tensor.

    The batch may be a tensor, a tuple, list or mapping, or an object whose attributes
    (``vars(batch)``, e.g. a dataclass) hold the tensors.
    """
    if type(batch) in _SEQUENCES and batch and type(batch[0]) is torch.Tensor and batch[0].ndim:
        return batch[0].shape[0]  # the usual (inputs, targets) batch, checked first
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            fail("batch", "tensors with a batch dimension", batch)
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        parts: Any = batch.values()
    elif isinstance(batch, (tuple, list)):
        parts = batch
    else:
        parts = vars(batch).values() if hasattr(batch, "__dict__") else ()
    for part in parts:
        if isinstance(part, (torch.Tensor, tuple, list, Mapping)):
            return batch_size(part)
    fail("batch", "a tensor, or a tuple, list, mapping or object holding tensors",
         type(batch).__name__, error=TypeError)


def split_batch(batch: Any, num_microbatches: int) -> list[Any]:
    """Split every tensor of ``batch`` along dimension 0 into at most ``num_microbatches`` parts.

    Parts differ in size by at most one example; a batch smaller than ``num_microbatches`` gives
    one part per example. Non-tensor leaves are shared by every part; mappings become dicts.

    Example:
        >>> [x.tolist() for x, _ in split_batch((torch.arange(5), None), 2)]
        [[0, 1, 2], [3, 4]]
    """
    parts = min(num_microbatches, batch_size(batch))

    def split(item: Any) -> list[Any]:
        if isinstance(item, torch.Tensor):
            return list(torch.tensor_split(item, parts, dim=0))
        if isinstance(item, Mapping):
            columns = {key: split(value) for key, value in item.items()}
            return [{key: columns[key][i] for key in item} for i in range(parts)]
        if isinstance(item, (tuple, list)):
            columns_seq = [split(value) for value in item]
            rows = [[column[i] for column in columns_seq] for i in range(parts)]
            if isinstance(item, tuple):
                return [type(item)(*row) if hasattr(item, "_fields") else tuple(row) for row in rows]
            return rows
        return [item] * parts

    return split(batch)
