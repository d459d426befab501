"""From groups and pairs to representatives: the keep order, exact groups, the greedy keep rule.

Every decision is a function of the documents' positions and lengths only, so the same corpus
gives the same clusters and representatives on any runner, in any order of work.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


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


def greedy_representatives(a: np.ndarray, b: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Each document's representative (itself when kept), greedy in keep order over the similar pairs (a, b).

    Documents are decided in keep order: one is removed when a pair joins it to an earlier document that
    was kept, and then points at the first such one. A document's fate depends only on the documents
    before it, so documents appended later never change it.
    """
    rep = np.arange(len(rank), dtype=np.int64)
    if a.size == 0:
        return rep
    first, second = np.where(rank[a] <= rank[b], a, b), np.where(rank[a] <= rank[b], b, a)
    order = np.lexsort((rank[first], rank[second]))  # by the later document, then the earlier one
    out = rep.tolist()
    for x, y in zip(first[order].tolist(), second[order].tolist()):
        if out[y] == y and out[x] == x:  # y undecided so far, x kept: y duplicates x
            out[y] = x
    return np.asarray(out, dtype=np.int64)


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
