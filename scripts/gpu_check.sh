#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run for a session lent one (the `device` tool):
#
#   run(command="bash scripts/gpu_check.sh", timeout_s=540)
#
# It runs with the device machine's own python3, which holds PyTorch (CUDA) and Triton, so it
# installs nothing: the package is imported from src/. It writes six files under $OUT (what
# comes back; at most eight may):
#   versions.txt           torch, triton, GPU
#   tests.log              the CUDA-marked tests and the whole tests/ops suite (Triton kernel
#                          against PyTorch in value and gradient, on the GPU)
#   cli.log, summary.md    labelsmooth run on the GPU (digits, a few epochs, MixUp too)
#   bench.log, cross_entropy_cuda.csv
#                          python -m benchmarks.cross_entropy --device cuda (native, dense,
#                          timm-style, ours = the Triton kernel, ours in place, floors; time
#                          and peak extra GPU memory)
# Copy cross_entropy_cuda.csv to benchmarks/results/ and put the figures in the issue's note.
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
