"""Package-level checks for every module: exports exist, docstring examples run, and importing
labelsmooth (or any of its subpackages) pulls in no optional dependency up front."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest
import torch

import labelsmooth

MODULES = [
    "labelsmooth",
    *sorted(info.name for info in pkgutil.walk_packages(labelsmooth.__path__, prefix="labelsmooth.")
            if info.name != "labelsmooth.__main__"),
]


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:  # a GPU-only module on a machine without its package
        if error.name == "triton":
            pytest.skip(f"{name} needs triton, which is not installed")
        raise


@pytest.mark.parametrize("name", MODULES)
def test_every_export_exists(name: str) -> None:
    module = _import(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = _import(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_imports_pull_in_no_optional_package() -> None:
    # The core, the metrics and the trainer's classes need only torch; the command and the
    # trainer import matplotlib, rich, torchmetrics, scikit-learn and mnist1d only when they run,
    # so a missing one becomes a clear error naming the extra, not an ImportError at import.
    code = (
        "import sys, labelsmooth, labelsmooth.functional, labelsmooth.metrics, labelsmooth.cli,"
        " labelsmooth.trainer, labelsmooth.algorithms\n"
        "bad = [m for m in ('matplotlib', 'rich', 'torchmetrics', 'sklearn', 'mnist1d')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imports pulled in optional packages: {out.stdout}"


def test_version() -> None:
    assert labelsmooth.__version__.count(".") == 2
