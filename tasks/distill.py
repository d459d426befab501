"""The distill stage's tasks, watched in the Prefect UI like fine-tuning (progress, evaluation table, loss
curve per student):

- `teacher_outputs_task`: sequence-level KD data, the teacher's beam outputs over the task's training
  sources, `<data_root>/distill-data/<key>/teacher_outputs.jsonl` (reused by every student of that teacher
  and decoding);
- `student_task`: one student trained against the teacher, `<data_root>/distill/<key>/model`;
- `compress_task`: one compressed copy (int8, bf16, fp16, or pruned and fine-tuned), `<data_root>/distill/<key>/model`;
- `compare_task`: teacher, students and compressed models scored side by side,
  `<data_root>/compression/<key>/comparison.json`.

Each writes its manifest last and atomically; a rerun finds a finished one on disk, a retry resumes training
from the latest checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefect import task

from llmcore.config import CompressConfig, EvaluateConfig, FinetuneTaskConfig, GenerationConfig, SpeedConfig, StudentConfig
from llmcore.distill import compress
from llmcore.distill.measure import compare
from llmcore.distill.run import SEQUENCE_FILE, DistillJob, run, teacher_outputs
from llmcore.distill.student import StudentError
from llmcore.finetune.formats import FormatError, task_examples
from llmcore.finetune.run import MODEL_DIR
from llmcore.finetune.spec import load_finetuned
from llmcore.locks import once
from llmcore.manifest import MANIFEST, atomic_write, atomic_write_json, describe_file, relative_paths
from llmcore.model.io import load
from llmcore.stage import StageRef, key_config, write_manifest
from llmcore.train.checks import TrainConfigError
from llmcore.train.metrics_log import CURVE, METRICS, latest_by_step, read_events
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless
from tasks.train import Reporter

VERSION = 1  # part of the distill stage keys: bump when distillation or compression changes what a config produces
COMPARISON = "comparison.json"

_worth_retrying = retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss, FormatError, StudentError, compress.CompressionError)
OPTIONS = {**STAGE_TASK, "retry_condition_fn": _worth_retrying}


def artifact_label(name: str) -> str:
    """Prefect artifact keys take lower-case letters, digits and dashes only."""
    return "distill-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())


def distill_manifest(run_dir: Path, key: str, kind: str, name: str, task_cfg: FinetuneTaskConfig, config: dict,
                     upstream: list[str], summary: dict, source: str) -> dict:
    """The manifest of a student or compressed model, shaped as the finetune stage's (tasks/finetune.py): the
    model's files (sha256), the validation scores of the checkpoint it came from (trained models), and the
    summary; plus `kind` (student, int8, bf16, fp16, prune), `source` (the teacher, or the model compressed)
    and the task's config (what the side-by-side evaluation scores it on)."""
    model = run_dir / MODEL_DIR
    trained = (run_dir / METRICS).is_file()
    evals = latest_by_step(read_events(run_dir / METRICS)[0], "eval") if trained else []
    restored = next((e for e in evals if e["step"] == summary.get("best_step")), evals[-1] if evals else None)
    return write_manifest(
        StageRef(str(run_dir.parent.parent), run_dir.parent.name, key), config, upstream,
        [describe_file(p, run_dir, 0) for p in sorted(model.rglob("*")) if p.is_file()],
        name=name, task=task_cfg.task, model=MODEL_DIR, kind=kind, source=source, task_config=key_config(task_cfg),
        validation={k: v for k, v in (restored or {}).items() if k not in ("event", "time")},
        metrics=METRICS if trained else None, loss_curve=CURVE if trained else None, tensorboard="tb" if trained else None,
        summary=relative_paths(summary, run_dir),
    )


@task(name="distill-data", task_run_name="distill-data-{name}", **OPTIONS)
def teacher_outputs_task(data_root: str, stage: str, key: str, name: str, teacher_dir: str, task_cfg: FinetuneTaskConfig,
                         generation: GenerationConfig, upstream: list[str]) -> str:
    """The teacher's outputs over the task's training sources (sequence-level KD); returns the manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            rows = teacher_outputs(load_finetuned(teacher_dir), task_examples(task_cfg)["train"], generation)
            atomic_write(run_dir / SEQUENCE_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
            write_manifest(StageRef(data_root, stage, key), key_config(generation), upstream,
                           [describe_file(run_dir / SEQUENCE_FILE, run_dir, len(rows))], name=name, teacher=teacher_dir,
                           outputs=SEQUENCE_FILE)

        once(run_dir / MANIFEST, work)
    return str(run_dir / MANIFEST)


@task(name="distill-student", task_run_name="distill-{name}", **OPTIONS)
def student_task(data_root: str, stage: str, key: str, name: str, task_cfg: FinetuneTaskConfig, student: StudentConfig,
                 teacher_dir: str, sequence_data: str | None, upstream: list[str]) -> str:
    """Train one student (or resume it); returns its manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            job = DistillJob(task_cfg, teacher_dir, str(run_dir), student, sequence_data=sequence_data)
            summary = run(job, callbacks=[Reporter(run_dir, artifact_label(name))])
            distill_manifest(run_dir, key, "student", name, task_cfg, key_config(student), upstream, summary,
                           teacher_dir)

        once(run_dir / MANIFEST, work)
    return str(run_dir / MANIFEST)


@task(name="distill-compress", task_run_name="compress-{name}", **OPTIONS)
def compress_task(data_root: str, stage: str, key: str, name: str, method: str, source_dir: str, task_cfg: FinetuneTaskConfig,
                  cfg: CompressConfig, upstream: list[str]) -> str:
    """One compressed copy of the model in `source_dir`: method int8, bf16, fp16 or prune; returns its manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            target = run_dir / MODEL_DIR
            if method == "int8":
                compress.quantize_int8(source_dir, target)
                summary = {"model": MODEL_DIR}
            elif method in compress.HALF:
                compress.export_half(source_dir, target, method)
                summary = {"model": MODEL_DIR}
            elif method == "prune":
                summary = prune(run_dir, source_dir, task_cfg, cfg, name)
            else:
                raise compress.CompressionError(f"unknown compression {method!r}; use int8, bf16, fp16 or prune")
            distill_manifest(run_dir, key, method, name, task_cfg, key_config(cfg), upstream, summary, source_dir)

        once(run_dir / MANIFEST, work)
    return str(run_dir / MANIFEST)


def prune(run_dir: Path, source_dir: str, task_cfg: FinetuneTaskConfig, cfg: CompressConfig, name: str) -> dict:
    """Magnitude pruning to cfg.prune.sparsity, then recovery fine-tuning (distilled from the unpruned model)."""
    prune_cfg = cfg.prune
    model = load(source_dir)
    masks = compress.magnitude_masks(model, prune_cfg.sparsity)
    compress.apply_masks(model, masks)
    if prune_cfg.recovery is None:
        target = run_dir / MODEL_DIR
        compress.save_pruned(model, source_dir, target)
        return {"model": MODEL_DIR, "sparsity": compress.sparsity(model), "recovery_steps": 0}
    job = DistillJob(task_cfg, source_dir, str(run_dir), train=prune_cfg.recovery, kd=prune_cfg.kd, start=model, masks=masks)
    summary = run(job, callbacks=[Reporter(run_dir, artifact_label(name))])
    pruned = load(run_dir / MODEL_DIR)
    return {**summary, "sparsity": compress.sparsity(pruned)}


@task(name="compare", task_run_name="compare-{name}", **OPTIONS)
def compare_task(data_root: str, stage: str, key: str, name: str, models: dict[str, str], task_cfg: FinetuneTaskConfig,
                 cfg: EvaluateConfig, speed: SpeedConfig, upstream: list[str]) -> str:
    """Teacher, students and compressed models on the same test examples; returns the manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            rows = compare(models, task_cfg, cfg, speed)
            atomic_write_json(run_dir / COMPARISON, {"task": task_cfg.name, "metric": _metric(task_cfg.task), "rows": rows})
            write_manifest(StageRef(data_root, stage, key), {"evaluate": key_config(cfg), "speed": key_config(speed)},
                           upstream, [describe_file(run_dir / COMPARISON, run_dir, len(rows))], name=name, models=models,
                           results=COMPARISON)

        once(run_dir / MANIFEST, work)
    return str(run_dir / MANIFEST)


def _metric(task: str) -> str:
    return {"translation": "bleu", "summarization": "rougeL", "dialogue": "token_f1"}[task]
