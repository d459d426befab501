"""Damaged files are caught by their sha256: resume sets a damaged checkpoint aside and takes the one before
(or starts afresh), loading a model checks its stage manifest and checkpoint marker, and an invalid manifest
names itself and the fix."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from llmcore.config import TrainConfig
from llmcore.manifest import MANIFEST, atomic_write_json, describe_file, read_manifest
from llmcore.model import GPT, TransformerConfig, load, save
from llmcore.model.io import ModelFileError
from llmcore.train import checkpoint
from llmcore.train.trainer import Trainer

torch.set_num_threads(1)  # tiny models on a shared CPU
CFG = TrainConfig(max_steps=6, batch_size=2, warmup_steps=0, checkpoint_every=2, keep_checkpoints=3, eval_every=100,
                  log_every=1, precision="fp32", device="cpu", peak_tflops=1.0)


class Batches:
    """An endless, resumable stream of random token batches."""

    def __init__(self):
        self.i = 0

    def __next__(self) -> dict:
        self.i += 1
        ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(self.i))
        return {"input_ids": ids, "labels": ids}

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, state: dict) -> None:
        self.i = state["i"]


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(TransformerConfig(vocab_size=64, d_model=16, n_heads=2, n_layers=1, max_seq_len=8))


def train(run_dir) -> dict:
    return Trainer(model(), CFG, run_dir, Batches(), seq_len=8).fit()


def flip_a_bit(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("damage, name", [(flip_a_bit, "model.safetensors"), (truncate, "model.safetensors"),
                                          (truncate, checkpoint.TRAINER_STATE), (truncate, "rank-00000.pt")])
def test_resume_sets_a_damaged_checkpoint_aside_and_takes_the_one_before(tmp_path, caplog, damage, name):
    train(tmp_path)
    assert json.loads((checkpoint.step_dir(tmp_path, 6) / checkpoint.MARKER).read_text())["sha256"].keys() == {
        "config.json", "model.safetensors", checkpoint.TRAINER_STATE, "rank-00000.pt"}
    damage(checkpoint.step_dir(tmp_path, 6) / name)
    with caplog.at_level(logging.WARNING, "llmcore.train"):
        summary = train(tmp_path)
    assert summary["resumed_from"] == 4 and summary["step"] == 6
    assert str(checkpoint.step_dir(tmp_path, 6) / name) in caplog.text
    assert (checkpoint.root(tmp_path) / "step-00000006.damaged" / name).exists()  # kept for inspection
    assert checkpoint.damage(checkpoint.step_dir(tmp_path, 6)) is None  # written again by the resumed run


def test_with_no_intact_checkpoint_training_starts_again(tmp_path, caplog):
    train(tmp_path)
    for step, _ in checkpoint.valid(tmp_path):
        flip_a_bit(checkpoint.step_dir(tmp_path, step) / "model.safetensors")
    with caplog.at_level(logging.WARNING, "llmcore.train"):
        summary = train(tmp_path)
    assert summary["resumed_from"] == 0 and summary["step"] == 6
    assert "no intact checkpoint left" in caplog.text
    assert [s for s, _ in checkpoint.valid(tmp_path)] == [2, 4, 6]


def test_loading_a_model_checks_its_checkpoint_marker(tmp_path):
    train(tmp_path)
    directory = checkpoint.step_dir(tmp_path, 6)
    load(directory)
    flip_a_bit(directory / "model.safetensors")
    with pytest.raises(ModelFileError, match=f"{directory / 'model.safetensors'} differs from its sha256.*{checkpoint.MARKER}"):
        load(directory)


def test_loading_a_model_checks_its_stage_manifest(tmp_path):
    """A finetune stage: `<run>/model` and the manifest beside it recording each file's sha256."""
    stage = tmp_path / "finetune" / "abc"
    save(model(), stage / "model")
    atomic_write_json(stage / MANIFEST, {"files": [describe_file(p, stage, 0) for p in sorted((stage / "model").iterdir())]})
    load(stage / "model")
    flip_a_bit(stage / "model" / "config.json")
    with pytest.raises(ModelFileError, match=f"config.json differs .* delete the stage directory {stage} so that it is recomputed"):
        load(stage / "model")
    (stage / "model" / "config.json").unlink()
    with pytest.raises(ModelFileError, match="config.json is missing"):
        load(stage / "model")


def test_an_invalid_manifest_names_itself_and_the_fix(tmp_path):
    (tmp_path / MANIFEST).write_text('{"stage": "pretrain", "files": [')
    with pytest.raises(ValueError, match=f"{tmp_path / MANIFEST} is not a valid manifest .*delete the stage directory {tmp_path}"):
        read_manifest(tmp_path)
