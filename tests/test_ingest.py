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
from llmcore.data.stage import StageDir, read_rows

TEXTS = [
    "Language models learn the statistics of text from very large corpora of documents.",
    "Sprachmodelle lernen die Statistik von Texten aus sehr großen Sammlungen von Dokumenten.",
    "Les modèles de langue apprennent les statistiques du texte à partir de grands corpus.",
]


def ingest(tmp_path: Path, src: SourceConfig, **cfg) -> tuple[StageDir, list[dict]]:
    """Ingest every unit of `src` into a stage dir; returns the dir and the part summaries."""
    cfg = IngestConfig(sources=[src], **cfg)
    stage = StageDir(tmp_path / "data", "ingest", "k")
    summaries = [ingest_part(stage, f"part-{i:05d}", src, unit, cfg) for i, unit in enumerate(list_inputs(src, 0))]
    return stage, summaries


def docs(stage: StageDir, summaries: list[dict]) -> list[dict]:
    return [row for s in summaries for f in s["files"] for row in read_rows(stage.path / f["path"])]


def quarantined(stage: StageDir, summary: dict) -> list[dict]:
    return [json.loads(line) for line in (stage.path / summary["quarantine"]).read_text().splitlines()]


def test_jsonl_malformed_lines_are_quarantined_with_line_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": TEXTS[0]}), '{"text": "unterminated', "", json.dumps(["not", "an object"]),
             json.dumps({"body": "wrong field"}), json.dumps({"text": 42}), json.dumps({"text": TEXTS[1]})]
    path.write_text("\n".join(lines) + "\n")
    stage, [summary] = ingest(tmp_path, SourceConfig(name="web", format="jsonl", path=str(path)))
    assert [d["text"] for d in docs(stage, [summary])] == [TEXTS[0], TEXTS[1]]
    bad = quarantined(stage, summary)
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
    stage, summaries = ingest(tmp_path, SourceConfig(name="web", format="jsonl", path=str(path), id_field="doc"))
    assert [d["id"] for d in docs(stage, summaries)] == ["web/x1"]
    assert "no id in field 'doc'" in quarantined(stage, summaries[0])[0]["error"]


def test_invalid_utf8_quarantined_or_replaced(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps({"text": TEXTS[0]}).encode() + b'\n{"text": "caf\xe9 au lait"}\n')
    stage, [summary] = ingest(tmp_path / "q", SourceConfig(name="s", format="jsonl", path=str(path)))
    [bad] = quarantined(stage, summary)
    assert bad["line"] == 2 and "invalid UTF-8 at byte 13" in bad["error"] and "invalid_utf8: replace" in bad["error"]
    stage, summaries = ingest(tmp_path / "r", SourceConfig(name="s", format="jsonl", path=str(path)), invalid_utf8="replace")
    assert [d["text"] for d in docs(stage, summaries)][1] == "caf\ufffd au lait"


def test_empty_file_is_counted_not_fatal(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    stage, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(tmp_path / "empty.jsonl")))
    assert summary["ledger"]["rows_in"] == 0 and summary["info"]["empty_input"] is True


def test_missing_path_names_source_and_field(tmp_path):
    with pytest.raises(SourceError, match=r"source 's': .*nope\.jsonl does not exist .*fix data\.ingest\.sources\[0\]\.path"):
        list_inputs(SourceConfig(name="s", format="jsonl", path=str(tmp_path / "nope.jsonl")), 0)


def test_binary_file_is_quarantined_whole(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10)
    stage, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path)))
    [bad] = quarantined(stage, summary)
    assert bad["line"] is None and bad["error"].startswith("binary file (NUL byte at offset 8)")
    assert summary["ledger"] == {"rows_in": 1, "rows_out": 0, "dropped": {}, "quarantined": 1}


def test_20mb_single_line_document_goes_through_and_is_dropped_as_too_long(tmp_path):
    path = tmp_path / "huge.txt"
    word_soup = ("lorem ipsum dolor sit amet " * 800_000)[: 20 * 1024 * 1024]
    path.write_text(TEXTS[0] + "\n" + word_soup + "\n")
    stage, [summary] = ingest(tmp_path, SourceConfig(name="s", format="text", path=str(path)))
    assert summary["ledger"]["rows_out"] == 2
    cleaned = StageDir(tmp_path / "data", "clean", "k")
    shard = stage.path / summary["files"][0]["path"]
    result = clean_part(cleaned, "p", shard, CleanConfig())
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
    stage, [summary] = ingest(tmp_path, SourceConfig(name="c", format="csv", path=str(path), text_field="body", id_field="id"))
    assert [(d["id"], d["text"]) for d in docs(stage, [summary])] == [("c/a", TEXTS[0] + "\nsecond line"), ("c/b", TEXTS[1])]
    [bad] = quarantined(stage, summary)
    assert bad["line"] == 5 and "invalid UTF-8" in bad["error"]
    with pytest.raises(SourceError, match="no column 'text'"):
        ingest(tmp_path / "x", SourceConfig(name="c", format="csv", path=str(path)))


def test_parquet_and_damaged_parquet(tmp_path):
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": TEXTS, "n": [1, 2, 3]}), tmp_path / "pq" / "good.parquet")
    (tmp_path / "pq" / "damaged.parquet").write_bytes(b"PAR1 this is not really parquet")
    stage, summaries = ingest(tmp_path, SourceConfig(name="p", format="parquet", path=str(tmp_path / "pq")))
    assert [d["id"] for d in docs(stage, summaries)] == ["p/good.parquet:1", "p/good.parquet:2", "p/good.parquet:3"]
    [bad] = quarantined(stage, summaries[0])
    assert bad["file"].endswith("damaged.parquet") and bad["error"].startswith("unreadable Parquet file")


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(str(tmp_path / "ds"))
    stage, summaries = ingest(tmp_path, SourceConfig(name="hf", format="hf", path=str(tmp_path / "ds")))
    assert [(d["id"], d["text"]) for d in docs(stage, summaries)] == [(f"hf/train:{i}", t) for i, t in enumerate(TEXTS, 1)]


def test_shards_roll_over_and_summary_is_written_last(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": f"{TEXTS[0]} number {i}"}) + "\n" for i in range(25)))
    stage, [summary] = ingest(tmp_path, SourceConfig(name="s", format="jsonl", path=str(path)), shard_rows=10)
    assert [f["rows"] for f in summary["files"]] == [10, 10, 5]
    assert stage.done_part("part-00000") == summary
    assert not list(stage.path.rglob("*.tmp"))
