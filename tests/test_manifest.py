"""Files that llmpipe writes on a shared root: readable by the group the umask allows, keys and manifests
that any input file name can enter."""

from __future__ import annotations

import json
import os

from flows.data import input_fingerprint
from llmcore.manifest import atomic_write_json, stage_key


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
    fingerprint = input_fingerprint(str(tmp_path / "in"))
    assert "caf\\xe9.jsonl" in fingerprint
    assert stage_key("ingest", 2, {}, [fingerprint])  # encoded to UTF-8 for the hash: raised before
    json.dumps({"upstream": [fingerprint]}).encode("utf-8")  # as the manifest stores it
