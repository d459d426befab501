"""Tokenizer training: llmpipe's `train_tokenizer` against `tokenizers`' trainer alone, per family, and whether
each trains the same tokenizer.json in every process.

The anchor is the same call with llmpipe's two additions taken out (WordPiece's "##" pieces numbered before
training, Unigram's pieces put in a fixed order after it): `tokenizers`' own trainer with the same normalizer,
pre-tokenizer and settings. The two alternate `--repeat` times on the same texts; ratio = median anchor seconds /
median our seconds (below 1: ours is slower). Then each trains twice more, each time in a new Python process (the
trainers' hash maps are seeded per process), and `same_in_new_processes` tells whether the two files are equal.
`tokens`: the texts encoded by each side's tokenizer (without special tokens), to show the vocabularies are as good.

    python benchmarks/tokenizer_training.py [--repeat 3] [--vocab-size 8000] [--jsonl FILE --docs N]

Default texts: the bundled sample (configs/sample/docs). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from llmcore import tokenizer
from llmcore.config import TokenizerConfig

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
FAMILIES = ("gpt", "bert", "t5")


def texts_of(jsonl: str | None, docs: int) -> list[str]:
    files = [Path(jsonl)] if jsonl else sorted(SAMPLE.glob("*.jsonl"))
    lines = itertools.chain.from_iterable(f.open(encoding="utf-8") for f in files)
    return [json.loads(line)["text"] for line in itertools.islice(lines, docs)]


@contextmanager
def trainer_alone(anchor: bool) -> Iterator[None]:
    """With `anchor`, `train_tokenizer` without llmpipe's two additions: `tokenizers`' trainer alone."""
    saved = tokenizer._inner_pieces, tokenizer._canonical_unigram
    if anchor:
        tokenizer._inner_pieces, tokenizer._canonical_unigram = (lambda tok, texts: []), (lambda tok, n: tok)
    try:
        yield
    finally:
        tokenizer._inner_pieces, tokenizer._canonical_unigram = saved


def train(texts: list[str], family: str, vocab: int, side: str):
    with trainer_alone(side == "anchor"):
        return tokenizer.train_tokenizer(texts, TokenizerConfig(family=family, vocab_size=vocab), len(texts))


def same_in_new_processes(corpus: Path, family: str, vocab: int, side: str) -> bool:
    command = [sys.executable, __file__, "--child", side, family, str(vocab), str(corpus)]
    return len({subprocess.run(command, check=True, capture_output=True, text=True).stdout for _ in range(2)}) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--jsonl", help="a JSONL file with a `text` field (default: the bundled sample)")
    parser.add_argument("--docs", type=int, default=100_000, help="at most this many documents")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "FAMILY", "VOCAB", "TEXTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a new process: train on the texts of a JSON file, print tokenizer.json
        side, family, vocab, path = args.child
        print(train(json.loads(Path(path).read_text()), family, int(vocab), side).to_str())
        return
    texts = texts_of(args.jsonl, args.docs)
    print(f"{len(texts):,} documents, {sum(map(len, texts)):,} characters, vocabulary {args.vocab_size}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "texts.json"
        corpus.write_text(json.dumps(texts))
        for family in FAMILIES:
            times, toks = {"ours": [], "anchor": []}, {}
            for _ in range(args.repeat):
                for side in times:
                    start = time.perf_counter()
                    toks[side] = train(texts, family, args.vocab_size, side)
                    times[side].append(time.perf_counter() - start)
            ours, anchor = statistics.median(times["ours"]), statistics.median(times["anchor"])
            tokens = {side: sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
                      for side, tok in toks.items()}
            results[family] = {
                "ours_s": round(ours, 2), "anchor_s": round(anchor, 2), "ratio": round(anchor / ours, 3),
                "ours_tokens": tokens["ours"], "anchor_tokens": tokens["anchor"],
                "same_in_new_processes": {side: same_in_new_processes(corpus, family, args.vocab_size, side)
                                          for side in ("ours", "anchor")},
            }
            print(family, json.dumps(results[family]), flush=True)
    print(json.dumps({"docs": len(texts), "vocab_size": args.vocab_size, "repeat": args.repeat, **results}))


if __name__ == "__main__":
    main()
