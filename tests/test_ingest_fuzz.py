"""Fuzz ingest: >= 10,000 generated records, most of them malformed, through every file reader.

A seeded generator writes JSONL, text, CSV and Parquet files, many records a file: deep nesting, huge
numbers, lone surrogates, NULs, BOMs, CRLF, other encodings, invalid UTF-8, huge lines, binary garbage,
wrong types, missing fields and duplicate ids; some files gzip/zstd-compressed, truncated or damaged.
Every record (a line, a CSV record, a Parquet row; a whole file under text_unit: file) knows its fate,
so the test checks that no exception escapes and that every record is accounted for: a document with
its id and text, or a quarantine entry with its file and line, or inside the one entry of a file that
is unreadable from some line on (or as a whole).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from llmcore.config import IngestConfig, SourceConfig
from llmcore.data.readers import printable_path
from llmcore.data.stage import HIDDEN_QUARANTINE, PartDir, read_rows
from llmcore.data.stages import Ingest, run_local
from llmcore.stage import StageRef

SEED = 1234
MIN_RECORDS = 10_000
PARQUET_ROWS = 120
BOM = b"\xef\xbb\xbf"
FILLER = "filler " * 1200  # a first record over 8 KiB: later NULs stay out of the binary-file sniff
ALPHABETS = ["abcdefghij klmnop qrst", "äöüßéèçñ ", "日本語の文章です。", "Ωμέγα ", "😀🚀👍🏽", "\t\r\x0b\x1c",
             "\u200b\u2028\u00a0\ufeff\ufffd", '"\\,{}[]:']
DAMAGE = re.compile(r"damaged (?:gzip|zstd) data at line (\d+)|damaged Parquet data, rows (\d+)-(\d+)")
SKIP = "<blank line: no record>"


class Rec(NamedTuple):
    """One generated record: its bytes (a line, without the newline) and fate: the text kept, None (quarantined), SKIP."""

    line: bytes
    fate: str | None
    own_id: str | None = None


@dataclass
class Planned:
    """What ingest must make of one file, by line (Parquet: row)."""

    docs: dict[int, str] = field(default_factory=dict)  # the text of each document
    own_ids: dict[int, str] = field(default_factory=dict)  # with id_field: the document's own id
    bad: set[int] = field(default_factory=set)  # quarantined one by one
    whole: bool = False  # one quarantine entry for the file
    damaged: bool = False  # exactly one entry for the records from some line on (or a Parquet row group)
    loose: bool = False  # randomly damaged Parquet: rows may be kept with other text, quarantined or lost


def text(rng: random.Random, n: int | None = None) -> str:
    alphabet = "".join(rng.sample(ALPHABETS, 3))
    return "".join(rng.choices(alphabet, k=n or rng.randint(1, 60)))


def garbage(rng: random.Random, n: int, nul: bool = False) -> bytes:
    data = rng.randbytes(n).replace(b"\n", b"")
    return b"#" + (data if nul else data.replace(b"\x00", b""))  # never blank


# -- JSONL: each maker returns a Rec


def _dumps(obj: object, rng: random.Random) -> bytes:
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()


def _good(rng: random.Random) -> Rec:
    values = [1, -2.5, None, True, "x", [1, [2, [3]]], {"a": {"b": []}}, 10**4000, float("nan"), text(rng)]
    t = text(rng)
    return Rec(_dumps({**{f"f{i}": rng.choice(values) for i in range(rng.randint(0, 3))}, "text": t}, rng), t)


def _surrogate(rng: random.Random) -> bytes:
    return f"\\u{rng.randint(0xD800, 0xDFFF):04x}".encode()


def _nested(rng: random.Random, depth: int, t: str) -> bytes:
    return b'{"n": ' + b"[" * depth + b"]" * depth + b', "text": ' + json.dumps(t).encode() + b"}"


JSONL_MAKERS = [  # (weight, maker)
    (20, _good),
    (4, lambda rng: (lambda r: Rec(r.line + b"\r", r.fate))(_good(rng))),  # CRLF
    (4, lambda rng: Rec(_nested(rng, rng.randint(2_000, 50_000), "deep"), None)),
    (3, lambda rng: Rec(_nested(rng, rng.randint(1, 200), "nested"), "nested")),
    (4, lambda rng: Rec(b'{"text": "x", "n": -' + b"9" * rng.randint(4301, 20_000) + b"}", None)),
    (4, lambda rng: Rec(b'{"text": "lone ' + _surrogate(rng) + b' surrogate"}', None)),
    (2, lambda rng: Rec(b'{"text": "ok", "other": "' + _surrogate(rng) + b'"}', "ok")),
    (2, lambda rng: Rec(b'{"text": "\\ud83d\\ude00 pair"}', "\U0001F600 pair")),
    (3, lambda rng: Rec(b'{"text": "raw \x00 NUL"}', None)),
    (2, lambda rng: Rec(b'{"text": "escaped \\u0000 NUL, \\t\\u0001\\r\\n"}', "escaped \x00 NUL, \t\x01\r\n")),
    (4, lambda rng: Rec(json.dumps({"text": "é" + text(rng)}, ensure_ascii=False).encode("latin-1", "replace"), None)),
    (3, lambda rng: Rec(BOM + _good(rng).line, None)),  # a BOM is only allowed at the start of the file
    (6, lambda rng: (lambda line: Rec(line[: rng.randint(1, len(line) - 1)], None))(_good(rng).line)),  # cut short
    (5, lambda rng: Rec(_dumps({"text": rng.choice([1, 2.5, None, True, ["a"], {"a": "b"}])}, rng), None)),
    (4, lambda rng: Rec(_dumps(rng.choice([["text"], "text", 3, True, None]), rng), None)),
    (5, lambda rng: Rec(_dumps(rng.choice([{}, {"body": text(rng)}, {"Text": "x"}]), rng), None)),
    (5, lambda rng: Rec(garbage(rng, rng.randint(1, 300)), None)),
    (2, lambda rng: Rec(rng.choice([b"", b"  ", b"\t", b"\r"]), SKIP)),
]


def jsonl_record(rng: random.Random) -> Rec:
    weights, makers = zip(*JSONL_MAKERS)
    return rng.choices(makers, weights)[0](rng)


def jsonl_id_record(rng: random.Random, seen: set[str]) -> Rec:
    """A record of a source with id_field `id`: a record without an id, or with an id seen before, is quarantined."""
    if rng.random() < 0.3:
        rec = jsonl_record(rng)  # no id field: quarantined, whatever else it is
        return rec if rec.fate is SKIP else Rec(rec.line, None)
    t = text(rng)
    own = rng.choice([rng.randint(0, 300), f"doc-{rng.randint(0, 300)}", None])
    own_json = json.dumps(own).encode() if rng.random() < 0.9 else b'"' + _surrogate(rng) + b'"'
    line = b'{"id": ' + own_json + b', "text": ' + json.dumps(t).encode() + b"}"
    if own is None or own_json.startswith(b'"\\u') or str(own) in seen:
        return Rec(line, None)
    seen.add(str(own))
    return Rec(line, t, str(own))


# -- text: one line a record


def text_record(rng: random.Random) -> Rec:
    line = rng.choice([
        lambda: text(rng).encode(), lambda: text(rng).encode(), lambda: text(rng).encode() + b"\r",
        lambda: b"NUL \x00 inside", lambda: BOM + text(rng).encode(), lambda: ("é" + text(rng)).encode("latin-1", "replace"),
        lambda: b"encoded surrogate \xed\xa0\x80", lambda: b"overlong \xc0\xaf", lambda: "cut 日本".encode()[:-1],
        lambda: garbage(rng, rng.randint(1, 200)), lambda: rng.choice([b"", b"  ", b"\t", b"\r", b"\x0b\x0c"]),
    ])()
    if not line.strip():
        return Rec(line, SKIP)
    try:
        return Rec(line, line.rstrip(b"\r\n").decode())
    except UnicodeDecodeError:
        return Rec(line, None)


def lines_file(records: list[Rec]) -> tuple[bytes, Planned]:
    """Records joined by newlines (record n on line n), and their plan."""
    plan = Planned()
    for number, rec in enumerate(records, start=1):
        if rec.fate is None:
            plan.bad.add(number)
        elif rec.fate is not SKIP:
            plan.docs[number] = rec.fate
            if rec.own_id is not None:
                plan.own_ids[number] = rec.own_id
    return b"\n".join(rec.line for rec in records) + b"\n", plan


# -- CSV: records numbered by the line they start on


def csv_file(rng: random.Random, rows: int) -> tuple[bytes, Planned]:
    out, plan, starts = io.BytesIO(), Planned(), []
    out.write((BOM if rng.random() < 0.3 else b"") + b"id,text,extra\r\n")
    for i in range(rows):
        kind = "filler" if i == 0 else rng.choice(["good", "good", "good", "short", "empty", "extra", "invalid", "surrogate", "blank"])
        t = FILLER if i == 0 else text(rng) + rng.choice(["", "\nsecond line", '"quoted", comma', "\r\n", "\x00"])
        fields = {"short": ["7"], "empty": ["7", "", "x"], "extra": ["7", t, "x", "more"]}.get(kind, ["7", t, "x"])
        buf = io.StringIO()  # a bare \r is quoted only by QUOTE_ALL
        quoting = csv.QUOTE_ALL if "\r" in t or rng.random() < 0.5 else csv.QUOTE_MINIMAL
        csv.writer(buf, lineterminator=rng.choice(["\n", "\r\n"]), quoting=quoting).writerow(fields)
        row = {"invalid": b"\xff\xfe", "surrogate": b"\xed\xa0\x80"}.get(kind, b"") + buf.getvalue().encode()
        starts.append((out.tell(), kind, fields))
        out.write(row if kind != "blank" else b"\r\n")
    data = out.getvalue()
    for offset, kind, fields in starts:
        line = 1 + len(re.findall(rb"\r\n|\r|\n", data[:offset]))  # what a newline="" text stream counts
        if kind in ("short", "invalid", "surrogate"):
            plan.bad.add(line)
        elif kind != "blank":
            plan.docs[line] = fields[1]
    return data, plan


# -- Parquet: records numbered by row


PARQUET_CELLS = [lambda rng: None, lambda rng: "", lambda rng: "NUL \x00", text, text, lambda rng: text(rng, 5000)]


def parquet_file(rng: random.Random, rows: int) -> tuple[bytes, Planned]:
    kind = rng.choice(["good", "good", "int", "list", "header", "header", "random", "truncated", "garbage", "empty"])
    texts = [rng.choice(PARQUET_CELLS)(rng) for _ in range(rows)]
    column = {"int": pa.array(range(rows)), "list": pa.array([[t] for t in texts])}.get(kind, pa.array(texts, pa.string()))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": column, "n": range(rows)}), sink, row_group_size=rng.randint(10, 60),
                   compression=rng.choice(["snappy", "none"]))
    data = bytearray(sink.getvalue().to_pybytes())
    plan = Planned(damaged=kind == "header", loose=kind == "random")
    for row, t in enumerate(texts, start=1):
        if kind in ("int", "list") or t is None:
            plan.bad.add(row)
        else:
            plan.docs[row] = t
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    if kind == "header":  # one row group's page header clobbered, the footer intact
        start = meta.row_group(rng.randrange(meta.num_row_groups)).column(0).data_page_offset
        data[start:start + 32] = b"\xff" * 32
    elif kind == "random":  # bytes flipped anywhere before the footer
        for _ in range(20):
            data[rng.randrange(4, len(data) - meta.serialized_size - 8)] = rng.randrange(256)
    elif kind in ("truncated", "garbage", "empty"):
        data = {"truncated": data[: rng.randrange(len(data) - 8)], "garbage": garbage(rng, 3000, nul=True), "empty": b""}[kind]
        plan = Planned(whole=True)
    return bytes(data), plan


# -- the corpus


def compress(rng: random.Random, data: bytes, plan: Planned) -> tuple[bytes, str]:
    """gzip or zstd, half of them truncated: the records before the cut are kept, the cut is one entry."""
    if rng.random() < 0.5:
        packed, suffix = gzip.compress(data, compresslevel=1), ".gz"
    else:
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write(data)
        packed, suffix = sink.getvalue().to_pybytes(), ".zst"
    if rng.random() < 0.5:
        packed, plan.damaged = packed[: rng.randrange(1, len(packed))], True
    return packed, suffix


def build(root: Path, rng: random.Random) -> dict[str, Planned]:
    """The fuzz corpus, one directory per source (named after the source); the plan of each file by its path."""
    plans: dict[str, Planned] = {}

    def add(source: str, name: str, data: bytes, plan: Planned, compressed: bool) -> None:
        if compressed:
            data, suffix = compress(rng, data, plan)
            name += suffix
        path = root / source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        plans[printable_path(str(path))] = plan

    jsonl_filler = Rec(json.dumps({"id": "filler", "text": FILLER}).encode(), FILLER, "filler")
    for i in range(24):
        huge = [Rec(json.dumps({"text": "huge " * 400_000}).encode(), "huge " * 400_000)] if i == 1 else []
        data, plan = lines_file([Rec(BOM + jsonl_filler.line, FILLER)] + [jsonl_record(rng) for _ in range(150)] + huge)
        add("s", f"f{i:02d}.jsonl" if i else "caf\udce9.jsonl", data, plan, i % 4 == 3)  # f00: a name that is not UTF-8
    for i in range(10):
        seen = {"filler"}
        add("i", f"f{i:02d}.jsonl", *lines_file([jsonl_filler] + [jsonl_id_record(rng, seen) for _ in range(150)]), False)
    for i in range(24):
        huge = [Rec(b"w" * 2_000_000, "w" * 2_000_000)] if i == 1 else []
        data, plan = lines_file([Rec(FILLER.encode(), FILLER)] + [text_record(rng) for _ in range(150)] + huge)
        add("t", f"t{i:02d}.txt" if i else "\udcff.txt", data, plan, i % 4 == 3)
    for i in range(12):  # text_unit: file, each file one record
        lines = [r.line for r in (text_record(rng) for _ in range(20)) if i % 2 or r.fate is not None]  # even: valid UTF-8
        data = (BOM if i % 4 == 2 else b"") + FILLER.encode() + b"\n".join(lines)
        try:
            plan = Planned(docs={1: data.removeprefix(BOM).decode()})
        except UnicodeDecodeError:
            plan = Planned(bad={1})
        add("w", f"w{i:02d}.txt", data, plan, i % 3 == 2)
    for i in range(20):
        add("c", f"c{i:02d}.csv", *csv_file(rng, 130), i % 4 == 3)
    for i in range(24):
        add("p", f"p{i:02d}.parquet", *parquet_file(rng, PARQUET_ROWS), False)
    for source, ext in [("s", "jsonl"), ("t", "txt"), ("c", "csv")]:  # whole files: binary garbage, UTF-16, empty
        add(source, f"zz-garbage.{ext}", garbage(rng, 20_000, nul=True), Planned(whole=True), False)
        add(source, f"zz-utf16.{ext}", "text\nUTF-16 text\n".encode("utf-16"), Planned(whole=True), False)
        add(source, f"zz-empty.{ext}", b"", Planned(), False)
    return plans


def check(src: SourceConfig, unit: str, plan: Planned, part: PartDir) -> None:
    """Every record of the file is a document, a quarantine entry, or inside a damage entry's range."""
    where, summary = printable_path(unit), part.summary()
    docs = {r["id"]: r["text"] for f in summary["files"] for r in read_rows(part.path / f["path"], columns=["id", "text"])}
    entries = [json.loads(line) for line in (part.path / summary["quarantine"]).read_bytes().splitlines()] if summary["quarantine"] else []
    assert all(q["file"] == where for q in entries), where
    if plan.whole:
        assert not docs and [q["line"] for q in entries] == [None], where
        return
    lost, damage, top = set(), [q for q in entries if DAMAGE.match(q["error"])], max([*plan.docs, *plan.bad, 0])
    for q in damage:
        from_line, first, last = DAMAGE.match(q["error"]).groups()
        lost |= set(range(int(from_line), top + 1)) if from_line else set(range(int(first), int(last) + 1))
    name = Path(where).relative_to(src.path).as_posix()
    expected = {(f"{src.name}/{plan.own_ids[n]}" if src.id_field else f"{src.name}/{name}:{n}"): t
                for n, t in plan.docs.items() if n not in lost}
    singles = {q["line"] for q in entries if q not in damage}
    if plan.loose:  # every row kept or quarantined at most once, nothing invented
        rows = range(1, PARQUET_ROWS + 1)
        assert set(docs) <= {f"{src.name}/{name}:{n}" for n in rows} and singles <= set(rows), where
        return
    assert len(damage) == plan.damaged, (where, damage)
    assert docs == expected, where
    assert singles == plan.bad - lost, (where, sorted(singles ^ (plan.bad - lost))[:5])
    assert summary["ledger"]["rows_in"] == len(docs) + len(entries)


def test_fuzzed_inputs_never_crash_and_every_record_is_accounted_for(tmp_path):
    rng = random.Random(SEED)
    plans = build(tmp_path / "in", rng)
    records = sum(len(p.docs) + len(p.bad) + p.whole for p in plans.values())
    assert records >= MIN_RECORDS, records
    sources = [SourceConfig(name="s", format="jsonl", path=str(tmp_path / "in" / "s")),
               SourceConfig(name="i", format="jsonl", path=str(tmp_path / "in" / "i"), id_field="id"),
               SourceConfig(name="t", format="text", path=str(tmp_path / "in" / "t")),
               SourceConfig(name="w", format="text", path=str(tmp_path / "in" / "w"), text_unit="file"),
               SourceConfig(name="c", format="csv", path=str(tmp_path / "in" / "c")),
               SourceConfig(name="p", format="parquet", path=str(tmp_path / "in" / "p"))]
    cfg = IngestConfig(sources=sources)
    root = tmp_path / "data"
    stage = Ingest(cfg)
    manifest = run_local(stage, root, None)  # every input file of every source is a part
    for part in stage.plan():
        check(sources[part.source], part.input, plans.pop(printable_path(part.input)), PartDir(root, "ingest", part.key))
        assert manifest["parts"][part.name]["key"] == part.key
    assert not plans, f"files not listed as inputs: {sorted(plans)[:3]}"
    ledger = manifest["ledger"]
    assert ledger["rows_in"] == ledger["rows_out"] + sum(ledger["dropped"].values()) + ledger["quarantined"]
    merged = StageRef(str(root.resolve()), "ingest", manifest["key"]).path / HIDDEN_QUARANTINE
    assert merged.read_bytes().count(b"\n") == ledger["quarantined"]
