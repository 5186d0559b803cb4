#!/usr/bin/env bash
# The prepared GPU check: at most 8 minutes on one GPU. Installs the project into .venv if needed, runs
# the GPU-marked tests, then bench/gpu_check.py (FCOS-R50 on a COCO-format set: seam vs stock step time,
# AMP off/bf16, two workers sharing a GPU, a two-trial Ray run at 0.5 GPU each). Figures go to
# $OUT (the device tool's output folder) or runs/gpu-check.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${OUT:-runs/gpu-check}")"
mkdir -p "$out"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e '.[dev,ray]'
fi
.venv/bin/python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count())"
timeout 150 .venv/bin/python -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.txt" || true
cd bench && timeout 330 ../.venv/bin/python gpu_check.py --out "$out" 2>&1 | tee "$out/gpu_check.log"
