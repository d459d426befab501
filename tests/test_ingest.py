"""Ingest on real files of every format, and every kind of bad input: counted, located, never lost."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmcore.config import CleanConfig, IngestConfig, SourceConfig
from llmcore.data.parts import clean_part, ingest_part
from llmcore.data.readers import SourceError, list_inputs
from llmcore.data.stage import HIDDEN_QUARANTINE, PartDir, assemble, read_rows
from llmcore.data.stages import Ingest
from llmcore.stage import StageRef

TEXTS = [
    "Language models learn the statistics of text from very large corpora of documents.",
    "Sprachmodelle lernen die Statistik von Texten aus sehr großen Sammlungen von Dokumenten.",
    "Les modèles de langue apprennent les statistiques du texte à partir de grands corpus.",
]


def ingest(tmp_path: Path, src: SourceConfig, **cfg) -> tuple[Path, list[dict]]:
    """Ingest every unit of `src` into its part, as the ingest stage plans them; returns the data root and the
    part summaries."""
    cfg = IngestConfig(sources=[src], **cfg)
    root = tmp_path / "data"
    summaries = [ingest_part(part_dir(root, p.key), src, p.input, cfg) for p in Ingest(cfg).plan()]
    return root, summaries


def part_dir(root: Path, key: str, stage: str = "ingest") -> PartDir:
    return PartDir(root, stage, key)


def docs(root: Path, summaries: list[dict]) -> list[dict]:
    return [row for s in summaries for f in s["files"] for row in read_rows(part_dir(root, s["part"]).path / f["path"])]


def quarantined(root: Path, summary: dict) -> list[dict]:
    return [json.loads(line) for line in (part_dir(root, summary["part"]).path / summary["quarantine"]).read_text().splitlines()]


def test_jsonl_malformed_lines_are_quarantined_with_line_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": TEXTS[0]}), '{"text": "unterminated', "", json.dumps(["not", "an object"]),
             json.dumps({"body": "wrong field"}), json.dumps({"text": 42}), json.dumps({"text": TEXTS[1]})]
    path.write_text("\n".join(lines) + "\n")
    root, [summary] = ingest(tmp_path, SourceConfig(name="web", format="jsonl", path=str(path)))
    assert [d["text"] for d in docs(root, [summary])] == [TEXTS[0], TEXTS[1]]
    bad = quarantined(root, summary)
    assert [(q["line"], q["error"].split(":")[0]) for q in bad] == [
        (2, "malformed JSON"), (4, "a JSON line must be an object"), (5, "no field 'text' (fields"),
        (6, "field 'text' is int, not a string")]
    assert base64.b64decode(bad[0]["raw_b64"]) == b'{"text": "unterminated\n'
    assert summary["ledger"] == {"rows_in": 6, "rows_out": 2, "dropped": {}, "quarantined": 4}


def test_ids_are_stable_and_name_file_and_line(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    src = SourceConfig(name="web", format="jsonl", path=str(tmp_path / "corpus"))
    first = [d["id"] for d in docs(*ingest(tmp_path / "one", src))]
    second = [d["id"] for d in docs(*ingest(tmp_path / "two", src))]
    assert first == second == ["web/a.jsonl:1", "web/a.jsonl:2", "web/a.jsonl:3"]


def test_own_id_field(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"doc": "x1", "text": TEXTS[0]}) + "\n" + json.dumps({"text": TEXTS[1]}) + "\n")
    root, summaries = ingest(tmp_path, SourceConfig(name="web", format="jsonl", path=str(path), id_field="doc"))
    assert [d["id"] for d in docs(root, summaries)] == ["web/x1"]
    assert "no id in field 'doc'" in quarantined(root, summaries[0])[0]["error"]


def test_invalid_utf8_quarantined_or_replaced(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps({"text": TEXTS[0]}).encode() + b'\n{"text": "caf\xe9 au lait"}\n')
    root, [summary] = ingest(tmp_path / "q", SourceConfig(name="s", format="jsonl", path=str(path)))
    [bad] = quarantined(root, summary)
    assert bad["line"] == 2 and "invalid UTF-8 at byte 13" in bad["error"] and "invalid_utf8: replace" in bad["error"]
    root, summaries = ingest(tmp_path / "r", SourceConfig(name="s", format="jsonl", path=str(path)), invalid_utf8="replace")
    assert [d["text"] for d in docs(root, summaries)][1] == "caf\ufffd au lait"


def test_empty_file_is_counted_not_fatal(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(tmp_path / "empty.jsonl")))
    assert summary["ledger"]["rows_in"] == 0 and summary["info"]["empty_input"] is True


def test_missing_path_names_source_and_field(tmp_path):
    with pytest.raises(SourceError, match=r"source 's': .*nope\.jsonl does not exist .*fix data\.ingest\.sources\[0\]\.path"):
        list_inputs(SourceConfig(name="s", format="jsonl", path=str(tmp_path / "nope.jsonl")), 0)


def test_binary_file_is_quarantined_whole(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10)
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path)))
    [bad] = quarantined(root, summary)
    assert bad["line"] is None and bad["error"].startswith("binary file (NUL byte at offset 8)")
    assert summary["ledger"] == {"rows_in": 1, "rows_out": 0, "dropped": {}, "quarantined": 1}


def test_20mb_single_line_document_goes_through_and_is_dropped_as_too_long(tmp_path):
    path = tmp_path / "huge.txt"
    word_soup = ("lorem ipsum dolor sit amet " * 800_000)[: 20 * 1024 * 1024]
    path.write_text(TEXTS[0] + "\n" + word_soup + "\n")
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="text", path=str(path)))
    assert summary["ledger"]["rows_out"] == 2
    cleaned = part_dir(root, "k", "clean")
    shard = part_dir(root, summary["part"]).path / summary["files"][0]["path"]
    result = clean_part(cleaned, shard, CleanConfig())
    assert result["ledger"] == {"rows_in": 2, "rows_out": 1, "dropped": {"too_long": 1}, "quarantined": 0}
    [rejected] = read_rows(cleaned.path / result["rejected"][0]["path"], columns=["id", "reason", "detail"])
    assert rejected == {"id": "s/huge.txt:2", "reason": "too_long", "detail": f"{len(word_soup.strip())} chars > 100000"}


def test_text_per_line_and_per_file(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text(TEXTS[0] + "\n\n" + TEXTS[1] + "\n")
    (tmp_path / "t" / "b.txt").write_text(TEXTS[2])
    src = SourceConfig(name="t", format="text", path=str(tmp_path / "t"))
    assert [d["id"] for d in docs(*ingest(tmp_path / "l", src))] == ["t/a.txt:1", "t/a.txt:3", "t/b.txt:1"]
    per_file = src.model_copy(update={"text_unit": "file"})
    texts = [d["text"] for d in docs(*ingest(tmp_path / "f", per_file))]
    assert texts == [TEXTS[0] + "\n\n" + TEXTS[1] + "\n", TEXTS[2]]


def test_csv_with_quoted_newlines_and_bad_bytes(tmp_path):
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "body"])
        writer.writerow(["a", TEXTS[0] + "\nsecond line"])
        writer.writerow(["b", TEXTS[1]])
    path.write_bytes(path.read_bytes() + b'c,"bad \xff byte"\r\n')
    root, [summary] = ingest(tmp_path, SourceConfig(name="c", format="csv", path=str(path), text_field="body", id_field="id"))
    assert [(d["id"], d["text"]) for d in docs(root, [summary])] == [("c/a", TEXTS[0] + "\nsecond line"), ("c/b", TEXTS[1])]
    [bad] = quarantined(root, summary)
    assert bad["line"] == 5 and "invalid UTF-8" in bad["error"]
    with pytest.raises(SourceError, match="no column 'text'"):
        ingest(tmp_path / "x", SourceConfig(name="c", format="csv", path=str(path)))


def test_parquet_and_damaged_parquet(tmp_path):
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": TEXTS, "n": [1, 2, 3]}), tmp_path / "pq" / "good.parquet")
    (tmp_path / "pq" / "damaged.parquet").write_bytes(b"PAR1 this is not really parquet")
    root, summaries = ingest(tmp_path, SourceConfig(name="p", format="parquet", path=str(tmp_path / "pq")))
    assert [d["id"] for d in docs(root, summaries)] == ["p/good.parquet:1", "p/good.parquet:2", "p/good.parquet:3"]
    [bad] = quarantined(root, summaries[0])
    assert bad["file"].endswith("damaged.parquet") and bad["error"].startswith("unreadable Parquet file")


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(str(tmp_path / "ds"))
    root, summaries = ingest(tmp_path, SourceConfig(name="hf", format="hf", path=str(tmp_path / "ds")))
    assert [(d["id"], d["text"]) for d in docs(root, summaries)] == [(f"hf/train:{i}", t) for i, t in enumerate(TEXTS, 1)]


def test_shards_roll_over_and_summary_is_written_last(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": f"{TEXTS[0]} number {i}"}) + "\n" for i in range(25)))
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path)), shard_rows=10)
    assert [f["rows"] for f in summary["files"]] == [10, 10, 5]
    assert part_dir(root, summary["part"]).summary() == summary
    assert [f["path"] for f in summary["files"]] == ["part-0000.parquet", "part-0001.parquet", "part-0002.parquet"]
    assert not list(root.rglob("*.tmp"))


def test_json_that_python_cannot_hold_is_quarantined_not_fatal(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"text": "x", "n": ' + b"7" * 5000 + b"}",
             b'{"text": "lone \\ud800 surrogate"}', b'{"doc": "\\udfff", "text": "x"}', json.dumps({"text": TEXTS[0]}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    src = SourceConfig(name="s", format="jsonl", path=str(path))
    root, [summary] = ingest(tmp_path / "q", src)
    assert [d["text"] for d in docs(root, [summary])] == ["x", TEXTS[0]]
    assert [(q["line"], q["error"][:30]) for q in quarantined(root, summary)] == [
        (1, "JSON nested too deeply for Pyt"), (2, "JSON integer over 4300 digits,"), (3, "field 'text' holds a lone surr")]
    root, [summary] = ingest(tmp_path / "r", src, invalid_utf8="replace")
    assert [d["text"] for d in docs(root, [summary])] == ["lone \ufffd surrogate", "x", TEXTS[0]]
    root, [summary] = ingest(tmp_path / "id", src.model_copy(update={"id_field": "doc"}))
    assert quarantined(root, summary)[3]["error"].startswith("field 'doc' holds a lone surrogate (U+DFFF)")


def test_parquet_damaged_mid_file_loses_only_its_row_group(tmp_path):
    path = tmp_path / "in.parquet"
    texts = [f"{TEXTS[i % 3]} {i}" for i in range(30)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=10)
    data = bytearray(path.read_bytes())
    start = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data[start:start + 64] = b"\xff" * 64  # the page header of row group 1; the footer stays intact
    path.write_bytes(bytes(data))
    root, [summary] = ingest(tmp_path, SourceConfig(name="p", format="parquet", path=str(path)))
    assert [d["text"] for d in docs(root, [summary])] == texts[:10] + texts[20:]
    [bad] = quarantined(root, summary)
    assert bad["line"] == 11 and bad["error"].startswith("damaged Parquet data, rows 11-20 (row group 1) lost")


def test_non_utf8_file_name_is_read_with_an_escaped_name(tmp_path):
    import os

    (tmp_path / "in").mkdir()
    with open(os.fsencode(tmp_path / "in") + b"/caf\xe9.jsonl", "wb") as fh:
        fh.write(json.dumps({"text": TEXTS[0]}).encode() + b"\n{broken\n")
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(tmp_path / "in")))
    assert [d["id"] for d in docs(root, [summary])] == ["s/caf\\xe9.jsonl:1"]
    [bad] = quarantined(root, summary)
    assert bad["file"] == summary["info"]["input"] == str(tmp_path / "in" / "caf\\xe9.jsonl") and bad["line"] == 2


def test_utf8_bom_at_file_start_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "in.jsonl").write_bytes(bom + json.dumps({"text": TEXTS[0]}).encode() + b"\n")
    (tmp_path / "in.txt").write_bytes(bom + TEXTS[1].encode() + b"\n")
    (tmp_path / "in.csv").write_bytes(bom + b"text\r\n" + TEXTS[2].encode() + b"\r\n")
    for name, fmt, text in [("in.jsonl", "jsonl", TEXTS[0]), ("in.txt", "text", TEXTS[1]), ("in.csv", "csv", TEXTS[2])]:
        root, [summary] = ingest(tmp_path / fmt, SourceConfig(name="s", format=fmt, path=str(tmp_path / name)))
        assert [d["text"] for d in docs(root, [summary])] == [text] and summary["ledger"]["quarantined"] == 0
    per_file = SourceConfig(name="s", format="text", path=str(tmp_path / "in.txt"), text_unit="file")
    assert [d["text"] for d in docs(*ingest(tmp_path / "file", per_file))] == [TEXTS[1] + "\n"]


def test_csv_records_are_numbered_by_their_first_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b'text\n"two\nlines"\n\n"three\nmore\nlines"\nafter a blank\n"bad \xff"\n')
    root, [summary] = ingest(tmp_path, SourceConfig(name="c", format="csv", path=str(path)))
    assert [d["id"] for d in docs(root, [summary])] == ["c/in.csv:2", "c/in.csv:5", "c/in.csv:8"]
    assert [q["line"] for q in quarantined(root, summary)] == [9]


def test_compressed_inputs_are_read_transparently(tmp_path):
    import gzip

    (tmp_path / "c").mkdir()
    lines = [json.dumps({"text": t}).encode() + b"\n" for t in TEXTS]
    (tmp_path / "c" / "a.jsonl.gz").write_bytes(gzip.compress(b"".join(lines)))
    with pa.CompressedOutputStream(str(tmp_path / "c" / "b.jsonl.zst"), "zstd") as out:
        out.write(b"".join(lines))
    (tmp_path / "c" / "c.jsonl").write_bytes(gzip.compress(lines[0]))  # compressed without the suffix: told by its bytes
    root, summaries = ingest(tmp_path / "j", SourceConfig(name="s", format="jsonl", path=str(tmp_path / "c")))
    assert [d["id"] for d in docs(root, summaries)] == [f"s/{f}:{i}" for f in ("a.jsonl.gz", "b.jsonl.zst") for i in (1, 2, 3)] + [
        "s/c.jsonl:1"]
    assert [d["text"] for d in docs(root, summaries)] == TEXTS * 2 + TEXTS[:1]
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress("\n".join(TEXTS).encode()))
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(("text\n" + "\n".join(TEXTS) + "\n").encode()))
    for name, fmt in [("in.txt.gz", "text"), ("in.csv.gz", "csv")]:
        root, summaries = ingest(tmp_path / fmt, SourceConfig(name="s", format=fmt, path=str(tmp_path / name)))
        assert [d["text"] for d in docs(root, summaries)] == TEXTS


def test_truncated_gzip_keeps_the_lines_before_the_damage(tmp_path):
    import gzip
    import random

    rng = random.Random(0)  # incompressible text, so that the cut falls mid-file
    lines = [json.dumps({"text": "".join(rng.choice("abcdefghij ") for _ in range(300))}).encode() + b"\n" for _ in range(500)]
    packed = gzip.compress(b"".join(lines))
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path)))
    kept = [d["id"] for d in docs(root, [summary])]
    assert 100 < len(kept) < 400 and kept == [f"s/in.jsonl.gz:{i}" for i in range(1, len(kept) + 1)]
    [bad] = quarantined(root, summary)
    assert bad["line"] == len(kept) + 1 and bad["error"].startswith(f"damaged gzip data at line {len(kept) + 1}")


def test_duplicate_ids_in_a_source_are_quarantined(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"doc": d, "text": t}) + "\n" for d, t in [(1, TEXTS[0]), (2, TEXTS[1]), (1, TEXTS[2])]))
    root, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path), id_field="doc"))
    assert [d["id"] for d in docs(root, [summary])] == ["s/1", "s/2"]
    [bad] = quarantined(root, summary)
    assert bad["line"] == 3 and bad["error"].startswith("duplicate id '1' (first at line 1)")
    assert summary["ledger"] == {"rows_in": 3, "rows_out": 2, "dropped": {}, "quarantined": 1}


def test_two_sources_with_one_name_are_refused():
    web = SourceConfig(name="web", format="jsonl", path="a.jsonl")
    with pytest.raises(ValueError, match="two sources are named 'web'"):
        IngestConfig(sources=[web, SourceConfig(name="wiki", format="jsonl", path="b.jsonl"), web.model_copy(update={"path": "c.jsonl"})])


def test_quarantine_is_streamed_to_disk_not_held_in_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "in.jsonl"
    path.write_text("".join('{"text": "' + "unterminated " * 150 + "\n" for _ in range(5000)))  # 10 MB of bad lines
    src = SourceConfig(name="s", format="jsonl", path=str(path))
    root = tmp_path / "data"
    stage = StageRef(str(root), "ingest", "k")
    tracemalloc.start()
    try:
        summaries = [ingest_part(part_dir(root, f"p{i}"), src, str(path), IngestConfig(sources=[src])) for i in range(2)]
        assemble(stage, [("part-00000", "p0"), ("part-00001", "p1")], {}, [], None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    merged = (stage.path / HIDDEN_QUARANTINE).read_bytes()
    parts = [part_dir(root, s["part"]).path / s["quarantine"] for s in summaries]
    assert merged == b"".join(p.read_bytes() for p in parts) and merged.count(b"\n") == 10_000
    assert not list(root.rglob("*.tmp"))
