"""Document stages: each part written once under its content key, then a stage directory that links them.

A stage's work is split into parts (an input file, an upstream shard). A part writes its Parquet shards,
its rejected rows and its quarantine into `<root>/<stage>/parts/<part key>/`, then `summary.json`, last
and atomically: a part is done iff its summary exists, so a rerun after a crash redoes only the parts
that had not finished, and a later run over a grown corpus finds every old part under the same key.
`assemble` checks every part is done, hard-links the parts' files into the stage directory under
their position names (`part-00003.parquet`: arrival order), merges the quarantines and writes the
manifest. In the stage directory everything but the kept shards has a dot-name (`.rejected/`,
`.quarantine.jsonl`, `.manifest.json`), which pandas, pyarrow and datasets skip: the directory reads
as a dataset of the stage's documents. Quarantines are streamed to disk, never held in memory: a
source of a million bad lines costs disk, not RAM.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from llmcore.manifest import Ledger, atomic_write_json, commit_file, describe_file, temp_path_for
from llmcore.stage import StageRef, part_path, write_manifest

RAW_BYTES_KEPT = 64 * 1024  # quarantine keeps this much of an unparseable record's raw bytes
STEM = "part"  # a part names its files part*.parquet; the stage directory renames them to the part's position
SUMMARY = "summary.json"
QUARANTINE = "quarantine.jsonl"  # a part's; the stage directory's is HIDDEN_QUARANTINE
HIDDEN_QUARANTINE, REJECTED = "." + QUARANTINE, ".rejected"
# the stage directory layout, in stage keys but not in part keys (a new layout links finished parts anew, computes
# nothing): 2: bookkeeping under dot-names. A layout-1 directory reassembled in place would keep its old files.
LAYOUT = 2


class PartDir:
    """One content-addressed part of a document stage: `<root>/<stage>/parts/<part key>/`."""

    def __init__(self, root: str | Path, stage: str, key: str):
        self.stage, self.key = stage, key
        self.path = part_path(root, stage, key)

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    def summary(self) -> dict | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else None

    def writer(self, shard_rows: int | None = None, types: dict[str, pa.DataType] | None = None) -> PartWriter:
        return PartWriter(self, shard_rows, types)


def assemble(ref: StageRef, parts: list[tuple[str, str]], config: Any, upstream: list[str], upstream_rows: int | None,
             extra: dict | None = None) -> dict:
    """The stage directory of `parts` ((position name, part key), in arrival order): their files linked in
    under position names, their quarantines merged, the manifest written last; returns the manifest."""
    summaries, files, rejected = [], [], []
    for name, key in parts:
        part = PartDir(ref.root, ref.stage, key)
        summary = part.summary()
        if summary is None:
            raise RuntimeError(f"{part.summary_path} is missing: part {name} of stage {ref.stage} never finished; "
                               "rerun the flow (finished parts are reused)")
        summaries.append((name, key, summary))
        for f in summary["files"]:
            files.append(_link_in(ref, part, f, _renamed(f["path"], name)))
        for f in summary["rejected"]:
            rejected.append(_link_in(ref, part, f, str(Path(REJECTED, _renamed(Path(f["path"]).name, name)))))
    ledger = sum((Ledger.from_dict(s["ledger"]) for _, _, s in summaries), Ledger()).check(str(ref.path))
    if upstream_rows is not None and ledger.rows_in != upstream_rows:
        raise AssertionError(f"{ref.path}: read {ledger.rows_in} rows but the upstream stage wrote {upstream_rows}")
    quarantines = [PartDir(ref.root, ref.stage, k).path / s["quarantine"] for _, k, s in summaries if s.get("quarantine")]
    _concatenate(quarantines, ref.path / HIDDEN_QUARANTINE)
    return write_manifest(
        ref, config, upstream, files, ledger=ledger.to_dict(), rejected=rejected, quarantine=HIDDEN_QUARANTINE,
        parts={name: {"key": key, **s.get("info", {})} for name, key, s in summaries}, **(extra or {}),
    )


def _link_in(ref: StageRef, part: PartDir, entry: dict, target: str) -> dict:
    """A part's file linked into the stage directory as `target`; its manifest entry."""
    link(part.path / entry["path"], ref.path / target)
    return {**entry, "path": target, "part": part.key}


def _renamed(path: str, name: str) -> str:
    """`train/part-0001.arrow` of part `part-00003` -> `train/part-00003-0001.arrow`."""
    p = Path(path)
    return str(p.with_name(name + p.name[len(STEM):]))


def link(src: Path, dst: Path) -> None:
    """`dst` becomes `src` (a hard link: no copy, no extra disk), atomically; a copy where links are refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = temp_path_for(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(src, tmp)
    commit_file(tmp, dst)


class PartWriter:
    """Collects one part's kept rows, rejected rows and quarantined input, and writes them."""

    def __init__(self, part: PartDir, shard_rows: int | None, types: dict[str, pa.DataType] | None = None):
        self.part, self.path, self.shard_rows = part, part.path, shard_rows
        self.types = types or {}  # column types fixed in every shard (a column all null in one part stays typed)
        self.ledger = Ledger()
        self._kept: list[dict] = []
        self._rejected: list[dict] = []
        self._quarantine: BinaryIO | None = None  # the temp file quarantine records are appended to
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
        self.files.append({**describe_file(path, self.path, rows), **info})

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
            tmp = temp_path_for(self.path / QUARANTINE)  # committed under its name by `finish`
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)  # a new file: a failed try's handle, flushed late, writes to the old one
            self._quarantine = open(tmp, "wb")
        return self._quarantine

    def _shard_name(self, index: int) -> str:
        return f"{STEM}.parquet" if not self.shard_rows else f"{STEM}-{index:04d}.parquet"

    def _flush_kept(self) -> None:
        if self._kept:
            path = self.path / self._shard_name(len(self.files))
            self.files.append(_write_parquet(self._kept, path, self.path, self.types))
            self._kept = []

    def finish(self, info: dict | None = None) -> dict:
        self._flush_kept()
        if self._rejected:
            path = self.path / "rejected" / f"{STEM}.parquet"
            self.rejected_files.append(_write_parquet(self._rejected, path, self.path))
        quarantine = None
        if self._quarantine is not None:
            quarantine = QUARANTINE
            self._quarantine.close()
            commit_file(self._quarantine.name, self.path / quarantine)
        summary = {
            "part": self.part.key,
            "ledger": self.ledger.check(f"part {self.path}").to_dict(),
            "files": self.files,
            "rejected": self.rejected_files,
            "quarantine": quarantine,
            "info": info or {},
        }
        atomic_write_json(self.part.summary_path, summary)
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
