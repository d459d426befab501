"""The trainer on real token shards: every family learns, early stopping stops, NaN stops cleanly,
bad configurations are refused before the first step; optimizer groups and schedules."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from llmcore.config import ConfigError, TrainConfig, load_config
from llmcore.model import GPT, TransformerConfig, families
from llmcore.train import checkpoint
from llmcore.train.checks import TrainConfigError
from llmcore.train.metrics_log import CURVE
from llmcore.train.optim import lr_factor, param_groups
from llmcore.train.pretrain import run
from llmcore.train.trainer import NonFiniteLoss
from train_helpers import events, job, stage, tiny


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("stages")


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_each_family_loss_falls(root, tmp_path, family):
    summary = run(job(stage(root, family), tmp_path, tiny(family, keep_checkpoints=1)))
    vals = [e["val_loss"] for e in events(tmp_path, "eval")]
    train = [e["loss"] for e in events(tmp_path, "train")]
    # (the validation loss wobbles: 40 steps of a tiny model on a few hundred documents)
    assert len(vals) == 4 and min(vals) < vals[0] - 0.2 and vals[-1] < vals[0], vals
    # BERT's masked-LM loss falls least: 0.43 nats over 5 tokenizers (WordPiece training is not
    # deterministic), so 0.3 holds for every one, with room for another CPU's rounding
    assert train[-1] < train[0] - 0.3, train
    assert summary["step"] == 40 and summary["reason"] == "max_steps"
    # the last checkpoint and the best one are kept, each complete and loadable without pickle
    kept = {s for s, _ in checkpoint.valid(tmp_path)}
    assert kept == {40, summary["best_step"]}
    final = checkpoint.step_dir(tmp_path, 40)
    files = set(checkpoint.read_marker(final)["files"])
    assert {"model.safetensors", "config.json", "tokenizer.json", "trainer_state.pt", "rank-00000.pt"} <= files
    assert (tmp_path / CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_early_stopping_stops_after_patience(root, tmp_path):
    # lr 0: the validation loss never improves after the first evaluation
    summary = run(job(stage(root, "gpt"), tmp_path, tiny(lr=0.0, max_steps=100, eval_every=4, checkpoint_every=50,
                                                          early_stopping={"patience": 2})))
    assert summary["reason"] == "early_stopping" and summary["step"] == 12
    assert summary["best_step"] == 4 and summary["best"] == str(checkpoint.step_dir(tmp_path, 4))
    assert [e["bad_evals"] for e in events(tmp_path, "eval")] == [0, 1, 2]
    # a rerun of the finished run does not train on
    assert run(job(stage(root, "gpt"), tmp_path, tiny(lr=0.0, max_steps=100, eval_every=4, checkpoint_every=50,
                                                       early_stopping={"patience": 2})))["step"] == 12


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(root, tmp_path, monkeypatch):
    poisoned = []  # after the step-6 checkpoint, every loss is NaN
    real = families.causal_lm_loss
    monkeypatch.setattr(families, "causal_lm_loss", lambda *a: real(*a) * (float("nan") if poisoned else 1.0))

    def poison(event):
        if event["event"] == "checkpoint" and event["step"] == 6:
            poisoned.append(True)

    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 7.*step-00000006"):
        run(job(stage(root, "gpt"), tmp_path, tiny(checkpoint_every=3, eval_every=100)), callbacks=[poison])
    assert checkpoint.latest(tmp_path) == checkpoint.step_dir(tmp_path, 6)
    weights = load_file(checkpoint.step_dir(tmp_path, 6) / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert events(tmp_path, "error")[0]["reason"] == "non_finite_loss"


@pytest.mark.parametrize("change, message", [
    ({"model": {"vocab_size": 500}}, "the tokenizer has .* tokens but pretrain.model.vocab_size is 500"),
    ({"model": {"max_seq_len": 16}}, "pretrain.block_size is 32 but the model's context .* is 16"),
    ({"model": {"family": "bert"}}, "made with a gpt tokenizer but pretrain.model.family is 'bert'"),
    ({"train": {"batch_size": 10_000_000}}, "needs at least .* GiB on cpu.* lower train.batch_size"),
])
def test_bad_configurations_are_refused_before_the_first_step(root, tmp_path, change, message):
    raw = tiny().model_dump()
    for section, values in change.items():
        raw[section] |= values
    with pytest.raises(TrainConfigError, match=message):
        run(job(stage(root, "gpt"), tmp_path, type(tiny()).model_validate(raw)))
    assert not (tmp_path / "metrics.jsonl").exists() and not checkpoint.root(tmp_path).exists()


def test_no_decay_for_norms_biases_embeddings_and_schedules():
    model = GPT(TransformerConfig(vocab_size=64, d_model=16, n_heads=2, n_layers=1, max_seq_len=8))
    decay, plain = param_groups(model, 0.1, ["norm", "bias", "embedding"], lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        n for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n)
    assert {names[id(p)] for p in plain["params"]} >= {"tok_emb.weight", "decoder.pos_emb.weight", "decoder.ln_f.weight"}
    assert len(decay["params"]) + len(plain["params"]) == len(list(model.parameters()))  # tied LM head counted once
    assert [g["weight_decay"] for g in param_groups(model, 0.1, [], lr=1e-3)] == [0.1]  # everything decays


def test_lr_scales_give_parameter_groups_their_own_learning_rate():
    model = GPT(TransformerConfig(vocab_size=64, d_model=16, n_heads=2, n_layers=2, max_seq_len=8))
    groups = param_groups(model, 0.1, ["norm", "bias", "embedding"], lr=1e-3,
                          lr_scales={"tok_emb": 0.1, "decoder": 0.5, "decoder.layers.1": 2.0})
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert lr_of["tok_emb.weight"] == pytest.approx(1e-4)
    assert lr_of["decoder.layers.0.attn.qkv.weight"] == pytest.approx(5e-4)
    assert lr_of["decoder.layers.1.attn.qkv.weight"] == pytest.approx(2e-3)  # the longest prefix wins
    assert len(lr_of) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="match no trainable parameter"):
        param_groups(model, 0.1, [], lr=1e-3, lr_scales={"encoder": 0.5})
    cfg = TrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(1 / 11) and lr_factor(9, cfg) == pytest.approx(10 / 11)
    assert lr_factor(10, cfg) == 1.0 and lr_factor(60, cfg) == pytest.approx(0.55) and lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(60, cfg.model_copy(update={"schedule": "linear"})) == pytest.approx(0.55)
    assert lr_factor(100, cfg.model_copy(update={"schedule": "constant"})) == 1.0
    assert math.isclose(lr_factor(35, cfg), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_accumulation_and_activation_checkpointing_give_the_same_losses(root, tmp_path):
    """4 x 2 micro-batches with layers recomputed in the backward == batches of 8: the same examples, the same
    mean loss, the same updates (CPU, deterministic)."""
    plain = tiny(max_steps=6, log_every=1, eval_every=100, deterministic=True)
    split = tiny(max_steps=6, log_every=1, eval_every=100, deterministic=True, batch_size=4, grad_accum=2,
                 activation_checkpointing=True)
    run(job(stage(root, "gpt"), tmp_path / "plain", plain))
    run(job(stage(root, "gpt"), tmp_path / "split", split))
    a, b = ([e["loss"] for e in events(tmp_path / name, "train")] for name in ("plain", "split"))
    assert len(a) == 6 and a == pytest.approx(b, abs=1e-5)
    assert events(tmp_path / "split", "start")[0]["tokens_per_step"] == 8 * 32


def test_pipeline_config_refuses_a_model_family_its_tokenizer_cannot_serve(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  ingest: {sources: [{name: s, format: jsonl, path: x.jsonl}]}\n  language: {allowed: [en]}\n"
                   "pretrain: {model: {family: bert}}\n")
    with pytest.raises(ConfigError, match="pretrain.model.family is 'bert' but data.tokenizer.family is 'gpt'"):
        load_config(cfg)
