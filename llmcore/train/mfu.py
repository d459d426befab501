"""Model FLOPs utilization: FLOPs per token (PaLM appendix B, nanoGPT) and the hardware's peak."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmcore.model import Transformer

# Dense bf16 / fp16 tensor-core peaks (FLOP/s) of common GPUs, from their data sheets; the first match
# of a lowercase substring of the device name wins. fp32 matmuls run as TF32 at half these.
GPU_PEAKS = [
    ("h100 pcie", 756e12), ("h200", 989e12), ("h100", 989e12), ("gh200", 989e12), ("a100", 312e12),
    ("l40s", 362e12), ("l4", 121e12), ("a10", 125e12), ("4090", 165e12), ("v100", 125e12), ("t4", 65e12),
]


def flops_per_token(model: Transformer, seq_len: int) -> float:
    """6N + 12 L H Q T: N weights in matmuls (position / segment tables are lookups: left out; a tied
    token embedding is counted once, as the LM head), L layers, H heads of Q dims, T tokens of context."""
    cfg = model.config
    lookups = sum(p.numel() for name, m in model.named_modules() if isinstance(m, nn.Embedding) and name != "tok_emb"
                  for p in m.parameters(recurse=False))
    if not cfg.tie_embeddings:
        lookups += model.tok_emb.weight.numel()
    n = model.num_parameters() - lookups
    layers = cfg.n_layers + (cfg.n_decoder_layers if cfg.architecture == "encoder-decoder" else 0)
    return 6 * n + 12 * layers * cfg.n_heads * cfg.d_head * seq_len


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one device: the GPU table, or for a CPU an estimate (threads x clock x fp32 FMA
    FLOPs per cycle of its widest vector unit); None when unknown."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        peak = next((p for key, p in GPU_PEAKS if key in name), None)
        return None if peak is None else peak / (2 if precision == "fp32" else 1)
    try:
        mhz = next(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    per_cycle = {"AVX512": 64, "AVX2": 32}.get(torch.backends.cpu.get_cpu_capability(), 16)
    return torch.get_num_threads() * mhz * 1e6 * per_cycle
