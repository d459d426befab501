"""Fine-tuning: frozen weights stay put, per-group learning rates, early stopping restores the best
checkpoint, a pretrained checkpoint's vocabulary grows by the task tokens, and the flow's cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune_helpers import finetuned_model, task_config
from flow_helpers import task_runs
from llmcore.config import FinetuneTaskConfig, FreezeConfig
from llmcore.finetune.run import FinetuneJob, run
from llmcore.finetune.spec import load_finetuned
from llmcore.model import GPT, TransformerConfig
from llmcore.model.io import load
from llmcore.train import checkpoint
from llmcore.train.checks import TrainConfigError

TRAIN = {"batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "deterministic": True, "log_every": 5, "precision": "fp32"}


def tiny(tmp_path, task="translation", **fields) -> FinetuneTaskConfig:
    """A task on 48 sample records, starting from a small model directory (stands for a pretrained one)."""
    cfg = task_config(tmp_path, task, validation_fraction=0.25, validation_examples=6, **fields)
    init = finetuned_model(tmp_path / "init", cfg)
    return cfg.model_copy(update={"init": str(init)})


def test_freezing_leaves_frozen_weights_unchanged(tmp_path):
    cfg = tiny(tmp_path, freeze={"embeddings": True, "first_layers": 1},
               train={**TRAIN, "max_steps": 8, "eval_every": 4, "checkpoint_every": 4})
    before = load_file(tmp_path / "init" / "model.safetensors")
    summary = run(FinetuneJob(cfg, str(tmp_path / "run")))
    after = load_file(tmp_path / "run" / summary["model"] / "model.safetensors")
    frozen = set(summary["frozen"])
    assert frozen == {"tok_emb.weight", "decoder.pos_emb.weight", *(n for n in before if n.startswith("decoder.layers.0."))}
    for name, weight in before.items():
        if name in frozen:
            assert torch.equal(after[name], weight), name
        else:
            assert not torch.equal(after[name], weight), f"{name} should have trained"


def test_early_stopping_restores_the_best_checkpoint(tmp_path):
    # 36 training examples at a high learning rate: the model memorizes them and its validation loss
    # turns up; patience 1 stops at the first evaluation that does not improve.
    cfg = tiny(tmp_path, train={**TRAIN, "lr": 1e-2, "max_steps": 400, "eval_every": 10, "checkpoint_every": 1000,
                                "early_stopping": {"metric": "val_loss", "patience": 1}})
    summary = run(FinetuneJob(cfg, str(tmp_path / "run")))
    assert summary["reason"] == "early_stopping" and summary["best_step"] < summary["step"]
    best = checkpoint.step_dir(tmp_path / "run", summary["best_step"])
    exported = tmp_path / "run" / summary["model"]
    assert (exported / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()
    last = load_file(checkpoint.latest(tmp_path / "run") / "model.safetensors")
    assert any(not torch.equal(w, last[n]) for n, w in load_file(exported / "model.safetensors").items())
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = {e["step"]: e["val_loss"] for e in events if e["event"] == "eval"}
    assert min(losses, key=losses.get) == summary["best_step"]


def test_early_stopping_on_bleu_decodes_the_validation_examples(tmp_path):
    cfg = tiny(tmp_path, train={**TRAIN, "max_steps": 4, "eval_every": 2, "checkpoint_every": 2,
                                "early_stopping": {"metric": "bleu", "mode": "max"}})
    summary = run(FinetuneJob(cfg, str(tmp_path / "run")))
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bleu = {e["step"]: e["bleu"] for e in evals if e["event"] == "eval"}
    assert set(bleu) == {2, 4} and summary["metric"] == "bleu"
    assert summary["best_value"] == max(bleu.values()) and bleu[summary["best_step"]] == summary["best_value"]
    with pytest.raises(ValueError, match="rougeL.*is not measured"):
        run(FinetuneJob(cfg.model_copy(update={"train": cfg.train.model_copy(update={
            "early_stopping": cfg.train.early_stopping.model_copy(update={"metric": "rougeL"})})}), str(tmp_path / "x")))


def test_a_pretrained_vocabulary_grows_by_the_task_tokens(tmp_path):
    cfg = task_config(tmp_path, "dialogue", validation_fraction=0.25, train={**TRAIN, "max_steps": 2, "eval_every": 2})
    init = finetuned_model(tmp_path / "init", task_config(tmp_path, "translation"))  # knows <2de>, not <user>
    old = load(init).config.vocab_size
    summary = run(FinetuneJob(cfg.model_copy(update={"init": str(init)}), str(tmp_path / "run")))
    ft = load_finetuned(tmp_path / "run" / summary["model"])
    assert summary["added_tokens"] > 0 and ft.model.config.vocab_size == old + summary["added_tokens"]
    assert ft.tok.token_to_id("<user>") is not None and ft.tok.token_to_id("<user>") >= old
    # new rows start at the mean embedding of the old ones, and may then train
    assert ft.model.tok_emb.weight.shape[0] == ft.model.config.vocab_size


def test_refusals_name_the_fix(tmp_path):
    cfg = tiny(tmp_path, max_source_length=100, max_target_length=100, train={**TRAIN, "max_steps": 2})
    with pytest.raises(TrainConfigError, match="exceed the model's 128 positions: lower the two lengths"):
        run(FinetuneJob(cfg, str(tmp_path / "run")))
    with pytest.raises(TrainConfigError, match="synthetic_ratio is set but no back-translated pairs"):
        run(FinetuneJob(cfg.model_copy(update={"max_source_length": 32, "max_target_length": 24, "synthetic_ratio": 0.5}),
                        str(tmp_path / "run")))
    with pytest.raises(ValueError, match="freeze.encoder needs an encoder-decoder"):
        run(FinetuneJob(cfg.model_copy(update={"max_source_length": 32, "max_target_length": 24,
                                               "freeze": FreezeConfig(encoder=True)}), str(tmp_path / "run")))


def test_scratch_init_trains_a_tokenizer_and_model_on_the_task(tmp_path):
    cfg = task_config(tmp_path, "translation", init="scratch", vocab_size=400, validation_fraction=0.25,
                      model={"family": "t5", "d_model": 32, "n_heads": 2, "n_layers": 1},
                      train={**TRAIN, "max_steps": 4, "eval_every": 4})
    summary = run(FinetuneJob(cfg, str(tmp_path / "run")))
    ft = load_finetuned(tmp_path / "run" / summary["model"])
    assert ft.model.config.family == "t5" and ft.tok.token_to_id("<2de>") is not None
    assert not isinstance(ft.model, GPT)
    torch.rand(1)  # whatever drew from torch's generator in between, the same config trains the same model
    again = run(FinetuneJob(cfg, str(tmp_path / "again")))
    files = [Path(tmp_path, name, summary["model"], "model.safetensors").read_bytes() for name in ("run", "again")]
    assert again["model"] == summary["model"] and files[0] == files[1]


def test_finetune_flow_reuses_finished_models(tmp_path, prefect_server):
    from flows.finetune import finetune_flow

    cfg = tiny(tmp_path, train={**TRAIN, "max_steps": 4, "eval_every": 4})
    other = cfg.model_copy(update={"name": "trans-two", "train": cfg.train.model_copy(update={"max_steps": 2})})
    first = finetune_flow([cfg, other], data_root=str(tmp_path / "root"), return_state=True)
    paths = first.result()
    manifests = [json.loads(open(p).read()) for p in paths]
    assert [m["name"] for m in manifests] == ["trans-test", "trans-two"] and manifests[0]["key"] != manifests[1]["key"]
    assert manifests[0]["validation"]["step"] == manifests[0]["summary"]["best_step"]
    assert {f["path"] for f in manifests[0]["files"]} >= {"model/model.safetensors", "model/finetune.json"}
    second = finetune_flow([cfg, other], data_root=str(tmp_path / "root"), return_state=True)
    assert second.result() == paths
    assert {r.state.name for r in task_runs(second.state_details.flow_run_id)} == {"Cached"}


def test_batches_serve_every_example_once_per_epoch_grouped_by_length_and_resume_exactly():
    from llmcore.finetune.batches import ExampleBatches

    lengths = [3 + (i * 37) % 60 for i in range(1000)]
    examples = [{"input_ids": list(range(n)), "labels": [0]} for n in lengths]
    batches = ExampleBatches(examples, 16, lambda rows: [len(r["input_ids"]) for r in rows], seed=3)
    epoch = [next(batches) for _ in range(len(batches.epoch_batches()))]
    assert sorted(n for b in epoch for n in b) == sorted(lengths) and batches.epoch == 1
    padded = sum(max(b) * len(b) for b in epoch)
    shuffled = [lengths[i:i + 16] for i in range(0, 1000, 16)]  # the same examples, batched in file order
    assert padded < 0.7 * sum(max(b) * len(b) for b in shuffled)
    for _ in range(5):
        next(batches)
    state, expected = batches.state_dict(), [next(batches) for _ in range(70)]  # across the next epoch boundary
    resumed = ExampleBatches(examples, 16, batches.collate, seed=3)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(70)] == expected


def test_dropout_override_reaches_embeddings_residuals_and_attention():
    from torch import nn

    from llmcore.finetune.model import set_dropout

    torch.manual_seed(0)
    model = GPT(TransformerConfig(vocab_size=64, d_model=16, n_heads=2, n_layers=2, max_seq_len=8, dropout=0.0))
    set_dropout(model, 0.3)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3} and model.config.dropout == 0.3
    assert {m.dropout for m in model.modules() if isinstance(getattr(m, "dropout", None), float)} == {0.3}
    ids = torch.randint(0, 64, (2, 8))
    assert not torch.equal(model(ids).logits, model(ids).logits)  # training mode: random masks
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
