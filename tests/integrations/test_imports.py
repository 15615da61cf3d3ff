"""The integrations cost nothing to those who do not use them."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "timm", "accelerate", "torchvision")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in out.stdout.strip().split(",") if name]


def test_import_labelsmooth_imports_no_framework() -> None:
    assert _loaded_after("import labelsmooth, labelsmooth.functional, labelsmooth.integrations") == []


def test_the_timm_integration_imports_no_framework() -> None:
    # It works on tensors: timm's own dense targets or labelsmooth's index targets.
    assert _loaded_after("import labelsmooth.integrations.timm") == []


def test_the_transformers_integration_imports_transformers_only_when_used() -> None:
    assert _loaded_after("import labelsmooth.integrations.transformers") == []
    assert "transformers" in _loaded_after(
        "from labelsmooth.integrations.transformers import LabelSmoother; LabelSmoother(0.1)")
