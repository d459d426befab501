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


def param_groups(model: nn.Module, weight_decay: float, no_decay: list[str], lr: float,
                 lr_scales: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups: decayed matrices and the kinds in `no_decay` (weight decay 0), each split by learning
    rate: `lr_scales` maps a parameter-name prefix to a multiplier of `lr` (the longest matching prefix
    wins). Shared (tied) parameters are listed once, under their first name; frozen ones not at all."""
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], list] = {}
    seen, matched = set(), set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{name}" if module_name else name
            prefix = max((k for k in lr_scales if full == k or full.startswith(k + ".")), key=len, default=None)
            matched.add(prefix)
            key = (param_kind(module, name) not in no_decay, lr_scales.get(prefix, 1.0))
            groups.setdefault(key, []).append(p)
    unmatched = sorted(set(lr_scales) - matched)
    if unmatched:
        tops = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise ValueError(f"lr_scales prefix(es) {unmatched} match no trainable parameter; names start with {tops}")
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
            for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                    lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay, cfg.lr, lr_scales)
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
