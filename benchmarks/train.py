"""Training tokens/s through llmcore's Trainer against a plain training loop over transformers'
GPT2LMHeadModel: same GPT-2 configuration, batch, precision, optimizer (AdamW), clipping and schedule,
in the same run, step by step.

Ours is everything a training step costs in the trainer: reading the batch from the memory-mapped token
shards (TokenLoader, CLM packing), forward, backward, clipping, AdamW, the schedule, the NaN check and
logging every step (metrics.jsonl, TensorBoard, the log line). The anchor gets its batches from the same
loader, read before the clock starts, and does forward, backward, clipping, AdamW, the schedule. The two
alternate step by step (a trainer callback runs one anchor step after each of ours), so a drifting load
hits both alike; after `--warmup` pairs, tokens/s = batch tokens / median step time, and ratio = the
median over pairs of anchor step time / ours. The data: the bundled sample (configs/sample/docs),
tokenized with a byte-level BPE trained on it.

The ratio is measured at the trainer's default precision (`auto`, which on a CPU with native bf16 probes
which of fp32 and bf16 is faster for this model); `--check-bf16` repeats the pairs under bf16 autocast.

    python benchmarks/train.py                       # ~5 minutes on 2 busy cores
    python benchmarks/train.py --threads 1           # steadier on a shared machine
    python benchmarks/train.py --gpu                 # what benchmarks/gpu.sh runs: GPT-2 124M, bf16, compiled

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llmcore.config import TokenizeConfig, TokenizerConfig, TrainConfig
from llmcore.data import tokens
from llmcore.data.loader import TokenLoader
from llmcore.data.stage import PartDir, assemble
from llmcore.data.stages import Tokenize, run_local
from llmcore.manifest import read_manifest
from llmcore.model import TransformerConfig, build_model
from llmcore.objectives import make_objective
from llmcore.stage import StageRef
from llmcore.train.mfu import flops_per_token, peak_flops
from llmcore.train.optim import build_scheduler
from llmcore.train.runtime import PRECISIONS, cpu_kind, pick_device
from llmcore.train.trainer import Trainer

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"


def token_stage(root: Path, vocab_size: int) -> Path:
    """The bundled sample as a finished tokenize stage (the documents one part of a document stage), as the
    data flow would build it."""
    writer = PartDir(root, "docs", "bench").writer(shard_rows=1000)
    for i, line in enumerate(line for p in sorted(SAMPLE.glob("*.jsonl")) for line in p.read_text(encoding="utf-8").splitlines()):
        writer.keep({"id": f"sample/{i}", "text": json.loads(line)["text"], "source": "sample"})
    writer.finish()
    docs = StageRef(str(root), "docs", "bench")
    assemble(docs, [("part-00000", "bench")], {}, [], None)
    tok_cfg = TokenizerConfig(vocab_size=vocab_size)
    tok = StageRef(str(root), "tokenizer", "bench")
    tokens.tokenizer_stage(tok, docs.path, tok_cfg, [docs.key])
    manifest = run_local(Tokenize(TokenizeConfig(), tok), root, docs)
    return StageRef(str(root), "tokenize", manifest["key"]).path


class Anchor:
    """transformers' GPT-2 in a plain loop, one step per call, on batches read before the clock starts."""

    def __init__(self, stage: Path, model_cfg: TransformerConfig, cfg: TrainConfig, precision: str):
        import transformers

        loader = TokenLoader(stage, objective(stage, model_cfg), cfg.batch_size, seed=cfg.seed)
        self.device = pick_device(cfg.device)
        self.batches = [{k: v.to(self.device) for k, v in next(loader).items()} for _ in range(cfg.max_steps)]
        torch.manual_seed(cfg.seed)
        self.model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=model_cfg.vocab_size, n_positions=model_cfg.max_seq_len, n_embd=model_cfg.d_model,
            n_layer=model_cfg.n_layers, n_head=model_cfg.n_heads, resid_pdrop=model_cfg.dropout,
            embd_pdrop=model_cfg.dropout, attn_pdrop=model_cfg.dropout)).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.cfg, self.dtype, self.done = cfg, PRECISIONS[precision], 0

    def step(self) -> float:
        start = time.perf_counter()
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast:
            loss = self.model(**self.batches[self.done]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()
        self.done += 1
        return time.perf_counter() - start


class Pairs:
    """A trainer callback: the time per step between train events (so data, logging and the progress bar
    count), then one anchor step, timed alone."""

    def __init__(self, anchor: Anchor | None):
        self.anchor, self.mark, self.last = anchor, None, 0
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self.mfu: list[float | None] = []

    def __call__(self, event: dict) -> None:
        if event["event"] != "train":
            return
        if self.mark is not None:
            self.ours.append((time.perf_counter() - self.mark) / (event["step"] - self.last))
            self.mfu.append(event["mfu"])
            if self.anchor:
                self.theirs.append(self.anchor.step())
        self.mark, self.last = time.perf_counter(), event["step"]


def objective(stage: Path, model_cfg: TransformerConfig):
    return make_objective("clm", read_manifest(stage)["tokenizer"], model_cfg.max_seq_len)


def paired_run(stage: Path, model_cfg: TransformerConfig, cfg: TrainConfig, run_dir: Path, anchor: bool, warmup: int) -> dict:
    """One trainer run with an anchor step after each of ours (log_every 1), the anchor at the precision the
    trainer resolved; figures after `warmup` intervals."""
    pairs = Pairs(None)
    loader = TokenLoader(stage, objective(stage, model_cfg), cfg.batch_size, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(build_model(model_cfg), cfg, run_dir, loader, seq_len=model_cfg.max_seq_len, callbacks=[pairs])
    if anchor:
        pairs.anchor = Anchor(stage, model_cfg, cfg, trainer.precision)
    trainer.fit()
    tokens = cfg.batch_size * model_cfg.max_seq_len
    ours, theirs, mfu = pairs.ours[warmup:], pairs.theirs[warmup:], [m for m in pairs.mfu[warmup:] if m is not None]
    return {
        "ours": tokens / statistics.median(ours), "anchor": tokens / statistics.median(theirs) if theirs else None,
        "ratio": statistics.median(b / a for a, b in zip(ours, theirs)) if theirs else None,
        "mfu": statistics.median(mfu) if mfu else None, "pairs": len(ours), "precision": trainer.precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=3, help="steps (without anchor: logging intervals of 10) left out")
    parser.add_argument("--steps", type=int, default=20, help="steps (without anchor: intervals of 10 steps) measured")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8000, help="tokenizer vocabulary (the model's is --model-vocab or this)")
    parser.add_argument("--model-vocab", type=int, help="a larger, padded embedding (GPT-2 124M: 50304)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--check-bf16", action="store_true", help="also time the trainer under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the trainer")
    parser.add_argument("--no-anchor", action="store_true", help="time the trainer only (no transformers needed)")
    parser.add_argument("--gpu", action="store_true",
                        help="GPT-2 124M (12 x 768, 12 heads, block 1024, vocab 50304), batch 64, bf16, compiled, 300 steps, no anchor")
    if parser.parse_known_args()[0].gpu:  # the preset's values, unless given on the command line
        parser.set_defaults(d_model=768, layers=12, heads=12, block=1024, batch=64, model_vocab=50304, warmup=3, steps=26,
                            compile=True, no_anchor=True)  # 300 steps, logged every 10; compiling in the first 40
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="llmpipe-bench-train-"))
    try:
        stage = token_stage(work, args.vocab)
        vocab = args.model_vocab or read_manifest(stage)["tokenizer"]["vocab_size"]
        model_cfg = TransformerConfig(family="gpt", vocab_size=vocab, d_model=args.d_model, n_heads=args.heads,
                                      n_layers=args.layers, max_seq_len=args.block, dropout=0.0)
        log_every = 1 if not args.no_anchor else 10  # alone (a GPU), the host reads the loss only when it logs
        cfg = TrainConfig(max_steps=(args.warmup + args.steps + 1) * log_every, batch_size=args.batch, lr=6e-4, warmup_steps=2,
                          log_every=log_every, eval_every=10**9, checkpoint_every=10**9, compile=args.compile)
        device = pick_device(cfg.device)
        result = paired_run(stage, model_cfg, cfg, work / "run", not args.no_anchor, args.warmup)
        precision = result.pop("precision")
        print(f"{precision}: " + ", ".join(f"{k} {v:,.4g}" for k, v in result.items() if v is not None), flush=True)
        bf16 = None
        if args.check_bf16:
            bf16 = paired_run(stage, model_cfg, cfg.model_copy(update={"precision": "bf16"}), work / "run", not args.no_anchor, args.warmup)
            del bf16["precision"]
            print("bf16: " + ", ".join(f"{k} {v:,.4g}" for k, v in bf16.items() if v is not None), flush=True)
        summary = {
            "benchmark": "train", "device": str(device), "cpu": cpu_kind() if device.type == "cpu" else None,
            "threads": torch.get_num_threads(), "precision": precision,
            "model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "block": args.block, "vocab": vocab,
                      "params": build_model(model_cfg).num_parameters()},
            "batch": args.batch, "pairs": result["pairs"], "compile": args.compile,
            "ours_tokens_per_s": result["ours"], "anchor_tokens_per_s": result["anchor"], "ratio": result["ratio"],
            "mfu": result["mfu"], "peak_flops": peak_flops(device, precision),
            "flops_per_token": flops_per_token(build_model(model_cfg), args.block),
            "bf16": bf16, "load_average": os.getloadavg()[0],
        }
        print(json.dumps(summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
