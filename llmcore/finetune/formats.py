"""Fine-tuning task formats: JSONL records -> examples -> (source, target) text -> token batches.

Records (the bundled files in configs/sample have these fields):
- translation:   {"en": str, "de": str, ...}         one pair; either side can be the source
- summarization: {"document": str, "summary": str}
- dialogue:      {"turns": [{"speaker": str, "text": str}, ...]}   the last turn is the target

Rendered text (special tokens mark the task, so one model can learn a mix of tasks):
- translation:   "<2de> The file is missing."             -> "Die Datei fehlt."
- summarization: "<summarize> alarm() arranges for ..."   -> "set an alarm clock ..."
- dialogue:      "<user> How do I ...? <assistant>"        -> "Call the function ..."
  (every turn of the context behind its speaker token, then the token of the speaker who answers)

Token examples:
- encoder-decoder: input_ids = source (+ eos), labels = target + eos; `collate_seq2seq` pads them and
  builds decoder_input_ids (labels shifted right), as `llmcore.objectives.pad_seq2seq` does.
- decoder-only: input_ids = source + <sep> + target + eos, labels = the same ids with -100 on the prompt
  (source + <sep>) and on padding, so only the target is learnt; the model shifts labels itself.
  Generation feeds `prompt_ids` (source + <sep>), left-padded by `collate_prompts`.
Sources longer than max_source_length lose tokens from the right, except dialogue contexts, which lose
their oldest turns first (the left), so the speaker token that asks for the answer always stays.

The task tokens are not in a pretrained vocabulary: add them with `add_task_tokens(tok, examples)`
(`Tokenizer.add_special_tokens`, so they are never split) before encoding; the trainer must then grow
the model's embedding to the new vocabulary size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer

from llmcore.objectives import IGNORE, pad, pad_seq2seq, to_tensor

SPLITS = ("train", "validation", "test")
SUMMARIZE, SEP = "<summarize>", "<sep>"


def lang_tag(lang: str) -> str:
    """The target-language token on the source side (Johnson et al. 2017): <2de>, <2fr>, ..."""
    return f"<2{lang}>"


def speaker_token(speaker: str) -> str:
    return f"<{speaker}>"


class FormatError(ValueError):
    """A record that does not fit its task's format; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    task: str
    source: str  # translation: the source sentence; summarization: the document; dialogue: ""
    target: str
    where: str  # "file:line" it was read from
    key: str  # what the split hashes: duplicates and both directions of a pair share a split
    src_lang: str = ""
    tgt_lang: str = ""
    context: tuple[tuple[str, str], ...] = ()  # dialogue: (speaker, text) turns before the target
    speaker: str = ""  # dialogue: who says the target

    @property
    def id(self) -> str:
        """A stable content hash: names the example in prediction files and its augmented copies."""
        return _digest(json.dumps([self.task, self.src_lang, self.source, self.context, self.target]))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _records(path: Path) -> Iterable[tuple[int, dict]]:
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{line}: malformed JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(obj, dict):
                raise FormatError(f"{path}:{line}: a JSON line must be an object, not {type(obj).__name__}")
            yield line, obj


def _text(obj: dict, field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        found = "missing" if field not in obj else f"a {type(value).__name__}" if not isinstance(value, str) else "empty"
        raise FormatError(f"{where}: field {field!r} must be a non-empty string; it is {found} (fields: {sorted(obj)})")
    return value


def load_translation(path: str | Path, src: str, tgt: str, pivot: str = "en") -> list[Example]:
    """Pairs `src` -> `tgt` from a JSONL file with one field per language. The split key is the `pivot`
    side when the pair has it (so a sentence shared by en-de and en-fr, or read in both directions, is in
    one split everywhere), else both sides."""
    path, out = Path(path), []
    for line, obj in _records(path):
        where = f"{path}:{line}"
        source, target = _text(obj, src, where), _text(obj, tgt, where)
        key = obj[pivot] if pivot in (src, tgt) else json.dumps(sorted([source, target]))
        out.append(Example("translation", source, target, where, key, src_lang=src, tgt_lang=tgt))
    return out


def load_summarization(path: str | Path) -> list[Example]:
    path, out = Path(path), []
    for line, obj in _records(path):
        where = f"{path}:{line}"
        document = _text(obj, "document", where)
        out.append(Example("summarization", document, _text(obj, "summary", where), where, document))
    return out


def load_dialogue(path: str | Path) -> list[Example]:
    """One example per dialogue: its last turn is the target, the turns before it the context."""
    path, out = Path(path), []
    for line, obj in _records(path):
        where = f"{path}:{line}"
        turns = obj.get("turns")
        if not isinstance(turns, list) or len(turns) < 2:
            raise FormatError(f"{where}: 'turns' must be a list of at least 2 {{speaker, text}} objects")
        pairs = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise FormatError(f"{where}: turn {i} must be an object with 'speaker' and 'text'")
            pairs.append((_text(turn, "speaker", f"{where}: turn {i}"), _text(turn, "text", f"{where}: turn {i}")))
        context, (speaker, target) = tuple(pairs[:-1]), pairs[-1]
        out.append(Example("dialogue", "", target, where, json.dumps(context), context=context, speaker=speaker))
    return out


def split_of(example: Example, validation: float = 0.1, test: float = 0.1) -> str:
    """train / validation / test by blake2b of the example's key (stable across processes and runs,
    unlike Python's salted `hash`): the lowest `test` fraction of the hash range is test, the next
    `validation` fraction validation."""
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError(f"validation ({validation}) and test ({test}) fractions must be >= 0 and sum below 1")
    u = int(_digest(example.key), 16) / 2**64
    return "test" if u < test else "validation" if u < test + validation else "train"


def split(examples: Iterable[Example], validation: float = 0.1, test: float = 0.1) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for ex in examples:
        out[split_of(ex, validation, test)].append(ex)
    return out


def render(example: Example) -> tuple[str, str]:
    """(source text, target text) with the task's special tokens; see the module docstring."""
    if example.task == "translation":
        return f"{lang_tag(example.tgt_lang)} {example.source}", example.target
    if example.task == "summarization":
        return f"{SUMMARIZE} {example.source}", example.target
    turns = " ".join(f"{speaker_token(s)} {t}" for s, t in example.context)
    return f"{turns} {speaker_token(example.speaker)}", example.target


def task_tokens(examples: Iterable[Example]) -> list[str]:
    """The special tokens that rendering `examples` uses, sorted."""
    tokens = {SEP}
    for ex in examples:
        if ex.task == "translation":
            tokens.add(lang_tag(ex.tgt_lang))
        elif ex.task == "summarization":
            tokens.add(SUMMARIZE)
        else:
            tokens.update(speaker_token(s) for s, _ in (*ex.context, (ex.speaker, "")))
    return sorted(tokens)


def add_task_tokens(tok: Tokenizer, examples: Iterable[Example]) -> int:
    """Adds the task tokens `tok` lacks as special tokens; returns how many were new (the model's
    embedding must grow by as many: that is the trainer's job)."""
    return tok.add_special_tokens(task_tokens(examples))


@dataclass(frozen=True)
class Encoder:
    """Tokenizes rendered examples under a length budget. eos_id ends every target and, when
    `source_eos` (T5's habit), every encoder source; decoder-only prompts end in the tokenizer's <sep>."""

    tok: Tokenizer
    eos_id: int
    max_source_length: int = 512
    max_target_length: int = 128
    source_eos: bool = True

    def _ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def source_ids(self, example: Example, room: int) -> list[int]:
        ids = self._ids(render(example)[0])
        if len(ids) <= room:
            return ids
        return ids[len(ids) - room :] if example.task == "dialogue" else ids[:room]

    def target_ids(self, example: Example) -> list[int]:
        return self._ids(render(example)[1])[: self.max_target_length - 1] + [self.eos_id]

    def seq2seq(self, example: Example) -> dict[str, list[int]]:
        """Encoder-decoder: {input_ids, labels}; max_source_length counts the source eos."""
        if self.source_eos:
            source = self.source_ids(example, self.max_source_length - 1) + [self.eos_id]
        else:
            source = self.source_ids(example, self.max_source_length)
        return {"input_ids": source, "labels": self.target_ids(example)}

    def prompt_ids(self, example: Example) -> list[int]:
        """Decoder-only prompt: source + <sep>, at most max_source_length tokens."""
        sep = self.tok.token_to_id(SEP)
        if sep is None:
            raise ValueError(f"the tokenizer has no {SEP} token; call add_task_tokens(tok, examples) first")
        return self.source_ids(example, self.max_source_length - 1) + [sep]

    def causal(self, example: Example) -> dict[str, list[int]]:
        """Decoder-only: {input_ids: prompt + target, labels: -100 on the prompt, the target ids after};
        at most max_source_length + max_target_length tokens."""
        prompt, target = self.prompt_ids(example), self.target_ids(example)
        return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def collate_seq2seq(examples: Sequence[dict], pad_id: int, decoder_start_id: int | None = None) -> dict[str, torch.Tensor]:
    return pad_seq2seq([e["input_ids"] for e in examples], [e["labels"] for e in examples], pad_id, decoder_start_id)


def collate_causal(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch: padding is masked out and never a label."""
    return {
        "input_ids": to_tensor(pad([e["input_ids"] for e in examples], pad_id)),
        "attention_mask": to_tensor(pad([[1] * len(e["input_ids"]) for e in examples], 0)),
        "labels": to_tensor(pad([e["labels"] for e in examples], IGNORE)),
    }


def collate_prompts(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts for `llmcore.generate.generate` on a decoder-only model."""
    width = max(len(p) for p in prompts)
    return {
        "input_ids": torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts]),
        "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
    }


def collate_sources(sources: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded encoder inputs for `llmcore.generate.generate` on an encoder-decoder model."""
    return {"input_ids": to_tensor(pad(sources, pad_id)), "attention_mask": to_tensor(pad([[1] * len(s) for s in sources], 0))}


def task_examples(cfg) -> dict[str, list[Example]]:
    """The train / validation / test examples of a `FinetuneTaskConfig`."""
    if cfg.task == "translation":
        examples = load_translation(cfg.path, cfg.source_lang, cfg.target_lang)
    else:
        examples = load_summarization(cfg.path) if cfg.task == "summarization" else load_dialogue(cfg.path)
    return split(examples, cfg.validation_fraction, cfg.test_fraction)
