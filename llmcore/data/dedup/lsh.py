"""LSH banding: which documents become candidate pairs.

A signature is cut into `bands` bands of `rows` slots; two documents are candidates when all
rows of at least one band agree, which happens with probability 1 - (1 - J^rows)^bands at
Jaccard J (the S-curve). Bands and rows come from datasketch's own optimiser for the threshold.
Each band of each document becomes a 64-bit bucket key; documents with equal keys are found by
sorting (`grouping.Grouper`), never by an in-memory index of all buckets.
"""

from __future__ import annotations

import numpy as np
from datasketch import MinHashLSH

S_CURVE_AT = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: multiply-xorshift mixing


def lsh_params(threshold: float, num_perm: int, recall_weight: float) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas of false positives and false negatives."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(1.0 - recall_weight, recall_weight))
    return lsh.b, lsh.r


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - jaccard**rows) ** bands


def s_curve(bands: int, rows: int) -> dict[str, float]:
    return {f"{j:.2f}": round(candidate_probability(j, bands, rows), 4) for j in S_CURVE_AT}


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [docs, bands]: a hash of each band's `rows` slots (equal slots, equal key)."""
    keys = np.empty((signatures.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        h = np.full(signatures.shape[0], band + 1, dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            h ^= signatures[:, col].astype(np.uint64)
            h *= _MIX
            h ^= h >> np.uint64(29)
        keys[:, band] = h
    return keys


def bucket_pairs(members: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of buckets (each bucket's members sorted, buckets at `starts` in `members`).

    A bucket of m documents yields at most 2(m - 1) pairs, never m(m - 1)/2: each member paired
    with the bucket's first member (a star) and with its predecessor (a chain). That connects the
    whole bucket, and with verification a member unlike the first can still join through its
    neighbour; a true pair missed in one band is usually caught in another.
    """
    if members.size == 0:
        return members, members
    first = np.zeros(members.size, dtype=bool)
    first[starts] = True
    head = members[np.maximum.accumulate(np.where(first, np.arange(members.size), 0))]
    follower = ~first
    prev = np.roll(members, 1)
    second_in_bucket = follower & np.roll(first, 1)  # its predecessor is the head: one pair, not two
    a = np.concatenate((head[follower], prev[follower & ~second_in_bucket]))
    b = np.concatenate((members[follower], members[follower & ~second_in_bucket]))
    return a, b
