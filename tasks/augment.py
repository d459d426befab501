"""Prefect tasks of back-translation (the augment stage's global step): train or resume its translation models,
then translate the corpus's sentences into synthetic pairs and paraphrases. Only a run that back-translates
imports this module, and torch with it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from llmcore.augment import backtranslate as bt
from llmcore.config import BacktranslationConfig
from llmcore.finetune.run import MODEL_DIR
from llmcore.locks import once
from llmcore.manifest import atomic_write_json
from llmcore.train.checks import TrainConfigError
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless


# A refused configuration or a NaN loss would fail the same way again; a crash resumes from a checkpoint.
@task(name="augment-model", task_run_name="augment-model-{kind}",
      **{**STAGE_TASK, "cache_key_fn": lambda c, p: f"augment-model-{p['key']}-{p['kind']}",
         "retry_condition_fn": retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss)})
def augment_model(out_dir: str, key: str, kind: str, cfg: BacktranslationConfig) -> str:
    """Train (or resume) the `kind` model ("reverse" or "forward") of back-translation; returns its model directory."""
    run_dir = Path(out_dir) / kind
    marker = run_dir / bt.TRAINED
    if not marker.exists():
        maybe_fail("augment")
        once(marker, lambda: bt.train_model(bt.direction(cfg, kind), run_dir))  # an overlapping run waits
    return str(run_dir / MODEL_DIR)


@task(name="augment-translate", task_run_name="augment-translate",
      **{**STAGE_TASK, "cache_key_fn": lambda c, p: f"augment-translate-{p['key']}"})
def translate(out_dir: str, key: str, shards: list[str], cfg: BacktranslationConfig, reverse: str, forward: str | None) -> str:
    """Synthetic pairs (and paraphrases with a forward model) in `out_dir`; returns the summary's path."""
    summary = Path(out_dir) / bt.TRANSLATED
    if not summary.exists():
        maybe_fail("augment")
        once(summary, lambda: atomic_write_json(summary, bt.backtranslate(out_dir, shards, cfg, reverse, forward)))
    get_run_logger().info("back-translation: %s", summary.read_text())
    return str(summary)
