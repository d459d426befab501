"""The dedup stage's three steps, over its stage directory:

1. `sign_part`, per upstream shard, in parallel: MinHash signatures to `signatures/<part>.npy`,
   then each document's exact hash, length and shingle count to `signatures/<part>.parquet`,
   written last: the part's done marker. `<part>` is the shard's content key, so a shard is
   signed once, whatever corpus it later belongs to.
2. `cluster`, once, over all parts in corpus order: exact groups, then LSH candidates,
   verification and the keep rule. Writes `<out>/<name>.parquet` per shard (each removed row:
   row, reason, representative id, estimated similarity), then `<out>/summary.json`, its marker.
   Memory: about 100 bytes per document, one sort partition (`sort_memory_mb`) and one batch of
   signatures; signatures stay on disk, read a part at a time or a row at a time.
3. `filter_part`, per upstream shard, in parallel: kept rows out; removed rows to `rejected/`
   with reason `exact_duplicate` or `near_duplicate` and the representative's id as detail.

The keep rule is greedy in keep order (`first`: corpus order): a document is removed when an
earlier *kept* document is its exact copy, or is a verified near-duplicate candidate of it. So a
document's fate depends only on the documents before it: appending new files never removes a
document kept before, and re-clustering the grown corpus gives the old shards the same fates.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmcore.config import DedupConfig
from llmcore.data.dedup.cluster import exact_representatives, greedy_representatives, keep_order, size_histogram
from llmcore.data.dedup.grouping import Grouper
from llmcore.data.dedup.lsh import band_keys, bucket_pairs, lsh_params, s_curve
from llmcore.data.dedup.minhash import Signer
from llmcore.data.dedup.store import SIGNATURES, SignatureStore, signature_file
from llmcore.data.stage import PartDir, read_rows
from llmcore.manifest import atomic_write_json, commit_file, temp_path_for

CLUSTERS, SUMMARY = "clusters", "summary.json"  # <root>/dedup/clusters/<key>/: one clustering of a corpus
EXACT, NEAR = "exact_duplicate", "near_duplicate"
REMOVED = pa.schema(
    [("row", pa.int32()), ("reason", pa.string()), ("representative", pa.string()), ("similarity", pa.float32())]
)


def signature_marker(stage_path: Path, part: str) -> Path:
    return Path(stage_path) / SIGNATURES / f"{part}.parquet"


def summary_path(out: Path) -> Path:
    return Path(out) / SUMMARY


def _commit_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    pq.write_table(table, tmp)
    commit_file(tmp, path)


def sign_part(stage_path: Path, part: str, shard: Path, cfg: DedupConfig) -> Path:
    texts = pq.read_table(shard, columns=["text"]).column("text").to_pylist()
    signed = Signer(cfg.num_perm, cfg.seed, cfg.ngram).sign(texts)
    npy = signature_file(stage_path, part)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(npy)
    with open(tmp, "wb") as fh:
        np.save(fh, signed.signatures)
    commit_file(tmp, npy)
    marker = signature_marker(stage_path, part)
    meta = {
        "exact_hi": signed.exact[:, 0],
        "exact_lo": signed.exact[:, 1],
        "chars": signed.chars,
        "shingles": signed.shingles,
    }
    _commit_parquet(pa.table(meta), marker)
    return marker


def cluster(stage_path: Path, parts: list[str], shards: list[Path], cfg: DedupConfig, out: Path) -> dict:
    """The global step over the signatures of `parts` (under `stage_path`), in corpus order: every document's
    fate, written to `out` per part, then the summary; returns the summary."""
    stage_path, out, clock = Path(stage_path), Path(out), _Clock()
    metas = [pq.read_table(signature_marker(stage_path, p)) for p in parts]
    store = SignatureStore(stage_path, parts, [t.num_rows for t in metas], cfg.num_perm)
    chars, shingle_counts = _column(metas, "chars", np.int64), _column(metas, "shingles", np.int32)
    n = len(chars)
    docs = np.arange(n, dtype=np.int64)
    order, rank = keep_order(cfg.keep, chars)
    spill, memory = out / "spill", cfg.sort_memory_mb << 20

    exact = Grouper(spill, n, memory)
    for t, lo in zip(metas, store.offsets):
        exact.add(t.column("exact_hi").to_numpy(), t.column("exact_lo").to_numpy(), docs[lo : lo + t.num_rows])
    exact_rep = exact_representatives(exact.groups(), order, rank)
    clock.lap("exact")

    bands, rows = lsh_params(cfg.threshold, cfg.num_perm, cfg.recall_weight)
    eligible = (exact_rep == docs) & (shingle_counts > 0)  # one per exact group; no words, no near match
    buckets = _band_buckets(store, eligible, bands, rows, Grouper(spill, int(eligible.sum()) * bands, memory))
    clock.lap("bands")
    a, b, counts = _similar_pairs(buckets, store, n, cfg)
    clock.lap("pairs")
    near_rep = greedy_representatives(a, b, rank)
    final = near_rep[exact_rep]  # the exact group's representative, then the kept document it duplicates
    clock.lap("clusters")
    ids = _write_removed(out, parts, shards, store, exact_rep, final)
    clock.lap("write")

    sizes = np.bincount(final, minlength=n)
    largest = np.argsort(-sizes, kind="stable")[:5]
    summary = {
        "documents": n,
        "kept": int((final == docs).sum()),
        EXACT: int(((exact_rep == final) & (final != docs)).sum()),
        NEAR: int((exact_rep != final).sum()),
        "clusters": int((sizes >= 2).sum()),
        "cluster_sizes": size_histogram(final),
        "largest_clusters": [{"representative": ids[r], "size": int(sizes[r])} for r in largest if sizes[r] >= 2],
        "lsh": {
            "num_perm": cfg.num_perm,
            "threshold": cfg.threshold,
            "bands": bands,
            "rows": rows,
            "recall_weight": cfg.recall_weight,
            "candidate_probability_at_jaccard": s_curve(bands, rows),
        },
        **counts,
        "sort_partitions": {"exact": exact.partitions, "bands": buckets.partitions},
        "seconds": clock.laps,
    }
    atomic_write_json(summary_path(out), summary)
    return summary


def _band_buckets(store: SignatureStore, eligible: np.ndarray, bands: int, rows: int, grouper: Grouper) -> Grouper:
    """Every eligible document's (band key, band, document) records, spilled for grouping."""
    band_ids = np.arange(bands, dtype=np.uint64)
    for s, lo in enumerate(store.offsets[:-1]):
        local = np.flatnonzero(eligible[lo : store.offsets[s + 1]])
        keys = band_keys(store.part(s)[local], bands, rows)
        grouper.add(keys.ravel(), np.tile(band_ids, len(local)), np.repeat(local + lo, bands))
    return grouper


def _similar_pairs(buckets: Grouper, store: SignatureStore, n: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every candidate pair of the buckets (a < b), kept when its estimated Jaccard reaches the threshold
    (all of them with cfg.verify off), and the counts of each."""
    counts = {"candidate_pairs": 0, "compared_pairs": 0, "similar_pairs": 0}
    codes = []
    for members, starts in buckets.groups():
        a, b = bucket_pairs(members, starts)
        codes.append(a * n + b)  # a < b: one code per pair
    pairs = np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)
    a, b = pairs // n, pairs % n
    counts["candidate_pairs"] = len(a)
    if cfg.verify:
        counts["compared_pairs"] = len(a)
        close = store.similarity(a, b) >= cfg.threshold
        a, b = a[close], b[close]
    counts["similar_pairs"] = len(a)
    return a, b, counts


def _write_removed(
    out: Path,
    parts: list[str],
    shards: list[Path],
    store: SignatureStore,
    exact_rep: np.ndarray,
    final: np.ndarray,
) -> dict[int, str]:
    """<out>/<part>.parquet for every part; returns the ids of the representatives."""
    removed = np.flatnonzero(final != np.arange(len(final)))
    reps = final[removed]
    is_exact = exact_rep[removed] == reps
    sim = np.ones(len(removed), dtype=np.float32)
    sim[~is_exact] = store.similarity(exact_rep[removed[~is_exact]], reps[~is_exact])
    rep_index = np.unique(reps)
    rep_ids = _ids(rep_index, store.offsets, shards)
    for s, part in enumerate(parts):
        lo, hi = np.searchsorted(removed, store.offsets[s : s + 2])
        table = pa.table(
            {
                "row": (removed[lo:hi] - store.offsets[s]).astype(np.int32),
                "reason": np.where(is_exact[lo:hi], EXACT, NEAR),
                "representative": rep_ids[np.searchsorted(rep_index, reps[lo:hi])],
                "similarity": sim[lo:hi],
            },
            schema=REMOVED,
        )
        _commit_parquet(table, removed_path(out, part))
    return dict(zip(rep_index.tolist(), rep_ids.tolist()))


def _column(tables: list[pa.Table], name: str, dtype: type) -> np.ndarray:
    return np.concatenate([t.column(name).to_numpy() for t in tables] or [np.empty(0, dtype)])


def _ids(docs: np.ndarray, offsets: np.ndarray, shards: list[Path]) -> np.ndarray:
    """The `id` of each of `docs` (sorted), read from the upstream shards that hold them."""
    ids = np.empty(len(docs), dtype=object)
    shard = np.searchsorted(offsets, docs, side="right") - 1
    for s in np.unique(shard):
        sel = shard == s
        column = pq.read_table(shards[s], columns=["id"]).column("id").to_numpy(zero_copy_only=False)
        ids[sel] = column[docs[sel] - offsets[s]]
    return ids


def removed_path(out: Path, part: str) -> Path:
    return Path(out) / f"{part}.parquet"


def filter_part(part: PartDir, removed: Path, shard: Path) -> dict:
    """Keep the shard's unremoved rows; reject the others with their reason and representative."""
    fate = {r["row"]: r for r in pq.read_table(removed).to_pylist()}
    writer = part.writer()
    for i, row in enumerate(read_rows(shard)):
        r = fate.get(i)
        if r is None:
            writer.keep(row)
        else:
            writer.reject({**row, "dup_similarity": r["similarity"]}, r["reason"], r["representative"])
    return writer.finish()


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now
