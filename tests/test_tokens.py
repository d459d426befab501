"""The tokenize stage on real text: Arrow token shards, their manifest, the split, and refusing bad shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from llmcore.config import TokenizeConfig
from llmcore.data import tokens
from llmcore.data.stage import PartDir, read_rows
from llmcore.data.stages import Tokenize, run_local
from llmcore.manifest import HIDDEN_MANIFEST, file_sha256, read_manifest
from llmcore.stage import StageRef
from llmcore.tokenizer import load_tokenizer
from token_helpers import sample_texts, token_stage


@pytest.fixture(scope="module")
def gpt_stage(tmp_path_factory) -> Path:
    texts = sample_texts(120) + ["   "]  # whitespace only: byte-level BPE still has tokens for it
    return token_stage(tmp_path_factory.mktemp("gpt"), texts)


def test_token_shards_hold_each_document_as_the_tokenizer_encodes_it(gpt_stage):
    manifest = read_manifest(gpt_stage)
    ledger = manifest["ledger"]
    assert ledger["rows_in"] == ledger["rows_out"] == len(sample_texts(120)) + 1
    tok_dir = gpt_stage.parents[1] / "tokenizer" / "gpt"
    assert manifest["tokenizer"]["sha256"] == file_sha256(tok_dir / "tokenizer.json")
    tok = load_tokenizer(tok_dir)
    texts = {r["id"]: r["text"] for r in read_rows(gpt_stage.parents[1] / "docs" / "k" / "part-00000-0000.parquet")}
    checked = 0
    for entry in manifest["files"]:
        path = gpt_stage / entry["path"]
        assert entry["sha256"] == file_sha256(path) and entry["bytes"] == path.stat().st_size
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        assert table.schema.field("input_ids").type == pa.list_(pa.uint16())
        assert table.schema.metadata[b"llmpipe.tokenizer_sha256"].decode() == manifest["tokenizer"]["sha256"]
        assert table.num_rows == entry["rows"]
        assert sum(len(x) for x in table.column("input_ids").to_pylist()) == entry["tokens"]
        for doc_id, ids in zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist()):
            if doc_id in texts:
                assert ids == tok.encode(texts[doc_id], add_special_tokens=False).ids
                checked += 1
    assert checked == len(texts)


def test_split_follows_a_stable_hash_of_the_id(gpt_stage):
    manifest = read_manifest(gpt_stage)
    by_split = {s: set() for s in tokens.SPLITS}
    for entry in manifest["files"]:
        ids = pa.ipc.open_stream(pa.memory_map(str(gpt_stage / entry["path"]))).read_all().column("id").to_pylist()
        assert all(tokens.split_of(i, 0.1) == entry["split"] for i in ids)
        by_split[entry["split"]].update(ids)
    total = sum(len(v) for v in by_split.values())
    assert 0.05 < len(by_split["validation"]) / total < 0.15
    totals = tokens.split_totals(manifest)
    assert {s: totals[s]["docs"] for s in tokens.SPLITS} == {s: len(ids) for s, ids in by_split.items()}
    # the hash is of the id alone: another fraction moves documents only from train to validation
    assert {i for i in by_split["validation"] if tokens.split_of(i, 0.2) == "validation"} == by_split["validation"]


def test_shards_open_with_datasets(gpt_stage, tmp_path):
    import datasets

    manifest = read_manifest(gpt_stage)
    files = {s: [str(gpt_stage / f["path"]) for f in manifest["files"] if f["split"] == s] for s in tokens.SPLITS}
    first = next(f for f in manifest["files"] if f["split"] == "train")
    one = datasets.Dataset.from_file(str(gpt_stage / first["path"]))
    assert one.features["input_ids"].feature.dtype == "uint16"
    assert one.num_rows == first["rows"]
    loaded = datasets.load_dataset("arrow", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    totals = tokens.split_totals(manifest)
    assert {s: loaded[s].num_rows for s in tokens.SPLITS} == {s: totals[s]["docs"] for s in tokens.SPLITS}
    assert sum(len(x) for x in loaded["validation"]["input_ids"]) == totals["validation"]["tokens"]


def test_documents_without_tokens_are_dropped_with_a_reason(tmp_path):
    texts = sample_texts(30) + ["  \t  "]  # BERT's normaliser leaves nothing of it
    stage = token_stage(tmp_path, texts, family="bert", sample_docs=100)
    manifest = read_manifest(stage)
    assert manifest["ledger"]["rows_in"] == len(texts)
    assert manifest["ledger"]["dropped"] == {tokens.EMPTY: 1}
    assert manifest["ledger"]["rows_out"] == len(texts) - 1
    (rejected,) = [list(read_rows(stage / f["path"])) for f in manifest["rejected"]]
    assert [(r["id"], r["reason"]) for r in rejected] == [(f"sample/doc:{len(texts) - 1}", tokens.EMPTY)]


def test_large_vocabularies_use_uint32():
    assert tokens.token_dtype(65536) == np.uint16
    assert tokens.token_dtype(65537) == np.uint32
    assert tokens.shard_schema(np.dtype(np.uint32), "x").field("input_ids").type == pa.list_(pa.uint32())


def _break(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data) if how == "flip" else bytes(data[: len(data) // 2]))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_changed_shard_is_refused_with_rebuild_advice(tmp_path, how):
    stage = token_stage(tmp_path, sample_texts(40), shard_rows=60)
    entry = read_manifest(stage)["files"][0]
    tokens.open_split(stage, entry["split"])  # fine before
    _break(stage / entry["path"], how)
    with pytest.raises(tokens.TokenShardError) as err:
        tokens.open_split(stage, entry["split"])
    message = str(err.value)
    assert str(stage / entry["path"]) in message
    assert ("truncated" if how == "truncate" else "sha256") in message
    part = PartDir(tmp_path, "tokenize", entry["part"])
    assert f"delete the part {part.path} and {stage / HIDDEN_MANIFEST}, then rerun the data flow" in message
    assert "--refresh-cache" not in message
    if how == "flip":  # a same-size change is only seen by the checksum
        tokens.open_split(stage, entry["split"], verify="size")

    # the advice, followed: delete the part and the stage manifest, rerun the stage; only that part is redone
    others = {f["part"]: PartDir(tmp_path, "tokenize", f["part"]).summary_path.stat().st_mtime_ns
              for f in read_manifest(stage)["files"] if f["part"] != entry["part"]}
    assert others
    shutil.rmtree(part.path)
    (stage / HIDDEN_MANIFEST).unlink()
    tokenizer = StageRef(str(tmp_path), "tokenizer", "gpt")
    manifest = run_local(Tokenize(TokenizeConfig(validation_fraction=0.1), tokenizer), tmp_path,
                         StageRef(str(tmp_path), "docs", "k"))
    assert StageRef(str(tmp_path), "tokenize", manifest["key"]).path == stage  # the same stage directory
    assert file_sha256(stage / entry["path"]) == entry["sha256"]  # the same bytes again
    assert file_sha256(part.path / Path(entry["path"]).parent / "part.arrow") == entry["sha256"]
    assert {p: PartDir(tmp_path, "tokenize", p).summary_path.stat().st_mtime_ns for p in others} == others
    tokens.open_split(stage, entry["split"])
