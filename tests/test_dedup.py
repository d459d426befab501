"""Dedup core: signatures equal datasketch's, LSH, external grouping, the greedy keep-first rule, and the
stage's three steps on real Parquet shards, run as the data flow runs them (real text from the bundled
sample, edited where a test needs it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from llmcore.config import DedupConfig
from llmcore.data.dedup.cluster import greedy_representatives, keep_order, size_histogram
from llmcore.data.dedup.grouping import Grouper
from llmcore.data.dedup.lsh import band_keys, bucket_pairs, candidate_probability, lsh_params
from llmcore.data.dedup.minhash import Signer
from llmcore.data.dedup.store import SignatureStore
from llmcore.data.dedup.text import normalize, shingles, words
from llmcore.data.stage import PartDir, assemble
from llmcore.data.stages import Dedup
from llmcore.manifest import file_sha256
from llmcore.stage import StageRef

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"
CJK = "数据去重可以减少训练时间并且避免模型记住重复的内容因此我们在训练语言模型之前先删除完全相同和几乎相同的文档"


@pytest.fixture(scope="module")
def english() -> list[str]:
    """Distinct real English documents of at least 60 words."""
    texts = [json.loads(line)["text"] for line in (SAMPLE / "en.jsonl").read_text(encoding="utf-8").splitlines()]
    seen, out = set(), []
    for t in texts:
        key = frozenset(shingle_set(t))
        if len(words(normalize(t))) >= 60 and not any(jaccard_sets(key, s) > 0.3 for s in seen):
            seen.add(key)
            out.append(t)
        if len(out) == 40:
            return out
    raise AssertionError("the bundled sample has too few English documents")


def shingle_set(text: str, n: int = 5) -> set[str]:
    return set(shingles(words(normalize(text)), n))


def jaccard_sets(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def jaccard(x: str, y: str) -> float:
    return jaccard_sets(shingle_set(x), shingle_set(y))


def replace_tail(text: str, k: int, tag: str) -> str:
    """The text with its last k words replaced by new ones: k shingles of 5 words change."""
    tokens = text.split()
    return " ".join(tokens[:-k] + [f"{tag}{i}" for i in range(k)])


def upstream_stage(root: Path, docs: list[dict], shard_rows: int) -> StageRef:
    """A finished upstream document stage holding docs in Parquet shards of shard_rows rows."""
    writer = PartDir(root, "upstream", "p").writer(shard_rows=shard_rows)
    for d in docs:
        writer.keep({"source": "t", **d})
    writer.finish()
    ref = StageRef(str(root), "upstream", "k")
    assemble(ref, [("part-00000", "p")], {}, [], None)
    return ref


def run_stage(root: Path, docs: list[dict], cfg: DedupConfig, shard_rows: int = 1000) -> tuple[dict, dict, dict]:
    """The three steps over docs written as Parquet shards, as the data flow chains them (signatures per shard,
    one clustering, a filter part per shard, the stage directory); (removed id -> row, manifest, summary)."""
    upstream = upstream_stage(root, docs, shard_rows)
    stage = Dedup(cfg)
    signatures = stage.signature_parts(upstream)
    for part in signatures:
        stage.sign(str(root), part)
    summary = stage.cluster(str(root), signatures)
    parts = stage.filter_parts(str(root), signatures)
    for part in parts:
        stage.run(PartDir(root, stage.name, part.key), part)
    ref = StageRef(str(root), stage.name, stage.stage_key(parts))
    manifest = assemble(ref, [(p.name, p.key) for p in parts], stage.config, ["k"], len(docs), {"dedup": summary})
    removed = {r["id"]: r for f in manifest["rejected"] for r in pq.read_table(ref.path / f["path"]).to_pylist()}
    kept = [r["id"] for f in manifest["files"] for r in pq.read_table(ref.path / f["path"], columns=["id"]).to_pylist()]
    assert sorted(kept + list(removed)) == sorted(d["id"] for d in docs)
    assert all(r["detail"] in kept for r in removed.values()), "every removed row names a kept representative"
    return removed, manifest, summary


def fates(removed: dict) -> dict[str, tuple[str, str]]:
    return {k: (r["reason"], r["detail"]) for k, r in removed.items()}


# ------------------------------------------------------------------ text, signatures, LSH


def test_words_and_shingles_of_short_empty_and_unspaced_text():
    assert normalize("  Ｈello\tWORLD \n") == "hello world"  # NFKC, case fold, whitespace
    assert shingles(words(normalize("")), 5) == [] and shingles(words(normalize(None)), 5) == []
    assert shingles(words("!!! ???"), 5) == []
    assert shingles(words("three short words"), 5) == ["three short words"]
    assert shingles(words("one two three four five six"), 5) == ["one two three four five", "two three four five six"]
    assert words("быстрая лиса, γρήγορη αλεπού") == ["быстрая", "лиса", "γρήγορη", "αλεπού"]
    assert words("データ重複abc") == ["デ", "ー", "タ", "重", "複", "abc"]  # unspaced scripts: a word per character
    assert words("การลบข้อมูล")[:3] == ["ก", "า", "ร"]


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 7)])
def test_signatures_equal_datasketch(english, num_perm, seed):
    texts = english[:20] + ["", None, "   ", "two words", CJK, "быстрая лиса " * 30, "word " * 3000]
    signer = Signer(num_perm, seed, 5)
    signer.batch = 1024  # long documents span several permutation batches
    signed = signer.sign(texts)
    for text, sig, count in zip(texts, signed.signatures, signed.shingles):
        reference = MinHash(num_perm=num_perm, seed=seed)
        grams = shingles(words(normalize(text)), 5)
        for g in grams:
            reference.update(g.encode("utf-8"))
        assert np.array_equal(sig, reference.hashvalues)
        assert count == len(grams)
    assert signed.exact[20].tolist() == signed.exact[21].tolist() == signed.exact[22].tolist()  # "", None, blank


def test_lsh_parameters_are_datasketchs_and_the_s_curve_rises():
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    assert lsh_params(0.8, 128, 0.5) == (lsh.b, lsh.r)
    bands, rows = lsh_params(0.8, 128, 0.9)
    assert bands * rows <= 128
    curve = [candidate_probability(j, bands, rows) for j in (0.5, 0.7, 0.8, 0.9, 0.95)]
    assert curve == sorted(curve) and curve[0] < 0.05 and curve[-2] > 0.99


def components(n: int, a: np.ndarray, b: np.ndarray) -> list[int]:
    """Each document's smallest connected document over the pairs (a, b): a plain union-find."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    return [find(x) for x in range(n)]


def test_bucket_pairs_are_linear_and_connect_each_bucket():
    members = np.array([3, 5, 9, 12, 1, 2, 7, 8, 20, 21, 22, 23, 24])
    starts = np.array([0, 4, 6])  # buckets of 4, 2 and 7
    a, b = bucket_pairs(members, starts)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert len(a) == len(pairs) <= 2 * (3 + 1 + 6)
    roots = components(30, a, b)
    assert (
        len({roots[m] for m in (3, 5, 9, 12)}) == 1
        and roots[1] == roots[2]
        and len({roots[m] for m in range(20, 25)}) == 1
    )
    assert roots[3] != roots[1] != roots[20]


def test_grouper_spills_to_partitions_and_finds_every_group(tmp_path):
    rng = np.random.default_rng(0)
    k1 = rng.integers(0, 300, 20_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    k2 = rng.integers(0, 3, 20_000).astype(np.uint64)
    docs = np.arange(20_000)
    grouper = Grouper(tmp_path / "spill", 20_000, memory_bytes=100_000)
    assert grouper.partitions > 4
    for chunk in np.array_split(docs, 7):
        grouper.add(k1[chunk], k2[chunk], chunk)
    found = set()
    for members, starts in grouper.groups():
        found |= {tuple(g) for g in np.split(members, starts[1:]) if len(g)}
    expected = {}
    for d in docs:
        expected.setdefault((k1[d], k2[d]), []).append(int(d))
    assert found == {tuple(g) for g in expected.values() if len(g) > 1}
    assert not (tmp_path / "spill").exists()


def plain_greedy(n: int, a: np.ndarray, b: np.ndarray, rank: np.ndarray) -> list[int]:
    """The keep rule spelled out: documents in keep order; one with a pair to an earlier kept document is
    removed and points at the earliest (in keep order) of those; the others are kept."""
    similar = {}
    for x, y in zip(a.tolist(), b.tolist()):
        similar.setdefault(x, set()).add(y)
        similar.setdefault(y, set()).add(x)
    rep = list(range(n))
    for y in sorted(range(n), key=lambda d: rank[d]):
        earlier = [x for x in similar.get(y, ()) if rank[x] < rank[y] and rep[x] == x]
        if earlier:
            rep[y] = min(earlier, key=lambda x: rank[x])
    return rep


def test_greedy_keeps_both_ends_of_a_chain():
    a, b, rank = np.array([0, 1]), np.array([1, 2]), np.arange(3)  # a~b, b~c; a and c are not similar
    assert greedy_representatives(a, b, rank).tolist() == [0, 0, 2]  # b points at a; c is kept: b was removed
    assert greedy_representatives(np.array([0, 1, 0]), np.array([1, 2, 2]), rank).tolist() == [0, 0, 0]  # a~c too
    four = greedy_representatives(np.array([0, 1, 2]), np.array([1, 2, 3]), np.arange(4))  # a~b~c~d
    assert four.tolist() == [0, 0, 2, 2]  # every other one kept: a removed document never represents
    assert greedy_representatives(np.zeros(0, np.int64), np.zeros(0, np.int64), rank).tolist() == [0, 1, 2]


def test_greedy_matches_the_rule_and_not_the_order_of_the_pairs():
    rng = np.random.default_rng(1)
    n = 400
    a, b = rng.integers(0, n, 900), rng.integers(0, n, 900)
    a, b = a[a != b], b[a != b]
    for rank in (np.arange(n), rng.permutation(n)):
        rep = greedy_representatives(a, b, rank)
        assert rep.tolist() == plain_greedy(n, a, b, rank)
        removed = np.flatnonzero(rep != np.arange(n))
        assert 0 < len(removed) < n
        assert (rep[rep] == rep).all() and (rank[rep[removed]] < rank[removed]).all()  # kept, and earlier
        pairs = set(zip(a.tolist(), b.tolist())) | set(zip(b.tolist(), a.tolist()))
        assert all((int(x), int(y)) in pairs for x, y in zip(rep[removed], removed))  # a verified pair joins them
        kept = set(np.flatnonzero(rep == np.arange(n)).tolist())
        assert not any(x in kept and y in kept for x, y in pairs)  # no two kept documents are similar
        shuffled = rng.permutation(len(a))
        x, y = a[shuffled], b[shuffled]
        swap = rng.random(len(a)) < 0.5  # either way round, in any order, repeated
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        again = greedy_representatives(np.concatenate([x, y[:50]]), np.concatenate([y, x[:50]]), rank)
        assert again.tolist() == rep.tolist()


def test_greedy_appending_documents_never_changes_the_old_ones():
    rng = np.random.default_rng(2)
    old, new = 300, 200
    a, b = rng.integers(0, old, 600), rng.integers(0, old, 600)
    a, b = a[a != b], b[a != b]
    before = greedy_representatives(a, b, np.arange(old))
    # the appended documents come later in corpus order; they are similar to old ones and to each other
    c, d = rng.integers(old, old + new, 500), rng.integers(0, old + new, 500)
    c, d = c[c != d], d[c != d]
    after = greedy_representatives(np.concatenate([a, c]), np.concatenate([b, d]), np.arange(old + new))
    assert after[:old].tolist() == before.tolist()
    assert (after[old:] != np.arange(old, old + new)).any()  # some appended ones are duplicates of old ones


def test_greedy_keep_longest_via_rank():
    chars = np.array([100, 300, 200, 300, 50])  # documents 1 and 3 tie: corpus order decides
    order, rank = keep_order("longest", chars)
    assert order.tolist() == [1, 3, 2, 0, 4] and rank.tolist() == [3, 0, 2, 1, 4]
    a, b = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 4])  # 0~1~2~3, 0~4
    assert greedy_representatives(a, b, rank).tolist() == [1, 1, 1, 3, 4]
    # longest first: 1 kept; 3 (no pair to 1) kept; 2 -> 1 (the earlier of its kept neighbours 1 and 3);
    # 0 -> 1; 4's only neighbour 0 was removed: 4 kept
    _, first = keep_order("first", chars)
    assert greedy_representatives(a, b, first).tolist() == [0, 0, 2, 2, 0]


def test_size_histogram_bins():
    final = np.array([0, 0, 2, 3, 3, 3, 3, 3, 8])  # sizes 2, 1, 5, 1
    assert size_histogram(final) == [
        {"size": "1", "clusters": 2, "documents": 2},
        {"size": "2", "clusters": 1, "documents": 2},
        {"size": "5-8", "clusters": 1, "documents": 5},
    ]


# ------------------------------------------------------------------ the stage's steps on shards


def test_exact_and_near_duplicates_name_their_representative(tmp_path, english):
    base = english[:30]
    docs = [{"id": f"doc-{i:02d}", "text": t} for i, t in enumerate(base)]
    docs.append({"id": "exact-of-03", "text": "  " + base[3].upper().replace(" ", "  ") + "\n"})
    near = replace_tail(base[7], 3, "edited")
    assert 0.85 < jaccard(base[7], near) < 1
    docs.append({"id": "near-of-07", "text": near})
    docs.append({"id": "exact-of-near", "text": near})
    removed, manifest, summary = run_stage(tmp_path, docs, DedupConfig(), shard_rows=11)

    assert fates(removed) == {
        "exact-of-03": ("exact_duplicate", "doc-03"),
        "near-of-07": ("near_duplicate", "doc-07"),
        "exact-of-near": ("near_duplicate", "doc-07"),  # its exact group's first, near-of-07, went to doc-07
    }
    assert removed["exact-of-03"]["dup_similarity"] == 1.0 and 0.8 <= removed["near-of-07"]["dup_similarity"] < 1
    ledger = manifest["ledger"]
    assert ledger == {
        "rows_in": 33,
        "rows_out": 30,
        "dropped": {"exact_duplicate": 1, "near_duplicate": 2},
        "quarantined": 0,
    }
    assert summary["clusters"] == 2 and summary["largest_clusters"][0] == {"representative": "doc-07", "size": 3}
    assert summary["lsh"]["bands"] * summary["lsh"]["rows"] <= summary["lsh"]["num_perm"]


def test_keep_longest_keeps_the_longest_text(tmp_path, english):
    short, longer = english[0], english[0] + " and one more closing sentence"
    assert jaccard(short, longer) > 0.85
    docs = [{"id": "a", "text": short}, {"id": "b", "text": longer}, {"id": "c", "text": english[1]}]
    removed, _, _ = run_stage(tmp_path / "longest", docs, DedupConfig(keep="longest"))
    assert {k: r["detail"] for k, r in removed.items()} == {"a": "b"}
    removed, _, _ = run_stage(tmp_path / "first", docs, DedupConfig(keep="first"))
    assert {k: r["detail"] for k, r in removed.items()} == {"b": "a"}


def test_verification_keeps_a_chain_from_becoming_one_cluster(tmp_path, english):
    a = max(english, key=lambda t: len(t.split()))
    k = round(len(shingle_set(a)) * 0.075)  # k changed shingles of M: Jaccard (M - k) / (M + k), about 0.86
    b = replace_tail(a, k, "bee")
    c = " ".join([f"sea{i}" for i in range(k)] + b.split()[k:])  # b with its head replaced too
    assert jaccard(a, b) > 0.85 and jaccard(b, c) > 0.85 and jaccard(a, c) < 0.75
    docs = [{"id": "a", "text": a}, {"id": "b", "text": b}, {"id": "c", "text": c}, {"id": "d", "text": english[3]}]
    cfg = DedupConfig(num_perm=512)  # estimates within about 0.02 of the true Jaccard
    removed, _, _ = run_stage(tmp_path / "verified", docs, cfg)
    assert {k: r["detail"] for k, r in removed.items()} == {"b": "a"}  # c is no duplicate of a: kept
    removed, _, summary = run_stage(tmp_path / "unverified", docs, cfg.model_copy(update={"verify": False}))
    # Without verification every LSH candidate pair counts as similar. The keep rule never chains through a
    # removed document (b cannot take c), so c goes only because a and c are a candidate pair themselves:
    # at J about 0.72 they share a band (checked here), so c points at a directly.
    sig = Signer(cfg.num_perm, cfg.seed, cfg.ngram).sign([a, c]).signatures
    keys = band_keys(sig, *lsh_params(cfg.threshold, cfg.num_perm, cfg.recall_weight))
    assert (keys[0] == keys[1]).any()
    assert {k: r["detail"] for k, r in removed.items()} == {"b": "a", "c": "a"}
    assert summary["compared_pairs"] == 0 and summary["similar_pairs"] == summary["candidate_pairs"] >= 3


def test_short_empty_and_other_script_documents(tmp_path, english):
    cyrillic = "Быстрая бурая лиса перепрыгивает через ленивую собаку у реки " * 4
    greek = "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο δίπλα στο ποτάμι " * 4
    docs = [
        {"id": "empty", "text": ""},
        {"id": "blank", "text": "  \n\t "},
        {"id": "short", "text": "Hello world"},
        {"id": "short-case", "text": "hello   WORLD"},
        {"id": "short-other", "text": "Hello there"},
        {"id": "punct", "text": "!!!"},
        {"id": "cjk", "text": CJK},
        {"id": "cjk-edit", "text": CJK[:-1] + "。"},  # the last character changed: 1 of 48 shingles
        {"id": "cyrillic", "text": cyrillic},
        {"id": "greek", "text": greek},
        {"id": "en", "text": english[5]},
    ]
    removed, manifest, _ = run_stage(tmp_path, docs, DedupConfig())
    assert fates(removed) == {
        "blank": ("exact_duplicate", "empty"),
        "short-case": ("exact_duplicate", "short"),
        "cjk-edit": ("near_duplicate", "cjk"),
    }
    assert manifest["ledger"]["rows_out"] == len(docs) - 3


def test_output_is_deterministic_across_runs_sharding_and_sort_memory(tmp_path, english):
    rnd = random.Random(3)
    docs = [{"id": f"d{i:03d}", "text": t} for i, t in enumerate(english)]
    for i in range(40):
        src = rnd.choice(english)
        text = src if i % 3 == 0 else replace_tail(src, rnd.randint(1, 6), f"e{i}x")
        docs.insert(rnd.randint(0, len(docs)), {"id": f"copy{i:02d}", "text": text})
    first, m1, _ = run_stage(tmp_path / "a", docs, DedupConfig(), shard_rows=25)
    _, m2, _ = run_stage(tmp_path / "b", docs, DedupConfig(), shard_rows=25)
    assert [f["sha256"] for f in m1["files"] + m1["rejected"]] == [f["sha256"] for f in m2["files"] + m2["rejected"]]
    keys = {x: [p.key for p in Dedup(DedupConfig()).signature_parts(StageRef(str(tmp_path / x), "upstream", "k"))]
            for x in "ab"}
    assert keys["a"] == keys["b"]  # a shard's signatures are keyed by its content
    for i in (0, 2):
        a, b = (tmp_path / x / "dedup" / "signatures" / f"{keys[x][i]}.npy" for x in "ab")
        assert file_sha256(a) == file_sha256(b)
    sizes = [min(25, len(docs) - i) for i in range(0, len(docs), 25)]
    store = SignatureStore(tmp_path / "a" / "dedup", keys["a"], sizes, 256)
    assert len(keys["a"]) == len(sizes)
    parts = keys["a"]
    everything = np.concatenate([store.part(s) for s in range(len(parts))])
    picks = np.array([79, 0, 3, 79, 26, len(docs) - 1])
    assert np.array_equal(store.rows(picks), everything[picks])
    spilled, _, _ = run_stage(tmp_path / "c", docs, DedupConfig(sort_memory_mb=1), shard_rows=7)
    resharded, _, _ = run_stage(tmp_path / "d", docs, DedupConfig(), shard_rows=1000)
    assert fates(first) == fates(spilled) == fates(resharded)
    assert len(first) >= 30
