"""Training one student (or recovering a pruned model) against a fine-tuned teacher: the task's examples
(or, for sequence-level KD, the teacher's own outputs over the training sources), the shared Trainer
with validation BLEU / ROUGE / token F1 from decoding, and at the end the best checkpoint exported as a
fine-tuned model directory `<run_dir>/model` (llmcore/finetune/spec.py), which loads, decodes, evaluates
and exports like the teacher.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from llmcore.config import FinetuneTaskConfig, GenerationConfig, KDConfig, StudentConfig, TrainConfig
from llmcore.distill.student import Distiller, build_student, student_config
from llmcore.finetune.formats import Example, task_examples
from llmcore.finetune.predict import predict
from llmcore.finetune.run import MODEL_DIR, export, task_trainer
from llmcore.finetune.spec import Finetuned, load_finetuned
from llmcore.model import Transformer
from llmcore.train.trainer import Callback

log = logging.getLogger("llmcore.distill")
SEQUENCE_FILE = "teacher_outputs.jsonl"


def teacher_outputs(teacher: Finetuned, examples: Sequence[Example], generation: GenerationConfig) -> list[dict]:
    """Sequence-level KD data: the teacher's decoding of each training example (id, source, reference, output)."""
    outputs = predict(teacher, examples, generation)
    return [{"id": ex.id, "source": ex.source, "reference": ex.target, "target": out} for ex, out in zip(examples, outputs)]


def with_teacher_targets(examples: Sequence[Example], rows: Iterable[dict]) -> list[Example]:
    """The examples with their targets replaced by the teacher's outputs (matched by id); examples the teacher
    left empty keep their reference."""
    by_id = {row["id"]: row["target"] for row in rows}
    missing = [ex.id for ex in examples if ex.id not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} training examples have no teacher output (e.g. {missing[0]}): the sequence-KD "
                         "data was made from other examples; delete it so that it is remade")
    return [dataclasses.replace(ex, target=by_id[ex.id]) if by_id[ex.id] else ex for ex in examples]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


@dataclass
class DistillJob:
    """One student of `teacher_dir` trained on `task`'s examples into `run_dir`. `start`: a model to train
    instead of a new student (a pruned copy of the teacher, with `masks` to hold its zeros)."""

    task: FinetuneTaskConfig
    teacher_dir: str
    run_dir: str
    student: StudentConfig | None = None
    train: TrainConfig | None = None        # default: the student's
    kd: KDConfig | None = None              # default: the student's
    sequence_data: str | None = None        # teacher_outputs JSONL, for kd.sequence
    start: Transformer | None = None
    masks: dict[str, torch.Tensor] | None = None


def hold_zeros(model: Transformer, masks: dict[str, torch.Tensor]) -> None:
    """Pruned weights stay zero while training: their gradients are masked, and AdamW (decoupled weight decay,
    moments that start at zero) then never moves them."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype))


def run(job: DistillJob, callbacks: Iterable[Callback] = ()) -> dict:
    """Train the student (or resume); returns a summary whose `model` is the exported model directory."""
    cfg, run_dir = job.task, Path(job.run_dir)
    kd = job.kd or job.student.kd
    train_cfg = job.train or job.student.train
    teacher = load_finetuned(job.teacher_dir)
    splits = task_examples(cfg)
    train_examples = splits["train"]
    if kd.sequence:
        if not job.sequence_data:
            raise ValueError("kd.sequence trains on the teacher's outputs: pass their file (teacher_outputs)")
        train_examples = with_teacher_targets(train_examples, read_jsonl(job.sequence_data))
    layers: dict = {}
    if job.start is not None:
        model = job.start
    else:
        s = job.student
        config = student_config(teacher.model.config, s.n_layers, s.n_decoder_layers, s.d_model, s.n_heads, s.d_ff, s.dropout)
        model, layers = build_student(teacher.model, config, s.init, train_cfg.seed)
    if job.masks:
        hold_zeros(model, job.masks)
    if kd.alpha or kd.hidden_weight:
        Distiller(teacher.model, kd.temperature, kd.alpha, kd.hidden_weight, kd.hidden_loss).attach(model)
    spec, tok = teacher.spec, teacher.tok
    info = {"task": cfg.task, "teacher": str(job.teacher_dir), "kd_alpha": kd.alpha, "temperature": kd.temperature,
            "sequence_kd": kd.sequence}
    trainer = task_trainer(Finetuned(model, tok, spec), cfg, train_cfg, run_dir, train_examples, splits["validation"],
                           callbacks, info, f"distill {run_dir.name}")
    summary = trainer.fit()
    chosen = Path(summary["best"] or summary["final"])
    export(chosen, run_dir / MODEL_DIR)
    return {**summary, "model": MODEL_DIR, "restored": str(chosen), "params": model.num_parameters(),
            "teacher_params": teacher.model.num_parameters(), "initialised_from": layers,
            "examples": {name: len(part) for name, part in splits.items()}, "sequence_kd": kd.sequence}
