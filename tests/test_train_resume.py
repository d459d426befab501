"""Exact resume: a training process killed with SIGKILL at an arbitrary step and started again ends with
weights bit-identical to a run never interrupted (CPU, deterministic mode, dropout on). The reference
runs in this process (one thread, like the workers) while the resumed process starts."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from llmcore.train import checkpoint
from llmcore.train.pretrain import run
from train_helpers import ONE_THREAD, events, job, stage, tiny

STEPS = 40
CFG = tiny(max_steps=STEPS, checkpoint_every=5, eval_every=20, deterministic=True, keep_checkpoints=2)


def start(job_file):
    return subprocess.Popen([sys.executable, "-m", "llmcore.train.pretrain", str(job_file)], env=ONE_THREAD,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_run_then_resume_gives_bit_identical_weights(tmp_path):
    tokens = stage(tmp_path / "stages", "gpt")
    cfg = CFG.model_copy(update={"model": CFG.model.model_copy(update={"dropout": 0.1})})
    victim = start(job(tokens, tmp_path / "killed", cfg).save(tmp_path / "killed.json"))
    deadline = time.monotonic() + 240
    while not any(s >= 10 for s, _ in checkpoint.valid(tmp_path / "killed")):
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()[0]
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.3))  # somewhere between checkpoints, or inside a save
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = max(s for s, _ in checkpoint.valid(tmp_path / "killed"))
    assert killed_at < STEPS

    resumed = start(tmp_path / "killed.json")
    run(job(tokens, tmp_path / "whole", cfg))  # the uninterrupted reference, while the resumed process starts
    out = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, out
    starts = events(tmp_path / "killed", "start")
    assert [e["resumed_from"] for e in starts] == [0, killed_at]

    a = load_file(checkpoint.step_dir(tmp_path / "whole", STEPS) / "model.safetensors")
    b = load_file(checkpoint.step_dir(tmp_path / "killed", STEPS) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and training did move the weights: the comparison is not between two untouched models
    first = load_file(checkpoint.step_dir(tmp_path / "whole", STEPS - 5) / "model.safetensors")
    assert not all(torch.equal(a[k], first[k]) for k in a)
