#!/usr/bin/env bash
# Create the project's virtual environment and install what `make test`/`make bench` need.
#   - torch already importable (system or venv): kept as it is, never reinstalled.
#   - otherwise, on a machine with a working NVIDIA GPU: the default (CUDA) torch build;
#     on any other machine: torch==2.13.0 from PyTorch's CPU wheel index when it can be
#     reached, else from the plain index (the CPU wheel on our machines); it says which. No
#     CUDA wheels are ever downloaded where there is no GPU.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "setup_env: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already present, keeping it"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup_env: NVIDIA GPU found, installing CUDA torch"
    "${PIP[@]}" torch
else
    # PyTorch's own CPU wheel index where it can be reached (no CUDA wheels anywhere in it);
    # else the plain index, where on our machines the pinned version is the CPU wheel too.
    echo "setup_env: no NVIDIA GPU, installing CPU torch ($TORCH_CPU_SPEC)"
    if "${PIP[@]}" --timeout 10 --retries 0 --index-url "$TORCH_CPU_INDEX" "$TORCH_CPU_SPEC" \
            >/dev/null 2>&1; then
        echo "setup_env: torch installed with PyTorch's CPU wheel index ($TORCH_CPU_INDEX)"
    else
        echo "setup_env: PyTorch's CPU wheel index not usable here; installing from the plain index"
        "${PIP[@]}" "$TORCH_CPU_SPEC"
    fi
fi
"${PIP[@]}" -e ".[test,bench]"
"$VENV/bin/python" -c "import torch, triton, elutriton; print('setup_env: torch', torch.__version__, '| triton', triton.__version__, '| cuda', torch.cuda.is_available())"
