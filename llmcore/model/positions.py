"""Positional information: absolute sinusoids, rotary embeddings, T5's relative position bias.

Learned absolute positions are a plain `nn.Embedding` (see `Stack`); the others live here.
"""

import math

import torch
from torch import nn

from .config import TransformerConfig


def sinusoids(n_positions: int, dim: int) -> torch.Tensor:
    """Vaswani et al. 2017, section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class Rotary(nn.Module):
    """RoPE (Su et al. 2021): rotate pairs of query/key features by angles proportional to the position, so
    that q_m . k_n depends on m - n only. Pairs are (x_i, x_{i + d/2}), the GPT-NeoX / LLaMA layout."""

    def __init__(self, d_head: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin of shape (B, 1, T, d_head / 2), broadcast over heads."""
        angles = positions[:, None, :, None].float() * self.inv_freq
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


class RelativePositionBias(nn.Module):
    """T5 (Raffel et al. 2020, section 2.1): a learned scalar per head and relative-distance bucket, added to
    the attention logits. Buckets are exact for short distances and logarithmic up to `max_distance`.
    Computed once per stack and shared by all its layers."""

    def __init__(self, cfg: TransformerConfig, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.n_buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
        self.weight = nn.Parameter(torch.empty(self.n_buckets, cfg.n_heads))

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        n, bucket = self.n_buckets, torch.zeros_like(relative)
        if self.bidirectional:  # half the buckets for keys after the query
            n //= 2
            bucket += (relative > 0).long() * n
            relative = relative.abs()
        else:  # a decoder only looks back
            relative = -relative.clamp(max=0)
        exact = n // 2
        log_scaled = exact + (torch.log(relative.float() / exact) / math.log(self.max_distance / exact)
                              * (n - exact)).long()
        return bucket + torch.where(relative < exact, relative, log_scaled.clamp(max=n - 1))

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """(Tq,), (Tk,) -> bias (1, n_heads, Tq, Tk)."""
        buckets = self.bucket(key_positions[None, :] - query_positions[:, None])
        return nn.functional.embedding(buckets, self.weight).permute(2, 0, 1)[None]
