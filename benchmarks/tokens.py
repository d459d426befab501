"""Tokenize stage throughput against raw `Tokenizer.encode_batch`, and the loader's CLM tokens/s.

1. Tokenize. The real documents of the bundled sample (configs/sample/docs), as Parquet shards of
   a document stage. Ours is the tokenize stage's work without Prefect (`run_local`): every part
   (Parquet read, `encode_batch`, ids to uint16 Arrow lists, split by id hash, Arrow IPC writes with
   fsync, sha256 of each file, part summaries), then the stage directory (the parts' files
   hard-linked in) and its manifest. The anchor is the same
   tokenizer's `encode_batch` on the same texts, already in memory, in the same batches: the limit
   our glue can approach. The tokenizer (byte-level BPE, the default config) is trained first on
   the same documents. The two alternate `--repeat` times; ratio = the median over the
   repetitions of raw seconds / our seconds (ours / raw throughput), robust to drifting load.
2. Loader. `TokenLoader` over the train split of those shards (verified by sha256 when opened),
   CLM batches of `--batch-size` x `--block-size` int64 tensors (input_ids, attention_mask,
   labels), across epochs; tokens/s = batch tokens / wall time, median of `--repeat` runs.

    python benchmarks/tokens.py [--repeat 5] [--copies 1] [--block-size 1024] [--batch-size 8]

The last line is one JSON object.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder heads sys.path and its name would shadow the standard
# library's `tokenize` (imported by linecache, inspect, ...): take the folder off the path first.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from llmcore.config import TokenizeConfig, TokenizerConfig  # noqa: E402
from llmcore.data import tokens  # noqa: E402
from llmcore.data.loader import TokenLoader  # noqa: E402
from llmcore.data.stage import PartDir, assemble  # noqa: E402
from llmcore.data.stages import Tokenize, run_local  # noqa: E402
from llmcore.objectives import make_objective  # noqa: E402
from llmcore.stage import StageRef  # noqa: E402
from llmcore.tokenizer import load_tokenizer  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
SHARD_ROWS = 1000


def docs_stage(root: Path, copies: int) -> tuple[StageRef, list[str]]:
    """The sample as a finished document stage (`copies` times over, with distinct ids)."""
    lines = [line for p in sorted(SAMPLE.glob("*.jsonl")) for line in p.read_text(encoding="utf-8").splitlines()]
    texts = [json.loads(line)["text"] for line in lines]
    texts *= copies
    writer = PartDir(root, "docs", "bench").writer(shard_rows=SHARD_ROWS)
    for i, text in enumerate(texts):
        writer.keep({"id": f"sample/{i}", "text": text, "source": "sample"})
    writer.finish()
    ref = StageRef(str(root), "docs", "bench")
    assemble(ref, [("part-00000", "bench")], {}, [], None)
    return ref, texts


def run_ours(root: Path, corpus: StageRef, tokenizer: StageRef, cfg: TokenizeConfig) -> tuple[float, dict, Path]:
    """The tokenize stage from scratch (its parts and stage directory removed first); (seconds, manifest, its path)."""
    shutil.rmtree(root / "tokenize", ignore_errors=True)
    start = time.perf_counter()
    manifest = run_local(Tokenize(cfg, tokenizer), root, corpus)
    return time.perf_counter() - start, manifest, StageRef(str(root), "tokenize", manifest["key"]).path


def run_raw(tok, texts: list[str], batch: int) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    for i in range(0, len(texts), batch):
        n += sum(len(e) for e in tok.encode_batch(texts[i : i + batch], add_special_tokens=False))
    return time.perf_counter() - start, n


def run_loader(stage: Path, tokenizer: dict, block: int, batch: int, batches: int) -> float:
    loader = TokenLoader(stage, make_objective("clm", tokenizer, block), batch, seed=0)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(loader)["input_ids"].numel()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1, help="the sample this many times over")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loader-batches", type=int, default=1000)
    args = parser.parse_args()
    cfg = TokenizeConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, texts = docs_stage(root, args.copies)
        tok_cfg = TokenizerConfig()
        start = time.perf_counter()
        tokenizer = StageRef(str(root), "tokenizer", "bench")
        tokens.tokenizer_stage(tokenizer, corpus.path, tok_cfg, [corpus.key])
        train_s = time.perf_counter() - start
        tok = load_tokenizer(tokenizer.path)
        print(f"{len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M chars, {os.cpu_count()} CPUs; "
              f"tokenizer ({tok_cfg.family}, vocab {tok_cfg.vocab_size}) trained in {train_s:.1f}s")

        ours_s, raw_s = [], []
        for _ in range(args.repeat):  # alternate, so drifting load hits both alike
            seconds, manifest, stage = run_ours(root, corpus, tokenizer, cfg)
            ours_s.append(seconds)
            seconds, raw_tokens = run_raw(tok, texts, cfg.batch_docs)
            raw_s.append(seconds)
        totals = tokens.split_totals(manifest)
        n_tokens = totals["train"]["tokens"] + totals["validation"]["tokens"]
        assert n_tokens == raw_tokens, (n_tokens, raw_tokens)
        ours_med, raw_med = statistics.median(ours_s), statistics.median(raw_s)
        print(f"tokenize: ours {ours_med:.2f}s {sorted(round(s, 2) for s in ours_s)}, "
              f"raw encode_batch {raw_med:.2f}s {sorted(round(s, 2) for s in raw_s)}, {n_tokens} tokens")

        rates = [run_loader(stage, manifest["tokenizer"], args.block_size, args.batch_size, args.loader_batches)
                 for _ in range(args.repeat)]
        loader_rate = statistics.median(rates)
        print(f"loader: CLM {args.batch_size}x{args.block_size}, {loader_rate / 1e6:.2f} M tokens/s "
              f"{sorted(round(r / 1e6, 2) for r in rates)}")

    result = {
        "docs": len(texts),
        "tokens": n_tokens,
        "ours_tokens_per_s": round(n_tokens / ours_med),
        "raw_encode_batch_tokens_per_s": round(n_tokens / raw_med),
        "ratio": round(statistics.median(r / o for r, o in zip(raw_s, ours_s)), 3),
        "loader_clm_tokens_per_s": round(loader_rate),
        "block_size": args.block_size,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
