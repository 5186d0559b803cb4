#!/usr/bin/env bash
# The prepared GPU check, for a GPU machine that is offline and brings its own Python: at most 5 minutes
# on one GPU. It runs bench/gpu_check.py (the published losses CPU vs GPU, the seam's overhead, --amp bf16
# against fp32, trainings per hour, a smoke search through the process backend with loader workers, two
# workers on one GPU, Ray where installed) and prints one markdown table; figures go to $OUT (the device
# tool's output folder) or runs/gpu-check.
#
# The project's pins (torch, torchvision) do not apply there: the machine's own python3 and torch run
# it (it must import and run on torch 2.11 / torchvision 0.26, a GPU image's versions; not yet run
# there), the project is installed with --no-deps, and what the machine lacks comes as wheels from a
# folder ($WHEELS, default .whl in the repository root), installed with --no-index --no-deps. A GPU image with torch, scipy, matplotlib, click, rich, PyYAML and
# sympy lacks only faster-coco-eval; on a machine with internet, in the repository root (Python 3.12
# there; use its version):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl faster-coco-eval==1.8.0
#
# Usage: bench/gpu_check.sh [--dry-run]     (--dry-run: every section on the CPU at toy sizes)
# Environment: PYTHON (default python3), WHEELS (default .whl), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
case "$py" in */*) py="$(realpath -s "$py")" ;; esac  # it runs from bench/ below (-s: a venv is its link)
wheels="${WHEELS:-.whl}"
out="$(realpath -m "${OUT:-runs/gpu-check}")"
mkdir -p "$out"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
shopt -s nullglob
carried=("$wheels"/*.whl)
if [ ${#carried[@]} -gt 0 ]; then
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "${carried[@]}"
fi
# The project itself, without its pinned dependencies (the machine's own torch is the one to check).
"$py" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import autoloss, torch; print('autoloss from', autoloss.__file__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
cd bench
timeout 300 "$py" gpu_check.py --out "$out" "$@" 2> >(tee "$out/gpu_check.log" >&2)
