"""Test BLEU / chrF of one en->de fine-tuning variant beside the copy-the-source baseline: the fine-tuning
experiments of BENCHMARKS.md ("Fine-tuning experiments").

The recipe is the default config's translation task (configs/tiny.yaml: lengths, dropout, batch, lr,
validation BLEU every `eval_every` steps, the best checkpoint kept); the flags change where it starts and
how long it trains. The test split is decoded greedily and as `llmpipe run` decodes it (the config's
`evaluate` settings).

    python benchmarks/translation.py --init scratch --seed 1                 # ~8 min on 2 CPU cores
    python benchmarks/translation.py --init pretrained \\
        --checkpoint DATA_ROOT/pretrain/<key>/checkpoints/step-00000600 --steps 2400
    python benchmarks/translation.py --steps 40 --eval-every 20               # a smoke run

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmcore.config import EvaluateConfig, load_config
from llmcore.finetune.evaluate import evaluate
from llmcore.finetune.run import FinetuneJob, run

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", choices=["scratch", "pretrained"], default="scratch")
    parser.add_argument("--checkpoint", help="init pretrained: a pretrain checkpoint directory (with tokenizer.json)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--eval-every", type=int, help="steps between validation scores (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workdir", help="default: a new temporary directory")
    args = parser.parse_args()
    if args.init == "pretrained" and not args.checkpoint:
        parser.error("--init pretrained needs --checkpoint (a pipeline run's pretrain/<key>/checkpoints/step-N)")
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_CONFIG)
    task = next(t for t in cfg.finetune if t.task == "translation")
    train = {"seed": args.seed}
    if args.steps:
        train["max_steps"] = args.steps
    if args.eval_every:
        train |= {"eval_every": args.eval_every, "checkpoint_every": args.eval_every}
    task = task.model_copy(update={"init": args.init, "train": task.train.model_copy(update=train)})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="translation-bench-"))

    started = time.perf_counter()
    summary = run(FinetuneJob(task, str(work), args.checkpoint))
    seconds = time.perf_counter() - started
    out = {"benchmark": "translation", "args": vars(args), "train_seconds": round(seconds),
           "best_step": summary["best_step"], "best_validation": {summary["metric"]: round(summary["best_value"], 2)}}
    greedy = cfg.evaluate.generation.model_copy(update={"num_beams": 1})
    for name, generation in (("greedy", greedy), ("evaluate", cfg.evaluate.generation)):
        result = evaluate(work / summary["model"], task, EvaluateConfig(generation=generation), "cpu")
        out[name] = {k: round(v, 2) for k, v in result["metrics"].items()}
        out["copy_source"] = {k: round(v, 2) for k, v in result["baseline"]["metrics"].items()}
    print(f"test BLEU / chrF: greedy {out['greedy']['bleu']} / {out['greedy']['chrf']}, "
          f"as evaluated ({cfg.evaluate.generation.num_beams} beams) {out['evaluate']['bleu']} / {out['evaluate']['chrf']}; "
          f"copy source {out['copy_source']['bleu']} / {out['copy_source']['chrf']}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
