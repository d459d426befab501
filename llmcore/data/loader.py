"""The training data loader: memory-mapped token shards in, objective batches out, resumable exactly.

Order: each epoch visits all documents of the split in a seeded permutation of (seed, epoch),
across shards: shards often hold one source or language each, and a shard-by-shard walk trains on
one language at a time (the loss jumps at every shard boundary, and the model leans towards the
last shard it saw). Rank r of a world of W takes every W-th document of that order, so the ranks
share the order and together see every document once an epoch. Without shuffling the order is
the files' order. Documents are read as numpy views into the map (no copy until a batch is
assembled); the epoch's order costs 40 bytes a document.

Position: (epoch, row, offset): the next token is token `offset` of this rank's `row`-th document
of the epoch. With the objective's RNG state it is the whole state: `state_dict()` after a batch
and `load_state_dict()` in a new loader give the same next batches. The state is JSON (and loads
with `torch.load(weights_only=True)` when saved with torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmcore.data.tokens import MappedShard, open_split
from llmcore.objectives import CLM, MLM, NSP, SpanCorruption

STATE_FORMAT = 2  # 2: one order across shards (1 walked shard by shard)


class TokenStream:
    """This rank's documents of one split, epoch after epoch, with EOS-joined packing on top."""

    def __init__(
        self, shards: list[MappedShard], seed: int, rank: int, world_size: int, epochs: int | None, shuffle: bool
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        sizes = np.array([len(s) for s in shards])
        if sum(max(0, -(-(n - rank) // world_size)) for n in sizes) == 0:
            raise ValueError(f"rank {rank} of {world_size} gets no document: the split holds only {sizes.sum()}")
        self.shards, self.seed, self.rank, self.world_size = shards, seed, rank, world_size
        self.epochs, self.shuffle = epochs, shuffle
        self.first_doc = np.concatenate([[0], np.cumsum(sizes)])  # global index of each shard's row 0
        self.epoch = self.row = self.offset = 0
        self._cached: int | None = None

    def position(self) -> dict:
        return {"epoch": self.epoch, "row": self.row, "offset": self.offset}

    def seek(self, position: dict) -> None:
        self.epoch, self.row, self.offset = (int(position[k]) for k in ("epoch", "row", "offset"))
        self._cached = None

    def _epoch_order(self) -> None:
        """This rank's documents of the epoch: global indices, and where each lies (file, chunk, begin, end)."""
        total = int(self.first_doc[-1])
        order = np.random.default_rng([self.seed, self.epoch]).permutation(total) if self.shuffle else np.arange(total)
        self._docs = order[self.rank :: self.world_size]
        self._file = np.searchsorted(self.first_doc, self._docs, side="right") - 1
        local = self._docs - self.first_doc[self._file]
        self._spans = np.zeros((len(self._docs), 3), dtype=np.int64)
        for f, shard in enumerate(self.shards):
            mine = self._file == f
            self._spans[mine] = np.stack([a[local[mine]] for a in (shard.chunk, shard.begin, shard.end)], axis=1)
        self._cached = self.epoch

    def _load(self) -> bool:
        """Point at the current document, moving over finished epochs; False once exhausted."""
        while True:
            if self.epochs is not None and self.epoch >= self.epochs:
                return False
            if self._cached != self.epoch:
                self._epoch_order()
            if self.row < len(self._docs):
                return True
            self.epoch, self.row, self.offset = self.epoch + 1, 0, 0

    def current(self) -> np.ndarray | None:
        if not self._load():
            return None
        chunk, begin, end = self._spans[self.row]
        return self.shards[self._file[self.row]].chunks[chunk][begin:end]

    def doc_index(self) -> int:
        """The current document's index in the whole split (all shards, all ranks)."""
        return int(self._docs[self.row])

    def advance(self) -> None:
        self.row, self.offset = self.row + 1, 0

    def take(self, n: int, sep: int) -> np.ndarray | None:
        """The next `n` tokens of the documents joined with `sep` after each; None once exhausted."""
        pieces, need = [], n
        while need:
            doc = self.current()
            if doc is None:
                return None
            left = len(doc) + 1 - self.offset  # the rest of the document and its separator
            if need < left:
                pieces.append(doc[self.offset : self.offset + need])
                self.offset += need
                break
            pieces += [doc[self.offset :], np.array([sep], dtype=doc.dtype)]
            need -= left
            self.advance()
        return np.concatenate(pieces)

    def chunk(self, max_tokens: int, min_tokens: int) -> tuple[np.ndarray, int] | None:
        """Up to `max_tokens` of the current document and its index; rests under `min_tokens` are skipped."""
        while (doc := self.current()) is not None:
            rest = doc[self.offset : self.offset + max_tokens]
            if len(rest) >= min_tokens:
                index = self.doc_index()
                self.offset += len(rest)
                if self.offset == len(doc):
                    self.advance()
                return rest, index
            self.advance()
        return None

    def random_doc(self, rng: np.random.Generator, exclude: int) -> np.ndarray:
        """A document of the split drawn uniformly, never the one with index `exclude`."""
        index = int(rng.integers(self.first_doc[-1] - 1))
        index += index >= exclude
        shard = int(np.searchsorted(self.first_doc, index, side="right")) - 1
        return self.shards[shard].doc(index - int(self.first_doc[shard]))


class TokenLoader:
    """Batches of `objective` examples from one split of a tokenize stage directory, for one rank.

    An iterator: each `next()` continues from the position of the last batch. `epochs=None` runs
    forever (train by steps); a finite run ends with a last, possibly smaller, batch.
    `verify`: "sha256" checks every shard against the manifest before use; "size" only its length.
    """

    def __init__(
        self,
        stage_path: str | Path,
        objective: CLM | MLM | NSP | SpanCorruption,
        batch_size: int,
        *,
        split: str = "train",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        shuffle: bool = True,
        verify: str = "sha256",
    ):
        self.manifest, shards = open_split(stage_path, split, verify)
        self.objective, self.batch_size, self.split = objective, batch_size, split
        self.stream = TokenStream(shards, seed, rank, world_size, epochs, shuffle)
        self.rng = np.random.default_rng([seed, rank])  # the objective's draws differ between ranks

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def __iter__(self) -> TokenLoader:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        examples = []
        while len(examples) < self.batch_size and (ex := self.objective.example(self.stream, self.rng)) is not None:
            examples.append(ex)
        if not examples:
            raise StopIteration
        return self.objective.collate(examples, self.rng)

    def _identity(self) -> dict:
        s = self.stream
        return {
            "format": STATE_FORMAT, "stage": self.manifest["key"], "split": self.split, "seed": s.seed,
            "rank": s.rank, "world_size": s.world_size, "shuffle": s.shuffle, "objective": repr(self.objective),
        }

    def state_dict(self) -> dict:
        """Where the next batch starts: JSON-serialisable."""
        return {**self._identity(), "position": self.stream.position(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        identity = self._identity()
        mismatched = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in identity.items() if state.get(k) != v]
        if mismatched:
            raise ValueError(
                "this loader state was saved by a different loader, so it cannot resume exactly ("
                + "; ".join(mismatched) + "); resume with the settings it was saved with, or start the epoch afresh"
            )
        self.stream.seek(state["position"])
        self.rng.bit_generator.state = state["rng"]
