"""What pretraining is worth downstream: every fine-tuning task of a config trained (a) from scratch and (b) from
the pipeline's pretrained checkpoint, with the same fine-tuning budget (the task's `train` section: steps, batch,
lr, early stopping), over several seeds, each model scored on its task's test split as `llmpipe run` scores it.

    python benchmarks/pretrain_corpus.py                       # the larger corpus configs/cpu-pretrain.yaml reads
    python benchmarks/pretrain_value.py configs/cpu-pretrain.yaml --data-root /tmp/pv-root   # ~35 min on 2 idle cores
    python benchmarks/pretrain_value.py --checkpoint DIR --tasks summarization --seeds 1      # a given checkpoint

Without --checkpoint the pipeline runs up to its pretrain stage first (`llmpipe run CONFIG --until pretrain`;
cached: a finished data root costs seconds) and its best pretrain checkpoint is the start of (b).

(a) is the config's `init: scratch`: a new model of the pretrained model's shape (its `pretrain.model`) with a
BPE of the task's `vocab_size` fitted to the task's training texts; `--scratch-tokenizer shared` instead keeps
the pretrained tokenizer with freshly initialised weights (the value of the weights alone). Everything else
(task tokens, dropout, schedule, generation, evaluation) is the task's own. Runs go `--jobs` at a time (each with
`--threads` torch threads), a scratch and a pretrained run side by side, so the machine's load hits both alike.

Held out: the test split is what neither arm fine-tuned on, and the pretraining corpus is checked for it (every
test source and target, whitespace- and case-folded, searched in the documents the config ingests:
`pretrain_corpus.leaks`); the JSON says how many test examples were found there ("leaked_test_examples") and, where
some were, scores both arms again on the others alone ("unseen": data the models never saw in any form).

The last line is one JSON object: per task the metric, `scratch` and `pretrained` (mean, per seed, min, max),
`gain` (mean difference) and `wins` (the worst pretrained seed above the best scratch seed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from llmcore.config import FinetuneTaskConfig, ModelConfig, PipelineConfig, load_config  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "cpu-pretrain.yaml"
PRIMARY = {"translation": "bleu", "summarization": "rougeL", "dialogue": "token_f1"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pretrain_checkpoint(config_path: Path, cfg: PipelineConfig, data_root: Path) -> Path:
    """The pipeline's best pretrain checkpoint for this config: the chain run up to pretrain (cached when done)."""
    subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config_path), "--data-root", str(data_root),
                    "--until", "pretrain", "--quiet"], cwd=ROOT, check=True)
    manifest_path = data_root / "pretrain" / "latest" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    from llmcore.stage import key_config
    if {k: v for k, v in manifest["config"].items() if k != "on_new_data"} != \
            {k: v for k, v in key_config(cfg.pretrain).items() if k != "on_new_data"}:
        raise SystemExit(f"{manifest_path}: the latest pretrain of this data root is not this config's; use a data root of its own")
    from flows.finetune import pretrained_checkpoint
    return Path(pretrained_checkpoint(str(manifest_path.resolve())))


def pretrain_facts(checkpoint: Path) -> dict:
    """Size and training of the checkpoint: parameters, tokens seen, validation perplexity, seconds."""
    cfg = json.loads((checkpoint / "config.json").read_text())
    facts = {"checkpoint": str(checkpoint), "model": {k: cfg.get(k) for k in ("family", "d_model", "n_layers", "n_heads",
                                                                             "vocab_size", "max_seq_len")}}
    from llmcore.model.io import load
    facts["parameters"] = sum(p.numel() for p in load(checkpoint).parameters())
    metrics = checkpoint.parents[1] / "metrics.jsonl"
    if metrics.is_file():
        events = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        ends = [e for e in events if e.get("event") == "end"]
        evals = [e for e in events if e.get("event") == "eval"]
        times = [e["time"] for e in events if "time" in e]
        if ends:
            facts["tokens"] = ends[-1].get("tokens")
            facts["steps"] = ends[-1].get("step")
            facts["tokens_per_parameter"] = round(facts["tokens"] / facts["parameters"], 1) if facts["tokens"] else None
        if evals:
            facts["val_ppl"] = round(min(e["val_ppl"] for e in evals), 1)
        if times:
            facts["seconds"] = round(max(times) - min(times))
    return facts


def task_variant(task: FinetuneTaskConfig, init: str, seed: int, model: ModelConfig, start: str | None,
                 lr: float | None = None) -> FinetuneTaskConfig:
    update = {"train": task.train.model_copy(update={"seed": seed, "lr": lr or task.train.lr})}
    if init == "scratch":
        update |= {"init": "scratch", "model": model}
    else:
        update["init"] = start
    return task.model_copy(update=update)


def shared_scratch_dir(checkpoint: Path, seed: int, out: Path) -> Path:
    """The pretrained model's config and tokenizer with new weights (initialised with `seed`)."""
    import shutil

    import torch

    from llmcore.model import build_model
    from llmcore.model.io import load, save
    torch.manual_seed(seed)
    model = build_model(load(checkpoint).config)
    save(model, out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)
    return out


def one_run(task_json: str, init: str, seed: int, workdir: str, start: str | None, evaluate_json: str, threads: int,
            leaked: tuple[str, ...] = ()) -> dict:
    """Fine-tune one variant and score it on the test split, and on the test examples the pretraining corpus does not
    hold (`leaked`: the ids of those it does) when there are such (runs in a worker process)."""
    import torch

    from llmcore.config import EvaluateConfig
    from llmcore.finetune.evaluate import evaluate, score
    from llmcore.finetune.run import FinetuneJob, run
    torch.set_num_threads(threads)
    task = FinetuneTaskConfig.model_validate_json(task_json)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    summary = run(FinetuneJob(task, workdir, start))
    train_seconds = time.perf_counter() - started
    result = evaluate(Path(workdir) / summary["model"], task, EvaluateConfig.model_validate_json(evaluate_json), "cpu")
    metric = PRIMARY[task.task]
    unseen = [o for o in result["outputs"] if o["id"] not in set(leaked)] or result["outputs"]
    held_out = score(task.task, [o["prediction"] for o in unseen], [o["reference"] for o in unseen])[metric]
    return {"task": task.name, "init": init, "seed": seed, "lr": task.train.lr, "validation": summary["best_value"],
            "metric": metric, "score": round(result["metrics"][metric], 2),
            "unseen": {"examples": len(unseen), "score": round(held_out, 2),
                       "baseline": round(score(task.task, [o["baseline"] for o in unseen], [o["reference"] for o in unseen])[metric], 2)},
            "metrics": {k: round(v, 2) for k, v in result["metrics"].items()},
            "baseline": {k: round(v, 2) for k, v in result["baseline"]["metrics"].items()},
            "examples": result["examples"], "best_step": summary["best_step"], "train_seconds": round(train_seconds),
            "seconds": round(time.perf_counter() - started), "load": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def spread(scores: list[float]) -> dict:
    return {"mean": round(statistics.fmean(scores), 2), "per_seed": scores, "min": min(scores), "max": max(scores),
            "stdev": round(statistics.stdev(scores), 2) if len(scores) > 1 else 0.0}


def chosen_lr(runs: list[dict]) -> tuple[float, dict]:
    """The learning rate whose seeds have the best mean validation score (the early-stopping metric, higher is
    better for every task's), and each one's mean."""
    by_lr = {lr: statistics.fmean(r["validation"] for r in runs if r["lr"] == lr) for lr in sorted({r["lr"] for r in runs})}
    return max(by_lr, key=by_lr.get), {str(lr): round(v, 4) for lr, v in by_lr.items()}


def summarize(runs: list[dict], tasks: list[FinetuneTaskConfig]) -> dict:
    out = {}
    for task in tasks:
        mine = sorted((r for r in runs if r["task"] == task.name), key=lambda r: r["seed"])
        if not mine:
            continue
        entry = {"task": task.task, "metric": PRIMARY[task.task], "steps": task.train.max_steps,
                 "baseline": mine[0]["baseline"][PRIMARY[task.task]], "examples": mine[0]["examples"]}
        if len({r["lr"] for r in mine}) > 1:  # each arm at the learning rate validation picks for it
            entry["lr"], entry["validation_by_lr"] = {}, {}
            for init in ("scratch", "pretrained"):
                if arm := [r for r in mine if r["init"] == init]:
                    entry["lr"][init], entry["validation_by_lr"][init] = chosen_lr(arm)
            mine = [r for r in mine if r["lr"] == entry["lr"].get(r["init"])]
        arms = {init: [r["score"] for r in mine if r["init"] == init] for init in ("scratch", "pretrained")}
        if mine[0]["unseen"]["examples"] < mine[0]["examples"]:  # some test examples are in the pretraining corpus
            entry["unseen"] = {"examples": mine[0]["unseen"]["examples"], "baseline": mine[0]["unseen"]["baseline"],
                               **{init: round(statistics.fmean(r["unseen"]["score"] for r in mine if r["init"] == init), 2)
                                  for init in ("scratch", "pretrained") if arms[init]}}
        for init, scores in arms.items():
            if scores:
                entry[init] = spread(scores)
                # the test references' perplexity under the model (teacher-forced): a second, decoding-free view
                entry[init]["perplexity"] = round(statistics.fmean(r["metrics"]["perplexity"] for r in mine if r["init"] == init), 1)
        if arms["scratch"] and arms["pretrained"]:
            entry["gain"] = round(entry["pretrained"]["mean"] - entry["scratch"]["mean"], 2)
            entry["wins"] = min(arms["pretrained"]) > max(arms["scratch"])
            entry["beats_baseline"] = entry["pretrained"]["mean"] > entry["baseline"]
        out[task.name] = entry
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--data-root", type=Path, help="where the pipeline runs up to pretrain (default: ./llmpipe-data/<config name>)")
    ap.add_argument("--checkpoint", type=Path, help="start (b) from this pretrain checkpoint directory instead of running the pipeline")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm (0, 1, ...)")
    ap.add_argument("--tasks", help="comma-separated task names (default: every task of the config)")
    ap.add_argument("--scratch-tokenizer", choices=["task", "shared"], default="task",
                    help="task: a BPE fitted to the task (init: scratch); shared: the pretrained tokenizer, new weights")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    ap.add_argument("--lrs", help="comma-separated learning rates, each run by both arms (default: the task's own); "
                                  "an arm is scored at the one its mean validation score picks")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    tasks = [t for t in cfg.finetune if not args.tasks or t.name in args.tasks.split(",")]
    if not tasks:
        ap.error(f"no task of {args.config} is named {args.tasks}")
    started, load_start = time.time(), os.getloadavg()
    if args.checkpoint:
        checkpoint = args.checkpoint.resolve()
    else:
        checkpoint = pretrain_checkpoint(args.config.resolve(), cfg, (args.data_root or ROOT / "llmpipe-data" / cfg.name).resolve())
    facts = pretrain_facts(checkpoint)
    shape = json.loads((checkpoint / "config.json").read_text())
    model = ModelConfig(family=shape["family"], d_model=shape["d_model"], n_heads=shape["n_heads"], n_layers=shape["n_layers"],
                        d_ff=shape.get("d_ff"))
    from pretrain_corpus import leaks
    leaked = leaks(cfg, tasks)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="pretrain-value-"))).resolve()
    lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else [None]
    jobs = []
    for seed, lr, task, init in itertools.product(range(args.seeds), lrs, tasks, ("scratch", "pretrained")):
        run_dir = work / f"{task.name}-{init}-{seed}" if lr is None else work / f"{task.name}-{init}-{seed}-lr{lr:g}"
        start = str(checkpoint)
        if init == "scratch" and args.scratch_tokenizer == "shared":
            start = str(shared_scratch_dir(checkpoint, seed, work / f"init-{seed}"))
            variant = task_variant(task, "pretrained", seed, model, start, lr)
        else:
            variant = task_variant(task, init, seed, model, start, lr)
        jobs.append((variant.model_dump_json(), init, seed, str(run_dir), start if variant.init != "scratch" else None,
                     cfg.evaluate.model_dump_json(), args.threads, tuple(leaked[task.name].get("ids", ()))))
    runs = []
    with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(one_run, *zip(*jobs)):
            print(f"{result['task']} {result['init']} seed {result['seed']} lr {result['lr']:g}: {result['metric']} {result['score']} "
                  f"({result['train_seconds']} s, load {result['load']})", flush=True)
            runs.append(result)
    out = {"benchmark": "pretrain_value", "config": str(args.config), "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
           "cores": os.cpu_count(), "jobs": args.jobs, "threads": args.threads, "seeds": args.seeds,
           "scratch_tokenizer": args.scratch_tokenizer, "load_average": {"start": [round(x, 2) for x in load_start],
                                                                          "end": [round(x, 2) for x in os.getloadavg()]},
           "pretrain": facts, "leaked_test_examples": leaked, "tasks": summarize(runs, tasks), "runs": runs,
           "seconds": round(time.time() - started), "workdir": str(work)}
    for name, t in out["tasks"].items():
        if "gain" in t:
            print(f"{name:20s} {t['metric']:9s} scratch {t['scratch']['mean']:6.2f} [{t['scratch']['min']}-{t['scratch']['max']}]  "
                  f"pretrained {t['pretrained']['mean']:6.2f} [{t['pretrained']['min']}-{t['pretrained']['max']}]  "
                  f"gain {t['gain']:+.2f}  {'wins' if t['wins'] else 'no clear win'}  (baseline {t['baseline']}; "
                  f"reference perplexity {t['scratch']['perplexity']} -> {t['pretrained']['perplexity']})"
                  + (f"  lr {t['lr']}" if "lr" in t else ""))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
