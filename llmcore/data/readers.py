"""Source readers: turn input files into documents (`id`, `text`, `source`) or quarantine records.

Every record either becomes a document or is quarantined with its file and line, so the ingest
ledger accounts for every line. Ids are stable across reruns: `<source>/<file>:<line>` (or the
source's own id column when `id_field` is set).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from llmcore.config import SourceConfig

BINARY_SNIFF_BYTES = 8192
EXTENSIONS = {"jsonl": {".jsonl", ".json", ".ndjson"}, "text": {".txt", ".text", ""}, "parquet": {".parquet"}, "csv": {".csv"}}


class SourceError(Exception):
    """A source that cannot be read at all (missing path, wrong column): a config problem."""


@dataclass(frozen=True)
class Bad:
    """A record that could not become a document."""

    line: int | None
    error: str
    raw: bytes


Record = dict | Bad


def list_inputs(src: SourceConfig, index: int) -> list[str]:
    """The units of work of one source: its files (sorted), or the HF dataset itself."""
    where = f"data.ingest.sources[{index}].path"
    if src.format == "hf" and src.path is None:
        return [f"hf:{src.name}"]
    path = Path(src.path)
    if src.format == "hf":
        if not path.is_dir():
            raise SourceError(f"source {src.name!r}: {path} is not a directory saved by datasets.save_to_disk; fix {where}")
        return [str(path)]
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS[src.format])
        if not files:
            exts = ", ".join(sorted(e or "(none)" for e in EXTENSIONS[src.format]))
            raise SourceError(f"source {src.name!r}: directory {path} holds no {src.format} file ({exts}); fix {where}")
        return [str(p) for p in files]
    matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise SourceError(f"source {src.name!r}: {path} does not exist or matches no file; fix {where}")
    return matches


def doc_base(src: SourceConfig) -> Path:
    """The directory that ids are relative to: the source's dir, the glob's fixed prefix, or the file's dir."""
    path = Path(src.path)
    if path.is_dir():
        return path
    if glob.has_magic(str(path)):
        fixed = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        return Path(*fixed)
    return path.parent


def read_input(src: SourceConfig, unit: str, invalid_utf8: str) -> Iterator[Record]:
    """Documents and bad records of one unit of `list_inputs`, in file order."""
    if src.format == "hf":
        records, prefix = _read_hf(src), f"{src.name}/{src.hf_split}"
    else:
        path = Path(unit)
        head = path.open("rb").read(BINARY_SNIFF_BYTES)
        if src.format != "parquet" and b"\x00" in head:
            nul = head.index(b"\x00")
            yield Bad(None, f"binary file (NUL byte at offset {nul}); remove it from source {src.name!r}", head)
            return
        reader = {"jsonl": _read_jsonl, "text": _read_text, "csv": _read_csv, "parquet": _read_parquet}[src.format]
        records, prefix = reader(src, path, invalid_utf8), f"{src.name}/{path.relative_to(doc_base(src)).as_posix()}"
    for record in records:
        if isinstance(record, dict):
            line, own_id = record.pop("_line"), record.pop("_id", None)
            record = {"id": f"{src.name}/{own_id}" if own_id is not None else f"{prefix}:{line}", **record, "source": src.name}
        yield record


def _decode(raw: bytes, line: int, invalid_utf8: str) -> str | Bad:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if invalid_utf8 == "replace":
            return raw.decode("utf-8", errors="replace")
        return Bad(line, f"invalid UTF-8 at byte {exc.start} (set data.ingest.invalid_utf8: replace to keep such lines)", raw)


def _text_of(obj: dict, src: SourceConfig, line: int, raw: bytes) -> dict | Bad:
    if src.text_field not in obj:
        return Bad(line, f"no field {src.text_field!r} (fields: {sorted(obj)[:10]}); set text_field of source {src.name!r}", raw)
    text = obj[src.text_field]
    if not isinstance(text, str):
        return Bad(line, f"field {src.text_field!r} is {type(text).__name__}, not a string", raw)
    doc = {"_line": line, "text": text}
    if src.id_field is not None:
        if obj.get(src.id_field) is None:
            return Bad(line, f"no id in field {src.id_field!r}; fix the record or unset id_field", raw)
        doc["_id"] = str(obj[src.id_field])
    return doc


def _read_jsonl(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue  # blank lines separate nothing in JSONL: not records
            text = _decode(raw, line, invalid_utf8)
            if isinstance(text, Bad):
                yield text
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Bad(line, f"malformed JSON: {exc.msg} at column {exc.colno}", raw)
                continue
            yield _text_of(obj, src, line, raw) if isinstance(obj, dict) else Bad(line, "a JSON line must be an object", raw)


def _read_text(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    if src.text_unit == "file":
        raw = path.read_bytes()
        text = _decode(raw, 1, invalid_utf8)
        if isinstance(text, Bad) or text.strip():
            yield text if isinstance(text, Bad) else {"_line": 1, "text": text}
        return
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if raw.strip():
                text = _decode(raw.rstrip(b"\r\n"), line, invalid_utf8)
                yield text if isinstance(text, Bad) else {"_line": line, "text": text}


def _read_csv(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)
    with path.open("rb") as fh:
        stream = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(stream)
        if reader.fieldnames is None:
            return
        if src.text_field not in reader.fieldnames:
            raise SourceError(f"{path}: no column {src.text_field!r} (columns: {reader.fieldnames}); set text_field of source {src.name!r}")
        for row in reader:
            line = reader.line_num
            raw = ",".join(v or "" for v in row.values() if isinstance(v, str)).encode("utf-8", "surrogateescape")
            if any("\udc80" <= ch <= "\udcff" for v in row.values() if isinstance(v, str) for ch in v):
                if invalid_utf8 == "quarantine":
                    yield Bad(line, "invalid UTF-8 (set data.ingest.invalid_utf8: replace to keep such rows)", raw)
                    continue
                row = {k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if isinstance(v, str) else v
                       for k, v in row.items()}
            yield _text_of(row, src, line, raw)


def _read_parquet(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield Bad(None, f"unreadable Parquet file: {exc}", path.open("rb").read(BINARY_SNIFF_BYTES))
        return
    columns = [src.text_field] + ([src.id_field] if src.id_field else [])
    missing = [c for c in columns if c not in pfile.schema_arrow.names]
    if missing:
        raise SourceError(f"{path}: no column {missing[0]!r} (columns: {pfile.schema_arrow.names}); "
                          f"set text_field/id_field of source {src.name!r}")
    row_number = 0
    for batch in pfile.iter_batches(batch_size=4096, columns=columns):
        for obj in batch.to_pylist():
            row_number += 1
            yield _text_of(obj, src, row_number, json.dumps(obj, default=str).encode())


def _read_hf(src: SourceConfig) -> Iterator[Record]:
    import datasets  # heavy import: only for hf sources

    ds = datasets.load_from_disk(src.path) if src.path is not None else datasets.load_dataset(**src.hf_load)
    if isinstance(ds, datasets.DatasetDict):
        if src.hf_split not in ds:
            raise SourceError(f"source {src.name!r}: no split {src.hf_split!r} (splits: {list(ds)}); set hf_split")
        ds = ds[src.hf_split]
    if src.text_field not in ds.column_names:
        raise SourceError(f"source {src.name!r}: no column {src.text_field!r} (columns: {ds.column_names}); set text_field")
    for row_number, obj in enumerate(ds, start=1):
        yield _text_of(obj, src, row_number, json.dumps(obj, default=str).encode())
