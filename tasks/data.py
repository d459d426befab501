"""Prefect tasks of the data stages: one task run per input file or upstream shard.

Each returns the path of its part summary. A part already on disk is returned without work.
Bump a stage's VERSION when its code changes what it outputs: the version is part of the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.blocks.system import Secret

from llmcore.config import CleanConfig, IngestConfig, LanguageConfig, SourceConfig
from llmcore.data import parts
from llmcore.data.readers import SourceError, hf_token
from llmcore.data.stage import StageDir
from llmcore.locks import once
from tasks.common import STAGE_TASK, maybe_fail

VERSIONS = {"ingest": 2, "clean": 1, "language": 1}


def run_part(data_root: str, stage: str, key: str, part: str, work: Callable[[StageDir], object]) -> str:
    stage_dir = StageDir(data_root, stage, key)
    summary = stage_dir.summary_path(part)
    if not summary.exists():
        maybe_fail(stage)
        once(summary, lambda: work(stage_dir))  # an overlapping run writing this part waits, then reuses it
    return str(summary)


@task(name="ingest", task_run_name="ingest-{part}", **STAGE_TASK)
def ingest_part(data_root: str, stage: str, key: str, part: str, src: SourceConfig, unit: str, cfg: IngestConfig) -> str:
    def work(stage_dir: StageDir) -> dict:
        with hf_token(source_token(src)):  # resolved here, when it reads: never in a parameter, key or manifest
            return parts.ingest_part(stage_dir, part, src, unit, cfg)

    return run_part(data_root, stage, key, part, work)


def source_token(src: SourceConfig) -> str | None:
    """The token that the source's config names: an environment variable (token_env) or a Prefect Secret block (token_secret)."""
    if src.token_env:
        token = os.environ.get(src.token_env)
        if not token:
            raise SourceError(f"source {src.name!r}: environment variable {src.token_env} (token_env) is not set where "
                              "this task runs; set it there, or name a Prefect Secret block with token_secret")
        return token
    if src.token_secret:
        try:
            return Secret.load(src.token_secret).get()
        except ValueError as exc:  # no such block
            raise SourceError(f"source {src.name!r}: token_secret: {exc}; create the Secret block (prefect block "
                              "create secret) or fix the name") from None
    return None


@task(name="clean", task_run_name="clean-{part}", **STAGE_TASK)
def clean_part(data_root: str, stage: str, key: str, part: str, shard: str, cfg: CleanConfig) -> str:
    return run_part(data_root, stage, key, part, lambda d: parts.clean_part(d, part, Path(shard), cfg))


@task(name="language", task_run_name="language-{part}", **STAGE_TASK)
def language_part(data_root: str, stage: str, key: str, part: str, shard: str, cfg: LanguageConfig) -> str:
    return run_part(data_root, stage, key, part, lambda d: parts.language_part(d, part, Path(shard), cfg))
