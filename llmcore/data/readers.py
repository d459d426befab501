"""Source readers: turn input files into documents (`id`, `text`, `source`) or quarantine records.

Every record either becomes a document or is quarantined with its file and line, so the ingest
ledger accounts for every line. Ids are stable across reruns: `<source>/<file>:<line>` (or the
source's own id column when `id_field` is set). Files may be gzip- or zstd-compressed (told by
their first bytes); a UTF-8 BOM at the start of a file is skipped.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import io
import json
import re
import sys
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from llmcore.config import SourceConfig

BINARY_SNIFF_BYTES = 8192
EXTENSIONS = {"jsonl": {".jsonl", ".json", ".ndjson"}, "text": {".txt", ".text", ""}, "parquet": {".parquet"}, "csv": {".csv"}}
COMPRESSED_SUFFIXES = {".gz", ".zst"}  # a.jsonl.gz is a jsonl file; the codec itself is told by the magic number
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"  # neither can start UTF-8 text
# how a compressed stream that breaks off fails: gzip EOFError / BadGzipFile (an OSError) / zlib.error, pyarrow OSError
DAMAGE = (EOFError, OSError, zlib.error)
PARQUET_DAMAGE = (OSError, ValueError, pa.ArrowException)  # a damaged page: bad header, bad values, bad UTF-8
SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate (JSON "\ud800") has no UTF-8 encoding
_TOKEN: ContextVar[str | None] = ContextVar("hf_token", default=None)  # set by `hf_token`


class SourceError(Exception):
    """A source that cannot be read at all (missing path, wrong column): a config problem."""


class Unreadable(Exception):
    """Input that cannot be read from `line` on (a compressed stream that breaks off, a missing codec): one bad record."""

    def __init__(self, line: int | None, error: str):
        super().__init__(error)
        self.line = line


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
        files = sorted(p for p in path.rglob("*") if p.is_file() and _format_suffix(p) in EXTENSIONS[src.format])
        if not files:
            exts = ", ".join(sorted(e or "(none)" for e in EXTENSIONS[src.format]))
            raise SourceError(f"source {src.name!r}: directory {path} holds no {src.format} file ({exts}, or with .gz / .zst); "
                              f"fix {where}")
        return [str(p) for p in files]
    matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise SourceError(f"source {src.name!r}: {path} does not exist or matches no file; fix {where}")
    return matches


def _format_suffix(path: Path) -> str:
    """The suffix that tells the format: `.jsonl` of both a.jsonl and a.jsonl.gz."""
    return (path.with_suffix("") if path.suffix.lower() in COMPRESSED_SUFFIXES else path).suffix.lower()


def printable_path(unit: str) -> str:
    """`unit` with the bytes of a non-UTF-8 file name as \\xNN escapes: what ids and JSON files can hold."""
    return unit.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
    try:
        yield from _documents(src, unit, invalid_utf8)
    except Unreadable as exc:
        yield Bad(exc.line, str(exc), b"")


def _documents(src: SourceConfig, unit: str, invalid_utf8: str) -> Iterator[Record]:
    if src.format == "hf":
        records, prefix = _read_hf(src, invalid_utf8), f"{src.name}/{src.hf_split}"
    else:
        path = Path(unit)
        head = _head(path) if src.format != "parquet" else b""
        if b"\x00" in head:
            nul = head.index(b"\x00")
            yield Bad(None, f"binary file (NUL byte at offset {nul}); remove it from source {src.name!r}", head)
            return
        reader = {"jsonl": _read_jsonl, "text": _read_text, "csv": _read_csv, "parquet": _read_parquet}[src.format]
        records, prefix = reader(src, path, invalid_utf8), f"{src.name}/{printable_path(path.relative_to(doc_base(src)).as_posix())}"
    first_lines: dict[str, int] = {}  # own id -> line it was first seen; held only with id_field, about the ids' size
    for record in records:
        yield _document(record, src, prefix, first_lines) if isinstance(record, dict) else record


def _document(record: dict, src: SourceConfig, prefix: str, first_lines: dict[str, int]) -> Record:
    """A reader's record with its id, or bad when its own id was seen before in this unit."""
    line, own_id, raw = record.pop("_line"), record.pop("_id", None), record.pop("_raw", b"")
    if own_id is None:
        return {"id": f"{prefix}:{line}", **record, "source": src.name}
    first = first_lines.setdefault(own_id, line)
    if first != line:
        return Bad(line, f"duplicate id {own_id!r} (first at line {first}); the {src.id_field!r} of each record must be unique", raw)
    return {"id": f"{src.name}/{own_id}", **record, "source": src.name}


def _decode(raw: bytes, line: int, invalid_utf8: str) -> str | Bad:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if invalid_utf8 == "replace":
            return raw.decode("utf-8", errors="replace")
        return Bad(line, f"invalid UTF-8 at byte {exc.start} (set data.ingest.invalid_utf8: replace to keep such lines)", raw)


def _encodable(value: str, field: str, line: int, raw: bytes, invalid_utf8: str) -> str | Bad:
    """`value` without lone surrogates (JSON's "\\ud800"), which UTF-8 cannot hold: treated like invalid UTF-8."""
    found = SURROGATE.search(value)
    if found is None:
        return value
    if invalid_utf8 == "replace":
        return SURROGATE.sub("\ufffd", value)
    return Bad(line, f"field {field!r} holds a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}, "
                     "which is not Unicode text (set data.ingest.invalid_utf8: replace to keep such lines)", raw)


def _text_of(obj: dict, src: SourceConfig, line: int, raw: bytes, invalid_utf8: str) -> dict | Bad:
    if src.text_field not in obj:
        return Bad(line, f"no field {src.text_field!r} (fields: {sorted(obj)[:10]}); set text_field of source {src.name!r}", raw)
    text = obj[src.text_field]
    if not isinstance(text, str):
        return Bad(line, f"field {src.text_field!r} is {type(text).__name__}, not a string", raw)
    text = _encodable(text, src.text_field, line, raw, invalid_utf8)
    if isinstance(text, Bad):
        return text
    doc = {"_line": line, "_raw": raw, "text": text}
    if src.id_field is not None:
        if obj.get(src.id_field) is None:
            return Bad(line, f"no id in field {src.id_field!r}; fix the record or unset id_field", raw)
        own_id = _encodable(str(obj[src.id_field]), src.id_field, line, raw, invalid_utf8)
        if isinstance(own_id, Bad):
            return own_id
        doc["_id"] = own_id
    return doc


def _open(path: Path) -> tuple[BinaryIO, str | None]:
    """The file's bytes, decompressed when it starts with a gzip or zstd magic number; and the codec."""
    with path.open("rb") as fh:
        magic = fh.read(len(ZSTD_MAGIC))
    if magic.startswith(GZIP_MAGIC):
        return gzip.open(path, "rb"), "gzip"
    if magic == ZSTD_MAGIC:
        if not pa.Codec.is_available("zstd"):
            raise Unreadable(None, "zstd-compressed file, and this pyarrow has no zstd codec: decompress the file "
                                   "(zstd -d) or install pyarrow's wheel from PyPI, which has it (pip install --force-reinstall pyarrow)")
        return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), "zstd"), 1 << 16), "zstd"
    return path.open("rb"), None


@contextmanager
def _reading(path: Path, position: Callable[[], int]) -> Iterator[BinaryIO]:
    """The file, decompressed; a compressed stream that breaks off becomes `Unreadable` at line `position()`."""
    fh, codec = _open(path)
    with fh:
        try:
            yield fh
        except DAMAGE as exc:
            if codec is None:
                raise  # a plain file's read error is the disk's, not the data's: the task's retry is the cure
            line = position()
            raise Unreadable(line, f"damaged {codec} data at line {line}: {exc}; the lines before it were kept, "
                                   "re-create the file to recover the rest") from exc


def _head(path: Path) -> bytes:
    """The first bytes of the file (decompressed) for the binary check; none when they are damaged already."""
    try:
        with _reading(path, lambda: 1) as fh:
            return fh.read(BINARY_SNIFF_BYTES)
    except Unreadable:
        return b""  # the reader reports the damage, after the lines before it


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file's numbered lines (decompressed, without a leading UTF-8 BOM)."""
    line = 0
    with _reading(path, lambda: line + 1) as fh:
        for line, raw in enumerate(fh, start=1):
            yield line, raw.removeprefix(codecs.BOM_UTF8) if line == 1 else raw


def _parse_json(text: str, line: int, raw: bytes) -> object:
    """The JSON value of a line, or Bad: json.loads also raises RecursionError and ValueError (huge integers)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = exc.msg.removesuffix(" at")  # "Invalid control character at"
        return Bad(line, f"malformed JSON: {msg} at column {exc.colno}", raw)
    except RecursionError:
        return Bad(line, "JSON nested too deeply for Python's parser (about 1000 levels of [ and {)", raw)
    except ValueError:
        return Bad(line, f"JSON integer over {sys.get_int_max_str_digits()} digits, Python's limit; write it as a string", raw)


def _read_jsonl(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    for line, raw in _lines(path):
        if not raw.strip():
            continue  # blank lines separate nothing in JSONL: not records
        text = _decode(raw, line, invalid_utf8)
        obj = text if isinstance(text, Bad) else _parse_json(text, line, raw)
        if isinstance(obj, dict):
            yield _text_of(obj, src, line, raw, invalid_utf8)
        else:
            yield obj if isinstance(obj, Bad) else Bad(line, "a JSON line must be an object", raw)


def _read_text(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    if src.text_unit == "file":
        with _reading(path, lambda: 1) as fh:
            raw = fh.read().removeprefix(codecs.BOM_UTF8)
        text = _decode(raw, 1, invalid_utf8)
        if isinstance(text, Bad) or text.strip():
            yield text if isinstance(text, Bad) else {"_line": 1, "text": text}
        return
    for line, raw in _lines(path):
        if raw.strip():
            text = _decode(raw.rstrip(b"\r\n"), line, invalid_utf8)
            yield text if isinstance(text, Bad) else {"_line": line, "text": text}


def _read_csv(src: SourceConfig, path: Path, invalid_utf8: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)
    end = 0  # the line the previous record ended on: a record starts on the line after it
    with _reading(path, lambda: end + 1) as fh:
        stream = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            return
        if src.text_field not in header:
            raise SourceError(f"{path}: no column {src.text_field!r} (columns: {header}); set text_field of source {src.name!r}")
        end = reader.line_num
        for fields in reader:
            line, end = end + 1, reader.line_num
            if fields:  # a blank line is no record
                yield _csv_record(header, fields, src, line, invalid_utf8)


def _csv_record(header: list[str], fields: list[str], src: SourceConfig, line: int, invalid_utf8: str) -> Record:
    raw = ",".join(fields).encode("utf-8", "surrogateescape")
    if any("\udc80" <= ch <= "\udcff" for v in fields for ch in v):  # invalid UTF-8 bytes, escaped by the decoder
        if invalid_utf8 == "quarantine":
            return Bad(line, "invalid UTF-8 (set data.ingest.invalid_utf8: replace to keep such rows)", raw)
        fields = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in fields]
    return _text_of(dict(zip(header, fields)), src, line, raw, invalid_utf8)


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
    for group in range(pfile.num_row_groups):
        end = row_number + pfile.metadata.row_group(group).num_rows
        try:
            for batch in pfile.iter_batches(batch_size=4096, row_groups=[group], columns=columns):
                for obj in batch.to_pylist():
                    row_number += 1
                    yield _text_of(obj, src, row_number, json.dumps(obj, default=str).encode(), invalid_utf8)
        except PARQUET_DAMAGE as exc:  # one damaged row group: its unread rows are one bad record, the next group is read
            yield Bad(row_number + 1, f"damaged Parquet data, rows {row_number + 1}-{end} (row group {group}) lost: {exc}", b"")
        row_number = end


@contextmanager
def hf_token(token: str | None) -> Iterator[None]:
    """hf_load's token for the reads in this block (this thread or task): the caller resolves the source's token_env or
    token_secret when it reads, so that the value never enters a config, which is hashed, dumped and logged."""
    reset = _TOKEN.set(token)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


def _read_hf(src: SourceConfig, invalid_utf8: str) -> Iterator[Record]:
    import datasets  # heavy import: only for hf sources

    if src.path is not None:
        ds = datasets.load_from_disk(src.path)
    else:
        token = _TOKEN.get()
        ds = datasets.load_dataset(**src.hf_load, **({"token": token} if token else {}))
    if isinstance(ds, datasets.DatasetDict):
        if src.hf_split not in ds:
            raise SourceError(f"source {src.name!r}: no split {src.hf_split!r} (splits: {list(ds)}); set hf_split")
        ds = ds[src.hf_split]
    if src.text_field not in ds.column_names:
        raise SourceError(f"source {src.name!r}: no column {src.text_field!r} (columns: {ds.column_names}); set text_field")
    for row_number, obj in enumerate(ds, start=1):
        yield _text_of(obj, src, row_number, json.dumps(obj, default=str).encode(), invalid_utf8)
