"""Refusing a configuration that cannot train, before the first step, with what to change."""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import TrainConfig
from llmcore.model import Transformer
from llmcore.train.runtime import pick_device, resolve_precision


class TrainConfigError(ValueError):
    """A training configuration that cannot work; the message says which setting to change."""


def memory_needed(model: Transformer, batch_size: int, seq_len: int, precision: str, checkpointing: bool,
                  shards: int = 1) -> int:
    """Bytes one process needs, from below: weights, gradients and AdamW's two moments in fp32 (split over
    `shards` under FSDP), activations (34 bytes per token and d_model unit per layer at 16 bits,
    Korthikanti et al. 2022, without the attention matrix that fused kernels never store; one layer's
    worth plus each layer's input under activation checkpointing), and fp32 logits with their gradient."""
    cfg = model.config
    layers = cfg.n_layers + (cfg.n_decoder_layers if cfg.architecture == "encoder-decoder" else 0)
    scale = 1 if precision in ("bf16", "fp16") else 2
    per_layer = 34 * batch_size * seq_len * cfg.d_model * scale // 2
    activations = per_layer + layers * 2 * batch_size * seq_len * cfg.d_model * scale if checkpointing else layers * per_layer
    logits = 2 * 4 * batch_size * seq_len * cfg.vocab_size
    return 16 * model.num_parameters() // shards + activations + logits


def memory_available(device: torch.device) -> int | None:
    """Free bytes: the GPU's free memory, or the host's MemAvailable (Linux); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        line = next(row for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def check_fits(model: Transformer, cfg: TrainConfig, seq_len: int, world_size: int = 1, local_rank: int = 0) -> None:
    """Refuse a micro-batch that cannot fit in the device's free memory."""
    device = pick_device(cfg.device, local_rank)
    shards = world_size if cfg.distributed.strategy == "fsdp" else 1
    need = memory_needed(model, cfg.batch_size, seq_len, resolve_precision(cfg.precision, device),
                         cfg.activation_checkpointing, shards)
    free = memory_available(device)
    if free is not None and need > free:
        raise TrainConfigError(
            f"a micro-batch of {cfg.batch_size} x {seq_len} tokens needs at least {need / 2**30:.1f} GiB on {device}, "
            f"which has {free / 2**30:.1f} GiB free: lower train.batch_size (raise train.grad_accum to keep the "
            "global batch), shorten the examples (pretrain.block_size), set train.activation_checkpointing: true, "
            "or shard the model over more GPUs (train.distributed.strategy: fsdp)"
        )
