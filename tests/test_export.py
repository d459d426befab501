"""`llmpipe export`: model directories of the pipeline that transformers' Auto classes, AutoTokenizer and pipelines
load as they are, computing what llmcore computes."""

import re

import huggingface_hub
import pytest
import torch
import transformers
from torch.testing import assert_close

import train_helpers
from finetune_helpers import finetune_stage, finetuned_model, task_config, train
from flows.cli import main
from llmcore import export as export_module
from llmcore.config import GenerationConfig, TokenizerConfig
from llmcore.export import prompt_format
from llmcore.finetune import formats
from llmcore.finetune.predict import predict
from llmcore.finetune.spec import TaskSpec, load_finetuned
from llmcore.generate import generate
from llmcore.model import TransformerConfig, build_model, load, save
from llmcore.tokenizer import TOKENIZER_FILE, load_tokenizer, sentinel_tokens, train_tokenizer, vocab_size
from llmcore.train.pretrain import run

TOL = dict(rtol=0, atol=1e-4)
LOCAL = dict(local_files_only=True)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing is downloaded: huggingface_hub reads the variable once, at import, so its constant is set too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def exported(model_dir, out, capsys):
    assert main(["export", str(model_dir), "--to", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported to {out}" in printed and "load it: " in printed
    return out


def memorized(model_dir, task_cfg, steps):
    """The fine-tuned model of `model_dir` trained on one test example until it says it (a tiny model trained on the whole
    task writes spaces or stray bytes): (the model, the example). The example's source fits max_source_length uncut, as
    the exported tokenizer leaves cutting to the caller."""
    ft = load_finetuned(model_dir)
    room = ft.spec.max_source_length - 1
    example = next(ex for ex in formats.task_examples(task_cfg)["test"]
                   if len(ft.tok.encode(formats.render(ex)[0], add_special_tokens=False).ids) <= room)
    train(ft.model, ft.encoder, [example], steps)
    save(ft.model.eval(), model_dir)
    return load_finetuned(model_dir), example


def test_fine_tuned_gpt_runs_in_a_text_generation_pipeline_as_in_llmcore(tmp_path, capsys):
    task_cfg = task_config(tmp_path, "translation")
    ft, example = memorized(finetuned_model(tmp_path / "finetune" / "k" / "model", task_cfg, "gpt"), task_cfg, steps=60)
    out = exported(tmp_path / "finetune" / "k" / "model", tmp_path / "export", capsys)
    cfg = ft.model.config

    card = (out / "README.md").read_text()
    assert "- task: translation en -> de" in card and f"`{tmp_path / 'finetune' / 'k' / 'model'}`" in card
    prompt_format = "<2de> {en text}<sep>"
    assert f"```\n{prompt_format}\n```" in card
    tok = transformers.AutoTokenizer.from_pretrained(out, **LOCAL)
    assert (tok.eos_token, tok.pad_token, tok.eos_token_id, tok.pad_token_id) == ("<|endoftext|>", "<|pad|>", cfg.eos_token_id,
                                                                                 cfg.pad_token_id)
    assert tok.model_max_length == cfg.max_seq_len
    prompt = prompt_format.replace("{en text}", example.source)
    assert tok(prompt).input_ids == ft.encoder.prompt_ids(example)  # the card's format is exact

    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, **LOCAL).eval()
    ids = torch.tensor([ft.encoder.causal(example)["input_ids"]])
    with torch.no_grad():
        assert_close(theirs(ids).logits, ft.model(ids).logits, **TOL)

    generated = transformers.pipeline("text-generation", model=str(out))(prompt, return_full_text=False)[0]["generated_text"]
    assert generated.strip() == predict(ft, [example], GenerationConfig(max_new_tokens=task_cfg.max_target_length))[0]
    assert generated.strip()  # (the target, once the model has learnt it)


def test_fine_tuned_t5_stage_generates_in_transformers_as_in_llmcore(tmp_path, capsys):
    task_cfg = task_config(tmp_path, "translation")
    stage = finetune_stage(tmp_path, task_cfg, "t5").parent
    ft, example = memorized(stage / "model", task_cfg, steps=80)
    out = exported(stage, tmp_path / "export", capsys)  # the stage directory: its manifest names the model
    cfg = ft.model.config

    card = (out / "README.md").read_text()
    assert "- task: translation en -> de" in card and "```\n<2de> {en text}\n```" in card  # no <sep>: the tokenizer appends </s>
    tok = transformers.AutoTokenizer.from_pretrained(out, **LOCAL)
    assert (tok.eos_token, tok.pad_token, tok.unk_token) == ("</s>", "<pad>", "<unk>")
    assert (tok.eos_token_id, tok.pad_token_id) == (cfg.eos_token_id, cfg.pad_token_id)
    assert set(sentinel_tokens()) <= set(tok.all_special_tokens)
    source = formats.render(example)[0]
    assert tok(source).input_ids == ft.encoder.seq2seq(example)["input_ids"]

    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(out, **LOCAL).eval()
    assert (theirs.generation_config.decoder_start_token_id, theirs.generation_config.max_new_tokens) == (
        cfg.decoder_start_token_id, task_cfg.max_target_length)
    batch = formats.collate_seq2seq([ft.encoder.seq2seq(example)], cfg.pad_token_id, cfg.decoder_start_token_id)
    with torch.no_grad():
        assert_close(theirs(**batch).logits, ft.model(**batch).logits, **TOL)
        # transformers 5 has no text2text-generation pipeline: generate, as the card says (greedy, max_new_tokens from the export)
        generated = theirs.generate(**tok(source, return_tensors="pt"))[0]
        expected = generate(ft.model, batch["input_ids"], max_new_tokens=task_cfg.max_target_length)[0]
    assert generated.tolist() == expected.tolist()
    text = tok.decode(generated, skip_special_tokens=True).strip()
    assert text == predict(ft, [example], GenerationConfig(max_new_tokens=task_cfg.max_target_length))[0]
    assert text  # (the target, once the model has learnt it)


def test_prompt_formats_are_the_finetune_formats():
    assert prompt_format(TaskSpec("summarization", 32, 24), decoder_only=True) == "<summarize> {document}<sep>"
    assert prompt_format(TaskSpec("dialogue", 32, 24), decoder_only=False) == "<{speaker}> {text} <{answering speaker}>"


def test_pretrained_bert_checkpoint_runs_in_a_fill_mask_pipeline(tmp_path, capsys):
    _, tokens = train_helpers.data_root(tmp_path, "bert")
    summary = run(train_helpers.job(tokens.parent, tmp_path / "run", train_helpers.tiny("bert", max_steps=2, checkpoint_every=2)))
    checkpoint = summary["final"]  # <run>/checkpoints/step-N, trainer state and checkpoint.json beside the model
    out = exported(checkpoint, tmp_path / "export", capsys)
    ours = load(checkpoint).eval()
    assert "- task: none" in (out / "README.md").read_text()
    assert not (out / "generation_config.json").exists()

    tok = transformers.AutoTokenizer.from_pretrained(out, **LOCAL)
    our_tok = load_tokenizer(checkpoint)
    for role in ("pad", "unk", "cls", "sep", "mask"):
        token = getattr(tok, f"{role}_token")
        assert token == f"[{role.upper()}]" and getattr(tok, f"{role}_token_id") == our_tok.token_to_id(token)
    text = "Die Datei [MASK] nicht gefunden."
    inputs = tok(text, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == our_tok.encode(text).ids  # [CLS] ... [SEP]

    theirs = transformers.AutoModelForMaskedLM.from_pretrained(out, **LOCAL).eval()
    with torch.no_grad():
        expected = ours(inputs["input_ids"], attention_mask=inputs["attention_mask"], token_type_ids=inputs["token_type_ids"]).logits
        assert_close(theirs(**inputs).logits, expected, **TOL)
    mask = inputs["input_ids"][0].tolist().index(tok.mask_token_id)
    best = transformers.pipeline("fill-mask", model=str(out))(text)[0]
    assert best["token"] == expected[0, mask].argmax().item() and best["sequence"]


def gpt_dir(directory, **config):
    """A model directory as a pretrain checkpoint holds it, with a tiny GPT tokenizer."""
    tok = train_tokenizer(["the file is missing", "die Datei fehlt"], TokenizerConfig(family="gpt", vocab_size=300, min_frequency=1))
    save(build_model(TransformerConfig(vocab_size=vocab_size(tok), d_model=16, n_heads=2, n_layers=1, max_seq_len=32, **config)),
         directory)
    tok.save(str(directory / TOKENIZER_FILE))
    return directory


@pytest.mark.parametrize("config, why", [
    (dict(family="gpt", positions="rotary"), r"positions='rotary' \(transformers' gpt2: 'learned'\)"),
    (dict(family="transformer"), "family 'transformer' has no transformers equivalent"),
    (dict(family="gpt", eos_token_id=5), r"eos token is id \d+ in tokenizer.json but 5 in config.json"),
])
def test_what_transformers_cannot_run_the_same_is_refused(tmp_path, capsys, config, why):
    source = gpt_dir(tmp_path / "model", **config)
    assert main(["export", str(source), "--to", str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err
    assert f"cannot export {source}: " in err
    assert re.search(why, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing written


def test_export_is_all_or_nothing(tmp_path, capsys, monkeypatch):
    source = gpt_dir(tmp_path / "model")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["export", str(source), "--to", str(tmp_path / "taken")]) == 2
    assert "taken exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "taken"), "--to", str(tmp_path / "export")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    bare = gpt_dir(tmp_path / "bare")
    (bare / TOKENIZER_FILE).unlink()
    assert main(["export", str(bare), "--to", str(tmp_path / "export")]) == 2
    assert f"cannot export {bare}: no tokenizer.json beside the model" in capsys.readouterr().err

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "model_card", fail)  # the last file written
    with pytest.raises(OSError, match="disk full"):
        main(["export", str(source), "--to", str(tmp_path / "export")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "model", "taken"]  # no half export, no temp dir left
