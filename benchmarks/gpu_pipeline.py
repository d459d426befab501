"""`llmpipe run configs/gpu.yaml` as a user runs it, then what it took: the wall time of each stage, pretraining
tokens/s and MFU inside the pipeline, and the evaluation table (last line: one JSON object).
benchmarks/gpu_pipeline.sh prepares the Python environment and calls this.

    python benchmarks/gpu_pipeline.py [--workdir DIR] [--docs 100000]     # on a CUDA GPU
    python benchmarks/gpu_pipeline.py --dry-run                          # the same chain at tiny sizes, on CPU

The corpus: benchmarks/peers_corpus.py's real text installed on the machine, built into DIR/corpus (reused when
built with the same arguments). The run's config: configs/gpu.yaml with its source pointed at that corpus (and,
with --dry-run, the sizes of `DRY_RUN` below), written to DIR/gpu.yaml; its data root is DIR/root.
Stage times are read off the data root: each stage's manifest is written when the stage ends, so a stage took
from the end of the one before (the run's start for the first) to the end of its last manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.evaluate import table_rows  # noqa: E402
from llmcore.housekeeping import LATEST, names  # noqa: E402
from llmcore.report import format_table  # noqa: E402
from llmcore.stage import StageRef, latest  # noqa: E402
from peers_corpus import build  # noqa: E402  (this script's folder is on the path)

CONFIG = ROOT / "configs" / "gpu.yaml"
STAGES = ("ingest", "clean", "language", "dedup", "augment", "tokenizer", "tokenize", "pretrain", "finetune", "evaluate")
# Tiny sizes for a check of the whole script on a CPU (CI): every stage runs, on the same code paths but compile.
TINY_TRAIN = {"max_steps": 12, "batch_size": 4, "eval_every": 6, "checkpoint_every": 6, "eval_batches": 2,
              "log_every": 2, "precision": "fp32", "warmup_steps": 2}
DRY_RUN = {
    "data": {"tokenizer": {"vocab_size": 600, "sample_docs": 500}, "runner": {"kind": "dask", "workers": 2}},
    "pretrain": {"model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "vocab_size": 640}, "block_size": 128,
                 "train": {**TINY_TRAIN, "compile": False, "device": "cpu"}},
    "finetune": {"train": {**TINY_TRAIN, "device": "cpu"}, "validation_examples": 8},
    "evaluate": {"generation": {"num_beams": 1, "max_new_tokens": 8}},
}
LEFT_OUT = 3  # the first logging intervals of pretraining (torch.compile, warm-up), as benchmarks/train.py does


def merge(into: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def run_config(corpus: Path, dry_run: bool) -> dict:
    """configs/gpu.yaml with its paths made absolute and its source pointed at `corpus`."""
    config = yaml.safe_load(CONFIG.read_text())
    config["data"]["ingest"]["sources"][0]["path"] = str(corpus / "jsonl" / "*.jsonl")
    for task in config["finetune"]:
        task["path"] = str((CONFIG.parent / task["path"]).resolve())
    if dry_run:
        config["name"] = "gpu-dry-run"
        merge(config, {k: v for k, v in DRY_RUN.items() if k != "finetune"})
        for task in config["finetune"]:
            merge(task, DRY_RUN["finetune"])
    return config


def stage_times(root: Path, started: float) -> list[dict]:
    """Each stage's end (its last manifest of this run) and its time since the previous stage's end."""
    ends = {}
    for stage in STAGES:
        outputs = [StageRef(str(root), stage, d.name) for d in (root / stage).glob("*") if d.is_dir() and not d.is_symlink()]
        for manifest in filter(None, (ref.manifest() for ref in outputs)):
            created = datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).timestamp()
            if created >= started - 1:
                ends[stage] = max(ends.get(stage, 0.0), created)
    rows, before = [], started
    for stage, end in sorted(ends.items(), key=lambda kv: kv[1]):
        rows.append({"stage": stage, "seconds": round(max(end - before, 0.0), 1), "ended_at_s": round(end - started, 1)})
        before = max(before, end)
    return rows


def pretrain_speed(root: Path) -> dict:
    ref = latest(root, "pretrain")
    events = [json.loads(line) for line in (ref.path / "metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    train = [e for e in events if e["event"] == "train"]
    train = train[LEFT_OUT:] or train  # a short run (--dry-run): all of it
    speed = statistics.median(e["tokens_per_s"] for e in train)
    mfu = [e["mfu"] for e in train if e.get("mfu") is not None]
    return {"params": start["params"], "device": start["device"], "precision": start["precision"],
            "steps": ref.manifest()["steps"], "tokens": ref.manifest()["summary"]["tokens"], "tokens_per_s": speed,
            "mfu": statistics.median(mfu) if mfu else None, "val_loss": ref.manifest()["summary"]["best_value"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "llmpipe-gpu")
    ap.add_argument("--docs", type=int, default=100_000, help="corpus documents (about 1,000 characters each)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: the script's own check")
    args = ap.parse_args()
    docs = 2_000 if args.dry_run else args.docs
    corpus = args.workdir / "corpus"
    wanted = {"docs": docs, "bytes": docs * 1000, "files": max(2, min(20, docs // 5000)), "seed": 0}
    t0 = time.time()
    made_by = corpus / "request.json"  # the arguments the corpus there was built with
    if (corpus / "corpus.json").exists() and made_by.exists() and json.loads(made_by.read_text()) == wanted:
        stats = json.loads((corpus / "corpus.json").read_text())
    else:
        stats = build(corpus, wanted["docs"], wanted["bytes"], wanted["files"], wanted["seed"])
        made_by.write_text(json.dumps(wanted))
    print(f"corpus: {stats['docs']:,} documents, {stats['bytes'] / 1e6:.0f} MB, real text {stats['real_share']:.0%} "
          f"({corpus}; {time.time() - t0:.0f} s)", flush=True)

    config_path, root = args.workdir / "gpu.yaml", args.workdir / "root"
    config_path.write_text(yaml.safe_dump(run_config(corpus, args.dry_run), sort_keys=False))
    started = time.time()
    env = {**os.environ, "PREFECT_HOME": str(args.workdir / "prefect")}
    code = subprocess.call([sys.executable, "-m", "flows.cli", "run", str(config_path), "--data-root", str(root)],
                           cwd=ROOT, env=env)
    wall = time.time() - started
    times = stage_times(root, started)
    print(f"\nllmpipe run: exit {code}, {wall:.0f} s wall\n\nStage times (from each stage's end to the next's)\n"
          + format_table(times))
    result = {"exit": code, "wall_s": round(wall, 1), "corpus_docs": stats["docs"], "corpus_bytes": stats["bytes"],
              "stages": times}
    if latest(root, "pretrain"):
        result["pretrain"] = speed = pretrain_speed(root)
        mfu = f"{speed['mfu']:.1%}" if speed["mfu"] is not None else "-"
        print(f"\nPretraining: {speed['params']:,} parameters, {speed['device']}, {speed['precision']}, "
              f"{speed['steps']} steps, {speed['tokens'] / 1e6:.1f} M tokens: {speed['tokens_per_s']:,.0f} tokens/s "
              f"(median after {LEFT_OUT} logging intervals), MFU {mfu}; validation loss {speed['val_loss']:.3f}")
    evaluation = names(root).get(f"evaluation/{LATEST}")
    if evaluation:
        tasks = json.loads((evaluation / "results.json").read_text())["tasks"]
        result["evaluation"] = rows = table_rows(tasks)
        print("\nEvaluation on held-out test examples\n" + format_table(rows))
    print(json.dumps(result))
    sys.exit(code)


if __name__ == "__main__":
    main()
