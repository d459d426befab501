"""From groups and pairs to clusters: union-find, the keep rule, and chain splitting.

Every decision is a function of the documents' positions and lengths only, so the same corpus
gives the same clusters and representatives on any runner, in any order of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from llmcore.data.dedup.minhash import similarity

Rows = Callable[[np.ndarray], np.ndarray]  # documents -> their signatures


class UnionFind:
    """Union-find over documents 0..n-1 in vectorised rounds: each round hooks the larger root of
    every still-separate pair under the smaller one, then compresses all paths by pointer
    jumping. A component's root is its smallest document."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def roots(self) -> np.ndarray:
        while True:
            grand = self.parent[self.parent]
            if np.array_equal(grand, self.parent):
                return self.parent
            self.parent = grand

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        while a.size:
            roots = self.roots()
            ra, rb = roots[a], roots[b]
            apart = ra != rb
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))


def keep_order(keep: str, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(documents in keep order, each document's rank in it). "first": corpus order (upstream
    shard, then row); "longest": most characters first, ties in corpus order."""
    n = len(chars)
    order = np.arange(n) if keep == "first" else np.lexsort((np.arange(n), -chars))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return order, rank


def _group_sizes(members: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.diff(np.append(starts, len(members)))


def exact_representatives(
    groups: Iterable[tuple[np.ndarray, np.ndarray]], order: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """Each document's representative among its exact duplicates (itself when it has none)."""
    rep = np.arange(len(rank), dtype=np.int64)
    for members, starts in groups:
        if members.size:
            best = np.minimum.reduceat(rank[members], starts)
            rep[members] = order[np.repeat(best, _group_sizes(members, starts))]
    return rep


def near_representatives(
    roots: np.ndarray, docs: np.ndarray, rank: np.ndarray, rows: Rows | None, threshold: float, batch_docs: int
) -> np.ndarray:
    """Each document's representative in its cluster (itself when it is kept).

    Clusters are the union-find components of `docs`. Without `rows` (no verification) a
    component is a cluster and its first document in keep order represents it. With `rows`, a
    component of three or more is split greedily so that no cluster chains: its first document
    leads a cluster of every member whose estimated Jaccard with it reaches the threshold, the
    first one left leads the next, and so on. Signatures are read one batch of components at a time.
    """
    rep = np.arange(len(roots), dtype=np.int64)
    comp = roots[docs]
    sizes = np.bincount(comp, minlength=len(roots))
    docs = docs[sizes[comp] >= 2]
    docs = docs[np.lexsort((rank[docs], roots[docs]))]  # by component, then keep order
    if docs.size == 0:
        return rep
    starts = np.flatnonzero(np.diff(roots[docs], prepend=-1))
    comp_sizes = _group_sizes(docs, starts)
    if rows is None:
        rep[docs] = np.repeat(docs[starts], comp_sizes)
        return rep
    pairs = comp_sizes == 2  # a component of two is one verified pair: nothing to split
    rep[docs[starts[pairs] + 1]] = docs[starts[pairs]]
    big_docs = docs[np.repeat(~pairs, comp_sizes)]
    big_ends = np.cumsum(comp_sizes[~pairs])
    big_starts = np.concatenate(([0], big_ends[:-1]))
    c = 0
    while c < len(big_ends):  # a batch of whole components, about batch_docs documents
        last = max(c + 1, int(np.searchsorted(big_ends, big_starts[c] + batch_docs, side="right")))
        base = big_starts[c]
        sig = rows(big_docs[base : big_ends[last - 1]])
        for lo, hi in zip(big_starts[c:last], big_ends[c:last]):
            members = big_docs[lo:hi]
            rep[members] = members[_leaders(sig[lo - base : hi - base], threshold)]
        c = last
    return rep


def _leaders(sig: np.ndarray, threshold: float) -> np.ndarray:
    """For members in keep order, the index of each one's leader (greedy, leader = first left)."""
    leader = np.empty(len(sig), dtype=np.int64)
    todo = np.arange(len(sig))
    while todo.size:
        close = similarity(sig[todo], sig[todo[:1]]) >= threshold
        leader[todo[close]] = todo[0]
        todo = todo[~close]
    return leader


def size_histogram(final: np.ndarray) -> list[dict]:
    """Clusters by size in power-of-two bins (1, 2, 3-4, 5-8, ...): clusters and documents per bin."""
    sizes = np.bincount(final)
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        return []
    rows, low = [], 1
    while low <= sizes.max():
        high = 1 if low == 1 else 2 * (low - 1)
        inside = sizes[(sizes >= low) & (sizes <= high)]
        if inside.size:
            label = str(low) if low == high else f"{low}-{high}"
            rows.append({"size": label, "clusters": int(inside.size), "documents": int(inside.sum())})
        low = high + 1
    return rows
