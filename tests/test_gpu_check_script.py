"""``scripts/gpu_check.sh``, the script that runs the CUDA checks, keeps up with the tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_collects_every_file_with_cuda_tests():
    text = SCRIPT.read_text()
    listed = {ROOT / path for path in re.findall(r"\btests/[\w/]+(?:\.py)?", text)}
    marked = re.compile(r"^\s*@pytest\.mark\.cuda\b|^pytestmark\b.*\bpytest\.mark\.cuda\b", re.M)
    with_cuda = {path for path in (ROOT / "tests").rglob("test_*.py")
                 if marked.search(path.read_text())}
    assert with_cuda, "no CUDA-marked tests found: the marker's spelling changed?"
    missing = {path.relative_to(ROOT).as_posix() for path in with_cuda
               if not any(path == item or item in path.parents for item in listed)}
    assert not missing, f"scripts/gpu_check.sh does not collect {sorted(missing)}"
