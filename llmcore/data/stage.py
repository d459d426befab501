"""One stage directory of document shards, written part by part.

A stage's work is split into parts (an input file, an upstream shard). Each part writes its
Parquet shards, its rejected rows and its quarantine, then a small summary under `parts/`, last
and atomically: a part is done iff its summary exists, so a rerun after a crash redoes only the
parts that had not finished. `finalize` checks every expected part is done, merges the
quarantines and writes the stage manifest (llmcore/manifest.py). Quarantines are streamed to disk, never
held in memory: a source of a million bad lines costs disk, not RAM.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from llmcore.manifest import (
    MANIFEST,
    Ledger,
    atomic_write_json,
    commit_file,
    describe_file,
    read_manifest,
    temp_path_for,
)

RAW_BYTES_KEPT = 64 * 1024  # quarantine keeps this much of an unparseable record's raw bytes


class StageDir:
    def __init__(self, data_root: str | Path, stage: str, key: str):
        self.stage, self.key = stage, key
        self.path = Path(data_root) / stage / key

    def summary_path(self, part: str) -> Path:
        return self.path / "parts" / f"{part}.json"

    def done_part(self, part: str) -> dict | None:
        path = self.summary_path(part)
        return json.loads(path.read_text()) if path.exists() else None

    def writer(self, part: str, shard_rows: int | None = None, types: dict[str, pa.DataType] | None = None) -> PartWriter:
        return PartWriter(self, part, shard_rows, types)

    def manifest(self) -> dict | None:
        return read_manifest(self.path)

    def finalize(
        self, parts: list[str], config: Any, upstream: list[str], upstream_rows: int | None, extra: dict | None = None
    ) -> dict:
        """Write the stage manifest from its parts' summaries (plus the stage's `extra` fields); returns it."""
        summaries = []
        for part in parts:
            summary = self.done_part(part)
            if summary is None:
                raise RuntimeError(
                    f"{self.summary_path(part)} is missing: part {part!r} of stage {self.stage} never finished; "
                    "rerun the flow (finished parts are reused)"
                )
            summaries.append(summary)
        ledger = sum((Ledger.from_dict(s["ledger"]) for s in summaries), Ledger()).check(str(self.path))
        if upstream_rows is not None and ledger.rows_in != upstream_rows:
            raise AssertionError(f"{self.path}: read {ledger.rows_in} rows but the upstream stage wrote {upstream_rows}")
        _concatenate([self.path / s["quarantine"] for s in summaries if s.get("quarantine")], self.path / "quarantine.jsonl")
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config,
            "upstream": upstream,
            "ledger": ledger.to_dict(),
            "files": [f for s in summaries for f in s["files"]],
            "rejected": [f for s in summaries for f in s["rejected"]],
            "quarantine": "quarantine.jsonl",
            "parts": {s["part"]: s.get("info", {}) for s in summaries},
            **(extra or {}),
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        return manifest


class PartWriter:
    """Collects one part's kept rows, rejected rows and quarantined input, and writes them."""

    def __init__(self, stage: StageDir, part: str, shard_rows: int | None, types: dict[str, pa.DataType] | None = None):
        self.stage, self.part, self.shard_rows = stage, part, shard_rows
        self.types = types or {}  # column types fixed in every shard (a column all null in one part stays typed)
        self.ledger = Ledger()
        self._kept: list[dict] = []
        self._rejected: list[dict] = []
        self._quarantine: BinaryIO | None = None  # the temp file quarantine records are appended to
        self._quarantine_name = f"parts/{part}.quarantine.jsonl"
        self.files: list[dict] = []
        self.rejected_files: list[dict] = []

    def keep(self, row: dict) -> None:
        self.ledger.rows_in += 1
        self._output(row)

    def add(self, row: dict, kind: str) -> None:
        """A row the stage made itself (an augmented copy): counted as added, by kind, not as read."""
        self.ledger.add(kind)
        self._output(row)

    def _output(self, row: dict) -> None:
        self.ledger.rows_out += 1
        self._kept.append(row)
        if self.shard_rows and len(self._kept) >= self.shard_rows:
            self._flush_kept()

    def add_file(self, path: Path, rows: int, **info: Any) -> None:
        """An output file the part wrote itself (Arrow token shards, a tokenizer): its rows count as kept."""
        self.ledger.rows_in += rows
        self.ledger.rows_out += rows
        self.files.append({**describe_file(path, self.stage.path, rows), **info})

    def reject(self, row: dict, reason: str, detail: str = "") -> None:
        self.ledger.rows_in += 1
        self.ledger.drop(reason)
        self._rejected.append({**row, "reason": reason, "detail": detail})

    def quarantine(self, file: str, line: int | None, error: str, raw: bytes) -> None:
        """Input that never became a document: kept with its location and (the start of) its bytes."""
        self.ledger.rows_in += 1
        self.ledger.quarantined += 1
        record = {
            "file": file,
            "line": line,
            "error": error,
            "raw_len": len(raw),
            "raw_b64": base64.b64encode(raw[:RAW_BYTES_KEPT]).decode(),
        }
        # backslashreplace: a lone surrogate in an error message must not crash the part (JSON reads \udXXX back)
        self._quarantine_file().write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))

    def _quarantine_file(self) -> BinaryIO:
        if self._quarantine is None:
            tmp = temp_path_for(self.stage.path / self._quarantine_name)  # committed under its name by `finish`
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)  # a new file: a failed try's handle, flushed late, writes to the old one
            self._quarantine = open(tmp, "wb")
        return self._quarantine

    def _shard_name(self, index: int) -> str:
        return f"{self.part}.parquet" if not self.shard_rows else f"{self.part}-{index:04d}.parquet"

    def _flush_kept(self) -> None:
        if self._kept:
            path = self.stage.path / self._shard_name(len(self.files))
            self.files.append(_write_parquet(self._kept, path, self.stage.path, self.types))
            self._kept = []

    def finish(self, info: dict | None = None) -> dict:
        self._flush_kept()
        if self._rejected:
            path = self.stage.path / "rejected" / f"{self.part}.parquet"
            self.rejected_files.append(_write_parquet(self._rejected, path, self.stage.path))
        quarantine = None
        if self._quarantine is not None:
            quarantine = self._quarantine_name
            self._quarantine.close()
            commit_file(self._quarantine.name, self.stage.path / quarantine)
        summary = {
            "part": self.part,
            "ledger": self.ledger.check(f"{self.stage.path} part {self.part}").to_dict(),
            "files": self.files,
            "rejected": self.rejected_files,
            "quarantine": quarantine,
            "info": info or {},
        }
        atomic_write_json(self.stage.summary_path(self.part), summary)
        return summary


def _write_parquet(rows: list[dict], path: Path, root: Path, types: dict[str, pa.DataType] | None = None) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    table = pa.Table.from_pylist(rows)
    for name, type_ in (types or {}).items():
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(type_))
    pq.write_table(table, tmp)
    commit_file(tmp, path)
    return describe_file(path, root, len(rows))


def _concatenate(parts: list[Path], path: Path) -> None:
    """Join `parts` into `path` block by block (a quarantine can outgrow memory); readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    commit_file(tmp, path)


def read_rows(path: str | Path, columns: list[str] | None = None) -> Iterable[dict]:
    """Rows of one Parquet shard, batch by batch, as dicts."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048, columns=columns):
        yield from batch.to_pylist()


def shard_paths(manifest: dict, stage_path: str | Path) -> list[Path]:
    return [Path(stage_path) / f["path"] for f in manifest["files"]]
