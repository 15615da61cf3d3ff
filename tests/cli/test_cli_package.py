"""Exports, docstring examples, and lazy imports of the metrics and command modules."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

MODULES = [
    "labelsmooth.metrics",
    "labelsmooth.metrics.calibration",
    "labelsmooth.metrics.projection",
    "labelsmooth.cli",
    "labelsmooth.cli.command",
    "labelsmooth.cli.data",
    "labelsmooth.cli.errors",
    "labelsmooth.cli.experiment",
    "labelsmooth.cli.models",
    "labelsmooth.cli.plots",
    "labelsmooth.cli.report",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_export_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": importlib.import_module("torch")},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_metrics_and_command_import_no_optional_package_up_front() -> None:
    # The metrics need only torch; the command imports matplotlib, rich, scikit-learn and
    # mnist1d only when it runs, so a missing one becomes a one-line error, not an ImportError.
    code = (
        "import sys, labelsmooth.metrics, labelsmooth.cli\n"
        "bad = [m for m in ('matplotlib', 'rich', 'torchmetrics', 'sklearn', 'mnist1d')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported optional packages: {out.stdout}"
