"""The fine-tune task: one downstream task trained (or resumed) from the pretrained checkpoint, watched in
the Prefect UI like pretraining (progress, evaluation table with BLEU / ROUGE / token F1, loss curve).
A retry resumes from the run's latest checkpoint; a finished run is found on disk by its manifest."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task

from llmcore.config import FinetuneTaskConfig
from llmcore.finetune.formats import FormatError
from llmcore.finetune.run import MODEL_DIR, FinetuneJob, run
from llmcore.locks import once
from llmcore.manifest import MANIFEST, describe_file, relative_paths
from llmcore.stage import StageRef, key_config, write_manifest
from llmcore.train.checks import TrainConfigError
from llmcore.train.metrics_log import CURVE, METRICS, latest_by_step, read_events
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless
from tasks.train import Reporter

_worth_retrying = retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss, FormatError)


def artifact_label(name: str) -> str:
    """Prefect artifact keys take lower-case letters, digits and dashes only."""
    return "finetune-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())


def finetune_manifest(run_dir: Path, key: str, cfg: FinetuneTaskConfig, upstream: list[str], summary: dict) -> dict:
    """The finetune stage manifest: the exported model's files (sha256), the validation scores of the
    checkpoint it came from, and the run's summary."""
    model = run_dir / MODEL_DIR
    evals = latest_by_step(read_events(run_dir / METRICS)[0], "eval")
    restored = next((e for e in evals if e["step"] == summary["best_step"]), evals[-1] if evals else None)
    return write_manifest(
        StageRef(str(run_dir.parent.parent), run_dir.parent.name, key), key_config(cfg), upstream,
        [describe_file(p, run_dir, 0) for p in sorted(model.iterdir()) if p.is_file()],
        name=cfg.name, task=cfg.task, model=MODEL_DIR,
        validation={k: v for k, v in (restored or {}).items() if k not in ("event", "time")},
        metrics=METRICS, loss_curve=CURVE, tensorboard="tb", summary=relative_paths(summary, run_dir),
    )


@task(name="finetune", task_run_name="finetune-{name}", **{**STAGE_TASK, "retry_condition_fn": _worth_retrying})
def finetune_task(data_root: str, stage: str, key: str, name: str, cfg: FinetuneTaskConfig, init_dir: str | None,
                  synthetic: str | None, upstream: list[str]) -> str:
    """Fine-tune `cfg` (or resume it); returns the finetune manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            summary = run(FinetuneJob(cfg, str(run_dir), init_dir, synthetic), callbacks=[Reporter(run_dir, artifact_label(name))])
            finetune_manifest(run_dir, key, cfg, upstream, summary)

        once(run_dir / MANIFEST, work)  # an overlapping run waits, then finds the finished model
    return str(run_dir / MANIFEST)
