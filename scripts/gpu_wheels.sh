#!/usr/bin/env bash
# The wheels scripts/gpu_check.py needs on a bare GPU machine that has Python 3.12, torch, numpy
# and scipy but not nnU-Net's stack: nnU-Net's network library (pure Python; installed there
# without its dependencies, which the U-Net does not import), threadpoolctl (the analysis) and
# this project as a wheel. Run here, where the package registry is reachable:
#
#   bash scripts/gpu_wheels.sh [FOLDER]          # default: gpu_wheels/
#
# and there:  pip install --no-deps --no-index FOLDER/*.whl && python scripts/gpu_check.py
set -euo pipefail
out=${1:-gpu_wheels}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux2014_x86_64 -d "$out" \
    dynamic-network-architectures==0.4.4 threadpoolctl==3.8.0
# built from a copy, so that setuptools leaves no build/ or egg-info in the work tree
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$root"/{pyproject.toml,README.md,nnunet_transfer,trainers,plans} "$copy"/
find "$copy" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m pip wheel --no-deps --no-build-isolation -w "$out" "$copy"
ls -l "$out"
