"""What the evaluation tests share: small task files cut from the bundled sample, and fine-tuned model
directories (the llmcore/finetune/spec.py contract) with a finetune stage manifest beside them, built
here the way the finetune stage would: a tiny tokenizer with the task tokens, a tiny model trained a few
dozen steps on the task's examples."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch

from llmcore.config import FinetuneTaskConfig, TokenizerConfig
from llmcore.finetune import formats
from llmcore.finetune.spec import TaskSpec, make_encoder
from llmcore.manifest import MANIFEST, atomic_write_json
from llmcore.model import TransformerConfig, build_model, save
from llmcore.stage import content_key
from llmcore.tokenizer import TOKENIZER_FILE, special_ids, train_tokenizer, vocab_size

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample"
FILES = {"translation": SAMPLE / "parallel" / "en-de.jsonl", "summarization": SAMPLE / "summarization.jsonl",
         "dialogue": SAMPLE / "dialogue.jsonl"}


def task_config(tmp: Path, task: str, lines: int = 48, **fields) -> FinetuneTaskConfig:
    """A task on the first `lines` records of the bundled sample file, a quarter of them in the test split."""
    path = tmp / f"{task}.jsonl"
    with FILES[task].open() as fh:
        path.write_text("".join(itertools.islice(fh, lines)))
    langs = {"source_lang": "en", "target_lang": "de"} if task == "translation" else {}
    return FinetuneTaskConfig.model_validate({"name": f"{task[:5]}-test", "task": task, "path": str(path), **langs,
                                              "max_source_length": 32, "max_target_length": 24, "test_fraction": 0.25,
                                              **fields})


def finetuned_model(directory: Path, task_cfg: FinetuneTaskConfig, family: str = "gpt", steps: int = 0) -> Path:
    """A fine-tuned model directory; `steps` > 0 trains it on all the task's examples (test ones included,
    so its outputs resemble the references: a stand-in for a model that learnt the task)."""
    torch.manual_seed(0)
    examples = [ex for split in formats.task_examples(task_cfg).values() for ex in split]
    tok = train_tokenizer((text for ex in examples for text in formats.render(ex)),
                          TokenizerConfig(family=family, vocab_size=300, min_frequency=1))
    formats.add_task_tokens(tok, examples)
    ids = special_ids(tok, family)
    model = build_model(TransformerConfig(family=family, vocab_size=vocab_size(tok), d_model=32, n_heads=2, n_layers=2,
                                          max_seq_len=128, dropout=0.0, eos_token_id=ids["eos"], pad_token_id=ids["pad"]))
    spec = TaskSpec(task_cfg.task, task_cfg.max_source_length, task_cfg.max_target_length,
                    task_cfg.source_lang or "", task_cfg.target_lang or "")
    if steps:
        train(model, make_encoder(tok, model, spec), examples, steps)
    save(model.eval(), directory)
    tok.save(str(directory / TOKENIZER_FILE))
    spec.save(directory)
    return directory


def train(model, encoder: formats.Encoder, examples: list, steps: int, batch: int = 8) -> None:
    cfg = model.config
    seq2seq = cfg.architecture == "encoder-decoder"
    encoded = [encoder.seq2seq(ex) if seq2seq else encoder.causal(ex) for ex in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        rows = [encoded[(step * batch + i) % len(encoded)] for i in range(batch)]
        inputs = formats.collate_seq2seq(rows, cfg.pad_token_id, cfg.decoder_start_token_id) if seq2seq else \
            formats.collate_causal(rows, cfg.pad_token_id)
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def finetune_stage(root: Path, task_cfg: FinetuneTaskConfig, family: str = "gpt", steps: int = 0) -> Path:
    """`<root>/finetune/<key>/` as the finetune stage leaves it: the model in `model/`, the manifest last."""
    config = task_cfg.model_dump(mode="json")
    key = content_key("finetune", 1, {"task": config, "family": family, "steps": steps})
    stage = root / "finetune" / key
    finetuned_model(stage / "model", task_cfg, family, steps)
    atomic_write_json(stage / MANIFEST, {"stage": "finetune", "key": key, "name": task_cfg.name, "config": config,
                                         "model": "model"})
    return stage / MANIFEST


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
