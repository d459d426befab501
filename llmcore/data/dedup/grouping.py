"""Group (key, document) records by key in bounded memory: an external partitioned sort.

Records are appended to partition files chosen by the key's low bits, as many partitions as it
takes for one to fit the memory budget; then each partition is read, sorted alone (numpy
lexsort) and its runs of equal keys are the groups. Memory is one partition, whatever the corpus.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

RECORD = np.dtype([("k1", "<u8"), ("k2", "<u8"), ("doc", "<i8")])
SORT_BYTES_PER_RECORD = 4 * RECORD.itemsize  # the records, the sort order and the sorted copy


class Grouper:
    def __init__(self, directory: Path, expected_records: int, memory_bytes: int):
        self.dir = Path(directory)
        shutil.rmtree(self.dir, ignore_errors=True)  # leftovers of a crashed attempt
        self.dir.mkdir(parents=True)
        self.partitions = max(1, math.ceil(expected_records * SORT_BYTES_PER_RECORD / memory_bytes))

    def _path(self, partition: int) -> Path:
        return self.dir / f"{partition:05d}.bin"

    def add(self, k1: np.ndarray, k2: np.ndarray, docs: np.ndarray) -> None:
        records = np.empty(len(docs), dtype=RECORD)
        records["k1"], records["k2"], records["doc"] = k1, k2, docs
        if self.partitions > 1:
            part = (records["k1"] % np.uint64(self.partitions)).astype(np.uint32)
            records = records[np.argsort(part, kind="stable")]
            bounds = np.searchsorted(np.sort(part), np.arange(self.partitions + 1))
        else:
            bounds = np.array([0, len(records)])
        for p in range(self.partitions):
            if bounds[p] < bounds[p + 1]:
                with self._path(p).open("ab") as fh:
                    records[bounds[p] : bounds[p + 1]].tofile(fh)

    def groups(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per partition: (members, starts), the documents of every group of two or more, each
        group sorted by document and starting at `starts` in `members`. Partition files are
        deleted as they are consumed; the directory at the end."""
        for p in range(self.partitions):
            path = self._path(p)
            if not path.exists():
                continue
            records = np.fromfile(path, dtype=RECORD)
            path.unlink()
            # Most keys occur once: sort by k1 alone, then fully sort only the records whose k1 repeats.
            order = np.argsort(np.ascontiguousarray(records["k1"]))
            k1 = records["k1"][order]
            repeated = np.zeros(len(k1), dtype=bool)
            repeated[1:] = k1[1:] == k1[:-1]
            repeated[:-1] |= repeated[1:]
            records = records[order[repeated]]
            records = records[np.lexsort((records["doc"], records["k2"], records["k1"]))]
            new = np.ones(len(records), dtype=bool)
            new[1:] = (records["k1"][1:] != records["k1"][:-1]) | (records["k2"][1:] != records["k2"][:-1])
            starts = np.flatnonzero(new)
            sizes = np.diff(np.append(starts, len(records)))
            multi = sizes >= 2
            group_sizes = sizes[multi]
            yield records["doc"][np.repeat(multi, sizes)], np.cumsum(group_sizes) - group_sizes
        shutil.rmtree(self.dir, ignore_errors=True)
