#!/usr/bin/env bash
# GPT-2 124M (12 layers x 768, 12 heads, block 1024, vocab 50304) trained through llmcore's Trainer on one
# CUDA GPU for 300 steps of 64 x 1024 tokens in bf16 (torch.compile, fused AdamW, flash attention), on the
# bundled sample's tokens; prints tokens/s and MFU (last line: one JSON object, benchmarks/train.py --gpu).
#
#   bash benchmarks/gpu.sh                  # from anywhere
#   bash benchmarks/gpu.sh --batch 32       # extra arguments go to benchmarks/train.py
#
# Uses python3 as it is when its torch sees a GPU (a preinstalled CUDA torch); otherwise makes a venv in
# $VENV (default /tmp/llmpipe-venv-gpu) and installs torch there. Then installs the few libraries llmcore
# imports that are missing. Offline machines: what is preinstalled must do; the script names what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

has_cuda_torch() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
PY=python3
if ! has_cuda_torch "$PY"; then
  VENV=${VENV:-${TMPDIR:-/tmp}/llmpipe-venv-gpu}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY="$VENV/bin/python"
  if ! has_cuda_torch "$PY"; then
    echo "gpu.sh: no torch with CUDA here; installing torch into $VENV (PyPI's Linux build is CUDA-enabled)"
    "$PY" -m pip install --quiet torch || { echo "gpu.sh: could not install torch; install a CUDA build of torch first" >&2; exit 1; }
  fi
fi
declare -A PACKAGES=([numpy]=numpy [pyarrow]=pyarrow [pydantic]=pydantic [yaml]=pyyaml [safetensors]=safetensors
                     [tokenizers]=tokenizers [tqdm]=tqdm [tensorboard]=tensorboard [matplotlib]=matplotlib)
missing=()
for module in "${!PACKAGES[@]}"; do
  "$PY" -c "import $module" 2>/dev/null || missing+=("${PACKAGES[$module]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu.sh: installing ${missing[*]}"
  "$PY" -m pip install --quiet "${missing[@]}" || { echo "gpu.sh: could not install ${missing[*]} (offline?)" >&2; exit 1; }
fi

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu.sh: torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || true

# The repository on the path instead of an install: nothing to build, works offline.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -P benchmarks/train.py --gpu "$@"
