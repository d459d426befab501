"""Pretraining objectives: each builds its examples at load time from one tokenization (the token shards).

An objective pulls tokens from the loader's `TokenStream` (documents in the epoch's order) with
`example(stream, rng)`, one example or None once the stream is exhausted, and turns a list of
them into a batch with `collate(examples, rng)`: a dict of int64 torch tensors named as in
`transformers` (input_ids, attention_mask, labels, token_type_ids, next_sentence_label,
decoder_input_ids). All randomness comes from `rng`, whose state the loader saves: resume is exact.

- CLM: documents packed into `block_size` windows, EOS after each document; labels = input_ids
  (the model shifts them, as transformers' causal LMs do). Packed batches hold no padding, so they
  carry no attention_mask: an all-ones mask would keep SDPA off its fused causal kernels.
- MLM: packed like CLM, [SEP] between documents, [CLS] ... [SEP] around each window; 15% of the
  maskable tokens (never special tokens or padding) are predicted: 80% -> [MASK], 10% -> a random
  token, 10% unchanged; labels are -100 everywhere else (no padding: no attention_mask either).
- NSP: BERT's pairs [CLS] A [SEP] B [SEP] (token_type_ids 0 / 1): B continues A (label 0) or, half
  the time, is a span of another document (label 1); masked as MLM.
- SpanCorruption: T5's objective: noise density 0.15, mean span length 3; each noise span becomes
  one sentinel in input_ids, labels list each sentinel followed by its span, then EOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

IGNORE = -100  # labels that the loss skips (transformers' convention)


class TokenStream(Protocol):
    def take(self, n: int, sep: int) -> np.ndarray | None: ...
    def chunk(self, max_tokens: int, min_tokens: int) -> tuple[np.ndarray, int] | None: ...
    def random_doc(self, rng: np.random.Generator, exclude: int) -> np.ndarray: ...


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.int64))


@dataclass(frozen=True)
class CLM:
    block_size: int
    eos_id: int

    def example(self, stream: TokenStream, rng: np.random.Generator) -> dict | None:
        ids = stream.take(self.block_size, self.eos_id)
        return None if ids is None else {"input_ids": ids}

    def collate(self, examples: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ids = to_tensor(np.stack([e["input_ids"] for e in examples]))
        return {"input_ids": ids, "labels": ids.clone()}


@dataclass(frozen=True)
class Masking:
    """BERT's 80/10/10 rule over the tokens that are neither special nor padding."""

    mask_id: int
    special_ids: tuple[int, ...]  # never masked, never drawn as the random replacement
    vocab_size: int
    probability: float = 0.15
    replacements: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "replacements", np.setdiff1d(np.arange(self.vocab_size), self.special_ids))

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) for an int64 batch `ids`."""
        chosen = (rng.random(ids.shape) < self.probability) & ~np.isin(ids, self.special_ids)
        labels = np.where(chosen, ids, IGNORE)
        roll = rng.random(ids.shape)
        inputs = np.where(chosen & (roll < 0.8), self.mask_id, ids)
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        inputs[swap] = self.replacements[rng.integers(len(self.replacements), size=int(swap.sum()))]
        return inputs, labels


@dataclass(frozen=True)
class MLM:
    max_length: int
    cls_id: int
    sep_id: int
    pad_id: int
    masking: Masking

    def example(self, stream: TokenStream, rng: np.random.Generator) -> dict | None:
        body = stream.take(self.max_length - 2, self.sep_id)
        if body is None:
            return None
        return {"input_ids": np.concatenate([[self.cls_id], body, [self.sep_id]])}

    def collate(self, examples: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ids = np.stack([e["input_ids"] for e in examples]).astype(np.int64)
        inputs, labels = self.masking(ids, rng)
        types = torch.zeros(ids.shape, dtype=torch.int64)
        return {"input_ids": to_tensor(inputs), "token_type_ids": types, "labels": to_tensor(labels)}


@dataclass(frozen=True)
class NSP:
    """BERT pretraining pairs: next sentence prediction plus masked LM, padded to `max_length`."""

    max_length: int
    cls_id: int
    sep_id: int
    pad_id: int
    masking: Masking
    random_next: float = 0.5

    def example(self, stream: TokenStream, rng: np.random.Generator) -> dict | None:
        got = stream.chunk(self.max_length - 3, 2)  # [CLS] A [SEP] B [SEP]
        if got is None:
            return None
        tokens, doc = got
        cut = int(rng.integers(1, len(tokens)))
        a, b, is_random = tokens[:cut], tokens[cut:], rng.random() < self.random_next
        if is_random:  # a span as long as the true continuation, from any other document
            other = stream.random_doc(rng, exclude=doc)
            start = int(rng.integers(0, max(1, len(other) - len(b) + 1)))
            b = other[start : start + len(b)]
        ids = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
        types = np.zeros(len(ids), dtype=np.int64)
        types[len(a) + 2 :] = 1
        return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": int(is_random)}

    def collate(self, examples: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ids = pad([e["input_ids"] for e in examples], self.pad_id, self.max_length)
        types = pad([e["token_type_ids"] for e in examples], 0, self.max_length)
        inputs, labels = self.masking(ids, rng)
        return {
            "input_ids": to_tensor(inputs),
            "attention_mask": to_tensor(pad([np.ones(len(e["input_ids"])) for e in examples], 0, self.max_length)),
            "token_type_ids": to_tensor(types),
            "labels": to_tensor(labels),
            "next_sentence_label": torch.tensor([e["next_sentence_label"] for e in examples], dtype=torch.int64),
        }


@dataclass(frozen=True)
class SpanCorruption:
    """T5's span corruption over packed text; every example has the same input and label lengths."""

    input_length: int  # encoder tokens, EOS included
    eos_id: int
    pad_id: int
    sentinel_ids: tuple[int, ...]
    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def __post_init__(self) -> None:
        if self.input_length < 4:
            raise ValueError("span corruption needs input_length >= 4")
        spans = self.noise(self.raw_length)[1]
        if spans > len(self.sentinel_ids):
            raise ValueError(
                f"input_length {self.input_length} needs {spans} sentinels; the tokenizer has {len(self.sentinel_ids)}"
            )

    def noise(self, length: int) -> tuple[int, int]:
        """(noise tokens, noise spans) in `length` raw tokens, as T5's random_spans_noise_mask counts them."""
        noise = min(max(round(length * self.noise_density), 1), length - 1)
        return noise, max(round(noise / self.mean_span_length), 1)

    @property
    def raw_length(self) -> int:
        """The most raw tokens whose corrupted input (kept tokens, a sentinel per span, EOS) fits input_length."""
        length = self.input_length - 1
        while self._input_len(length + 1) <= self.input_length:
            length += 1
        return length

    @property
    def label_length(self) -> int:
        noise, spans = self.noise(self.raw_length)
        return noise + spans + 1

    def _input_len(self, length: int) -> int:
        noise, spans = self.noise(length)
        return length - noise + spans + 1

    def example(self, stream: TokenStream, rng: np.random.Generator) -> dict | None:
        raw = stream.take(self.raw_length, self.eos_id)
        if raw is None:
            return None
        noise = span_noise_mask(len(raw), *self.noise(len(raw)), rng)
        starts = noise & ~np.concatenate([[False], noise[:-1]])
        sentinels = np.asarray(self.sentinel_ids[: int(starts.sum())], dtype=np.int64)
        kept_before = np.cumsum(~noise)[starts]  # kept tokens before each span: where its sentinel goes
        inputs = np.insert(raw[~noise].astype(np.int64), kept_before, sentinels)
        labels = np.insert(raw[noise].astype(np.int64), np.flatnonzero(starts[noise]), sentinels)
        return {"input_ids": np.append(inputs, self.eos_id), "labels": np.append(labels, self.eos_id)}

    def collate(self, examples: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        inputs = pad([e["input_ids"] for e in examples], self.pad_id, self.input_length)
        labels = np.stack([e["labels"] for e in examples])
        return {
            "input_ids": to_tensor(inputs),
            "attention_mask": to_tensor(inputs != self.pad_id),
            "labels": to_tensor(labels),
            "decoder_input_ids": to_tensor(shift_right(labels, self.pad_id)),
        }


def span_noise_mask(length: int, noise: int, spans: int, rng: np.random.Generator) -> np.ndarray:
    """T5's random_spans_noise_mask: `spans` noise spans, interleaved with kept spans, kept first."""

    def segment(items: int) -> np.ndarray:  # a random split of `items` into `spans` positive lengths
        cuts = np.sort(rng.choice(np.arange(1, items), spans - 1, replace=False))
        return np.diff(np.concatenate([[0], cuts, [items]]))

    lengths = np.stack([segment(length - noise), segment(noise)], axis=1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), lengths)


def shift_right(labels: np.ndarray, start_id: int, pad_id: int | None = None) -> np.ndarray:
    """Decoder inputs: labels one step right after `start_id`, ignored labels read as padding."""
    shifted = np.full_like(labels, start_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[shifted == IGNORE] = start_id if pad_id is None else pad_id
    return shifted


def pad(seqs: Sequence[np.ndarray], value: int, length: int | None = None) -> np.ndarray:
    """A [batch, length] int64 array of `seqs`, right-padded with `value` (length: the longest by default)."""
    out = np.full((len(seqs), length or max(len(s) for s in seqs)), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def pad_seq2seq(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int, decoder_start_id: int | None = None
) -> dict[str, torch.Tensor]:
    """A translation / summarization batch: sources padded with pad_id, targets with -100 in labels,
    decoder_input_ids = labels shifted right after decoder_start_id (T5: the pad token)."""
    inputs = pad([np.asarray(s) for s in sources], pad_id)
    mask = pad([np.ones(len(s)) for s in sources], 0)
    labels = pad([np.asarray(t) for t in targets], IGNORE)
    start = pad_id if decoder_start_id is None else decoder_start_id
    return {
        "input_ids": to_tensor(inputs),
        "attention_mask": to_tensor(mask),
        "labels": to_tensor(labels),
        "decoder_input_ids": to_tensor(shift_right(labels, start, pad_id)),
    }


def make_objective(kind: str, tokenizer: dict, length: int, **options) -> CLM | MLM | NSP | SpanCorruption:
    """The objective `kind` (clm | mlm | nsp | span) for a tokenizer as the tokenize manifest describes it
    (`manifest["tokenizer"]`: family, vocab_size, special_ids); `length`: tokens per example."""
    ids = tokenizer["special_ids"]
    bert = ["cls", "sep", "mask", "pad"]
    need = {"clm": ["eos"], "mlm": bert, "nsp": bert, "span": ["eos", "pad", "sentinels"]}
    if kind not in need:
        raise ValueError(f"unknown objective {kind!r}; use one of {', '.join(need)}")
    missing = [role for role in need[kind] if role not in ids]
    if missing:
        family = tokenizer["family"]
        raise ValueError(f"objective {kind!r} needs the special token(s) {missing}, which a {family} tokenizer lacks")
    if kind == "clm":
        return CLM(length, ids["eos"], **options)
    if kind == "span":
        return SpanCorruption(length, ids["eos"], ids["pad"], tuple(ids["sentinels"]), **options)
    specials = tuple(sorted(v for k, v in ids.items() if k != "sentinels"))
    masking = Masking(ids["mask"], specials, tokenizer["vocab_size"], **options)
    return (MLM if kind == "mlm" else NSP)(length, ids["cls"], ids["sep"], ids["pad"], masking)
