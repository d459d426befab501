"""Scoring a fine-tuned model on its task's test split, beside the task's trivial baseline.

- translation: BLEU, chrF; summarization: ROUGE-1/2/L; dialogue: token F1, distinct-1/2 (llmcore.metrics);
- every task: perplexity of the references under the model, teacher-forced: summed NLL of the target
  tokens (the target's eos included) over their count. A decoder-only model reads prompt + target and
  only the target is scored (the prompt's labels are -100, as in fine-tuning).
The baseline (copy the source, the lead sentence, the most frequent training reply) is scored with the
same metrics on the same examples; it has no perplexity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from llmcore import metrics
from llmcore.config import EvaluateConfig, FinetuneTaskConfig
from llmcore.finetune import baselines
from llmcore.finetune.formats import Example, render, task_examples
from llmcore.finetune.predict import predict
from llmcore.finetune.spec import Finetuned, load_finetuned, teacher_forcing
from llmcore.model import IGNORE

VERSION = 1  # part of the evaluate stage key: bump when evaluation changes what a config produces
BASELINES = {"translation": "copy_source", "summarization": "lead", "dialogue": "frequent_reply"}


def scored_examples(task_cfg: FinetuneTaskConfig, max_examples: int | None = None) -> tuple[list[Example], list[Example]]:
    """(test examples, train examples). A cap keeps the examples with the lowest ids: a sample spread over
    the whole file (not its first lines, often one origin) and the same on every run."""
    splits = task_examples(task_cfg)
    test = sorted(splits["test"], key=lambda ex: ex.id)
    if not test:
        raise ValueError(f"task {task_cfg.name!r}: {task_cfg.path} has no test examples "
                         f"(test_fraction={task_cfg.test_fraction}); nothing to evaluate")
    return test[:max_examples], splits["train"]


def baseline_outputs(task: str, examples: Sequence[Example], train: Sequence[Example]) -> list[str]:
    if task == "translation":
        return baselines.copy_source(examples)
    if task == "summarization":
        return baselines.lead(examples)
    return baselines.frequent_reply(examples, train)


def score(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """The task's text metrics (0-100)."""
    if task == "translation":
        return {"bleu": metrics.bleu(predictions, references), "chrf": metrics.chrf(predictions, references)}
    if task == "summarization":
        return metrics.rouge(predictions, references)
    return {"token_f1": metrics.token_f1(predictions, references), "distinct1": metrics.distinct(predictions, 1),
            "distinct2": metrics.distinct(predictions, 2)}


@torch.no_grad()
def target_nll(ft: Finetuned, examples: Sequence[Example], batch_size: int = 32) -> tuple[float, int]:
    """(summed NLL in nats, token count) of the examples' target tokens, teacher-forced."""
    model, cfg = ft.model, ft.model.config
    device = next(model.parameters()).device
    encode, collate = teacher_forcing(model, ft.encoder)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            inputs = {k: v.to(device) for k, v in collate([encode(ex) for ex in batch]).items()}
            labels = inputs.pop("labels")
            logits = model(**inputs).logits
            if cfg.architecture != "encoder-decoder":  # position t predicts token t + 1
                labels, logits = labels[:, 1:], logits[:, :-1]
            nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
            total += nll.item()
            count += int((labels != IGNORE).sum())
    finally:
        model.train(was_training)
    return total, count


def evaluate(model_dir: str | Path, task_cfg: FinetuneTaskConfig, cfg: EvaluateConfig,
             device: str | torch.device | None = None) -> dict:
    """Scores of the fine-tuned model in `model_dir` and of the task's baseline on the same test examples.

    Returns a JSON-able dict: task, name, model, examples, metrics (with perplexity), nll_sum,
    target_tokens, baseline {name, metrics}, samples (the first `cfg.examples_shown` outputs) and
    outputs (every example: id, where, source, reference, prediction, baseline)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    examples, train = scored_examples(task_cfg, cfg.max_examples)
    ft = load_finetuned(model_dir, device)
    if ft.spec.task != task_cfg.task:
        raise ValueError(f"{model_dir} was fine-tuned for {ft.spec.task}, not for task {task_cfg.name!r} ({task_cfg.task})")
    predictions = predict(ft, examples, cfg.generation, label=f"evaluate {task_cfg.name}")
    nll_sum, tokens = target_nll(ft, examples, cfg.generation.batch_size)
    references = [ex.target for ex in examples]
    base = baseline_outputs(task_cfg.task, examples, train)
    outputs = [
        {"id": ex.id, "where": ex.where, "source": render(ex)[0], "reference": ex.target, "prediction": p, "baseline": b}
        for ex, p, b in zip(examples, predictions, base)
    ]
    return {
        "task": task_cfg.task, "name": task_cfg.name, "model": str(model_dir), "examples": len(examples),
        "metrics": {**score(task_cfg.task, predictions, references), "perplexity": metrics.perplexity(nll_sum, tokens)},
        "nll_sum": nll_sum, "target_tokens": tokens,
        "baseline": {"name": BASELINES[task_cfg.task], "metrics": score(task_cfg.task, base, references)},
        "samples": outputs[: cfg.examples_shown],
        "outputs": outputs,
    }
