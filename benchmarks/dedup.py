"""Dedup stage: quality, signature speed against the plain datasketch loop, and scale.

1. Quality. Real documents of the bundled sample (en, de, fr, es) become families: the original,
   three near duplicates edited to Jaccard about 0.95 / 0.90 / 0.85 (one contiguous edit at a
   shared spot: words replaced, inserted or deleted) and two looser copies edited elsewhere to
   about 0.70 / 0.60; other real documents are added unchanged. The truth is the exact Jaccard of
   the word 5-gram sets of every pair that shares a 5-gram. Precision, recall and F1 are over
   pairs (same cluster vs. true Jaccard >= threshold). The same is reported for the sample's
   naturally occurring duplicates (Debian copyright texts), unedited.
2. Speed. Signatures of the same real documents, text to signature: ours (`Signer.sign`, one
   process) against the plain datasketch loop (one `MinHash()` per document, `update` per
   shingle) and against `MinHash.bulk`; the signatures must be equal. Second anchor, the fastest
   peer: rensa (Rust R-MinHash, `pip install llmpipe[bench]`), fed the same shingles
   (`digest_matrix_from_token_sets`, one process). Its permutations differ from datasketch's, so
   its signatures are not compared; its quality is: the synthetic-edit set of (1) through rensa's
   own LSH (32 bands x 8 rows: 256 permutations must split evenly; the candidate chance at Jaccard
   0.8 is 0.997), candidates verified by estimated Jaccard >= the threshold, keep-first in corpus
   order, scored like ours. Without rensa installed the benchmark says so and skips the anchor.
3. Scale. The whole stage (signatures, clustering, filter, manifest) over N short synthetic
   documents (24-40 words from the sample's vocabulary) of which 5% are exact copies (case and
   spacing changed) and 5% near copies (last word replaced, dropped or one appended) of earlier
   documents; the removed set is checked against the copies made. Per-shard steps run on
   `--workers` processes, as a Dask or process runner would. It runs in a fresh process; peak
   memory is the sum of the resident sets of that process and its workers, sampled every 0.1 s.

    python benchmarks/dedup.py [--families 300] [--unrelated 600] [--speed-docs 800] [--scale-docs 1000000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import MinHash

from llmcore.config import DedupConfig
from llmcore.data.dedup import steps as dedup
from llmcore.data.dedup.minhash import Signer
from llmcore.data.dedup.text import normalize, shingles, words
from llmcore.data.stage import PartDir, assemble
from llmcore.stage import StageRef

try:
    import rensa
except ImportError:  # the second speed anchor is optional (the `bench` extra)
    rensa = None

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample"
LANGS = ("en", "de", "fr", "es")
POSITIVE, NEGATIVE = (0.95, 0.90, 0.85), (0.70, 0.60)
SHARD_ROWS = 5000
RENSA_BANDS = 32  # rensa's LSH needs bands dividing num_perm: 32 x 8 rows at 256


# ----------------------------------------------------------------------------- the stage, as the flow runs it
def write_shards(root: Path, docs: list[dict], shard_rows: int = SHARD_ROWS) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(0, len(docs), shard_rows):
        shards.append(root / f"part-{i // shard_rows:05d}.parquet")
        pq.write_table(pa.Table.from_pylist(docs[i : i + shard_rows]), shards[-1])
    return shards


def _sign(args: tuple) -> None:
    dedup.sign_part(*args)


def _filter(args: tuple) -> None:
    root, part, removed, shard = args
    dedup.filter_part(PartDir(root, "dedup", part), removed, shard)


def run_stage(root: Path, shards: list[Path], cfg: DedupConfig, workers: int, rows_in: int) -> tuple[dict, dict, dict]:
    """sign (parallel) -> cluster -> filter (parallel) -> manifest; (manifest, summary, seconds)."""
    ref = StageRef(str(root), "dedup", "bench")
    stage_path, clusters = root / "dedup", root / "dedup" / "clusters-bench"
    parts = [s.stem for s in shards]
    seconds = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        start = time.perf_counter()
        list(pool.map(_sign, [(stage_path, p, s, cfg) for p, s in zip(parts, shards)]))
        seconds["signatures"] = time.perf_counter() - start
        start = time.perf_counter()
        summary = dedup.cluster(stage_path, parts, shards, cfg, clusters)
        seconds["cluster"] = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(_filter, [(root, p, dedup.removed_path(clusters, p), s) for p, s in zip(parts, shards)]))
        manifest = assemble(ref, [(p, p) for p in parts], cfg.model_dump(mode="json"), [], rows_in)
        seconds["filter"] = time.perf_counter() - start
    return manifest, summary, {k: round(v, 1) for k, v in seconds.items()}


def removed_rows(root: Path, manifest: dict) -> dict[str, tuple[str, str]]:
    """Removed id -> (reason, representative id)."""
    stage = StageRef(str(root), "dedup", "bench").path
    return {
        r["id"]: (r["reason"], r["detail"])
        for f in manifest["rejected"]
        for r in pq.read_table(stage / f["path"], columns=["id", "reason", "detail"]).to_pylist()
    }


def representatives(root: Path, manifest: dict) -> dict[str, str]:
    return {doc_id: rep for doc_id, (_, rep) in removed_rows(root, manifest).items()}


# ----------------------------------------------------------------------------- quality
def shingle_set(text: str) -> frozenset[str]:
    return frozenset(shingles(words(normalize(text)), 5))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def load_sample() -> list[dict]:
    docs = []
    for name in sorted((SAMPLE / "docs").glob("*.jsonl")):
        for n, line in enumerate(name.read_text(encoding="utf-8").splitlines(), 1):
            docs.append({"id": f"docs/{name.name}:{n}", "text": json.loads(line)["text"], "source": name.stem})
    return docs


def edit(tokens: list[str], at: int, k: int, op: str, fresh: list[str]) -> list[str]:
    if op == "replace":
        return tokens[:at] + fresh[:k] + tokens[at + k :]
    if op == "insert":
        return tokens[:at] + fresh[:k] + tokens[at:]
    return tokens[:at] + tokens[at + k :]


def edited_copy(tokens: list[str], target: float, at: int, op: str, vocab: list[str], rnd: random.Random) -> str:
    """The edit of `op` at `at` whose size brings the 5-gram Jaccard closest to target."""
    original = shingle_set(" ".join(tokens))
    fresh = [rnd.choice(vocab) for _ in range(len(tokens))]
    best = None
    for k in range(1, len(tokens) - at):
        text = " ".join(edit(tokens, at, k, op, fresh))
        j = jaccard(original, shingle_set(text))
        if best is None or abs(j - target) < abs(best[0] - target):
            best = (j, text)
        if j < target:
            break
    return best[1]


def synthetic_set(families: int, unrelated: int, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    pool = [d for d in load_sample() if d["source"] in LANGS and len(d["text"].split()) >= 80]
    related = {i for pair, j in true_pairs(pool).items() if j >= 0.3 for i in pair}
    pool = [d for d in pool if d["id"] not in related]  # originals unlike each other: families do not overlap
    rnd.shuffle(pool)
    vocab = sorted({w for d in pool for w in d["text"].split()})
    docs = []
    for i, d in enumerate(pool[:families]):
        tokens = d["text"].split()
        op = rnd.choice(("replace", "insert", "delete"))
        at = rnd.randrange(len(tokens) // 4)  # one spot for the close copies (they stay close to each other),
        docs.append({"id": f"f{i}/orig", "text": d["text"]})
        for target in POSITIVE:
            docs.append({"id": f"f{i}/j{target}", "text": edited_copy(tokens, target, at, op, vocab, rnd)})
        for target in NEGATIVE:  # the middle for the loose ones
            docs.append(
                {"id": f"f{i}/j{target}", "text": edited_copy(tokens, target, len(tokens) // 2, op, vocab, rnd)}
            )
    docs += [{"id": f"u{i}", "text": d["text"]} for i, d in enumerate(pool[families : families + unrelated])]
    rnd.shuffle(docs)
    return [{**d, "source": "bench"} for d in docs]


def true_pairs(docs: list[dict]) -> dict[tuple[str, str], float]:
    """Exact Jaccard of every pair of documents sharing at least one 5-gram."""
    sets = {d["id"]: shingle_set(d["text"]) for d in docs}
    index = defaultdict(set)
    for doc_id, s in sets.items():
        for g in s:
            index[g].add(doc_id)
    candidates = {tuple(sorted(p)) for ids in index.values() for p in combinations(ids, 2)}
    return {p: jaccard(sets[p[0]], sets[p[1]]) for p in candidates}


def pair_scores(docs: list[dict], reps: dict[str, str], truth: dict, threshold: float) -> dict:
    cluster = defaultdict(list)
    for d in docs:
        cluster[reps.get(d["id"], d["id"])].append(d["id"])
    predicted = {tuple(sorted(p)) for members in cluster.values() for p in combinations(members, 2)}
    positive = {p for p, j in truth.items() if j >= threshold}
    tp = len(predicted & positive)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(positive) if positive else 1.0
    kept = {d["id"] for d in docs} - set(reps)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
        "true_pairs": len(positive),
        "predicted_pairs": len(predicted),
        "removed": len(reps),
        # the user's view: a removed document unlike its representative, a duplicate pair left in the output
        "removed_below_threshold": sum(truth.get(tuple(sorted(p)), 0.0) < threshold for p in reps.items()),
        "kept_duplicate_pairs": sum(a in kept and b in kept for a, b in positive),
    }


def recall_by_jaccard(docs: list[dict], reps: dict[str, str], truth: dict) -> dict[str, str]:
    """For the edited copies: share found in their original's cluster, by target Jaccard."""
    found = defaultdict(list)
    for d in docs:
        family, _, variant = d["id"].partition("/")
        if variant.startswith("j"):
            found[variant[1:]].append(reps.get(d["id"], d["id"]) == reps.get(f"{family}/orig", f"{family}/orig"))
    return {j: f"{sum(v)}/{len(v)}" for j, v in sorted(found.items())}


def grams(texts: list[str], cfg: DedupConfig) -> list[list[str]]:
    """The shingles our signatures hash, for rensa."""
    return [shingles(words(normalize(t)), cfg.ngram) for t in texts]


def rensa_representatives(docs: list[dict], cfg: DedupConfig) -> dict[str, str]:
    """rensa's MinHash and LSH over the same shingles, greedy keep-first in corpus order: id -> representative id."""
    shingled = grams([d["text"] for d in docs], cfg)
    sigs = rensa.RMinHash.from_token_sets(shingled, num_perm=cfg.num_perm, seed=cfg.seed)
    lsh = rensa.RMinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, num_bands=RENSA_BANDS)
    reps = {}
    for i, (doc, sig, g) in enumerate(zip(docs, sigs, shingled)):
        if not g:  # no words: never a near duplicate (as in the stage)
            continue
        similarity, j = max(((sig.jaccard(sigs[k]), k) for k in lsh.query(sig)), default=(0.0, -1))
        if similarity >= cfg.threshold:
            reps[doc["id"]] = docs[j]["id"]  # only representatives are in the index
        else:
            lsh.insert(i, sig)
    return reps


def quality(work: Path, cfg: DedupConfig, families: int, unrelated: int) -> tuple[dict, list[dict]]:
    docs = synthetic_set(families, unrelated)
    truth = true_pairs(docs)
    manifest, summary, _ = run_stage(work / "quality", write_shards(work / "quality-in", docs, 500), cfg, 2, len(docs))
    reps = representatives(work / "quality", manifest)
    result = {
        "docs": len(docs),
        **pair_scores(docs, reps, truth, cfg.threshold),
        "same_cluster_as_original_by_target_jaccard": recall_by_jaccard(docs, reps, truth),
        "bands": summary["lsh"]["bands"],
        "rows": summary["lsh"]["rows"],
        "candidate_probability_at_jaccard": summary["lsh"]["candidate_probability_at_jaccard"],
    }
    if rensa is not None:
        theirs = rensa_representatives(docs, cfg)
        result["rensa"] = {
            **pair_scores(docs, theirs, truth, cfg.threshold),
            "same_cluster_as_original_by_target_jaccard": recall_by_jaccard(docs, theirs, truth),
            "bands": RENSA_BANDS,
            "rows": cfg.num_perm // RENSA_BANDS,
        }
    sample = load_sample()
    manifest, _, _ = run_stage(work / "sample", write_shards(work / "sample-in", sample, 500), cfg, 2, len(sample))
    natural = pair_scores(sample, representatives(work / "sample", manifest), true_pairs(sample), cfg.threshold)
    return {**result, "sample_corpus": {"docs": len(sample), **natural}}, docs


# ----------------------------------------------------------------------------- speed
def speed(docs: list[dict], cfg: DedupConfig, rounds: int = 2) -> dict:
    texts = [d["text"] for d in docs]
    signer = Signer(cfg.num_perm, cfg.seed, cfg.ngram)

    def plain() -> list[np.ndarray]:
        out = []
        for text in texts:
            m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
            for g in shingles(words(normalize(text)), cfg.ngram):
                m.update(g.encode("utf-8"))
            out.append(m.hashvalues)
        return out

    def bulk() -> list[np.ndarray]:
        grams = [[g.encode("utf-8") for g in shingles(words(normalize(t)), cfg.ngram)] for t in texts]
        return [m.hashvalues for m in MinHash.generator(grams, num_perm=cfg.num_perm, seed=cfg.seed)]

    def rensa_matrix() -> object:  # text to signature, as ours: the same normalisation and shingles, then rensa
        return rensa.RMinHash.digest_matrix_from_token_sets(grams(texts, cfg), num_perm=cfg.num_perm, seed=cfg.seed)

    shingled = grams(texts, cfg)
    runs = [("plain", plain), ("bulk", bulk), ("ours", lambda: signer.sign(texts).signatures)]
    if rensa is not None:
        runs += [("rensa", rensa_matrix), ("rensa_hashing",  # shingles given: rensa's own part
                  lambda: rensa.RMinHash.digest_matrix_from_token_sets(shingled, num_perm=cfg.num_perm, seed=cfg.seed))]
    best, reference = defaultdict(lambda: float("inf")), signer.sign(texts).signatures
    for _ in range(rounds):  # interleaved, best of each: the machine is shared and noisy
        for name, fn in runs:
            start = time.perf_counter()
            sigs = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if not name.startswith("rensa"):  # rensa's permutations differ: only datasketch's must match
                assert np.array_equal(np.asarray(sigs), reference), f"{name}: signatures differ"
    out = {
        "speed_docs": len(texts),
        "ours_docs_per_s": round(len(texts) / best["ours"], 1),
        "plain_docs_per_s": round(len(texts) / best["plain"], 1),
        "bulk_docs_per_s": round(len(texts) / best["bulk"], 1),
        "ratio": round(best["plain"] / best["ours"], 2),
        "ratio_vs_bulk": round(best["bulk"] / best["ours"], 2),
    }
    if rensa is None:
        print("rensa is not installed (pip install llmpipe[bench]): the rensa anchor is skipped", flush=True)
        return out
    return {
        **out,
        "rensa_docs_per_s": round(len(texts) / best["rensa"], 1),
        "rensa_hashing_docs_per_s": round(len(texts) / best["rensa_hashing"], 1),
        "ours_over_rensa": round(best["rensa"] / best["ours"], 2),
    }


# ----------------------------------------------------------------------------- scale
def synthetic_corpus(n: int, vocab: list[str], seed: int = 1) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """n short documents; 5% exact and 5% near copies of earlier originals: (docs, copy id -> (reason, source id))."""
    rng = np.random.default_rng(seed)
    vocab = np.array(vocab)
    kinds = rng.choice(3, size=n, p=[0.9, 0.05, 0.05])
    kinds[0] = 0
    docs, originals, copies = [], [], {}
    for i, kind in enumerate(kinds.tolist()):
        doc_id = f"d{i:07d}"
        if kind == 0:
            text = " ".join(vocab[rng.integers(0, len(vocab), rng.integers(24, 41))])
            originals.append(i)
        else:
            src = originals[int(rng.integers(len(originals)))]
            tokens = docs[src]["text"].split()
            if kind == 1:
                text, reason = "  ".join(tokens).upper(), "exact_duplicate"
            else:
                change, extra = int(rng.integers(3)), tokens[-1]
                while extra == tokens[-1]:  # a replaced word must change
                    extra = str(vocab[rng.integers(len(vocab))])
                tokens = tokens[:-1] + [extra] if change == 0 else tokens[:-1] if change == 1 else tokens + [extra]
                text, reason = " ".join(tokens), "near_duplicate"
            copies[doc_id] = (reason, docs[src]["id"])
        docs.append({"id": doc_id, "text": text, "source": "synthetic"})
    return docs, copies


class PeakRss:
    """Peak of the summed resident sets of this process and its descendants, sampled."""

    def __init__(self, interval: float = 0.1):
        self.peak, self.interval, self._stop = 0, interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_rss(p) for p in _tree(os.getpid())))
            time.sleep(self.interval)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def generate(n: int, directory: Path) -> tuple[list[Path], dict[str, tuple[str, str]]]:
    vocab = sorted({w for d in load_sample() for w in words(normalize(d["text"]))})
    docs, copies = synthetic_corpus(n, vocab)
    return write_shards(directory, docs), copies


def scale(work: Path, cfg: DedupConfig, n: int, workers: int) -> dict:
    start = time.perf_counter()
    with ProcessPoolExecutor(1) as pool:  # in another process: this one's memory stays the stage's
        shards, copies = pool.submit(generate, n, work / "scale-in").result()
    generated = time.perf_counter() - start
    with PeakRss() as rss:
        start = time.perf_counter()
        manifest, summary, seconds = run_stage(work / "scale", shards, cfg, workers, n)
        elapsed = time.perf_counter() - start
    found = removed_rows(work / "scale", manifest)
    ledger = manifest["ledger"]
    return {
        "docs": n,
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(rss.peak / 2**20),
        "max_rss_mb_cluster_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "workers": workers,
        "step_seconds": seconds,
        "cluster_step_seconds": summary["seconds"],
        "generate_seconds": round(generated, 1),
        "expected": {r: sum(v[0] == r for v in copies.values()) for r in ("exact_duplicate", "near_duplicate")},
        "dropped": ledger["dropped"],
        "copies_found_as_made": sum(found.get(k) == v for k, v in copies.items()),
        "copies_missed": sum(k not in found for k in copies),
        "originals_removed": sum(k not in copies for k in found),
        "ledger_balances": ledger["rows_in"]
        == ledger["rows_out"] + sum(ledger["dropped"].values()) + ledger["quarantined"],
        "bands_x_rows": f"{summary['lsh']['bands']}x{summary['lsh']['rows']}",
        **{k: summary[k] for k in ("candidate_pairs", "compared_pairs", "similar_pairs")},
        "sort_partitions": summary["sort_partitions"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", type=int, default=300)
    ap.add_argument("--unrelated", type=int, default=600)
    ap.add_argument("--speed-docs", type=int, default=800)
    ap.add_argument("--scale-docs", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where the stage directories go (default: a temp dir)")
    args = ap.parse_args()
    cfg = DedupConfig()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        result, docs = quality(work, cfg, args.families, args.unrelated)
        print("quality", json.dumps(result), flush=True)
        result.update(speed(docs[: args.speed_docs], cfg))
        print("speed", json.dumps({k: result[k] for k in ("ratio", "ratio_vs_bulk", "ours_over_rensa") if k in result}), flush=True)
        if args.scale_docs:
            # a fresh process: its memory is the stage's, not what the quality run left behind
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
                result["scale"] = pool.submit(scale, work, cfg, args.scale_docs, args.workers).result()
            result.update({k: result["scale"][k] for k in ("docs", "seconds", "peak_rss_mb")})
    result["config"] = cfg.model_dump(mode="json")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
