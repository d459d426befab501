"""Norms, the feed-forward network, one Transformer layer, and a stack of layers (an encoder or a decoder)."""

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVCache
from .config import TransformerConfig
from .linear import Linear
from .positions import RelativePositionBias, Rotary, sinusoids

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": partial(F.gelu, approximate="tanh"),
               "swiglu": F.silu, "geglu": partial(F.gelu, approximate="tanh")}
GATED = ("swiglu", "geglu")


def norm(cfg: TransformerConfig) -> nn.Module:
    """LayerNorm (Ba et al. 2016), or RMSNorm (Zhang & Sennrich 2019): no mean subtraction, no bias (T5)."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class MLP(nn.Module):
    """Position-wise feed-forward network: d_model -> d_ff -> d_model. Gated variants (Shazeer 2020)
    multiply act(x W_gate) by x W_up; `fc` holds [W_gate; W_up] in one matrix."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.act, self.gated = ACTIVATIONS[cfg.activation], cfg.activation in GATED
        self.fc = Linear(cfg.d_model, cfg.d_ff * (2 if self.gated else 1), bias=cfg.bias)
        self.proj = Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            return self.proj(self.act(gate) * up)
        return self.proj(self.act(h))


class Block(nn.Module):
    """One layer: self-attention, cross-attention (decoder of an encoder-decoder), feed-forward; each a
    residual sublayer, normalized before (pre-norm) or after (post-norm, as in the paper) the residual add."""

    def __init__(self, cfg: TransformerConfig, cross: bool):
        super().__init__()
        self.prenorm = cfg.prenorm
        self.ln_1, self.attn = norm(cfg), Attention(cfg)
        if cross:
            self.ln_cross, self.cross = norm(cfg), Attention(cfg, cross=True)
        self.ln_2, self.mlp = norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def residual(self, x, ln, sublayer):
        if self.prenorm:
            return x + self.drop(sublayer(ln(x)))
        return ln(x + self.drop(sublayer(x)))

    def forward(self, x, mask, is_causal, rope=None, memory=None, memory_mask=None, cache=None):
        x = self.residual(x, self.ln_1, lambda h: self.attn(h, mask, is_causal, rope=rope, cache=cache))
        if memory is not None:
            x = self.residual(x, self.ln_cross, lambda h: self.cross(h, memory_mask, memory=memory, cache=cache))
        return self.residual(x, self.ln_2, self.mlp)


class Stack(nn.Module):
    """N layers over embedded tokens, with the positional information of the config: the paper's encoder
    (bidirectional) or decoder (causal; with cross-attention over `memory` in an encoder-decoder)."""

    def __init__(self, cfg: TransformerConfig, n_layers: int, causal: bool, cross: bool = False):
        super().__init__()
        self.causal, self.positions, self.max_seq_len = causal, cfg.positions, cfg.max_seq_len
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        if cfg.positions == "learned":
            self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        elif cfg.positions == "sinusoidal":
            self.register_buffer("sinusoids", sinusoids(cfg.max_seq_len, cfg.d_model), persistent=False)
        elif cfg.positions == "rotary":
            self.rotary = Rotary(cfg.d_head, cfg.rope_theta)
        else:
            self.relative_bias = RelativePositionBias(cfg, bidirectional=not causal)
        self.seg_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.ln_emb = norm(cfg) if cfg.norm_embeddings else None
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg, cross) for _ in range(n_layers))
        self.ln_f = norm(cfg) if cfg.prenorm else None  # post-norm layers already end normalized

    def forward(self, x, attention_mask=None, token_type_ids=None, memory=None, memory_mask=None,
                cache: KVCache | None = None) -> torch.Tensor:
        """x: token embeddings (B, T, d_model). attention_mask: (B, past + T), 1 for tokens, 0 for padding.
        memory, memory_mask: encoder output (B, S, d_model) and its padding mask (B, S)."""
        T, past = x.shape[1], cache.length if cache is not None else 0
        if self.positions in ("learned", "sinusoidal") and past + T > self.max_seq_len:
            raise ValueError(f"{past + T} positions exceed max_seq_len={self.max_seq_len}")
        # Positions count real tokens only, so left padding does not shift them.
        if attention_mask is None:
            pos = torch.arange(past, past + T, device=x.device)[None]
        else:
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        x = x * self.embed_scale
        if self.positions == "learned":
            x = x + self.pos_emb(pos)
        elif self.positions == "sinusoidal":
            x = x + self.sinusoids[pos]
        if self.seg_emb is not None:
            x = x + (self.seg_emb.weight[0] if token_type_ids is None else self.seg_emb(token_type_ids))
        if self.ln_emb is not None:
            x = self.ln_emb(x)
        x = self.drop(x)
        rope = self.rotary(pos) if self.positions == "rotary" else None
        bias = None
        if self.positions == "relative":
            keys = torch.arange(past + T, device=x.device)
            bias = self.relative_bias(keys[past:], keys)
        mask, is_causal = self.attention_mask(attention_mask, T, past + T, bias, x.device)
        if memory_mask is not None:
            memory_mask = memory_mask.bool()[:, None, None, :]
        for block in self.layers:
            x = block(x, mask, is_causal, rope, memory, memory_mask, cache)
        return self.ln_f(x) if self.ln_f is not None else x

    def attention_mask(self, padding, T, S, bias, device):
        """SDPA's (mask, is_causal) for T queries over S keys, the last T of which are the queries.
        Without padding or bias, returns no mask so that SDPA can pick its fused causal kernels."""
        if padding is None and bias is None and (not self.causal or T == 1 or T == S):
            return None, self.causal and 1 < T == S
        query = torch.arange(S - T, S, device=device)[:, None]
        key = torch.arange(S, device=device)[None, :]
        allowed = key <= query if self.causal else torch.ones(T, S, dtype=torch.bool, device=device)
        if padding is not None:
            # A padding query would attend to nothing: let it see itself so softmax stays finite.
            allowed = (allowed & padding.bool()[:, None, None, :]) | (key == query)
        if bias is None:
            return allowed, False
        return bias.masked_fill(~allowed, float("-inf")), False
