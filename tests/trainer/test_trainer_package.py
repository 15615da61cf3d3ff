"""The trainer and algorithm modules: exports exist, docstring examples run, no optional import."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from labelsmooth.trainer import Algorithm, Callback, Event

MODULES = [
    "labelsmooth.algorithms",
    "labelsmooth.algorithms.label_smoothing",
    "labelsmooth.trainer",
    "labelsmooth.trainer.algorithm",
    "labelsmooth.trainer.batch",
    "labelsmooth.trainer._optional",
    "labelsmooth.trainer.callback",
    "labelsmooth.trainer.checkpoint",
    "labelsmooth.trainer.distributed",
    "labelsmooth.trainer.engine",
    "labelsmooth.trainer.events",
    "labelsmooth.trainer.logger",
    "labelsmooth.trainer.metrics",
    "labelsmooth.trainer.progress",
    "labelsmooth.trainer.state",
    "labelsmooth.trainer.targets",
    "labelsmooth.trainer.time",
    "labelsmooth.trainer.trainer",
]


@pytest.mark.parametrize("name", MODULES)
def test_exports_exist_and_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__
    assert [item for item in module.__all__ if not hasattr(module, item)] == []
    result = doctest.testmod(module, extraglobs={"torch": torch},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


class _Stateless(Algorithm):
    def match(self, event: Event, state: object) -> bool:
        return False

    def apply(self, event: Event, state: object, logger: object) -> None:
        raise AssertionError("never matches")


@pytest.mark.parametrize("owner", [_Stateless(), Callback()])
def test_loading_state_into_a_stateless_algorithm_or_callback_raises(owner: object) -> None:
    owner.load_state_dict({})  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"state: expected an empty dict \(.* saves nothing\)"):
        owner.load_state_dict({"smoothing": 0.1})  # type: ignore[attr-defined]
