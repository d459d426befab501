"""The pretrain flow: token shards (a tokenize stage) + a PretrainConfig -> a checkpoint manifest.

The stage key hashes the config and the token stage's key, so a finished model is reused by any rerun,
and a retry of a crashed training task resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, get_run_logger

from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import PretrainConfig
from llmcore.manifest import stage_key
from tasks.common import bind
from tasks.train import VERSION, pretrain_task


@flow(name="pretrain", persist_result=True, result_serializer="json")
def pretrain_flow(config: PretrainConfig, tokens_manifest: str, data_root: str = DEFAULT_DATA_ROOT) -> str:
    """Pretrain on the tokenize stage whose manifest is `tokens_manifest`; returns the pretrain manifest's path."""
    root = os.path.abspath(data_root)
    tokens = json.loads(Path(tokens_manifest).read_text())
    tokens_dir = str(Path(tokens_manifest).parent)
    tokenizer_dir = str(Path(root, "tokenizer", tokens["tokenizer"]["key"]))
    key = stage_key("pretrain", VERSION, config.model_dump(mode="json"), [tokens["key"]])
    path = bind(pretrain_task, root)(root, "pretrain", key, config, tokens_dir, tokenizer_dir)
    manifest = json.loads(Path(path).read_text())
    get_run_logger().info("model: %s (best: %s)", Path(path).parent / manifest["checkpoint"], manifest["best"])
    return path
