"""Training throughput of llmcore's GPT against transformers' GPT2LMHeadModel (its default "sdpa"
attention), same configuration, same weights, same batch, same AdamW, measured in the same run: a
pretraining batch (every position counts), and a fine-tuning batch of the default pipeline's translation
model shape whose first half is a prompt (labels -100), which llmcore does not project onto the vocabulary.

One step = forward + backward + AdamW step. Steps of the two models alternate (A B B A ...) so that
noise from a shared machine hits both alike; the figure per model is the median step time.
Last line: one JSON object with tokens/s and ratio_fp32, ratio_bf16 (llmcore tokens/s / transformers').

    python benchmarks/model.py                # ~10 minutes on 2 CPU cores
    python benchmarks/model.py --threads 1    # steadier on a busy machine
    python benchmarks/model.py --quick        # smoke run
"""

import argparse
import contextlib
import json
import statistics
import time

import torch
import transformers

from llmcore.hf import to_transformers
from llmcore.model import GPT, TransformerConfig
from llmcore.model.linear import cpu_has_native_bf16
from llmcore.train.runtime import cpu_kind


def train_step(model, optimizer, batch, labels, bf16):
    autocast = torch.autocast(batch.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        loss = model(batch, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def compare(cfg, batch_size, steps, bf16, warmup=2, prompt=0):
    """prompt: leading positions of every row whose labels are -100."""
    torch.manual_seed(0)
    ours = GPT(cfg).train()
    theirs = to_transformers(ours).train()  # identical weights: both compute the same losses
    batch = torch.randint(cfg.vocab_size, (batch_size, cfg.max_seq_len))
    labels = batch.clone()
    labels[:, :prompt] = -100
    models = {"llmcore": ours, "transformers": theirs}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1) for name, m in models.items()}
    times, losses = {name: [] for name in models}, {name: [] for name in models}
    for step in range(warmup + steps):
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            start = time.perf_counter()
            losses[name].append(train_step(models[name], optimizers[name], batch, labels, bf16))
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
    tokens = batch.numel()
    result = {name: tokens / statistics.median(t) for name, t in times.items()}
    wins = sum(a < b for a, b in zip(times["llmcore"], times["transformers"]))
    first_loss_diff = abs(losses["llmcore"][0] - losses["transformers"][0])
    print(f"{'bf16' if bf16 else 'fp32'} batch {batch_size}x{cfg.max_seq_len}{f', prompt {prompt}' if prompt else ''}: "
          + ", ".join(f"{n} {v:,.0f} tok/s (median of {len(times[n])} steps)" for n, v in result.items())
          + f"; llmcore faster in {wins} of {len(times['llmcore'])} step pairs"
          + f"; first-step loss diff {first_loss_diff:.2e}", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TransformerConfig(family="gpt", vocab_size=8192, d_model=384, n_heads=6, n_layers=6, max_seq_len=256,
                            dropout=0.0, eos_token_id=0)
    fp32 = compare(cfg, batch_size=4, steps=2 if args.quick else 24, bf16=False)
    # bf16 matmuls are slow on CPUs without native bf16 (AVX2): a smaller batch there
    bf16_batch = 4 if cpu_has_native_bf16() else 1
    bf16 = compare(cfg, batch_size=bf16_batch, steps=2 if args.quick else 8 * (4 // bf16_batch), bf16=True)
    translation = TransformerConfig(family="gpt", vocab_size=4096, d_model=128, n_heads=4, n_layers=2, max_seq_len=96,
                                    dropout=0.0, eos_token_id=0)
    finetune = compare(translation, batch_size=32, steps=2 if args.quick else 40, bf16=False, prompt=48)
    print(json.dumps({
        "config": "gpt 6 layers, d_model 384, 6 heads, 256 context, 8192 vocab, dropout 0",
        "anchor": "transformers.GPT2LMHeadModel, attn_implementation=sdpa",
        "cpu": cpu_kind(), "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "fp32_tokens_per_s": {k: round(v) for k, v in fp32.items()},
        "bf16_tokens_per_s": {k: round(v) for k, v in bf16.items()},
        "batch_fp32": "4x256", "batch_bf16": f"{bf16_batch}x256 (bf16 autocast)",
        "ratio_fp32": round(fp32["llmcore"] / fp32["transformers"], 3),
        "ratio_bf16": round(bf16["llmcore"] / bf16["transformers"], 3),
        "finetune_config": "gpt 2 layers, d_model 128, 4 heads, 4096 vocab; batch 32x96, the first 48 positions a prompt",
        "finetune_tokens_per_s": {k: round(v) for k, v in finetune.items()},
        "ratio_finetune": round(finetune["llmcore"] / finetune["transformers"], 3),
    }))


if __name__ == "__main__":
    main()
