"""Files that llmpipe writes on a shared root: readable by the group the umask allows, keys and manifests
that any input file name can enter."""

from __future__ import annotations

import json
import os

from llmcore.config import IngestConfig, SourceConfig
from llmcore.data.stages import Ingest
from llmcore.manifest import atomic_write_json


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)  # a shared root's group may read, others not
    try:
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})  # mkstemp alone makes 0600 files
    finally:
        os.umask(old)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o640


def test_a_non_utf8_file_name_enters_the_ingest_key_and_manifest(tmp_path):
    (tmp_path / "in").mkdir()
    with open(os.fsencode(tmp_path / "in") + b"/caf\xe9.jsonl", "wb") as fh:
        fh.write(b'{"text": "x"}\n')
    src = SourceConfig(name="s", format="jsonl", path=str(tmp_path / "in"))
    [part] = Ingest(IngestConfig(sources=[src])).plan()  # the key hashes the file's name and bytes: raised before
    assert len(part.key) == 16
    json.dumps({"input": part.input}).encode("utf-8")  # as the manifest stores it
