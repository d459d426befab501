"""Arrow token shards: written per part, verified against the manifest, memory-mapped.

Each part of the tokenize stage writes `train/part.arrow` and `validation/part.arrow` (linked into the stage
directory as `train/<part name>.arrow`): Arrow
IPC *stream* files (the format `datasets.Dataset.from_file` reads), uncompressed so they map with
zero copy, one document per row: `id` (string) and `input_ids` (list of uint16 when every id fits,
else uint32), encoded without special tokens; objectives add those at load time. The split of a
document is a stable hash of its id (an augmented copy's: its original's, `augmented_from`), so it
never changes across reruns or shardings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmcore import tokenizer as toks
from llmcore.config import TokenizeConfig, TokenizerConfig
from llmcore.data.stage import STEM, PartDir
from llmcore.manifest import HIDDEN_MANIFEST, Ledger, commit_file, describe_file, file_sha256, read_manifest, temp_path_for
from llmcore.stage import PARTS, StageRef, key_config, write_manifest

SPLITS = ("train", "validation")
EMPTY = "empty_after_tokenization"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def split_of(doc_id: str, validation_fraction: float) -> str:
    """`validation` for the documents whose id hashes (blake2b-64) below the fraction, else `train`."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return "validation" if h < validation_fraction * 2**64 else "train"


# ----------------------------------------------------------------------------- the tokenizer stage


def tokenizer_stage(ref: StageRef, corpus_dir: Path, cfg: TokenizerConfig, upstream: list[str]) -> dict:
    """Train the tokenizer on a seeded sample of the corpus in `corpus_dir` (or adopt cfg.path) into `ref` and
    write its manifest, which describes it under `tokenizer`; the ledger counts the sample."""
    if cfg.path:
        tok, sampled = toks.load_tokenizer(cfg.path, cfg.family), 0
    else:
        corpus = read_manifest(corpus_dir)
        texts, sampled = sample_texts(corpus_dir, corpus, cfg.sample_docs, cfg.seed)
        if not sampled:
            ledger = corpus["ledger"]
            raise toks.TokenizerError(
                f"no document to train a tokenizer on: the {corpus['stage']} stage ({corpus_dir}) kept none of "
                f"its {ledger['rows_in']} (dropped: {ledger['dropped'] or 'none'}); check the inputs and filters"
            )
        tok = toks.train_tokenizer(texts, cfg, length=sampled)
    path = toks.save_tokenizer(tok, ref.path, cfg.family)
    files = [describe_file(path, ref.path, sampled), describe_file(ref.path / toks.CONFIG_FILE, ref.path, 0)]
    ledger = Ledger(rows_in=sampled, rows_out=sampled).to_dict()
    corpus_parts = None if cfg.path else [p["key"] for p in read_manifest(corpus_dir)["parts"].values()]
    return write_manifest(ref, key_config(cfg), upstream, files, ledger=ledger, sampled_docs=sampled, adopted=cfg.path,
                          corpus_parts=corpus_parts,
                          tokenizer=toks.describe(toks.load_tokenizer(path), cfg.family, path))


def sample_texts(corpus_dir: Path, corpus: dict, n: int, seed: int):
    """(a generator of the texts of `n` documents drawn without replacement, n); one shard in memory at once."""
    counts = [f["rows"] for f in corpus["files"]]
    total = sum(counts)
    chosen = np.arange(total) if n >= total else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    starts = np.cumsum([0, *counts])

    def texts():
        for f, lo, hi in zip(corpus["files"], starts[:-1], starts[1:]):
            rows = chosen[(chosen >= lo) & (chosen < hi)] - lo
            if len(rows):
                yield from pq.read_table(corpus_dir / f["path"], columns=["text"]).column("text").take(rows).to_pylist()

    return texts(), len(chosen)


# ----------------------------------------------------------------------------- the tokenize stage


def tokenize_part(part: PartDir, shard: Path, tokenizer_dir: Path, cfg: TokenizeConfig) -> dict:
    """Encode one document shard into this part's train / validation token shards."""
    tok = toks.load_tokenizer(tokenizer_dir)
    dtype = token_dtype(toks.vocab_size(tok))
    schema = shard_schema(dtype, toks.tokenizer_hash(tokenizer_dir))
    writer = part.writer()
    outputs = {s: _ShardFile(part.path / s / f"{STEM}.arrow", schema) for s in SPLITS}
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=cfg.batch_docs):
        encodings = tok.encode_batch(batch.column("text").to_pylist(), add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int32, count=len(encodings))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)  # a batch holds far fewer than 2**31 tokens
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=dtype, count=int(offsets[-1]))
        ids = batch.column("id").cast(pa.string())
        table = pa.Table.from_arrays([ids, pa.ListArray.from_arrays(offsets, values)], schema=schema)
        # an augmented copy goes where its original goes: near-copies of training text never validate
        origins = batch.column("augmented_from").to_pylist() if "augmented_from" in batch.schema.names else [None] * len(ids)
        split = np.array([split_of(o or i, cfg.validation_fraction) for o, i in zip(origins, ids.to_pylist())])
        for s, out in outputs.items():
            keep = (split == s) & (lengths > 0)
            out.write(table.filter(pa.array(keep)), int(lengths[keep].sum()))
        for row in np.flatnonzero(lengths == 0):
            writer.reject(batch.slice(row, 1).to_pylist()[0], EMPTY, "no tokens")
    info = {}
    for s, out in outputs.items():
        if out.rows:
            writer.add_file(out.commit(), out.rows, split=s, tokens=out.tokens)
        info[f"{s}_docs"], info[f"{s}_tokens"] = out.rows, out.tokens
    return writer.finish(info)


def shard_schema(dtype: np.dtype, tokenizer_sha256: str) -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), ("input_ids", pa.list_(pa.from_numpy_dtype(dtype)))],
        metadata={"llmpipe.tokenizer_sha256": tokenizer_sha256},
    )


class _ShardFile:
    """One split's Arrow IPC stream, written batch by batch to a temp file, committed when done."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.rows, self.tokens = path, schema, 0, 0
        self._sink = self._writer = None

    def write(self, table: pa.Table, tokens: int) -> None:
        if not table.num_rows:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(temp_path_for(self.path)), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows
        self.tokens += tokens

    def commit(self) -> Path:
        self._writer.close()
        self._sink.close()
        commit_file(temp_path_for(self.path), self.path)
        return self.path


# ----------------------------------------------------------------------------- reading them back


class TokenShardError(Exception):
    """A token shard that is missing, truncated or changed since its manifest was written."""


@dataclass
class MappedShard:
    """One Arrow token file, memory-mapped: document `row` is a read-only numpy view into the map."""

    path: Path
    chunks: list[np.ndarray]  # the token values of each record batch (views of the map)
    chunk: np.ndarray  # record batch of each row
    begin: np.ndarray  # first token of each row within its chunk
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.chunk)

    def doc(self, row: int) -> np.ndarray:
        return self.chunks[self.chunk[row]][self.begin[row] : self.end[row]]


def open_split(stage_path: str | Path, split: str = "train", verify: str = "sha256") -> tuple[dict, list[MappedShard]]:
    """The tokenize stage's manifest and its `split` shards, each checked (`size`, or `sha256` too) first."""
    stage_path = Path(stage_path)
    manifest = read_manifest(stage_path)
    if manifest is None:
        raise TokenShardError(
            f"{stage_path / HIDDEN_MANIFEST} does not exist: the tokenize stage there never finished; rerun the data flow"
        )
    entries = [f for f in manifest["files"] if f.get("split") == split]
    if not entries:
        raise TokenShardError(f"{stage_path}: the manifest lists no {split!r} token shard")
    return manifest, [open_shard(stage_path, f, verify) for f in entries]


def open_shard(stage_path: Path, entry: dict, verify: str = "sha256") -> MappedShard:
    path = stage_path / entry["path"]
    size = path.stat().st_size if path.exists() else None
    problem = None
    if size is None:
        problem = "is missing"
    elif size != entry["bytes"]:
        problem = f"is truncated or rewritten: {size} bytes, the manifest says {entry['bytes']}"
    elif verify == "sha256" and file_sha256(path) != entry["sha256"]:
        problem = "no longer matches its sha256 in the manifest (changed or corrupted)"
    try:
        shard = None if problem else _map(path)
    except (pa.ArrowInvalid, OSError) as exc:
        problem = f"cannot be read as an Arrow IPC stream ({exc})"
    if problem:
        raise TokenShardError(_rebuild_advice(stage_path, path, entry, problem))
    if len(shard) != entry["rows"]:
        problem = f"holds {len(shard)} rows, the manifest says {entry['rows']}"
        raise TokenShardError(_rebuild_advice(stage_path, path, entry, problem))
    return shard


def _map(path: Path) -> MappedShard:
    table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    chunks, chunk, begin, end = [], [], [], []
    for i, arr in enumerate(table.column("input_ids").chunks):
        offsets = arr.offsets.to_numpy()
        chunks.append(arr.values.to_numpy(zero_copy_only=True))
        chunk.append(np.full(len(arr), i, dtype=np.int32))
        begin.append(offsets[:-1])
        end.append(offsets[1:])
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return MappedShard(path, chunks, cat(chunk, np.int32), cat(begin, np.int64), cat(end, np.int64))


def _rebuild_advice(stage_path: Path, path: Path, entry: dict, problem: str) -> str:
    part = stage_path.parent / PARTS / entry.get("part", "?")
    return (
        f"token shard {path} {problem}; refusing to train on it. To rebuild it, delete the part {part} and "
        f"{stage_path / HIDDEN_MANIFEST}, then rerun the data flow (finished parts are reused; only this part is tokenized again)."
    )


def split_totals(manifest: dict) -> dict[str, dict[str, int]]:
    """Documents, tokens and files per split of a tokenize manifest."""
    totals = {s: {"docs": 0, "tokens": 0, "files": 0} for s in SPLITS}
    for f in manifest["files"]:
        t = totals[f["split"]]
        t["docs"] += f["rows"]
        t["tokens"] += f["tokens"]
        t["files"] += 1
    return totals
