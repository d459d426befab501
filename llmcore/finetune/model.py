"""Preparing a pretrained model for a downstream task: a vocabulary grown by the task tokens, frozen
parts, and the parameter names that per-group learning rates match."""

from __future__ import annotations

import torch
from torch import nn

from llmcore.config import FreezeConfig
from llmcore.model import Transformer


def grow_vocab(model: Transformer, size: int) -> int:
    """Append rows to the token embedding (and an untied LM head) up to `size`; new rows start at the mean
    of the old ones, so a new token's first logits are average rather than arbitrary. Returns rows added."""
    old = model.config.vocab_size
    if size <= old:
        return 0
    for owner, name in [(model, "tok_emb"), *([(model, "lm_head")] if model.lm_head is not None else [])]:
        table = getattr(owner, name)
        weight = table.weight.data
        grown = torch.cat([weight, weight.mean(0, keepdim=True).expand(size - old, -1)])
        if isinstance(table, nn.Embedding):
            setattr(owner, name, nn.Embedding.from_pretrained(grown, freeze=False))
        else:
            table.weight = nn.Parameter(grown)
            table.out_features = size
    model.config.vocab_size = size
    return size - old


def freeze(model: Transformer, cfg: FreezeConfig) -> list[str]:
    """Turn off gradients as `cfg` says; returns the frozen parameters' names."""
    frozen = []
    stack = model.encoder if hasattr(model, "encoder") else model.decoder  # BERT, T5: the encoder; GPT: its decoder
    if cfg.encoder and model.config.architecture != "encoder-decoder":
        raise ValueError("freeze.encoder needs an encoder-decoder model; use freeze.first_layers for this one")
    if cfg.first_layers > len(stack.layers):
        raise ValueError(f"freeze.first_layers is {cfg.first_layers} but the model has {len(stack.layers)} layers there")
    parts = []
    if cfg.embeddings:
        parts.append(model.tok_emb)
        parts += [m for name, m in model.named_modules() if name.endswith(("pos_emb", "seg_emb"))]
    parts += list(stack.layers[: cfg.first_layers])
    if cfg.encoder:
        parts.append(model.encoder)
    ids = {id(p) for part in parts for p in part.parameters()}
    for name, p in model.named_parameters():
        if id(p) in ids:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def set_dropout(model: Transformer, p: float) -> None:
    """Every dropout of the model (embeddings, residuals, attention weights) at probability p."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout", None), float):  # attention: SDPA's dropout_p
            module.dropout = p
    model.config.dropout = p
