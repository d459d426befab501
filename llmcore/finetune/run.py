"""Fine-tuning one downstream task: its examples, a model to start from (the pipeline's pretrained
checkpoint, an imported Hugging Face / llmcore checkpoint directory, or a new model with a tokenizer
trained on the task's texts), frozen parts and per-group learning rates, the shared Trainer with
validation metrics from decoding, and at the end the best checkpoint by the early-stopping metric
exported as a fine-tuned model directory (spec.py): `<run_dir>/model`.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer

from llmcore.config import FinetuneTaskConfig, GenerationConfig, PretrainConfig, TokenizerConfig, TrainConfig
from llmcore.finetune.batches import ExampleBatches, batched
from llmcore.finetune.evaluate import score
from llmcore.finetune.formats import Example, add_task_tokens, load_translation, render, task_examples
from llmcore.finetune.model import freeze, grow_vocab, set_dropout
from llmcore.finetune.predict import predict
from llmcore.finetune.spec import SPEC_FILE, Finetuned, TaskSpec, teacher_forcing
from llmcore.model import Transformer, build_model
from llmcore.model.io import load
from llmcore.tokenizer import TOKENIZER_FILE, special_ids, train_tokenizer, vocab_size
from llmcore.train.checks import TrainConfigError
from llmcore.train.pretrain import model_config
from llmcore.train.trainer import Callback, Trainer

log = logging.getLogger("llmcore.finetune")
MODEL_DIR = "model"
VERSION = 1  # part of the finetune stage key: bump when fine-tuning changes what a config produces

# What decoding the validation examples measures, per task; early stopping may use any of these or val_loss.
TASK_METRICS = {"translation": ("bleu", "chrf"), "summarization": ("rouge1", "rouge2", "rougeL"),
                "dialogue": ("token_f1", "distinct1", "distinct2")}


@dataclass
class ValidationScores:
    """The Trainer's evaluator: decodes the validation examples and scores them."""

    tok: Tokenizer
    spec: TaskSpec
    examples: Sequence[Example]
    generation: GenerationConfig

    @property
    def metrics(self) -> tuple[str, ...]:
        return TASK_METRICS[self.spec.task]

    def __call__(self, model: Transformer) -> dict[str, float]:
        outputs = predict(Finetuned(model, self.tok, self.spec), self.examples, self.generation)
        return score(self.spec.task, outputs, [ex.target for ex in self.examples])


@dataclass
class FinetuneJob:
    config: FinetuneTaskConfig
    run_dir: str
    init_dir: str | None = None   # init: pretrained: the pretrain checkpoint directory
    synthetic: str | None = None  # back-translated pairs (JSONL, the pairs' fields) mixed in at synthetic_ratio


def initial_model(job: FinetuneJob, train: Sequence[Example]) -> tuple[Transformer, Tokenizer]:
    cfg = job.config
    if cfg.init == "scratch":
        texts = [text for ex in train for text in render(ex)]
        tok = train_tokenizer(texts, TokenizerConfig(family=cfg.model.family, vocab_size=cfg.vocab_size), len(texts))
        described = {"family": cfg.model.family, "vocab_size": vocab_size(tok), "special_ids": special_ids(tok, cfg.model.family)}
        pretrain = PretrainConfig(model=cfg.model, block_size=cfg.max_source_length + cfg.max_target_length)
        torch.manual_seed(cfg.train.seed)  # torch seeds its default generator anew in each process
        model = build_model(model_config(pretrain, described))
        return model, tok
    directory = Path(job.init_dir if cfg.init == "pretrained" else cfg.init)
    if not (directory / TOKENIZER_FILE).is_file():
        raise TrainConfigError(f"{directory}: no {TOKENIZER_FILE} beside the model; fine-tuning needs the tokenizer the "
                               "model was trained with (save it into the checkpoint directory)")
    return load(directory), Tokenizer.from_file(str(directory / TOKENIZER_FILE))


def check_model(model: Transformer, cfg: FinetuneTaskConfig) -> None:
    mc = model.config
    if mc.architecture == "encoder":
        raise TrainConfigError(f"fine-tuning {cfg.name} needs a model that generates (gpt or t5 family); this one is a "
                               f"{mc.family} encoder: pretrain a gpt or t5 model, or set init to such a checkpoint")
    if mc.eos_token_id is None:
        raise TrainConfigError(f"the model of {cfg.name} has no eos_token_id in its config.json: generation could not stop")
    if mc.architecture == "decoder":
        length = cfg.max_source_length + cfg.max_target_length
    else:
        length = max(cfg.max_source_length, cfg.max_target_length)
    if mc.positions in ("learned", "sinusoidal") and length > mc.max_seq_len:
        raise TrainConfigError(f"{cfg.name}: examples of up to {length} tokens (max_source_length + max_target_length) "
                               f"exceed the model's {mc.max_seq_len} positions: lower the two lengths")


def synthetic_examples(job: FinetuneJob, n_train: int) -> list[Example]:
    cfg = job.config
    if not cfg.synthetic_ratio:
        return []
    if not job.synthetic:
        raise TrainConfigError(f"{cfg.name}: synthetic_ratio is set but no back-translated pairs were made: configure "
                               "data.augment.backtranslation for this language pair")
    pairs = load_translation(job.synthetic, cfg.source_lang, cfg.target_lang)
    wanted = min(len(pairs), round(cfg.synthetic_ratio * n_train))
    return random.Random(cfg.train.seed).sample(pairs, wanted)


def task_trainer(ft: Finetuned, cfg: FinetuneTaskConfig, t: TrainConfig, run_dir: Path, train_examples: list,
                 validation_examples: list, callbacks: Iterable[Callback], info: dict, label: str,
                 lr_scales: dict[str, float] | None = None) -> Trainer:
    """The Trainer of a task model on its examples (teacher-forced batches, BLEU / ROUGE / F1 on decoded validation
    examples), with the tokenizer and task spec saved into `run_dir` and every checkpoint."""
    encode, collate = teacher_forcing(ft.model, ft.encoder)
    train = ExampleBatches([encode(ex) for ex in train_examples], t.batch_size, collate, t.seed)
    validation = batched([encode(ex) for ex in validation_examples], t.batch_size, collate) or None
    evaluator = (ValidationScores(ft.tok, ft.spec, validation_examples[: cfg.validation_examples], cfg.generation)
                 if validation else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    ft.tok.save(str(run_dir / TOKENIZER_FILE))
    ft.spec.save(run_dir)
    return Trainer(ft.model, t, run_dir, train, validation, seq_len=cfg.max_source_length + cfg.max_target_length,
                   callbacks=callbacks, files={name: run_dir / name for name in (TOKENIZER_FILE, SPEC_FILE)},
                   info=info, evaluator=evaluator, lr_scales=lr_scales, label=label)


def run(job: FinetuneJob, callbacks: Iterable[Callback] = ()) -> dict:
    """Fine-tune (or resume); returns a summary whose `model` is the exported model directory."""
    cfg, t, run_dir = job.config, job.config.train, Path(job.run_dir)
    splits = task_examples(cfg)
    synthetic = synthetic_examples(job, len(splits["train"]))
    model, tok = initial_model(job, splits["train"])
    check_model(model, cfg)
    added = add_task_tokens(tok, [ex for part in splits.values() for ex in part])
    grow_vocab(model, vocab_size(tok))
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    frozen = freeze(model, cfg.freeze)
    spec = TaskSpec(cfg.task, cfg.max_source_length, cfg.max_target_length, cfg.source_lang or "", cfg.target_lang or "")
    trainer = task_trainer(Finetuned(model, tok, spec), cfg, t, run_dir, splits["train"] + synthetic, splits["validation"],
                           callbacks, {"task": cfg.task, "frozen": len(frozen)}, f"finetune {cfg.name}", cfg.lr_scales)
    summary = trainer.fit()
    chosen = Path(summary["best"] or summary["final"])
    export(chosen, run_dir / MODEL_DIR)
    return {**summary, "model": MODEL_DIR, "restored": str(chosen), "frozen": frozen, "added_tokens": added,
            "examples": {name: len(part) for name, part in splits.items()}, "synthetic": len(synthetic)}


def export(checkpoint_dir: Path, target: Path) -> None:
    """The model files of a checkpoint (not its trainer state) as the fine-tuned model directory, swapped in whole."""
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", TOKENIZER_FILE, SPEC_FILE):
        shutil.copyfile(checkpoint_dir / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
