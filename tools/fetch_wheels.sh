#!/usr/bin/env bash
# Download the optional benchmark packages a GPU machine without network needs, into a folder
# that tools/gpu_checks.sh installs from (offline, into a private folder on its PYTHONPATH).
#   tools/fetch_wheels.sh [DIR]          (default .wheels, which git ignores)
# Today that is the cuDNN frontend's Python API (perf/cudnn_graph.py, the "cudnn fused graph"
# baseline): version 1.16.0, the classic pybind API the baseline is written against, with no
# required dependencies (newer releases require nvidia-cutlass-dsl), for CPython 3.10-3.13
# on x86_64 Linux. Run it on a machine that can reach the package index before a GPU session,
# and carry DIR to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.wheels}
PYTHON=${PYTHON:-python3}
CUDNN_FRONTEND=${CUDNN_FRONTEND:-nvidia-cudnn-frontend==1.16.0}
mkdir -p "$DIR"
for version in 3.10 3.11 3.12 3.13; do
    "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        --python-version "$version" --platform manylinux_2_28_x86_64 -d "$DIR" \
        "$CUDNN_FRONTEND"
done
ls -l "$DIR"
