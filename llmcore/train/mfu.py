"""Model FLOPs utilization: FLOPs per token (PaLM appendix B, nanoGPT) and the hardware's peak."""

from __future__ import annotations

import torch
from torch import nn

from llmcore.model import Transformer
from llmcore.model.linear import cpu_has_native_bf16
from llmcore.train.runtime import cpuinfo

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
    """Peak FLOP/s of one device in `precision`: the GPU table, or for a CPU threads x clock x
    `cpu_flops_per_cycle`; None when unknown (then no MFU is reported)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        peak = next((p for key, p in GPU_PEAKS if key in name), None)
        return None if peak is None else peak / (2 if precision == "fp32" else 1)
    info = cpuinfo()
    half_width = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"  # Zen 3 / Zen 4
    per_cycle = cpu_flops_per_cycle(precision, torch.backends.cpu.get_cpu_capability(), info.get("flags", "").split(),
                                    native_bf16=cpu_has_native_bf16(), half_width_avx512=half_width)
    try:
        mhz = float(info["cpu MHz"])
    except (KeyError, ValueError):
        return None
    return None if per_cycle is None else torch.get_num_threads() * mhz * 1e6 * per_cycle


def cpu_flops_per_cycle(precision: str, capability: str, flags: list[str], native_bf16: bool,
                        half_width_avx512: bool = False) -> int | None:
    """Dense matmul FLOPs per cycle of one core, for the instructions that `precision` runs on.
    fp32: two FMA units of the widest vector width (AVX2: 2 x 8 lanes x 2 = 32; AVX-512: 64), except where
    AVX-512 runs on 256-bit units (AMD Zen 4: 32). bf16 where oneDNN runs it natively: AMX tiles
    (1,024, Intel's figure for AMX-BF16), else AVX512-BF16 dot products (twice the fp32 rate). Emulated
    bf16 and CPU fp16 have no meaningful peak: None."""
    if precision == "fp32":
        if capability == "AVX512":
            return 32 if half_width_avx512 else 64
        return 32 if capability == "AVX2" else None
    if precision == "bf16" and native_bf16:
        if "amx_bf16" in flags:
            return 1024
        fp32 = cpu_flops_per_cycle("fp32", capability, flags, native_bf16, half_width_avx512)
        return None if fp32 is None else 2 * fp32
    return None

