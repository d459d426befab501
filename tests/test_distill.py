"""Distillation: the KD loss against a hand computation, alpha 0 / T 1 is plain fine-tuning, a frozen
teacher stays unchanged, students start from every k-th teacher layer, sequence-level KD trains on the
teacher's outputs, BERT MLM batches distil too."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from finetune_helpers import finetuned_model, task_config
from llmcore.config import KDConfig, StudentConfig
from llmcore.distill.losses import hidden_loss, kd_loss
from llmcore.distill.run import DistillJob, run, teacher_outputs, with_teacher_targets
from llmcore.distill.student import Distiller, StudentError, build_student, layer_map, student_config
from llmcore.finetune import formats
from llmcore.finetune.spec import load_finetuned, make_encoder, teacher_forcing
from llmcore.model import IGNORE, TransformerConfig, build_model
from llmcore.objectives import make_objective

TRAIN = {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "deterministic": True, "log_every": 2,
         "precision": "fp32", "eval_every": 4, "checkpoint_every": 4}


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [9.0, 9.0, 9.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2, IGNORE])  # the third row does not count
    T, alpha = 2.0, 0.3
    soft = hard = 0.0
    for s, t, y in zip(student[:2].tolist(), teacher[:2].tolist(), labels[:2].tolist()):
        p_t = [math.exp(v / T) / sum(math.exp(u / T) for u in t) for v in t]
        p_s = [math.exp(v / T) / sum(math.exp(u / T) for u in s) for v in s]
        soft += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s)) * T * T
        hard += -math.log(math.exp(s[y]) / sum(math.exp(v) for v in s))
    expected = alpha * soft / 2 + (1 - alpha) * hard / 2
    assert kd_loss(student, teacher, labels, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    # 1 - cosine over the masked positions; MSE over them
    a, b = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]), torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    assert hidden_loss(a, b, torch.tensor([[1, 1]]), "cosine").item() == pytest.approx(0.5)
    assert hidden_loss(a, b, torch.tensor([[0, 1]]), "mse").item() == pytest.approx(1.0)


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_temperature_one_and_weight_zero_is_plain_finetuning(tmp_path, family):
    cfg = task_config(tmp_path, "translation", lines=16)
    ft = load_finetuned(finetuned_model(tmp_path / "teacher", cfg, family))
    encode, collate = teacher_forcing(ft.model, make_encoder(ft.tok, ft.model, ft.spec))
    batch = collate([encode(ex) for ex in formats.task_examples(cfg)["train"][:4]])
    student, _ = build_student(ft.model, student_config(ft.model.config, n_layers=1), "fresh")
    plain = build_model(student.config)
    plain.load_state_dict(student.state_dict())
    Distiller(ft.model, temperature=1.0, alpha=0.0).attach(student)
    student.train(), plain.train()
    distilled, reference = student(**batch).loss, plain(**batch).loss
    assert distilled.item() == pytest.approx(reference.item(), rel=1e-5)
    distilled.backward()
    reference.backward()
    for (name, p), q in zip(student.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    student.eval()  # evaluation and generation are untouched: the student's own loss
    assert student(**batch).loss.item() == pytest.approx(plain.eval()(**batch).loss.item(), rel=1e-5)


def test_a_distilled_student_trains_and_the_frozen_teacher_stays_unchanged(tmp_path):
    cfg = task_config(tmp_path, "translation", lines=32, validation_fraction=0.25, validation_examples=2,
                      generation={"max_new_tokens": 8})
    teacher_dir = finetuned_model(tmp_path / "teacher", cfg, steps=3)
    files = {p.name: p.read_bytes() for p in teacher_dir.iterdir()}
    student = StudentConfig(name="small", n_layers=1, d_model=16, n_heads=2, init="fresh",
                            kd=KDConfig(alpha=0.7, temperature=2.0), train=TRAIN)
    job = DistillJob(cfg, str(teacher_dir), str(tmp_path / "run"), student)
    summary = run(job)
    assert {p.name: p.read_bytes() for p in teacher_dir.iterdir()} == files
    out = load_finetuned(tmp_path / "run" / summary["model"])
    assert out.model.config.d_model == 16 and len(out.model.decoder.layers) == 1
    assert summary["params"] < summary["teacher_params"] / 2 and summary["step"] == 4
    assert (tmp_path / "run" / "model" / "finetune.json").is_file()


def test_a_student_starts_from_every_kth_teacher_layer():
    teacher = build_model(TransformerConfig(family="gpt", vocab_size=50, d_model=16, n_heads=2, n_layers=4, max_seq_len=16))
    student, chosen = build_student(teacher, student_config(teacher.config, n_layers=2), "teacher")
    assert chosen == {"decoder": [0, 2]} and layer_map(4, 2, last=True) == [1, 3]
    for i, j in enumerate(chosen["decoder"]):
        for (name, p), q in zip(student.decoder.layers[i].named_parameters(), teacher.decoder.layers[j].parameters()):
            assert torch.equal(p, q), name
    assert torch.equal(student.tok_emb.weight, teacher.tok_emb.weight)
    with pytest.raises(StudentError, match="init: fresh"):
        build_student(teacher, student_config(teacher.config, d_model=8), "teacher")
    with pytest.raises(StudentError, match="hidden_weight: 0"):
        Distiller(teacher, hidden_weight=1.0).attach(build_model(student_config(teacher.config, d_model=8)))


def test_sequence_level_kd_trains_on_the_teacher_outputs(tmp_path):
    cfg = task_config(tmp_path, "translation", lines=24, validation_fraction=0.25, validation_examples=2,
                      generation={"max_new_tokens": 8})
    teacher_dir = finetuned_model(tmp_path / "teacher", cfg, steps=3)
    train = formats.task_examples(cfg)["train"]
    kd = KDConfig(sequence=True, alpha=0.0, sequence_generation={"num_beams": 2, "max_new_tokens": 8})
    rows = teacher_outputs(load_finetuned(teacher_dir), train, kd.sequence_generation)
    assert [r["id"] for r in rows] == [ex.id for ex in train]
    replaced = with_teacher_targets(train, rows)
    assert [ex.target for ex in replaced] == [r["target"] or ex.target for r, ex in zip(rows, train)]
    data = tmp_path / "outputs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    student = StudentConfig(name="seq", n_layers=1, init="teacher", kd=kd, train={**TRAIN, "max_steps": 2, "eval_every": 2})
    summary = run(DistillJob(cfg, str(teacher_dir), str(tmp_path / "run"), student, sequence_data=str(data)))
    assert summary["sequence_kd"] and summary["initialised_from"] == {"decoder": [0]}
    with pytest.raises(ValueError, match="teacher's outputs"):
        run(DistillJob(cfg, str(teacher_dir), str(tmp_path / "other"), student))


def test_bert_mlm_batches_distil_with_hidden_states_and_the_frozen_teacher_stays_unchanged():
    cfg = TransformerConfig(family="bert", vocab_size=120, d_model=16, n_heads=2, n_layers=4, max_seq_len=32, dropout=0.0)
    teacher = build_model(cfg)
    student, _ = build_student(teacher, student_config(cfg, n_layers=2), "teacher")
    distiller = Distiller(teacher, temperature=2.0, alpha=0.5, hidden_weight=1.0, hidden_kind="cosine")
    assert distiller.attach(student) is student
    tokenizer = {"vocab_size": 120, "special_ids": {"pad": 0, "cls": 1, "sep": 2, "mask": 3, "unk": 4}}
    objective = make_objective("mlm", tokenizer, 16)
    rows = [{"input_ids": np.concatenate([[1], np.arange(5, 19) + i, [2]])} for i in range(4)]
    batch = objective.collate(rows, np.random.default_rng(0))
    assert (batch["labels"] != IGNORE).any()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(2):
        loss = student(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss) and set(distiller.last_batch) == {"kd", "hidden"}
    # the frozen teacher: no gradients, still in eval mode, its weights unchanged by the student's steps
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not torch.equal(student.encoder.layers[0].attn.qkv.weight, teacher.encoder.layers[0].attn.qkv.weight)
