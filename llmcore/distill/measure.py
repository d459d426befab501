"""Teacher, students and compressed models side by side on the same test examples: the task metric,
parameters, size on disk, and CPU generation speed (generated tokens per second, same examples, batch
and decoding settings for all)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open

from llmcore.config import EvaluateConfig, FinetuneTaskConfig, GenerationConfig, SpeedConfig
from llmcore.distill.compress import COMPRESSION_FILE, load_any, size_on_disk
from llmcore.finetune.evaluate import score, scored_examples
from llmcore.finetune.formats import Example, collate_prompts, collate_sources
from llmcore.finetune.spec import Finetuned, pad_id
from llmcore.generate import generate


@torch.no_grad()
def decode(ft: Finetuned, examples: Sequence[Example], generation: GenerationConfig) -> tuple[list[str], int, float]:
    """(output texts, generated tokens (up to and with eos), seconds spent generating) -- predict()'s decoding, timed."""
    model, encoder, cfg = ft.model, ft.encoder, ft.model.config
    new_tokens = min(generation.max_new_tokens, ft.spec.max_target_length)
    pad = pad_id(model)
    outputs, tokens, seconds = [], 0, 0.0
    for start in range(0, len(examples), generation.batch_size):
        batch = examples[start : start + generation.batch_size]
        if cfg.architecture == "encoder-decoder":
            inputs, skip = collate_sources([encoder.seq2seq(ex)["input_ids"] for ex in batch], pad), 1
        else:
            inputs = collate_prompts([encoder.prompt_ids(ex) for ex in batch], pad)
            skip = inputs["input_ids"].shape[1]
        started = time.perf_counter()
        seq = generate(model, **inputs, max_new_tokens=new_tokens, num_beams=generation.num_beams,
                       length_penalty=generation.length_penalty, no_repeat_ngram_size=generation.no_repeat_ngram_size,
                       min_new_tokens=generation.min_new_tokens, eos_token_id=cfg.eos_token_id, pad_token_id=pad)
        seconds += time.perf_counter() - started
        for row in seq[:, skip:].tolist():
            if cfg.eos_token_id in row:
                row = row[: row.index(cfg.eos_token_id) + 1]
            tokens += len(row)
            outputs.append(ft.tok.decode(row, skip_special_tokens=True).strip())
    return outputs, tokens, seconds


def parameters(directory: Path) -> int:
    """Weights stored (int8 ones counted once, their scales not; a tied head once)."""
    with safe_open(directory / "model.safetensors", "pt") as f:
        return sum(_numel(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith("weight_scale"))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def compare(models: dict[str, str | Path], task_cfg: FinetuneTaskConfig, cfg: EvaluateConfig, speed: SpeedConfig) -> list[dict]:
    """One row per model (name -> model directory): metrics on the test examples (all, or cfg.max_examples),
    parameters, size on disk, CPU tokens/s on the first `speed.examples` of them; ratios against the first model."""
    examples, _ = scored_examples(task_cfg, cfg.max_examples)
    references = [ex.target for ex in examples]
    timed = examples[: speed.examples]
    threads = torch.get_num_threads()
    if speed.threads:
        torch.set_num_threads(speed.threads)
    rows, loaded = [], {}
    try:
        for name, directory in models.items():
            directory = Path(directory)
            loaded[name] = load_any(directory, "cpu")
            outputs, _, _ = decode(loaded[name], examples, cfg.generation)
            info = directory / COMPRESSION_FILE
            method = json.loads(info.read_text())["method"] if info.is_file() else "fp32"
            rows.append({"model": name, "kind": method, "params": parameters(directory), "size_mb": size_on_disk(directory) / 1e6,
                         "tokens_per_s": 0.0, **score(task_cfg.task, outputs, references), "path": str(directory)})
        for _ in range(speed.repeats):  # in rounds, so that a busy spell of the machine slows every model alike
            for row in rows:
                _, tokens, seconds = decode(loaded[row["model"]], timed, cfg.generation)
                row["tokens_per_s"] = max(row["tokens_per_s"], tokens / seconds)
    finally:
        torch.set_num_threads(threads)
    base = rows[0]
    for row in rows:
        row["params_ratio"] = row["params"] / base["params"]
        row["size_ratio"] = base["size_mb"] / row["size_mb"]  # how many times smaller
        row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
    return rows
