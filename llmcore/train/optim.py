"""AdamW with parameter groups, and warmup + cosine / linear / constant learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from llmcore.config import TrainConfig
from llmcore.model.positions import RelativePositionBias


def param_kind(module: nn.Module, name: str) -> str:
    """norm | bias | embedding | weight: what `TrainConfig.no_decay` names."""
    if isinstance(module, (nn.Embedding, RelativePositionBias)):  # lookup tables, incl. the tied LM head
        return "embedding"
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return "norm"
    return "bias" if name == "bias" else "weight"


def param_groups(model: nn.Module, weight_decay: float, no_decay: list[str]) -> list[dict]:
    """Two AdamW groups: decayed matrices, and the kinds in `no_decay` at weight decay 0.
    Shared (tied) parameters are listed once; frozen ones not at all."""
    decay, plain, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                (plain if param_kind(module, name) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay)
    # Fused: one pass over each parameter instead of one per operation; on a 5M-parameter GPT on one
    # AVX2 core the step took 10 ms against 49 ms with torch's default (foreach) kernels.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=device.type in ("cuda", "cpu"))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning rate at optimizer step `step` (0-based) as a share of cfg.lr."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    # A plain closure: LambdaLR leaves functions out of its state dict, which stays weights_only-loadable.
    def factor(step: int) -> float:
        return lr_factor(step, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
