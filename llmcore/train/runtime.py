"""Where and how the math runs: device, precision, determinism."""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but torch sees no CUDA device; set train.device: cpu (or auto)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX: without them, CPU bf16 matmuls are emulated and slower than fp32 (measured
    on an AVX2 EPYC: 4x slower under autocast), so `auto` keeps fp32 there."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def configure(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32), as nanoGPT does
        torch.backends.cudnn.allow_tf32 = True
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
