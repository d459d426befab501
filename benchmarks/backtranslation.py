"""BLEU / chrF of en->de fine-tuning with and without back-translated pairs, same data, model, steps and batch.

Every run uses the default pipeline's translation recipe (the en->de task of configs/tiny.yaml: its
lengths, dropout, steps, batch, learning rate, early stopping on validation BLEU), from scratch (a GPT of
the pretrained model's size and a BPE fitted to the pairs' train split; on par with the pretrained start
at this recipe, BENCHMARKS.md), and is scored as `llmpipe run` scores it (the config's `evaluate` decoding).

1. A reverse model (de->en) is trained with that recipe on the train split of the bundled pairs
   (configs/sample/parallel/en-de.jsonl), as the augment stage trains it (llmcore.augment.backtranslate).
2. It back-translates German sentences of the bundled German documents (configs/sample/docs/de.jsonl,
   German by where they were taken) into synthetic pairs (`backtranslate`, the stage's own code: the
   sentences of the pairs' validation and test splits are never chosen).
3. Two en->de models train with the same recipe and seed: `base` on the real pairs only, `bt` with
   `synthetic_ratio` synthetic pairs per real one mixed in. Both are scored on the same test split,
   beside the reverse model.

    python benchmarks/backtranslation.py            # 35 min on 2 CPU cores (2,071 s, tests running beside it)
    python benchmarks/backtranslation.py --steps 60 --sentences 64   # a smoke run

Prints both scores and the difference; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from llmcore.augment import backtranslate as bt
from llmcore.config import BacktranslationConfig, EvaluateConfig, FinetuneTaskConfig, load_config
from llmcore.finetune.evaluate import evaluate
from llmcore.finetune.run import FinetuneJob, run

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample"
PAIRS = SAMPLE / "parallel" / "en-de.jsonl"
GERMAN = SAMPLE / "docs" / "de.jsonl"
DEFAULT_CONFIG = SAMPLE.parent / "tiny.yaml"


def german_shard(path: Path) -> str:
    """The German documents as a document shard with `lang`, as the language stage would leave them."""
    rows = [{"id": f"de.jsonl:{i}", "text": json.loads(line)["text"], "lang": "de"}
            for i, line in enumerate(GERMAN.read_text(encoding="utf-8").splitlines(), start=1)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def recipe(steps: int | None) -> tuple[dict, EvaluateConfig]:
    """The default config's translation task without its name, data and direction (the same for the reverse
    model and both forward runs), started from scratch (a new model of the task's `model` and a `vocab_size`
    BPE fitted to the pairs: no pretrained checkpoint is needed), and the config's evaluation settings."""
    cfg = load_config(DEFAULT_CONFIG)
    task = next(t for t in cfg.finetune if t.task == "translation")
    fields = task.model_dump(exclude={"name", "path", "source_lang", "target_lang", "synthetic_ratio"}) | {"init": "scratch"}
    if steps:
        fields["train"] |= {"max_steps": steps, "eval_every": max(1, steps // 2), "checkpoint_every": max(1, steps // 2)}
    return fields, cfg.evaluate


def scores(model_dir: Path, task: FinetuneTaskConfig, scoring: EvaluateConfig) -> dict:
    result = evaluate(model_dir, task, scoring, "cpu")
    return {"examples": result["examples"], **{k: round(v, 2) for k, v in result["metrics"].items()},
            "baseline": {k: round(v, 2) for k, v in result["baseline"]["metrics"].items()}}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="optimizer steps of every run (default: the recipe's)")
    parser.add_argument("--sentences", type=int, default=800, help="German sentences back-translated")
    parser.add_argument("--ratio", type=float, default=0.5, help="synthetic pairs per real training pair")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workdir", help="default: a new temporary directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    fields, scoring = recipe(args.steps)
    cfg = BacktranslationConfig(pairs=str(PAIRS), source_lang="en", target_lang="de", max_sentences=args.sentences,
                                reverse=fields, generation=fields["generation"])
    reverse = bt.train_model(cfg.reverse, work / "reverse")
    made = bt.backtranslate(work, [german_shard(work / "de.parquet")], cfg, str(reverse))
    synthetic = work / bt.SYNTHETIC
    print(f"back-translated {made['sentences']} German sentences into {made['synthetic_pairs']} synthetic pairs "
          f"({time.perf_counter() - started:.0f} s so far)")

    out = {"benchmark": "backtranslation", "args": vars(args), "synthetic_pairs": made["synthetic_pairs"],
           "reverse_de_en": scores(reverse, cfg.reverse, scoring)}
    for name, ratio in (("base", 0.0), ("bt", args.ratio)):
        task = FinetuneTaskConfig.model_validate({
            **fields, "name": f"en-de-{name}", "task": "translation", "path": str(PAIRS),
            "source_lang": "en", "target_lang": "de", "synthetic_ratio": ratio})
        summary = run(FinetuneJob(task, str(work / name), synthetic=str(synthetic) if ratio else None))
        out[name] = {"synthetic_in_training": summary["synthetic"], **scores(work / name / summary["model"], task, scoring)}
        print(f"{name}: {out[name]}")
    out["bleu_difference"] = round(out["bt"]["bleu"] - out["base"]["bleu"], 2)
    out["chrf_difference"] = round(out["bt"]["chrf"] - out["base"]["chrf"], 2)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(f"reverse de->en: BLEU {out['reverse_de_en']['bleu']}, chrF {out['reverse_de_en']['chrf']}")
    print(f"en->de BLEU: base {out['base']['bleu']}, with back-translation {out['bt']['bleu']} "
          f"(difference {out['bleu_difference']:+.2f}); chrF: {out['base']['chrf']} vs {out['bt']['chrf']} "
          f"({out['chrf_difference']:+.2f})")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
