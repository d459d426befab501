"""Every objective's examples, built from real token shards, checked against its rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmcore.data.loader import TokenLoader, TokenStream
from llmcore.data.tokens import open_split
from llmcore.manifest import read_manifest
from llmcore.objectives import IGNORE, make_objective, pad_seq2seq, span_noise_mask
from token_helpers import sample_texts, token_stage


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    texts = list(dict.fromkeys(sample_texts(60)))  # distinct documents: NSP's check finds each span's source
    root = tmp_path_factory.mktemp("objectives")
    return {
        "gpt": token_stage(root / "gpt", texts, "gpt"),
        "bert": token_stage(root / "bert", texts, "bert"),
        "t5": token_stage(root / "t5", texts, "t5", sample_docs=100),
    }


def tokenizer_of(stage: Path) -> dict:
    return read_manifest(stage)["tokenizer"]


def documents(stage: Path) -> list[np.ndarray]:
    """The train split's documents in file and row order (what an unshuffled loader reads)."""
    _, shards = open_split(stage, "train")
    return [s.doc(r) for s in shards for r in range(len(s))]


def packed(stage: Path, sep: int) -> np.ndarray:
    return np.concatenate([np.append(d, sep) for d in documents(stage)])


def batches(stage: Path, objective, n: int, batch_size: int = 8, **kw):
    loader = TokenLoader(stage, objective, batch_size, **kw)
    return [next(loader) for _ in range(n)]


def test_clm_packs_documents_with_eos_between(stages):
    info = tokenizer_of(stages["gpt"])
    clm = make_objective("clm", info, 64)
    got = batches(stages["gpt"], clm, 20, shuffle=False)
    assert all(b["input_ids"].shape == (8, 64) and torch.equal(b["labels"], b["input_ids"]) for b in got)
    assert all("attention_mask" not in b for b in got)  # no padding: the model's fused causal path
    flat = torch.cat([b["input_ids"].reshape(-1) for b in got]).numpy()
    assert np.array_equal(flat, packed(stages["gpt"], info["special_ids"]["eos"])[: len(flat)])


def _unmask(batch: dict) -> np.ndarray:
    labels = batch["labels"].numpy()
    return np.where(labels != IGNORE, labels, batch["input_ids"].numpy())


@pytest.mark.parametrize("kind", ["mlm", "nsp"])
def test_masking_follows_the_80_10_10_rule(stages, kind):
    info = tokenizer_of(stages["bert"])
    ids = info["special_ids"]
    specials = np.array(sorted(v for v in ids.values()))
    got = batches(stages["bert"], make_objective(kind, info, 128), 60)
    original = np.concatenate([_unmask(b) for b in got])
    inputs = np.concatenate([b["input_ids"].numpy() for b in got])
    labels = np.concatenate([b["labels"].numpy() for b in got])
    chosen = labels != IGNORE
    special = np.isin(original, specials)
    if kind == "nsp":
        assert (original == ids["pad"]).sum() > 1000  # pairs are padded: padding is there to be left alone
    assert not (chosen & special).any()  # special tokens and padding are never masked
    assert np.array_equal(inputs[special], original[special])
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01
    masked = (inputs == ids["mask"]) & chosen
    kept = (inputs == original) & chosen
    swapped = chosen & ~masked & ~kept
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(swapped.sum() / n - 0.1) < 0.02 and abs(kept.sum() / n - 0.1) < 0.02
    assert not np.isin(inputs[swapped], specials).any()  # the random token is a real one
    assert not (inputs[~chosen] == ids["mask"]).any()


def _find(doc_bytes: list[bytes], tokens: np.ndarray) -> set[int]:
    """The documents that hold `tokens` contiguously (uint16 bytes, at even offsets)."""
    needle = tokens.astype(np.uint16).tobytes()
    found = set()
    for i, hay in enumerate(doc_bytes):
        at = hay.find(needle)
        while at != -1 and at % 2:
            at = hay.find(needle, at + 1)
        if at != -1:
            found.add(i)
    return found


def test_nsp_pairs_continue_their_document_or_come_from_another(stages):
    info = tokenizer_of(stages["bert"])
    ids = info["special_ids"]
    nsp = make_objective("nsp", info, 96)
    docs = [d.astype(np.uint16).tobytes() for d in documents(stages["bert"])]
    got = batches(stages["bert"], nsp, 40)
    labels = torch.cat([b["next_sentence_label"] for b in got]).numpy()
    assert set(labels) == {0, 1} and abs(labels.mean() - 0.5) < 0.08
    checked = 0
    for batch in got:
        columns = (batch["token_type_ids"].numpy(), batch["attention_mask"].numpy(), batch["next_sentence_label"])
        for row, types, mask, label in zip(_unmask(batch), *columns):
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any() and (row[n:] == ids["pad"]).all()
            seps = np.flatnonzero(row[:n] == ids["sep"])
            assert row[0] == ids["cls"] and seps[-1] == n - 1
            a, b = row[1 : seps[0]], row[seps[0] + 1 : n - 1]
            assert len(a) >= 1 and len(b) >= 1
            assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 : n] == 1).all() and (types[n:] == 0).all()
            if len(a) < 8 or len(b) < 8:
                continue  # short spans may occur in many documents
            homes_a = _find(docs, a)
            if label == 0:
                assert homes_a & _find(docs, np.concatenate([a, b]))  # B continues A in A's document
            elif len(homes_a) == 1:
                assert _find(docs, b) - homes_a  # B comes from another document
            checked += 1
    assert checked > 100


def test_random_next_segments_never_come_from_the_same_document(stages):
    _, shards = open_split(stages["bert"], "train")
    stream = TokenStream(shards, 0, 0, 1, None, True)
    rng = np.random.default_rng(0)
    docs = [s.doc(r) for s in shards for r in range(len(s))]
    for exclude in (0, 3, len(docs) - 1):
        drawn = [stream.random_doc(rng, exclude) for _ in range(300)]
        assert not any(d is docs[exclude] or np.shares_memory(d, docs[exclude]) for d in drawn)
        assert len({d.ctypes.data for d in drawn}) > 50  # and they spread over the split


def test_span_corruption_replaces_spans_with_sentinels(stages):
    info = tokenizer_of(stages["t5"])
    ids = info["special_ids"]
    span = make_objective("span", info, 128)
    got = batches(stages["t5"], span, 25, shuffle=False)
    stream = packed(stages["t5"], ids["eos"])
    sentinels = np.array(ids["sentinels"])
    raw, noise, spans = [], 0, 0
    for batch in got:
        assert batch["input_ids"].shape[1] == 128 and batch["labels"].shape[1] == span.label_length
        assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
        assert (batch["decoder_input_ids"][:, 0] == ids["pad"]).all()
        for inputs, labels, mask in zip(*(batch[k].numpy() for k in ("input_ids", "labels", "attention_mask"))):
            inputs = inputs[mask.astype(bool)]
            assert inputs[-1] == ids["eos"] and labels[-1] == ids["eos"]
            in_s, lab_s = np.flatnonzero(np.isin(inputs, sentinels)), np.flatnonzero(np.isin(labels, sentinels))
            k = len(in_s)
            assert np.array_equal(inputs[in_s], sentinels[:k]) and np.array_equal(labels[lab_s], sentinels[:k])
            assert lab_s[0] == 0  # the labels open with <extra_id_0>
            pieces, bounds = [], list(lab_s) + [len(labels) - 1]
            kept = np.split(inputs[:-1], in_s)
            for i in range(k):  # put each span back where its sentinel stands
                pieces += [kept[i] if i == 0 else kept[i][1:], labels[bounds[i] + 1 : bounds[i + 1]]]
            pieces.append(kept[k][1:])
            raw.append(np.concatenate(pieces))
            noise += len(labels) - 1 - k
            spans += k
    assert np.array_equal(np.concatenate(raw), stream[: sum(len(r) for r in raw)])
    assert abs(noise / sum(len(r) for r in raw) - 0.15) < 0.01
    assert abs(noise / spans - 3.0) < 0.3


def test_noise_masks_have_the_requested_shape():
    rng = np.random.default_rng(0)
    first_spans = []
    for _ in range(300):
        mask = span_noise_mask(100, 15, 5, rng)
        assert mask.sum() == 15 and not mask[0] and mask[-1]  # starts kept, ends in noise (as in T5)
        starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
        assert len(starts) == 5
        first_spans.append(np.argmin(mask[starts[0] :]) or 100 - starts[0])
    assert abs(np.mean(first_spans) - 3.0) < 0.3 and len(set(first_spans)) > 3  # random lengths, mean 15 / 5


def test_seq2seq_padding():
    batch = pad_seq2seq([[5, 6, 7], [8]], [[9, 1], [10, 11, 1]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[9, 1, IGNORE], [10, 11, 1]]
    assert batch["decoder_input_ids"].tolist() == [[0, 9, 1], [0, 10, 11]]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_an_objective_needs_its_special_tokens(stages):
    with pytest.raises(ValueError, match=r"objective 'mlm' needs the special token\(s\) \['cls', 'sep', 'mask'\]"):
        make_objective("mlm", tokenizer_of(stages["gpt"]), 64)
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("ppo", tokenizer_of(stages["gpt"]), 64)
