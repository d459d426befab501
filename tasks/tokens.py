"""Prefect tasks of the token stages: the tokenizer (one global task) and tokenize (one per shard)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from llmcore.config import TokenizeConfig, TokenizerConfig
from llmcore.data import tokens
from llmcore.data.stage import StageDir
from llmcore.locks import once
from llmcore.manifest import MANIFEST
from tasks.common import STAGE_TASK, maybe_fail
from tasks.data import run_part

VERSIONS = {"tokenizer": 1, "tokenize": 1}  # part of the stage keys: bump when an output changes meaning


@task(name="tokenizer", **STAGE_TASK)
def tokenizer_stage(
    data_root: str, stage: str, key: str, cfg: TokenizerConfig, corpus: str, upstream: list[str]
) -> str:
    """Train (or adopt) the tokenizer from the corpus stage directory `corpus`; returns the manifest path."""
    stage_dir = StageDir(data_root, stage, key)
    if stage_dir.manifest() is None:
        maybe_fail(stage)
        config = cfg.model_dump(mode="json")
        once(stage_dir.path / MANIFEST, lambda: tokens.tokenizer_stage(stage_dir, Path(corpus), cfg, config, upstream))
    return str(stage_dir.path / MANIFEST)


@task(name="tokenize", task_run_name="tokenize-{part}", **STAGE_TASK)
def tokenize_part(
    data_root: str, stage: str, key: str, part: str, shard: str, cfg: TokenizeConfig, tokenizer: str
) -> str:
    return run_part(data_root, stage, key, part, lambda d: tokens.tokenize_part(d, part, Path(shard), Path(tokenizer), cfg))
