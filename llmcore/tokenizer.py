"""Tokenizers: train one per model family with HF `tokenizers`, or adopt an existing tokenizer.json.

- gpt:  byte-level BPE (GPT-2's pre-tokenizer), `<|endoftext|>` between documents, `<|pad|>`.
- bert: WordPiece with BERT's normalizer and pre-tokenizer; [PAD] [UNK] [CLS] [SEP] [MASK].
- t5:   Unigram over Metaspace pieces; <pad> </s> <unk>, then 100 sentinels <extra_id_N> appended
        after the trained vocabulary (as in T5).

The saved `tokenizer.json` loads in `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`;
`tokenizer_config.json` beside it names the special tokens, so `AutoTokenizer.from_pretrained(dir)`
works too. Token shards record the tokenizer file's sha256 (`tokenizer_hash`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from llmcore.config import ConfigError, TokenizerConfig
from llmcore.manifest import atomic_write, atomic_write_json, file_sha256

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SENTINELS = 100

# The special tokens of each family, by role; the trainers give them the first ids in this order.
SPECIALS: dict[str, dict[str, str]] = {
    "gpt": {"eos": "<|endoftext|>", "pad": "<|pad|>"},
    "bert": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "t5": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
}


class TokenizerError(ConfigError):
    """No tokenizer can be had as configured: a file of another family, or no text to train on."""


def sentinel_tokens() -> list[str]:
    return [f"<extra_id_{i}>" for i in range(SENTINELS)]


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, length: int | None = None) -> Tokenizer:
    """A new tokenizer of `cfg.family` trained on `texts` (streamed, memory bounded; bert reads them twice, so holds
    them: the tokenizer stage passes a bounded sample)."""
    specials = list(SPECIALS[cfg.family].values())
    if cfg.family == "gpt":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
    elif cfg.family == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        texts = list(texts)  # read twice: for the characters inside words, then to train
        inner = _inner_pieces(tok, texts)
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=specials + inner,
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    tok.train_from_iterator(texts, trainer, length=length)
    if cfg.family == "bert":
        tok = _without_added(tok, set(inner))
    if cfg.family == "t5":
        tok = _canonical_unigram(tok, len(specials))
        tok.add_special_tokens(sentinel_tokens())
    _add_post_processor(tok, cfg.family)
    return tok


def _inner_pieces(tok: Tokenizer, texts: list[str]) -> list[str]:
    """"##c" for each character c that occurs inside a word of `texts` (as `tok` normalizes and splits them).

    WordPieceTrainer numbers these pieces in the order it meets them in a hash map seeded anew in every process,
    and breaks ties between merges of equal count by those numbers: another vocabulary on every run. Passed to it
    as special tokens, they come numbered, in code point order (and leave the added tokens after training)."""
    inner = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            inner.update(word[1:])
    return [f"##{c}" for c in sorted(inner)]


def _without_added(tok: Tokenizer, tokens: set[str]) -> Tokenizer:
    """`tok` with `tokens` kept in its vocabulary but no longer matched in the text as added tokens."""
    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in tokens]
    return Tokenizer.from_str(json.dumps(state))


def _canonical_unigram(tok: Tokenizer, n_specials: int) -> Tokenizer:
    """`tok` with its Unigram pieces in an order that depends on the corpus alone.

    The trainer walks hash maps seeded anew in every process, so on the same corpus pieces of equal score come
    out in a random order, and the characters it appends to cover the alphabet (rare ones the model dropped) get
    their scores (the lowest score, plus 1e-4 more per character) in a random order; sums taken in a random
    order leave the scores different in their last bits: a new tokenizer.json, new token ids and a different
    model on every run. Here those characters take the same scores in the order of their text, scores are
    rounded to 1e-6 (finer than the float32 that SentencePiece stores them in), equal ones ordered by text."""
    state = json.loads(tok.to_str())
    specials, pieces = state["model"]["vocab"][:n_specials], state["model"]["vocab"][n_specials:]
    # The appended characters: single characters scored floor, floor + 1e-4, floor + 2e-4, ... (to within the
    # noise of the sums; any model piece on that ladder takes part too, which changes nothing that matters).
    floor, rungs = min((score for _, score in pieces), default=0.0), {}
    for i, (piece, score) in enumerate(pieces):
        rung = round((score - floor) / 1e-4)
        if len(piece) == 1 and abs(score - floor - rung * 1e-4) < 1e-7:
            rungs.setdefault(rung, []).append(i)
    appended, rung = [], 0
    while rung in rungs:
        appended += rungs[rung]
        rung += 1
    scores = sorted((pieces[i][1] for i in appended), reverse=True)
    for i, piece, score in zip(sorted(appended), sorted(pieces[i][0] for i in appended), scores):
        pieces[i] = [piece, score]
    pieces = [[piece, round(score, 6)] for piece, score in pieces]
    state["model"]["vocab"] = specials + sorted(pieces, key=lambda p: (-p[1], p[0]))
    return Tokenizer.from_str(json.dumps(state))


def _add_post_processor(tok: Tokenizer, family: str) -> None:
    """What `transformers` adds with add_special_tokens=True (token shards are encoded without it)."""
    ids = special_ids(tok, family)
    if family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["cls"]), ("[SEP]", ids["sep"])],
        )
    elif family == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["eos"])]
        )


def special_ids(tok: Tokenizer, family: str) -> dict:
    """Role -> id of the family's special tokens (t5 also: `sentinels`, the ids of <extra_id_0..99>)."""
    ids, missing = {}, []
    for role, token in special_tokens(tok, family).items():
        ids[role] = tok.token_to_id(token)
        if ids[role] is None:
            missing.append(token)
    if family == "t5":
        ids["sentinels"] = [tok.token_to_id(t) for t in sentinel_tokens()]
        missing += [t for t, i in zip(sentinel_tokens(), ids["sentinels"]) if i is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TokenizerError(
            f"the tokenizer lacks the {family} special token(s) {shown}; use a {family} tokenizer "
            "or set data.tokenizer.family to the family it was made for"
        )
    return ids


def special_tokens(tok: Tokenizer, family: str) -> dict[str, str]:
    """Role -> token; GPT-2's own tokenizer has no pad token, so a gpt tokenizer without one pads with eos."""
    tokens = dict(SPECIALS[family])
    if family == "gpt" and tok.token_to_id(tokens["pad"]) is None:
        tokens["pad"] = tokens["eos"]
    return tokens


def vocab_size(tok: Tokenizer) -> int:
    return tok.get_vocab_size(with_added_tokens=True)


def save_tokenizer(tok: Tokenizer, directory: str | Path, family: str) -> Path:
    """tokenizer.json and a tokenizer_config.json naming the special tokens, each written atomically."""
    directory = Path(directory)
    path = directory / TOKENIZER_FILE
    atomic_write(path, tok.to_str(pretty=True).encode())
    roles = {f"{role}_token": token for role, token in special_tokens(tok, family).items()}
    if family == "gpt":
        roles.update(bos_token=roles["eos_token"], unk_token=roles["eos_token"])
    if family == "t5":
        roles["additional_special_tokens"] = sentinel_tokens()
    atomic_write_json(directory / CONFIG_FILE, {"tokenizer_class": "PreTrainedTokenizerFast", **roles})
    return path


def load_tokenizer(path: str | Path, family: str | None = None) -> Tokenizer:
    """A tokenizer.json (or a directory holding one); with `family`, checks its special tokens."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"{path}: no tokenizer file here; point data.tokenizer.path at a tokenizer.json")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{path}: not a HF tokenizers file: {exc}") from None
    if family is not None:
        special_ids(tok, family)
    return tok


def tokenizer_hash(path: str | Path) -> str:
    return file_sha256(Path(path) / TOKENIZER_FILE if Path(path).is_dir() else path)


def describe(tok: Tokenizer, family: str, path: str | Path) -> dict:
    """What downstream stages and loaders need to know about a saved tokenizer."""
    return {
        "family": family,
        "vocab_size": vocab_size(tok),
        "sha256": tokenizer_hash(path),
        "special_ids": special_ids(tok, family),
    }
