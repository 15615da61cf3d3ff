"""The one optional-import helper: a missing or too old package is one line naming the fix."""

from __future__ import annotations

import sys
import types

import pytest

from labelsmooth._optional import import_optional, parse_version


def test_present_module_is_returned() -> None:
    import json

    assert import_optional("json", extra="test", purpose="the tests") is json


def test_missing_module_names_package_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError) as caught:
        import_optional("sklearn.datasets", extra="cli", purpose="the command", package="scikit-learn")
    message = str(caught.value)
    assert message == ("the command needs scikit-learn, which is not installed (import of sklearn.datasets "
                       "halted; None in sys.modules); install it with: pip install 'labelsmooth[cli]'")
    assert "\n" not in message


@pytest.mark.parametrize(("installed", "minimum", "ok"), [
    ("4.46.0", "4.46", True), ("5.23.0.dev0", "4.46", True), ("4.45.2", "4.46", False),
    ("2.6.6+cpu", "2.0", True), ("1.9.5", "2.0", False),
])
def test_minimum_version(monkeypatch: pytest.MonkeyPatch, installed: str, minimum: str, ok: bool) -> None:
    fake = types.ModuleType("fakepkg")
    fake.__version__ = installed  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fakepkg", fake)
    if ok:
        assert import_optional("fakepkg", extra="x", purpose="it", minimum=minimum) is fake
        return
    with pytest.raises(ImportError) as caught:
        import_optional("fakepkg", extra="x", purpose="it", minimum=minimum)
    assert str(caught.value) == (f"it needs fakepkg>={minimum}, found {installed}; "
                                 "install it with: pip install -U 'labelsmooth[x]'")


def test_parse_version() -> None:
    assert parse_version("5.23.0") == (5, 23, 0)
    assert parse_version("1.0.31rc1") == (1, 0, 31)
    assert parse_version("weird") == ()
    assert parse_version("4.46") < parse_version("4.46.1") < parse_version("4.100")
