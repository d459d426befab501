"""Language stage throughput and accuracy against a plain per-document langdetect loop.

Both classify the same real documents of the bundled sample (language labels come from where
each document was taken, not from a detector), in the same run. Ours is the language stage's
unit of work (Parquet shard in, kept / rejected shards out) with its default settings; the anchor
is `langdetect.detect_langs` called once per document, with the same fixed seed, its profiles
loaded before its clock starts (ours loads its own on the clock).

    python benchmarks/langid.py [--docs N] [--prefix-chars 500] [--workers 1]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from langdetect import DetectorFactory, detect_langs
from langdetect.detector_factory import init_factory

from llmcore.config import LanguageConfig
from llmcore.data.parts import language_part
from llmcore.data.stage import PartDir, read_rows

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
LANGS = ["en", "de", "fr", "es"]


def load_docs(limit: int) -> list[dict]:
    docs = []
    for path in sorted(SAMPLE.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            row = json.loads(line)
            docs.append({"id": f"{path.name}:{n}", "text": row["text"], "source": "sample", "label": row["lang"]})
    docs.sort(key=lambda d: zlib.crc32(d["id"].encode()))  # interleave languages, the same way every run
    return docs[:limit]


def anchor(docs: list[dict]) -> tuple[float, list[str]]:
    DetectorFactory.seed = 0
    init_factory()  # langdetect's profile loading is left out of the anchor's time (ours pays its own)
    start = time.perf_counter()
    langs = []
    for d in docs:
        try:
            langs.append(detect_langs(d["text"])[0].lang)
        except Exception:  # langdetect raises on text without letters
            langs.append("und")
    return time.perf_counter() - start, langs


def ours(docs: list[dict], prefix_chars: int, workers: int, workdir: Path) -> tuple[float, dict[str, str]]:
    shard = workdir / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{k: d[k] for k in ("id", "text", "source")} for d in docs]), shard)
    cfg = LanguageConfig(allowed=LANGS, min_prob=0.0, prefix_chars=prefix_chars, workers=workers)
    part = PartDir(workdir, "language", "bench")
    start = time.perf_counter()
    summary = language_part(part, shard, cfg)
    seconds = time.perf_counter() - start
    langs = {}
    for files in (summary["files"], summary["rejected"]):
        for f in files:
            langs.update({r["id"]: r["lang"] for r in read_rows(part.path / f["path"], columns=["id", "lang"])})
    return seconds, langs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--prefix-chars", type=int, default=LanguageConfig.model_fields["prefix_chars"].default)
    parser.add_argument("--workers", type=int, default=LanguageConfig.model_fields["workers"].default)
    args = parser.parse_args()
    docs = load_docs(args.docs)
    assert len(docs) >= 2000, f"only {len(docs)} labelled documents in {SAMPLE}"
    chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs)} documents, {chars / len(docs):.0f} chars on average, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        ours_s, ours_langs = ours(docs, args.prefix_chars, args.workers, Path(tmp))
    anchor_s, anchor_langs = anchor(docs)
    labels = [d["label"] for d in docs]
    ours_acc = sum(ours_langs[d["id"]] == d["label"] for d in docs) / len(docs)
    anchor_acc = sum(a == y for a, y in zip(anchor_langs, labels)) / len(docs)
    result = {
        "docs": len(docs),
        "prefix_chars": args.prefix_chars,
        "workers": args.workers,
        "ours_docs_per_s": round(len(docs) / ours_s, 1),
        "anchor_docs_per_s": round(len(docs) / anchor_s, 1),
        "ratio": round(anchor_s / ours_s, 2),
        "ours_accuracy": round(ours_acc, 4),
        "anchor_accuracy": round(anchor_acc, 4),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(f"ours {ours_s:.1f}s, plain loop {anchor_s:.1f}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
