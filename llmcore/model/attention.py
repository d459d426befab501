"""Multi-head attention (Vaswani et al. 2017, section 3.2) and the key/value cache used in generation."""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import TransformerConfig
from .linear import Linear
from .positions import apply_rotary

# cuDNN's attention backward returns NaN query gradients with an explicit mask at lengths % 128 == 64 (PyTorch
# issue 196678, torch 2.11+ on H100/H200): masked calls on GPUs take the other fused kernels.
MASKED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class KVCache:
    """Keys and values of every position seen so far, per attention module, so that each generation
    step computes only the new token. Cross-attention keys/values depend on the encoder output alone:
    they are computed at the first step and reused."""

    def __init__(self):
        self.keys_values: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def length(self) -> int:
        """Positions cached by self-attention: the offset of the next token."""
        return next((k.shape[2] for m, (k, _) in self.keys_values.items() if not m.cross), 0)

    def extend(self, module: nn.Module, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if module in self.keys_values:
            past_k, past_v = self.keys_values[module]
            k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
        self.keys_values[module] = (k, v)
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        """Follow the batch rows that beam search keeps."""
        self.keys_values = {m: (k[index], v[index]) for m, (k, v) in self.keys_values.items()}


class Attention(nn.Module):
    """Self-attention (one fused q/k/v projection) or cross-attention (queries from the decoder, keys and
    values from the encoder output `memory`), computed by `F.scaled_dot_product_attention`."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.cross, self.n_heads, self.d_head = cross, cfg.n_heads, cfg.d_head
        inner = cfg.n_heads * cfg.d_head
        if cross:
            self.q = Linear(cfg.d_model, inner, bias=cfg.bias)
            self.kv = Linear(cfg.d_model, 2 * inner, bias=cfg.bias)
        else:
            self.qkv = Linear(cfg.d_model, 3 * inner, bias=cfg.bias)
        self.proj = Linear(inner, cfg.d_model, bias=cfg.bias)
        self.scale = None if cfg.scale_attention else 1.0  # None: SDPA's 1 / sqrt(d_head)
        self.dropout = cfg.dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, n_heads * d_head) -> (B, n_heads, T, d_head)"""
        return x.unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)

    def forward(self, x, mask=None, is_causal=False, rope=None, memory=None, cache: KVCache | None = None):
        """x (B, T, d_model). mask: bool (True = attend) or additive float, broadcastable to (B, H, T, S);
        None with `is_causal` lets SDPA use its fused causal kernels."""
        if self.cross:
            q = self.heads(self.q(x))
            if cache is not None and self in cache.keys_values:
                k, v = cache.keys_values[self]
            else:
                k, v = map(self.heads, self.kv(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache.keys_values[self] = (k, v)
        else:
            q, k, v = map(self.heads, self.qkv(x).chunk(3, dim=-1))
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.extend(self, k, v)
        with sdpa_kernel(MASKED_BACKENDS) if mask is not None and q.is_cuda else nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).flatten(2))
