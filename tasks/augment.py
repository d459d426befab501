"""Prefect tasks of the augment stage: the translation models, one back-translation step, a part per shard.

Each caches on the stage key and its own step, and finds its output on disk first. A model trains in
a run directory inside the stage directory, so a retry resumes from its latest checkpoint; the
translations are written once (`translate.json` marks them done), so a rerun never translates again.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from llmcore.augment import backtranslate as bt
from llmcore.augment import parts
from llmcore.config import AugmentConfig, BacktranslationConfig
from llmcore.data.stage import StageDir
from llmcore.finetune.run import MODEL_DIR
from llmcore.locks import once
from llmcore.manifest import atomic_write_json
from llmcore.train.checks import TrainConfigError
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless
from tasks.data import run_part

VERSION = 1  # part of the stage key: bump when the stage's output changes meaning
TRANSLATED = "translate.json"
# A refused configuration or a NaN loss would fail the same way again; a crash resumes from a checkpoint.
_MODEL_TASK = {**STAGE_TASK, "retry_condition_fn": retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss)}


@task(name="augment-model", task_run_name="augment-model-{part}", **_MODEL_TASK)
def train_model(data_root: str, stage: str, key: str, part: str, cfg: BacktranslationConfig) -> str:
    """Train (or resume) the `part` model ("reverse" or "forward"); returns its model directory."""
    run_dir = StageDir(data_root, stage, key).path / part
    marker = run_dir / bt.TRAINED
    if not marker.exists():
        maybe_fail(stage)
        once(marker, lambda: bt.train_model(bt.direction(cfg, part), run_dir))  # an overlapping run waits
    return str(run_dir / MODEL_DIR)


@task(name="augment-translate", task_run_name="augment-translate", **STAGE_TASK)
def translate(data_root: str, stage: str, key: str, part: str, shards: list[str], cfg: BacktranslationConfig,
              reverse: str, forward: str | None) -> str:
    """Synthetic pairs (and paraphrases with a forward model) in the stage directory; returns the summary's path."""
    out_dir = StageDir(data_root, stage, key).path
    summary = out_dir / TRANSLATED
    if not summary.exists():
        maybe_fail(stage)
        once(summary, lambda: atomic_write_json(summary, bt.backtranslate(out_dir, shards, cfg, reverse, forward)))
    get_run_logger().info("back-translation: %s", summary.read_text())
    return str(summary)


@task(name="augment", task_run_name="augment-{part}", **STAGE_TASK)
def augment_part(data_root: str, stage: str, key: str, part: str, shard: str, cfg: AugmentConfig,
                 paraphrases: str | None) -> str:
    return run_part(data_root, stage, key, part, lambda d: parts.augment_part(d, part, Path(shard), cfg, paraphrases))
