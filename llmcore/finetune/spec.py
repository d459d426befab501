"""The fine-tuned model directory: an llmcore checkpoint (`config.json` + `model.safetensors` +
`tokenizer.json`, the task tokens added) plus `finetune.json`, the task spec that says how examples
become token ids. Everything that decodes with a fine-tuned model (validation metrics, evaluation,
back-translation) loads it through `load_finetuned`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tokenizers import Tokenizer

from llmcore.finetune.formats import Encoder, Example, collate_causal, collate_seq2seq
from llmcore.manifest import atomic_write_json
from llmcore.model import Transformer
from llmcore.model.io import load
from llmcore.tokenizer import TOKENIZER_FILE

SPEC_FILE = "finetune.json"


@dataclass(frozen=True)
class TaskSpec:
    task: str  # translation | summarization | dialogue
    max_source_length: int
    max_target_length: int
    source_lang: str = ""
    target_lang: str = ""

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_FILE
        atomic_write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TaskSpec:
        path = Path(directory) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a fine-tuned model directory (no {SPEC_FILE}); point at a finetune "
                                    "stage's model directory")
        return cls(**json.loads(path.read_text()))


def make_encoder(tok: Tokenizer, model: Transformer, spec: TaskSpec) -> Encoder:
    """Encoder-decoders end their sources in eos (T5's habit); decoder-only prompts end in <sep>."""
    cfg = model.config
    return Encoder(tok, cfg.eos_token_id, spec.max_source_length, spec.max_target_length,
                   source_eos=cfg.architecture == "encoder-decoder")


def pad_id(model: Transformer) -> int:
    """The model's padding token: its pad token, else its eos (GPT-2 has no pad token)."""
    cfg = model.config
    return cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id


def teacher_forcing(model: Transformer, encoder: Encoder) -> tuple[Callable[[Example], dict], Callable[[Sequence[dict]], dict]]:
    """(encode one example, collate encoded rows into a batch with labels) for the model's architecture."""
    cfg, pad = model.config, pad_id(model)
    if cfg.architecture == "encoder-decoder":
        return encoder.seq2seq, lambda rows: collate_seq2seq(rows, pad, cfg.decoder_start_token_id)
    return encoder.causal, lambda rows: collate_causal(rows, pad)


@dataclass
class Finetuned:
    model: Transformer
    tok: Tokenizer
    spec: TaskSpec

    @property
    def encoder(self) -> Encoder:
        return make_encoder(self.tok, self.model, self.spec)


def load_finetuned(directory: str | Path, device: str | torch.device = "cpu") -> Finetuned:
    directory = Path(directory)
    spec = TaskSpec.load(directory)
    return Finetuned(load(directory, device).eval(), Tokenizer.from_file(str(directory / TOKENIZER_FILE)), spec)
