"""Stateless algorithms and callbacks refuse state they cannot hold (exports and doctests: tests/test_package.py)."""

from __future__ import annotations

import pytest

from labelsmooth.trainer import Algorithm, Callback, Event


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
