"""The integrations cost nothing to those who do not use them."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "timm", "accelerate", "torchvision")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in out.stdout.strip().split(",") if name]


def test_import_labelsmooth_and_its_integrations_imports_no_framework() -> None:
    # The timm integration works on tensors (timm's dense targets or labelsmooth's index
    # targets); the transformers one imports transformers when a loss is built.
    assert _loaded_after("import labelsmooth, labelsmooth.functional, labelsmooth.integrations, "
                         "labelsmooth.integrations.timm, labelsmooth.integrations.transformers") == []


def test_the_transformers_integration_imports_transformers_when_used() -> None:
    assert "transformers" in _loaded_after(
        "from labelsmooth.integrations.transformers import LabelSmoother; LabelSmoother(0.1)")
