#!/usr/bin/env bash
# GPT-2 124M (12 layers x 768, 12 heads, block 1024, vocab 50304) trained through llmcore's Trainer on one
# CUDA GPU for 300 steps of 32 x 1024 tokens in bf16 (torch.compile, fused AdamW, flash attention), on the
# bundled sample's tokens; prints tokens/s and MFU (last line: one JSON object, benchmarks/train.py --gpu).
#
#   bash benchmarks/gpu.sh                  # from anywhere
#   bash benchmarks/gpu.sh --batch 16       # extra arguments go to benchmarks/train.py
#
# Installs what is missing into $VENV (default /tmp/llmpipe-venv-gpu), a venv that sees the system's
# packages (a preinstalled CUDA torch is used as is): torch only if the one it finds has no CUDA, then
# the few libraries llmcore imports. Offline machines: what is preinstalled must do; the script names
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-${TMPDIR:-/tmp}/llmpipe-venv-gpu}
PY=python3
if [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV" 2>/dev/null; then
  PY="$VENV/bin/python"
else
  echo "gpu.sh: no venv module here; installing into python3's own site-packages"
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu.sh: no torch with CUDA here; installing torch (PyPI's Linux build is CUDA-enabled)"
  "$PY" -m pip install --quiet torch || { echo "gpu.sh: could not install torch; install a CUDA build of torch first" >&2; exit 1; }
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
