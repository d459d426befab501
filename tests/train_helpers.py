"""What the training tests share: token stages of the bundled sample per family (built once per session)
and tiny pretraining configs that train in seconds on a busy CPU."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from llmcore.config import PretrainConfig
from llmcore.manifest import HIDDEN_MANIFEST, read_manifest
from llmcore.train.pretrain import PretrainJob
from token_helpers import sample_texts, token_stage

# Tiny models on a shared, loaded CPU: one thread each (two threads spin-wait each other, 10x slower).
torch.set_num_threads(1)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
_STAGES: dict[str, Path] = {}


def stage(root: Path, family: str) -> Path:
    """The tokenize stage directory of `family` (tokenizer beside it in root/tokenizer/<family>)."""
    if family not in _STAGES:
        _STAGES[family] = token_stage(root / family, sample_texts(40), family, sample_docs=200)
    return _STAGES[family]


def data_root(tmp: Path, family: str = "gpt") -> tuple[Path, Path]:
    """A data root of its own holding the token stage (and its tokenizer): (root, tokenize manifest)."""
    tokens = stage(tmp / "stages", family)
    root = tmp / "data"
    shutil.copytree(tokens.parents[1], root)
    return root, root / tokens.relative_to(tokens.parents[1]) / HIDDEN_MANIFEST


def tiny(family: str = "gpt", **train) -> PretrainConfig:
    """fp32 unless a test asks otherwise: `auto` may pick bf16 on a CPU with native bf16, and the tolerances of
    the tests that compare two runs (1e-5 on a loss) are fp32's."""
    return PretrainConfig.model_validate({
        "model": {"family": family, "d_model": 32, "n_heads": 2, "n_layers": 2},
        "block_size": 32,
        "train": {"max_steps": 40, "batch_size": 8, "lr": 1e-2, "warmup_steps": 4, "eval_every": 10, "eval_batches": 4,
                  "checkpoint_every": 10, "log_every": 5, "precision": "fp32", **train},
    })


def job(tokens: Path, run_dir: Path, cfg: PretrainConfig) -> PretrainJob:
    tokenizer = read_manifest(tokens)["tokenizer"]["key"]  # as the data flow records it: <data_root>/tokenizer/<key>
    return PretrainJob(str(tokens), str(tokens.parents[1] / "tokenizer" / tokenizer), str(run_dir), cfg)


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]
