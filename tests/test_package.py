"""Package-level checks: exports, the core importing only torch, and the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

import labelsmooth

PUBLIC_MODULES = [
    "labelsmooth",
    "labelsmooth.functional",
    "labelsmooth.functional.smoothing",
    "labelsmooth.functional.cross_entropy",
    "labelsmooth.losses",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_export_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": importlib.import_module("torch")},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_core_imports_only_torch() -> None:
    code = (
        "import sys, labelsmooth, labelsmooth.functional\n"
        "bad = [m for m in ('matplotlib', 'rich', 'torchmetrics', 'sklearn', 'mnist1d')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import labelsmooth pulled in optional packages: {out.stdout}"


def test_version() -> None:
    assert labelsmooth.__version__.count(".") == 2
