"""`llmpipe validate` runs every pre-flight check: each bad config below is one that used to validate and then
fail late (or train on a silently coerced value); now validate, and `llmpipe run` before any stage, refuse
it with the file, line, setting and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flows.cli import main

BASE = textwrap.dedent("""\
    data:
      ingest:
        sources:
          - {name: web, format: jsonl, path: corpus/web.jsonl}
      language:
        allowed: [en, de]
    pretrain:
      model: {d_model: 32, n_heads: 2, n_layers: 2}
      block_size: 64
      train:
        max_steps: 10
    finetune:
      - name: mt
        task: translation
        path: pairs.jsonl
        source_lang: en
        target_lang: de
        max_source_length: 16
        max_target_length: 16
    """)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / "web.jsonl").write_text('{"text": "a document"}\n')
    (tmp_path / "pairs.jsonl").write_text('{"en": "a cat", "de": "eine Katze"}\n')
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# (what is wrong, the change to BASE, the setting and line reported, what the message says)
CHECKS = [
    ("block_size over max_seq_len", ("n_layers: 2}", "n_layers: 2, max_seq_len: 32}"),
     ":9 pretrain.block_size", "exceed the model's 32 positions"),
    ("d_model not divisible by n_heads", ("n_heads: 2", "n_heads: 3"), ":8 pretrain.model", "make d_model a multiple of n_heads"),
    ("pretraining metric not measured", ("max_steps: 10", "max_steps: 10\n    early_stopping: {metric: bleu}"),
     ":12 pretrain.train.early_stopping.metric", "not measured in pretraining; use one of ['val_loss', 'val_ppl']"),
    ("fine-tune metric not measured", ("max_target_length: 16", "max_target_length: 16\n    train: {early_stopping: {metric: rougeL}}"),
     ":20 finetune.0.train.early_stopping.metric", "not measured for a translation task"),
    ("fine-tune path missing", ("path: pairs.jsonl", "path: nope.jsonl"), ":15 finetune.0.path", "nope.jsonl does not exist"),
    ("fine-tune init directory missing", ("max_target_length: 16", "max_target_length: 16\n    init: nowhere"),
     ":20 finetune.0.init", "nowhere does not exist"),
    ("validation + test fractions leave nothing", ("max_target_length: 16", "max_target_length: 16\n    validation_fraction: 0.5\n"
                                                   "    test_fraction: 0.5"), ":13 finetune.0", "keep their sum below 1"),
    ("freezing more layers than the model has", ("max_target_length: 16", "max_target_length: 16\n    freeze: {first_layers: 3}"),
     ":20 finetune.0.freeze.first_layers", "the pretrained model has 2 (pretrain.model.n_layers)"),
    ("decoder-only source + target over the positions", ("max_target_length: 16", "max_target_length: 60"),
     ":18 finetune.0.max_source_length", "76 tokens (max_source_length + max_target_length) exceed the 64 positions"),
    ("a scratch model's positions", ("max_target_length: 16", "max_target_length: 16\n    init: scratch\n"
                                     "    model: {d_model: 32, n_heads: 2, n_layers: 1, max_seq_len: 24}"),
     ":18 finetune.0.max_source_length", "exceed the 24 positions of this task's model"),
    ("fine-tuning an encoder", ("model: {d_model", "model: {family: bert, d_model"),
     ":14 finetune.0.init", "bert encoder, which cannot generate"),
    ("duplicate key", ("    max_steps: 10", "    max_steps: 10\n    max_steps: 20"),
     ":11 pretrain.train.max_steps", "given twice: here and again at line 12"),
    ("a bool for an integer", ("max_steps: 10", "max_steps: true"), ":11 pretrain.train.max_steps", "true is not a number"),
    ("a bool for a nullable float", ("max_steps: 10", "grad_clip: false"), ":11 pretrain.train.grad_clip", "(or null)"),
    ("unknown language code", ("[en, de]", "[en, english]"), ":6 data.language.allowed", "['english'] not among the languages"),
    ("missing source path", ("corpus/web.jsonl", "corpus/*.txt"), ":4 data.ingest.sources.0.path", "matches no file"),
]


def test_the_base_config_is_valid(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, BASE))]) == 0
    assert "valid (1 source(s): web)" in capsys.readouterr().out


@pytest.mark.parametrize("change, where, says", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_validate_reports_each_preflight_check(tmp_path, capsys, change, where, says):
    old, new = change
    assert old in BASE
    text = BASE.replace(old, new)
    if "bert" in new:  # the tokenizer's family must match the model's, or that is reported first
        text = text.replace("data:\n", "data:\n  tokenizer: {family: bert}\n")
    path = write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and f"{path}{where}: " in err and says in err, err


def test_run_refuses_before_any_stage(tmp_path, capsys):
    path = write(tmp_path, BASE.replace("max_steps: 10", "max_steps: true"))
    assert main(["run", str(path), "--data-root", str(tmp_path / "data")]) == 2
    assert "pretrain.train.max_steps" in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_merge_keys_override_without_being_duplicates(tmp_path, capsys):
    text = BASE.replace("    max_target_length: 16\n", "    max_target_length: 16\n    train: &t {max_steps: 5, lr: 1.0e-3}\n") + \
        "  - {name: mt2, task: translation, path: pairs.jsonl, source_lang: en, target_lang: de, max_source_length: 16,\n" + \
        "     max_target_length: 16, train: {<<: *t, max_steps: 7}}\n"
    assert main(["validate", str(write(tmp_path, text))]) == 0, capsys.readouterr().err
