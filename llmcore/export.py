"""A model directory of the pipeline (a pretrain checkpoint, a fine-tuned model, or the stage directory holding
either) as a Hugging Face directory that `transformers` loads as it is: the weights and config.json of
`llmcore.hf.save_hf`, tokenizer.json + tokenizer_config.json naming the family's special tokens,
generation_config.json and a README.md model card (the fine-tuned task and its exact prompt format).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from llmcore import hf
from llmcore.config import ConfigError
from llmcore.finetune.formats import SEP, Example, render
from llmcore.finetune.spec import SPEC_FILE, TaskSpec, pad_id
from llmcore.manifest import ManifestError, read_manifest
from llmcore.model import Transformer, load
from llmcore.tokenizer import (
    CONFIG_FILE,
    SPECIALS,
    TOKENIZER_FILE,
    TokenizerError,
    load_tokenizer,
    save_tokenizer,
    sentinel_tokens,
    special_ids,
)

# transformers model_type -> (the Auto class that loads it, its pipeline task). transformers 5 removed the
# text2text-generation pipeline (4.x has it): T5 exports are run with generate, and the task only tags the card.
USAGE = {"gpt2": ("AutoModelForCausalLM", "text-generation"), "t5": ("AutoModelForSeq2SeqLM", "text2text-generation"),
         "bert": ("AutoModelForMaskedLM", "fill-mask")}
PRETRAINED_NEW_TOKENS = 64  # a pretrained model has no task whose target length would say how many
PRETRAINED_INPUT = {"gpt": "The file", "bert": "The file is [MASK].", "t5": "The file <extra_id_0> missing."}


class ExportError(ConfigError):
    """A directory that cannot be exported; the message names it and says why."""


def model_directory(directory: Path) -> Path:
    """`directory` itself, or the model a finetune / pretrain stage directory's manifest names (pretrain: its best
    checkpoint, else its last)."""
    if not directory.is_dir():
        raise ExportError(f"{directory}: no such directory")
    if (directory / "config.json").is_file():
        return directory
    try:
        manifest = read_manifest(directory) or {}
    except ManifestError as exc:
        raise ExportError(str(exc)) from None
    named = manifest.get("model") or manifest.get("best") or manifest.get("checkpoint")
    if not named:
        raise ExportError(f"{directory}: not a model directory (no config.json) nor a pretrain / finetune stage naming one")
    return directory / named


def export(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the export of `model_dir` to `out_dir` (which must not exist, or be empty), built beside it and
    renamed into place at the end; returns `out_dir`."""
    source, out = model_directory(Path(model_dir).absolute()), Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty: remove it or export to a new directory")
    if not (source / TOKENIZER_FILE).is_file():
        raise ExportError(f"cannot export {source}: no {TOKENIZER_FILE} beside the model, and the export needs the one it was trained with")
    try:
        model = load(source)  # checks the files against their recorded sha256
        hf.config_to_hf(model.config)  # refuses what transformers has no equivalent for
        tok = load_tokenizer(source, model.config.family)
    except (OSError, ValueError, TokenizerError) as exc:
        raise ExportError(f"cannot export {source}: {exc}") from None
    check_tokenizer(source, model, tok)
    spec = TaskSpec.load(source) if (source / SPEC_FILE).is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        hf.save_hf(model, staging)
        save_tokenizer(tok, staging, model.config.family)
        tokenizer_config = json.loads((staging / CONFIG_FILE).read_text()) | tokenizer_settings(model, spec)
        (staging / CONFIG_FILE).write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        if model.config.architecture != "encoder":
            (staging / "generation_config.json").write_text(json.dumps(generation_config(model, spec), indent=2) + "\n")
        (staging / "README.md").write_text(model_card(source, out, model, tok, spec))
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_tokenizer(source: Path, model: Transformer, tok: Tokenizer) -> None:
    """The tokenizer beside the weights must be the model's: ids within its vocabulary, the same pad and eos."""
    cfg, ids = model.config, special_ids(tok, model.config.family)
    problems = [f"{role} token is id {ids[role]} in tokenizer.json but {getattr(cfg, f'{role}_token_id')} in config.json"
                for role in ("pad", "eos") if role in ids and getattr(cfg, f"{role}_token_id") not in (None, ids[role])]
    if tok.get_vocab_size() > cfg.vocab_size:
        problems.append(f"tokenizer.json has {tok.get_vocab_size()} tokens, the model's vocabulary {cfg.vocab_size}")
    if problems:
        raise ExportError(f"cannot export {source}: its tokenizer is not the model's: " + "; ".join(problems))


def tokenizer_settings(model: Transformer, spec: TaskSpec | None) -> dict:
    """What tokenizer_config.json adds to the special tokens: the longest input (an encoder-decoder's fine-tuned
    sources; otherwise the position table), left padding for a decoder-only model (batched prompts), and the
    inputs the model takes: segments for BERT only (transformers' GPT-2 would add token_type_ids' embeddings)."""
    cfg = model.config
    longest = spec.max_source_length if spec and cfg.architecture == "encoder-decoder" else cfg.max_seq_len
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if cfg.family == "bert" else ["input_ids", "attention_mask"]
    return {"model_max_length": longest, "padding_side": "left" if cfg.architecture == "decoder" else "right",
            "model_input_names": inputs}


def generation_config(model: Transformer, spec: TaskSpec | None) -> dict:
    """Greedy decoding up to the fine-tuned task's target length (what its validation metrics measured)."""
    cfg = model.config
    new_tokens = spec.max_target_length if spec else PRETRAINED_NEW_TOKENS
    if cfg.architecture == "decoder":
        new_tokens = min(new_tokens, cfg.max_seq_len // 2)  # room for the prompt in the position table
    ids = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": pad_id(model),
           "decoder_start_token_id": cfg.decoder_start_token_id}
    return {k: v for k, v in ids.items() if v is not None} | {"max_new_tokens": new_tokens, "do_sample": False, "num_beams": 1}


def prompt_format(spec: TaskSpec, decoder_only: bool) -> str:
    """The input text of the fine-tuned task, placeholders in braces: the finetune formats' own rendering, plus
    the <sep> that ends a decoder-only prompt (no space before it, as in training)."""
    source = f"{{{spec.source_lang} text}}" if spec.task == "translation" else "{document}"
    example = Example(spec.task, source, "", "", "", src_lang=spec.source_lang, tgt_lang=spec.target_lang,
                      context=(("{speaker}", "{text}"),), speaker="{answering speaker}")
    return render(example)[0] + (SEP if decoder_only else "")


def loading_example(out: Path, model_type: str | None = None) -> str:
    """One line that runs an export (model_type: read from its config.json unless given)."""
    model_type = model_type or json.loads((out / "config.json").read_text())["model_type"]
    auto, task = USAGE[model_type]
    if model_type == "t5":
        return (f"tok, model = transformers.AutoTokenizer.from_pretrained({str(out)!r}), transformers.{auto}.from_pretrained("
                f"{str(out)!r}); tok.decode(model.generate(**tok(text, return_tensors='pt'))[0], skip_special_tokens=True)")
    return f"transformers.pipeline({task!r}, model={str(out)!r})"


def task_section(model: Transformer, tok: Tokenizer, spec: TaskSpec) -> list[str]:
    """The model card's account of the fine-tuned task: what to feed the model and what it answers."""
    decoder_only = model.config.architecture == "decoder"
    eos = SPECIALS[model.config.family]["eos"]
    family_tokens = {*SPECIALS[model.config.family].values(), *sentinel_tokens()}
    task_tokens = sorted(t.content for t in tok.get_added_tokens_decoder().values() if t.special and t.content not in family_tokens)
    cut = f"Sources were cut to {spec.max_source_length - 1} tokens in training"
    if spec.task == "dialogue":
        cut += " (the oldest turns first); the prompt has one `<speaker> text` per turn, then the token of the speaker who answers"
    answer = (f"The model continues the prompt with the target and ends it with `{eos}`" if decoder_only
              else f"The tokenizer appends `{eos}` to the input, as in training; the model answers with the target")
    pair = f" {spec.source_lang} -> {spec.target_lang}" if spec.task == "translation" else ""
    return [f"- task: {spec.task}{pair} (fine-tuned)", "", "## Prompt format", "", "```", prompt_format(spec, decoder_only), "```", "",
            f"{cut}. {answer} (at most {spec.max_target_length} tokens).", "",
            "Task tokens: " + ", ".join(f"`{t}`" for t in task_tokens)]


def model_card(source: Path, out: Path, model: Transformer, tok: Tokenizer, spec: TaskSpec | None) -> str:
    cfg, hf_config = model.config, hf.config_to_hf(model.config)
    model_type, arch = hf_config["model_type"], hf_config["architectures"][0]
    auto, task = USAGE[model_type]
    lines = ["---", "library_name: transformers", f"pipeline_tag: {task}", f"tags: [llmpipe, {model_type}]", "---", "",
             f"# {out.name}", "",
             f"A {cfg.family} model ({cfg.architecture}; transformers `{arch}`) trained with llmpipe, exported from "
             f"`{source}` by `llmpipe export`.", "",
             f"- {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, vocabulary {cfg.vocab_size}, "
             + ("relative position bias" if cfg.positions == "relative" else f"context {cfg.max_seq_len} positions")]
    lines += task_section(model, tok, spec) if spec else ["- task: none (a pretrained model, not fine-tuned)"]
    text = prompt_format(spec, cfg.architecture == "decoder") if spec else PRETRAINED_INPUT[cfg.family]
    fill = "  # the braces filled in" if spec else ""
    lines += ["", "## Loading", "", "```python", "import transformers", ""]
    if model_type == "t5":
        lines += [f"tokenizer = transformers.AutoTokenizer.from_pretrained({str(out)!r})",
                  f"model = transformers.{auto}.from_pretrained({str(out)!r})",
                  f"ids = model.generate(**tokenizer({text!r}, return_tensors='pt')){fill}",
                  "print(tokenizer.decode(ids[0], skip_special_tokens=True))", "```", "",
                  f"With transformers 4.x also: `transformers.pipeline('text2text-generation', model={str(out)!r})`."]
    else:
        answer_only = ", return_full_text=False" if spec else ""  # the target without the prompt
        lines += [f"pipe = {loading_example(out, model_type)}", f"pipe({text!r}{answer_only}){fill}", "```"]
    if model_type == "bert":
        lines += ["", f"`{auto}` leaves out the pooler and the next-sentence head (reported as unexpected keys)."]
    lines.append("")
    return "\n".join(lines)
