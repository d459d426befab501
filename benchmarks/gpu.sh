#!/usr/bin/env bash
# GPT-2 124M (12 layers x 768, 12 heads, block 1024, vocab 50304) trained through llmcore's Trainer on one
# CUDA GPU for 300 steps of 64 x 1024 tokens in bf16 (torch.compile, fused AdamW, flash attention), on the
# bundled sample's tokens; prints tokens/s and MFU (last line: one JSON object, benchmarks/train.py --gpu).
#
#   bash benchmarks/gpu.sh                  # from anywhere
#   bash benchmarks/gpu.sh --batch 32       # extra arguments go to benchmarks/train.py
#
# The Python: benchmarks/gpu_env.sh (a preinstalled CUDA torch, or one installed into a venv; the few libraries
# llmcore imports, installed where missing).
set -euo pipefail
cd "$(dirname "$0")/.."

. benchmarks/gpu_env.sh
cuda_python numpy=numpy pyarrow=pyarrow pydantic=pydantic yaml=pyyaml safetensors=safetensors tokenizers=tokenizers \
            tqdm=tqdm tensorboard=tensorboard matplotlib=matplotlib

"$PY" -P benchmarks/train.py --gpu "$@"
