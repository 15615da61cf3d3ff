#!/usr/bin/env bash
# The README's test command: make a local virtual environment, install labelsmooth with its test
# extras (torch pinned to the CPU build by constraints.txt), then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LABELSMOOTH_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -c constraints.txt -e '.[test]'
# timm without torchvision (see the test extra in pyproject.toml): its tests load only the
# torchvision-free modules timm.data.mixup and timm.loss.cross_entropy.
"$venv/bin/python" -m pip install -q -c constraints.txt --no-deps timm
"$venv/bin/ruff" check src tests benchmarks examples
# benchmarks/trainer_overhead.py is left out until its Trainer(**loss) call type-checks.
"$venv/bin/mypy" src benchmarks
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$status"
