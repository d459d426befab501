"""Decoding a fine-tuned model over examples: rendered, encoded, generated in batches, decoded to text."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from llmcore.config import GenerationConfig
from llmcore.finetune.formats import Example, collate_prompts, collate_sources
from llmcore.finetune.spec import Finetuned, pad_id
from llmcore.generate import generate


@torch.no_grad()
def predict(ft: Finetuned, examples: Sequence[Example], generation: GenerationConfig, label: str | None = None) -> list[str]:
    """One output text per example, in order (special tokens dropped, surrounding spaces stripped). `label`: show a
    progress bar of that name on a terminal (beam search over a test split takes minutes on a CPU)."""
    model, encoder, cfg = ft.model, ft.encoder, ft.model.config
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    new_tokens = min(generation.max_new_tokens, ft.spec.max_target_length)
    pad = pad_id(model)
    outputs = []
    bar = tqdm(total=len(examples), desc=label, unit="example", dynamic_ncols=True, disable=None if label else True)
    try:
        for start in range(0, len(examples), generation.batch_size):
            batch = examples[start : start + generation.batch_size]
            if cfg.architecture == "encoder-decoder":
                inputs = collate_sources([encoder.seq2seq(ex)["input_ids"] for ex in batch], pad)
                skip = 1  # the decoder start token
            else:
                inputs = collate_prompts([encoder.prompt_ids(ex) for ex in batch], pad)
                skip = inputs["input_ids"].shape[1]
            inputs = {k: v.to(device) for k, v in inputs.items()}
            seq = generate(model, **inputs, max_new_tokens=new_tokens, num_beams=generation.num_beams,
                           length_penalty=generation.length_penalty, no_repeat_ngram_size=generation.no_repeat_ngram_size,
                           min_new_tokens=generation.min_new_tokens, eos_token_id=cfg.eos_token_id, pad_token_id=pad)
            for row in seq[:, skip:].tolist():
                if cfg.eos_token_id in row:
                    row = row[: row.index(cfg.eos_token_id)]
                outputs.append(ft.tok.decode(row, skip_special_tokens=True).strip())
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return outputs
