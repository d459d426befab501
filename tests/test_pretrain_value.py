"""benchmarks/pretrain_value.py and benchmarks/pretrain_corpus.py on tiny real models: the held-out search finds a
test example hidden in a corpus (and none where there is none), and the benchmark fine-tunes both arms for every
seed, scores them on the test split and attributes the scores to the right arm (a start that already knows the task
must come out ahead of scratch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_helpers import finetuned_model, task_config
from llmcore.config import load_config
from llmcore.finetune.formats import task_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import pretrain_corpus  # noqa: E402


def write_config(tmp_path: Path, corpus: list[str], tasks: list[dict]) -> Path:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    config = {"name": "pv-test", "data": {"ingest": {"sources": [{"name": "c", "format": "jsonl", "path": "corpus.jsonl"}]},
                                          "language": {"allowed": ["en"]}},
              "finetune": tasks, "evaluate": {"generation": {"num_beams": 1, "max_new_tokens": 16}}}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


def test_held_out_texts_are_found_in_the_corpus(tmp_path):
    task = task_config(tmp_path, "translation", lines=48)
    test = task_examples(task)["test"]
    hidden = next(ex for ex in test if len(ex.target) >= pretrain_corpus.NEEDLE_MIN)
    tasks = [json.loads(task.model_dump_json())]
    clean = load_config(write_config(tmp_path, ["Nothing of the pairs is in this document at all, only filler."], tasks))
    assert pretrain_corpus.leaks(clean) == {task.name: {"test_examples": len(test), "found_in_corpus": 0}}
    # the German side of one test pair, with other case and spacing, inside a longer document
    leaky = load_config(write_config(tmp_path, ["Ein Satz davor. " + "  ".join(hidden.target.upper().split()) + " Danach."],
                                     tasks))
    assert pretrain_corpus.leaks(leaky)[task.name]["found_in_corpus"] == 1
    docs, ids = pretrain_corpus.find(["a", "x " + hidden.source + " y", "b"], pretrain_corpus.held_out([task])["needles"])
    assert docs == {1} and ids == {f"{task.name}:{hidden.id}"}


@pytest.mark.slow  # 8 fine-tunings and their evaluations in spawned processes: 30 s idle, two minutes under load
def test_pretrain_value_compares_both_arms_per_seed(tmp_path):
    task = task_config(tmp_path, "translation", lines=32, validation_fraction=0.2, validation_examples=4,
                       generation={"max_new_tokens": 16}, dropout=0.0,
                       train={"max_steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "eval_every": 4,
                              "checkpoint_every": 4, "precision": "fp32", "early_stopping": {"metric": "chrf", "mode": "max"}})
    # "pretrained": a small model that has learnt the task's examples (test ones included): it must win
    start = finetuned_model(tmp_path / "start", task, steps=400)
    config = write_config(tmp_path, ["Some document of the corpus, unrelated to the dialogues."],
                          [json.loads(task.model_dump_json(exclude={"init"}))])
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain_value.py"), str(config), "--checkpoint", str(start),
                          "--seeds", "2", "--jobs", "2", "--workdir", str(tmp_path / "work"), "--lrs", "1e-3,3e-3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    entry = result["tasks"][task.name]
    assert entry["metric"] == "bleu" and entry["steps"] == 4
    for arm in ("scratch", "pretrained"):
        assert len(entry[arm]["per_seed"]) == 2
        assert entry[arm]["mean"] == pytest.approx(sum(entry[arm]["per_seed"]) / 2, abs=0.01)
    assert entry["gain"] == pytest.approx(entry["pretrained"]["mean"] - entry["scratch"]["mean"], abs=0.02)
    assert entry["pretrained"]["mean"] > entry["scratch"]["mean"] + 5 and entry["wins"], entry
    runs = {(r["init"], r["seed"], r["lr"]) for r in result["runs"]}
    assert runs == {(init, seed, lr) for init in ("scratch", "pretrained") for seed in (0, 1) for lr in (1e-3, 3e-3)}
    # each arm is scored at the learning rate with its best mean validation score, on that rate's runs
    for arm in ("scratch", "pretrained"):
        mine = [r for r in result["runs"] if r["init"] == arm]
        validation = {lr: sum(r["validation"] for r in mine if r["lr"] == lr) / 2 for lr in (1e-3, 3e-3)}
        assert entry["lr"][arm] == max(validation, key=validation.get)
        assert entry[arm]["per_seed"] == [r["score"] for r in sorted(mine, key=lambda r: r["seed"]) if r["lr"] == entry["lr"][arm]]
    # each run really trained: its own run directory with checkpoints and an exported model
    for init, seed, lr in runs:
        assert (tmp_path / "work" / f"{task.name}-{init}-{seed}-lr{lr:g}" / "model" / "model.safetensors").is_file()
    assert result["pretrain"]["parameters"] > 0
    assert result["leaked_test_examples"] == {task.name: {"test_examples": entry["examples"], "found_in_corpus": 0}}
