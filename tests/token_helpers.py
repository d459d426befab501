"""Stage directories of the bundled sample's text, built the way the data flow builds them, without Prefect:
the token, tokenizer, loader, objective and training tests share them."""

from __future__ import annotations

import json
from pathlib import Path

from llmcore.config import TokenizeConfig, TokenizerConfig
from llmcore.data import tokens
from llmcore.data.stage import PartDir, assemble
from llmcore.data.stages import Tokenize, run_local
from llmcore.stage import StageRef

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"


def sample_texts(per_file: int | None = None) -> list[str]:
    """Texts of the bundled sample (real manual pages and copyright files in four languages)."""
    texts = []
    for path in sorted(SAMPLE.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()[:per_file]
        texts += [json.loads(line)["text"] for line in lines]
    return texts


def docs_stage(root: Path, texts: list[str], shard_rows: int = 200) -> Path:
    """A finished document stage (Parquet shards + manifest) holding `texts`."""
    part = PartDir(root, "docs", "p")
    writer = part.writer(shard_rows=shard_rows)
    for i, text in enumerate(texts):
        writer.keep({"id": f"sample/doc:{i}", "text": text, "source": "sample"})
    writer.finish()
    ref = StageRef(str(root), "docs", "k")
    assemble(ref, [("part-00000", "p")], {}, [], None)
    return ref.path


def token_stage(root: Path, texts: list[str], family: str = "gpt", vocab_size: int = 1000, sample_docs: int = 300,
                validation_fraction: float = 0.1, shard_rows: int = 200) -> Path:
    """Docs -> tokenizer -> tokenize, as the data flow chains them; returns the tokenize stage dir."""
    corpus = docs_stage(root, texts, shard_rows)
    tok_cfg = TokenizerConfig(family=family, vocab_size=vocab_size, sample_docs=sample_docs)
    tokenizer = StageRef(str(root), "tokenizer", family)
    tokens.tokenizer_stage(tokenizer, corpus, tok_cfg, [])
    manifest = run_local(Tokenize(TokenizeConfig(validation_fraction=validation_fraction), tokenizer), root,
                         StageRef.of(corpus / "manifest.json"))
    return StageRef(str(root), "tokenize", manifest["key"]).path
