"""Two CPU processes under torchrun (gloo, DDP), launched by the pretrain flow's task, follow the loss
trajectory of one process that trains on the same global batches: rank 0's and rank 1's side by side."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from flows.pretrain import pretrain_flow
from llmcore.data.loader import TokenLoader
from llmcore.manifest import read_manifest
from llmcore.model import build_model
from llmcore.objectives import make_objective
from llmcore.train import checkpoint
from llmcore.train.pretrain import model_config
from llmcore.train.trainer import Trainer
from train_helpers import ONE_THREAD, data_root, events, tiny

STEPS = 8


class SideBySide:
    """The global batch of a world of two, in one process."""

    def __init__(self, tokens, objective, batch_size, seed):
        self.ranks = [TokenLoader(tokens, objective, batch_size, seed=seed, rank=r, world_size=2) for r in (0, 1)]

    def __next__(self):
        parts = [next(loader) for loader in self.ranks]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def state_dict(self):
        return [loader.state_dict() for loader in self.ranks]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(prefect_server, tmp_path, monkeypatch):
    root, manifest = data_root(tmp_path)
    tokens = manifest.parent
    cfg = tiny(max_steps=STEPS, log_every=1, eval_every=100, checkpoint_every=100, distributed={"nproc_per_node": 2})

    tokenizer = read_manifest(tokens)["tokenizer"]
    torch.manual_seed(cfg.train.seed)
    model = build_model(model_config(cfg, tokenizer))
    data = SideBySide(tokens, make_objective("clm", tokenizer, cfg.block_size), cfg.train.batch_size, cfg.train.seed)
    one = cfg.train.model_copy(update={"distributed": cfg.train.distributed.model_copy(update={"nproc_per_node": 1})})
    Trainer(model, one, tmp_path / "one", data, seq_len=cfg.block_size).fit()

    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)
    result = json.loads(open(pretrain_flow(cfg, str(manifest), str(root))).read())
    ddp = root / "pretrain" / result["key"]
    start = events(ddp, "start")[0]
    assert start["world_size"] == 2 and start["tokens_per_step"] == 2 * 8 * 32
    ddp_loss = [e["loss"] for e in events(ddp, "train")]
    one_loss = [e["loss"] for e in events(tmp_path / "one", "train")]
    assert len(ddp_loss) == len(one_loss) == STEPS
    assert one_loss[-1] < one_loss[0] - 0.3  # it trains, so agreeing is not trivial
    assert max(abs(a - b) for a, b in zip(ddp_loss, one_loss)) < 1e-4, (ddp_loss, one_loss)
    a = load_file(ddp / result["checkpoint"] / "model.safetensors")
    b = load_file(checkpoint.step_dir(tmp_path / "one", STEPS) / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert {p.name for p in (ddp / result["checkpoint"]).glob("rank-*.pt")} == {"rank-00000.pt", "rank-00001.pt"}
