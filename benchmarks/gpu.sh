#!/usr/bin/env bash
# GPT-2 124M (12 layers x 768, 12 heads, block 1024, vocab 50304) trained through llmcore's Trainer on one
# CUDA GPU for 300 steps in bf16 (torch.compile, fused AdamW, flash attention), on the bundled sample's
# tokens; prints tokens/s and MFU (last line: one JSON object, from benchmarks/train.py --gpu).
#
#   bash benchmarks/gpu.sh                  # from the repository root or anywhere
#   bash benchmarks/gpu.sh --batch 16       # extra arguments go to benchmarks/train.py
#
# Installs what is missing into .venv-gpu (which sees the system's packages, so a preinstalled CUDA torch
# is used as is): torch only if the one it finds has no CUDA, then the few libraries llmcore imports.
# Offline machines: whatever is preinstalled must do; the script names what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
. "$VENV/bin/activate"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu.sh: no torch with CUDA here; installing torch (PyPI's Linux build is CUDA-enabled)"
  pip install --quiet torch || { echo "gpu.sh: could not install torch; install a CUDA build of torch first" >&2; exit 1; }
fi
declare -A PACKAGES=([numpy]=numpy [pyarrow]=pyarrow [pydantic]=pydantic [yaml]=pyyaml [safetensors]=safetensors
                     [tokenizers]=tokenizers [tqdm]=tqdm [tensorboard]=tensorboard [matplotlib]=matplotlib)
missing=()
for module in "${!PACKAGES[@]}"; do
  python -c "import $module" 2>/dev/null || missing+=("${PACKAGES[$module]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu.sh: installing ${missing[*]}"
  pip install --quiet "${missing[@]}" || { echo "gpu.sh: could not install ${missing[*]} (offline?)" >&2; exit 1; }
fi

python - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu.sh: torch sees no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, bf16: {torch.cuda.is_bf16_supported()}")
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || true

# The repository on the path instead of an install: nothing to build, works offline.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python -P benchmarks/train.py --gpu "$@"
