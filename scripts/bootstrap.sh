#!/usr/bin/env bash
# Creates (or refreshes) the virtual environment and installs SlateRec into it.
# On machines without an NVIDIA GPU the CPU build of torch is installed first, so
# that the package's own torch range does not pull the multi-GB CUDA build.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q "torch>=2.2"
  else
    "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}"
  fi
fi
"$VENV/bin/python" -m pip install -q -e ".[test,minari,plot,ray,swanlab,wandb,mlflow]"
