"""Where the dedup stage keeps signatures, and how the global step reads them back.

Each part's signatures are one `signatures/<part>.npy` (uint32, documents x num_perm), openable with
`numpy.load`. The clustering step scans a part whole, or fetches single rows with `pread`; it never
memory-maps the files, whose read-around would keep most of them resident.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from llmcore.data.dedup.minhash import similarity

SIGNATURES = "signatures"
SIGNATURE_BATCH_BYTES = 64 << 20  # signatures compared per numpy call


def signature_file(stage_path: Path, part: str) -> Path:
    return Path(stage_path) / SIGNATURES / f"{part}.npy"


class SignatureStore:
    """All parts' signatures, read from disk: a part whole when scanned, single rows when asked for."""

    def __init__(self, stage_path: Path, parts: list[str], sizes: list[int], num_perm: int):
        self.paths = [signature_file(stage_path, p) for p in parts]
        self.num_perm = num_perm
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.batch = max(1, SIGNATURE_BATCH_BYTES // (4 * num_perm))
        self._data_offsets: dict[int, int] = {}

    def part(self, s: int) -> np.ndarray:
        return np.load(self.paths[s])  # read, not mapped: scanned pages do not stay resident

    def rows(self, docs: np.ndarray) -> np.ndarray:
        out = np.empty((len(docs), self.num_perm), dtype=np.uint32)
        shard = np.searchsorted(self.offsets, docs, side="right") - 1
        width = 4 * self.num_perm
        for s in np.unique(shard).tolist():
            where = np.flatnonzero(shard == s)
            start = self._data_offset(s)
            fd = os.open(self.paths[s], os.O_RDONLY)
            try:
                data = b"".join(
                    os.pread(fd, width, start + r * width) for r in (docs[where] - self.offsets[s]).tolist()
                )
            finally:
                os.close(fd)
            out[where] = np.frombuffer(data, dtype=np.uint32).reshape(-1, self.num_perm)
        return out

    def _data_offset(self, s: int) -> int:
        """Where the array starts in part s's .npy file (after its header)."""
        if s not in self._data_offsets:
            with open(self.paths[s], "rb") as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                read_header(fh)
                self._data_offsets[s] = fh.tell()
        return self._data_offsets[s]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(len(a))
        for i in range(0, len(a), self.batch):
            out[i : i + self.batch] = similarity(self.rows(a[i : i + self.batch]), self.rows(b[i : i + self.batch]))
        return out
