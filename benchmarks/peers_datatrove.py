"""The peer side of benchmarks/peers.py: datatrove's pipeline over the same corpus, run by the datatrove venv.

    /work/peers-venv/bin/python benchmarks/peers_datatrove.py CORPUS WORK --workers 2 --ngram 5 \
        --buckets 23 --rows 11 --seed 1

1. filter: JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter ->
   FineWebQualityFilter (defaults; FineWeb's order) -> JsonlWriter (uncompressed), one task per input file;
2. datatrove's MinHash dedup in its 4 steps: MinhashDedupSignature (one task per filtered file),
   MinhashDedupBuckets (one task per bucket), MinhashDedupCluster (one task), MinhashDedupFilter -> JsonlWriter
   (one task per filtered file; removed documents to an exclusion writer, cluster ids kept);
every step on a LocalPipelineExecutor with `--workers` processes. Prints one JSON line: per-step seconds
and where the kept / removed ids are (WORK/ids.json: filter_kept, dedup_removed {id: cluster}, cluster_of).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path


def read_jsonl(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh]
    return rows


def main() -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--buckets", type=int, default=23)
    ap.add_argument("--rows", type=int, default=11)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work, files = args.work, len(sorted(args.corpus.glob("*.jsonl")))
    minhash = MinhashConfig(n_grams=args.ngram, num_buckets=args.buckets, hashes_per_bucket=args.rows, seed=args.seed)
    filtered, logs = work / "filtered", work / "logs"

    def writer(folder: Path) -> JsonlWriter:
        return JsonlWriter(str(folder), compression=None, output_filename="${rank}.jsonl")

    steps = {
        "clean": dict(pipeline=[JsonlReader(str(args.corpus), glob_pattern="*.jsonl"), GopherRepetitionFilter(),
                                GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter(), writer(filtered)],
                      tasks=files),
        "dedup_signature": dict(pipeline=[JsonlReader(str(filtered)), MinhashDedupSignature(str(work / "sigs"), config=minhash)],
                                tasks=files),
        "dedup_buckets": dict(pipeline=[MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=minhash)],
                              tasks=minhash.num_buckets),
        "dedup_cluster": dict(pipeline=[MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=minhash,
                                                            save_cluster_id=True)], tasks=1),
        "dedup_filter": dict(pipeline=[JsonlReader(str(filtered)),
                                       MinhashDedupFilter(str(work / "remove"), exclusion_writer=writer(work / "removed"),
                                                          load_cluster_ids=True),
                                       writer(work / "deduped")], tasks=files),
    }
    seconds = {}
    for name, step in steps.items():
        start = time.perf_counter()
        LocalPipelineExecutor(**step, workers=min(args.workers, step["tasks"]), logging_dir=str(logs / name)).run()
        seconds[name] = round(time.perf_counter() - start, 2)
    kept = [r["id"] for r in read_jsonl(filtered)]
    removed = read_jsonl(work / "removed")
    deduped = read_jsonl(work / "deduped")
    cluster_of = {r["id"]: r["metadata"]["minhash_cluster_id"] for r in removed + deduped
                  if r.get("metadata", {}).get("minhash_cluster_id", -1) != -1}
    (work / "ids.json").write_text(json.dumps({"filter_kept": kept, "dedup_removed": [r["id"] for r in removed],
                                               "cluster_of": cluster_of}))
    print(json.dumps({"seconds": seconds, "filter_kept": len(kept), "dedup_removed": len(removed),
                      "dedup_kept": len(deduped), "ids": str(work / "ids.json")}))


if __name__ == "__main__":
    main()
