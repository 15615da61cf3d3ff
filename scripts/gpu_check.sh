#!/usr/bin/env bash
# Run the CUDA checks on a machine with a GPU, PyTorch (CUDA) and Triton:
#
#   bash scripts/gpu_check.sh            # results under $OUT (default /tmp/gpu_check)
#
# It uses the machine's own python3 and installs nothing: the package is imported from src/.
# Files written under $OUT:
#   versions.txt           torch, triton, GPU
#   tests.log              the CUDA-marked tests and the whole tests/ops suite (the Triton
#                          kernel against PyTorch in value and gradient, on the GPU)
#   cli.log, summary.md    labelsmooth run on the GPU (digits, a few epochs, MixUp too)
#   bench.log, cross_entropy_cuda.csv
#                          python -m benchmarks.cross_entropy --device cuda (time and peak
#                          extra GPU memory of every contender; ours = the Triton kernel)
# The exit status is 0 only if every step passed.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt" || status=1
import torch, triton
print("torch", torch.__version__, "triton", triton.__version__,
      "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())
PY
# Only the files holding CUDA-marked tests are collected (the rest need the CLI extras).
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs -m cuda tests/ops \
    tests/trainer/test_trainer_cuda.py tests/functional/test_mixing.py \
    tests/benchmarks/test_cross_entropy.py 2>&1 \
    | tee "$OUT/tests.log" || status=1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/ops 2>&1 \
    | tee -a "$OUT/tests.log" || status=1
timeout 120 python3 -m labelsmooth run --dataset digits --device cuda --seeds 1 --epochs 3 \
    --smoothing 0 0.1 --mixup 0 0.2 --out /tmp/gpu_check_cli 2>&1 | tee "$OUT/cli.log" || status=1
cp /tmp/gpu_check_cli/summary.md "$OUT/" 2>/dev/null || status=1
timeout 240 python3 -m benchmarks.cross_entropy --device cuda --csv "$OUT/cross_entropy_cuda.csv" \
    2>&1 | tee "$OUT/bench.log" || status=1
exit $status
