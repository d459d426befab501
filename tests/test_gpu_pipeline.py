"""benchmarks/gpu_pipeline.sh, the whole pipeline on a GPU, in its CPU dry-run mode: the script builds its corpus,
runs every stage of `llmpipe run configs/gpu.yaml` at tiny sizes on the same code paths (Dask data flow, pretraining,
three fine-tuned tasks, evaluation) and reports stage times, pretraining speed and the evaluation table. The full
sizes of configs/gpu.yaml pass the config checks against the same corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmcore.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_pipeline import STAGES, run_config  # noqa: E402


@pytest.mark.slow
def test_dry_run_goes_through_every_stage_and_reports(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_pipeline.sh"), "--dry-run", "--workdir", str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0
    ran = [row["stage"] for row in result["stages"]]
    assert sorted(ran, key=STAGES.index) == ran  # in the chain's order
    assert set(ran) == set(STAGES) - {"augment"}  # configs/gpu.yaml augments nothing
    assert result["pretrain"]["tokens_per_s"] > 0 and result["pretrain"]["steps"] == 12
    tasks = {task["name"] for task in yaml.safe_load((ROOT / "configs" / "gpu.yaml").read_text())["finetune"]}
    assert {row["task"] for row in result["evaluation"]} == tasks
    assert "Stage times" in done.stdout and "Evaluation on held-out test examples" in done.stdout

    # The GPU sizes validate (positions, vocabulary, files) against the corpus the dry run built.
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(run_config(tmp_path / "corpus", dry_run=False)))
    config = load_config(full)
    assert (config.pretrain.model.d_model, config.pretrain.model.n_layers, config.pretrain.block_size) == (768, 12, 1024)
    assert config.pretrain.train.compile and config.pretrain.train.precision == "bf16"
