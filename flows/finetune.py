"""The fine-tune flow: each downstream task of the config fine-tuned in turn from the pipeline's pretrained
checkpoint (or the checkpoint the task names), translation tasks optionally with back-translated pairs from
the augment stage. Returns the finetune manifests' paths, one per task, in config order.

A task's stage key hashes its config, its examples file, and what it starts from (the pretrain stage key,
or the files of the checkpoint directory it names) and mixes in (the augment stage key), so a rerun reuses
every finished model and a changed task retrains that task alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, get_run_logger

from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import FinetuneTaskConfig
from llmcore.finetune.run import VERSION
from llmcore.housekeeping import point
from llmcore.manifest import file_sha256
from llmcore.stage import StageRef, content_key, key_config
from tasks.common import bind
from tasks.finetune import finetune_task


def _manifest(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


def pretrained_checkpoint(pretrain_manifest: str) -> str:
    """The pretrain run's best checkpoint (lowest validation loss), or its last one when it never evaluated."""
    manifest = _manifest(pretrain_manifest)
    return str(Path(pretrain_manifest).parent / (manifest["best"] or manifest["checkpoint"]))


def _inputs(cfg: FinetuneTaskConfig, pretrain: dict | None, augment: dict | None, augment_dir: Path | None) -> tuple[list[str], str | None]:
    """(upstream keys and file hashes for the stage key, the synthetic pairs file or None)."""
    upstream = [file_sha256(cfg.path)]
    if cfg.init == "pretrained":
        if pretrain is None:
            raise ValueError(f"finetune task {cfg.name!r} starts from the pretrained model but no pretrain stage ran")
        upstream.append(pretrain["key"])
    elif cfg.init != "scratch":
        upstream += [file_sha256(p) for p in sorted(Path(cfg.init).iterdir()) if p.is_file()]
    synthetic = None
    if cfg.synthetic_ratio and augment and augment.get("synthetic") and augment.get("pair") == [cfg.source_lang, cfg.target_lang]:
        synthetic = str(augment_dir / augment["synthetic"])
        upstream.append(augment["key"])
    return upstream, synthetic


@flow(name="finetune", persist_result=True, result_serializer="json")
def finetune_flow(tasks: list[FinetuneTaskConfig], pretrain_manifest: str | None = None, augment_manifest: str | None = None,
                  data_root: str = DEFAULT_DATA_ROOT) -> list[str]:
    """Fine-tune every task; returns their finetune manifests' paths."""
    root, logger = os.path.abspath(data_root), get_run_logger()
    pretrain, augment = _manifest(pretrain_manifest), _manifest(augment_manifest)
    init_dir = pretrained_checkpoint(pretrain_manifest) if pretrain_manifest else None
    augment_dir = Path(augment_manifest).parent if augment_manifest else None
    paths = []
    for cfg in tasks:  # one at a time: each trains on every core
        upstream, synthetic = _inputs(cfg, pretrain, augment, augment_dir)
        key = content_key("finetune", VERSION, key_config(cfg), upstream)
        start = init_dir if cfg.init == "pretrained" else None
        path = bind(finetune_task, root)(root, "finetune", key, cfg.name, cfg, start, synthetic, upstream)
        point(StageRef(root, "finetune", key))
        point(StageRef(root, "finetune", key), cfg.name)  # finetune/<task name>: the task's latest model
        manifest = _manifest(path)
        logger.info("%s: %s (validation %s)", cfg.name, Path(path).parent / manifest["model"],
                    {k: round(v, 3) for k, v in manifest["validation"].items() if isinstance(v, float)})
        paths.append(path)
    return paths
