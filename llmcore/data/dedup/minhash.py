"""MinHash signatures equal to datasketch's, computed for thousands of documents per numpy call.

datasketch's default scheme ("affine32", datasketch >= 2.0): a shingle's SHA-1 (first 4 bytes,
little endian) is pre-mixed with the MurmurHash3 finalizer, then permuted by `a * h + b mod 2^32`
for each of `num_perm` (a, b) pairs drawn from `seed`; the signature keeps the minimum per
permutation. `MinHash.update` runs that as several numpy calls per shingle. Here the shingles of
many documents are hashed into one array, permuted as one (num_perm x shingles) matrix and
reduced per document with `minimum.reduceat`: the same numbers, a fraction of the calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

from llmcore.data.dedup.text import normalize, shingles, words

EMPTY = np.uint32(0xFFFFFFFF)  # every slot of a document without shingles (datasketch's empty MinHash)
BATCH_ELEMENTS = 1 << 21  # permuted values per numpy call (8 MiB of uint32): cache-sized, bounded


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, the scheme's pre-mix (uint32 arithmetic wraps mod 2^32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@dataclass
class Signed:
    """Per document: its signature, the 128-bit hash of its normalized text, its length, its shingle count."""

    signatures: np.ndarray  # uint32 [docs, num_perm]
    exact: np.ndarray  # uint64 [docs, 2]
    chars: np.ndarray  # int64 [docs]
    shingles: np.ndarray  # int32 [docs]


class Signer:
    def __init__(self, num_perm: int, seed: int, ngram: int):
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.a, self.b = a[:, None], b[:, None]
        self.num_perm, self.ngram = num_perm, ngram
        self.batch = max(1024, BATCH_ELEMENTS // num_perm)  # shingles per permutation call

    def sign(self, texts: Iterable[str | None]) -> Signed:
        sha1 = hashlib.sha1
        rows: list[np.ndarray] = []
        exact, chars, counts = [], [], []
        digests: list[bytes] = []
        pieces: list[tuple[int, int]] = []  # (document, shingles) in `digests`, in order
        for doc, text in enumerate(texts):
            norm = normalize(text)
            exact.append(hashlib.blake2b(norm.encode(), digest_size=16).digest())
            chars.append(len(text or ""))
            grams = shingles(words(norm), self.ngram)
            counts.append(len(grams))
            # A long document is cut into pieces of at most one batch; a full batch is permuted at
            # once, so two pieces of one document never share a batch (their minima are merged below).
            for start in range(0, len(grams), self.batch):
                piece = grams[start : start + self.batch]
                digests.extend([sha1(g.encode()).digest() for g in piece])
                pieces.append((doc, len(piece)))
                if len(digests) >= self.batch:
                    rows.append(self._permute(digests, pieces))
                    digests, pieces = [], []
        if digests:
            rows.append(self._permute(digests, pieces))
        sig = np.full((len(counts), self.num_perm), EMPTY, dtype=np.uint32)
        for docs, minima in rows:
            sig[docs] = np.minimum(sig[docs], minima)
        return Signed(
            sig,
            np.frombuffer(b"".join(exact), dtype="<u8").reshape(-1, 2),
            np.asarray(chars, dtype=np.int64),
            np.asarray(counts, dtype=np.int32),
        )

    def _permute(self, digests: list[bytes], pieces: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Minimum per permutation of each piece's shingle hashes: (documents, [pieces, num_perm])."""
        hv = fmix32(np.frombuffer(b"".join(digests), dtype="<u4")[::5])  # sha1_hash32: first 4 of 20 bytes
        phv = self.a * hv  # [num_perm, shingles]; uint32 arithmetic wraps: the scheme's mod 2^32
        phv += self.b
        docs, lengths = np.array(pieces, dtype=np.int64).T
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        return docs, np.minimum.reduceat(phv, starts, axis=1).T


def similarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of signature rows x[i] and y[i]: the share of equal slots (as MinHash.jaccard)."""
    return np.count_nonzero(x == y, axis=1) / x.shape[1]
