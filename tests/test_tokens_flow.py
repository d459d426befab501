"""The token stages inside the data flow, on a real Prefect server: keys, manifests, and a shard rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.data import data_flow
from llmcore.config import DataConfig, IngestConfig, LanguageConfig, RunnerConfig, SourceConfig, TokenizerConfig
from llmcore.data.loader import TokenLoader
from llmcore.data.tokens import TokenShardError, split_totals
from llmcore.manifest import HIDDEN_MANIFEST, file_sha256
from llmcore.objectives import make_objective
from token_helpers import SAMPLE


@pytest.fixture
def config(tmp_path: Path) -> DataConfig:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(SAMPLE.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[:25]
        (corpus / path.name).write_text("".join(lines), encoding="utf-8")
    return DataConfig(
        ingest=IngestConfig(sources=[SourceConfig(name="sample", format="jsonl", path=str(corpus))], shard_rows=40),
        language=LanguageConfig(allowed=["en", "de", "fr", "es"], workers=1),
        tokenizer=TokenizerConfig(vocab_size=600, sample_docs=60),
        runner=RunnerConfig(workers=1),  # the language stage gives wrong answers on concurrent threads (reported)
    )


def test_the_data_flow_ends_in_token_shards_that_rebuild_after_damage(prefect_server, config, tmp_path):
    root = tmp_path / "data"
    paths = data_flow(config, str(root))
    manifests = [json.loads(Path(p).read_text()) for p in paths]
    *docs, tokenizer, tokenized = manifests
    assert [tokenizer["stage"], tokenized["stage"]] == ["tokenizer", "tokenize"]
    corpus = docs[-1]
    assert tokenizer["upstream"] == [corpus["key"]]
    assert tokenized["upstream"] == [corpus["key"]]
    assert tokenizer["ledger"]["rows_in"] == min(60, corpus["ledger"]["rows_out"])
    assert tokenized["ledger"]["rows_in"] == corpus["ledger"]["rows_out"] == tokenized["ledger"]["rows_out"]
    tok_file = root / "tokenizer" / tokenizer["key"] / "tokenizer.json"
    assert tokenized["tokenizer"]["sha256"] == file_sha256(tok_file)
    assert tokenized["tokenizer"]["key"] == tokenizer["key"]
    assert split_totals(tokenized)["train"]["tokens"] > 10_000

    stage = root / "tokenize" / tokenized["key"]
    clm = make_objective("clm", tokenized["tokenizer"], 64)
    before = next(TokenLoader(stage, clm, 4, seed=1))

    entry = next(f for f in tokenized["files"] if f["split"] == "train")
    shard = stage / entry["path"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TokenShardError) as err:
        TokenLoader(stage, clm, 4)
    # the advice, followed: delete the part and the stage manifest it names, rerun the data flow
    part = root / "tokenize" / "parts" / entry["part"]
    assert str(part) in str(err.value) and str(stage / HIDDEN_MANIFEST) in str(err.value)
    shutil.rmtree(part)
    (stage / HIDDEN_MANIFEST).unlink()
    assert data_flow(config, str(root)) == paths
    assert file_sha256(shard) == entry["sha256"]
    after = next(TokenLoader(stage, clm, 4, seed=1))
    assert all((before[k] == after[k]).all() for k in before)
