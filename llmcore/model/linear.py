"""Linear layers, with a faster backward under bf16 autocast on CPUs without native bf16 matmuls.

On such CPUs (AVX2, AVX-512 without BF16) PyTorch multiplies bf16 matrices with a generic kernel that is
fast only when both operands are contiguous along the reduced dimension (measured on an AVX2 EPYC: ~15
GFLOP/s that way, ~1.5 otherwise). nn.Linear's forward (x W^T) and weight gradient (g^T x) have that
layout; its input gradient (g W) does not. Multiplying by a transposed copy of W instead costs one copy of
the weight and makes the whole step several times faster. Same bf16 operands, same bf16 results. Where
bf16 is native (oneDNN's AVX512-BF16 / AMX kernels take any layout) the copy only costs time, so there
F.linear runs as it is.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX, as oneDNN sees them (ONEDNN_MAX_CPU_ISA can hide them): without them, CPU bf16
    matmuls are emulated and slower than fp32 (measured on an AVX2 EPYC: 4x slower under autocast)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class TransposedBackwardLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight.t().contiguous().t()  # (.., out) @ (out, in), contiguous along out
        grad_2d = grad.reshape(-1, grad.shape[-1])
        grad_w = grad_2d.t() @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_w, grad_2d.sum(0) if ctx.has_bias else None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with the bf16 backward above when CPU autocast runs in emulated bf16."""
    if (x.is_cpu and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and not cpu_has_native_bf16()):
        to_bf16 = lambda t: None if t is None else t.to(torch.bfloat16)  # noqa: E731
        return TransposedBackwardLinear.apply(to_bf16(x), to_bf16(weight), to_bf16(bias))
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
