"""Tokenizer training per family, loading in transformers, adopting an existing file, the bounded sample."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llmcore.config import TokenizerConfig
from llmcore.data import tokens
from llmcore.manifest import file_sha256, read_manifest
from llmcore.stage import StageRef
from llmcore.tokenizer import SENTINELS, TokenizerError, load_tokenizer, save_tokenizer, special_ids, train_tokenizer
from token_helpers import docs_stage, sample_texts

EXPECTED = {
    "gpt": {"eos": 0, "pad": 1},
    "bert": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
    "t5": {"pad": 0, "eos": 1, "unk": 2},
}


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_each_family_trains_and_loads_in_transformers(tmp_path, family):
    texts = sample_texts(25)
    cfg = TokenizerConfig(family=family, vocab_size=600, sample_docs=len(texts))
    tok = train_tokenizer(texts, cfg, length=len(texts))
    ids = special_ids(tok, family)
    assert {k: v for k, v in ids.items() if k != "sentinels"} == EXPECTED[family]
    if family == "t5":  # T5's sentinels follow the trained vocabulary
        assert ids["sentinels"] == list(range(600, 600 + SENTINELS))
    path = save_tokenizer(tok, tmp_path, family)

    text = "The iconv program reads in text in one encoding and outputs the text in another encoding."
    ours = tok.encode(text).ids  # with the family's special tokens, as transformers adds them
    assert PreTrainedTokenizerFast(tokenizer_file=str(path))(text)["input_ids"] == ours
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto(text)["input_ids"] == ours
    assert auto.pad_token_id == ids["pad"]
    if family == "bert":
        assert ours[0] == ids["cls"] and ours[-1] == ids["sep"] and auto.mask_token_id == ids["mask"]
    if family == "t5":
        assert ours[-1] == ids["eos"] and auto.convert_tokens_to_ids("<extra_id_0>") == ids["sentinels"][0]
    if family == "gpt":  # byte-level: lossless on any text
        assert tok.decode(tok.encode("naïve café — 東京\n\ttabs").ids) == "naïve café — 東京\n\ttabs"


TRAIN_IN_A_NEW_PROCESS = """
import json, sys
from llmcore.config import TokenizerConfig
from llmcore.tokenizer import train_tokenizer
texts = json.loads(open(sys.argv[1]).read())
print(train_tokenizer(texts, TokenizerConfig(family=sys.argv[2], vocab_size=600)).to_str())
"""


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_the_same_corpus_trains_the_same_tokenizer_in_every_process(tmp_path, family):
    # tokenizers' trainers walk hash maps seeded anew in each process (the Unigram one's order leaks into ids)
    corpus = tmp_path / "texts.json"
    corpus.write_text(json.dumps(sample_texts(25)))
    runs = {subprocess.run([sys.executable, "-c", TRAIN_IN_A_NEW_PROCESS, str(corpus), family], capture_output=True,
                           text=True, check=True).stdout for _ in range(3)}
    assert len(runs) == 1


def test_an_existing_tokenizer_file_is_adopted(tmp_path):
    texts = sample_texts(20)
    gpt2_like = train_tokenizer(texts, TokenizerConfig(vocab_size=500), length=len(texts))
    # GPT-2's own tokenizer.json has <|endoftext|> and no pad token: rebuild one like it
    own = tmp_path / "mine" / "tokenizer.json"
    own.parent.mkdir()
    own.write_text(gpt2_like.to_str().replace('"<|pad|>"', '"<|unused|>"'))
    assert load_tokenizer(own).token_to_id("<|pad|>") is None

    corpus = docs_stage(tmp_path, texts)
    cfg = TokenizerConfig(path=str(own))
    manifest = tokens.tokenizer_stage(StageRef(str(tmp_path), "tokenizer", "adopted"), corpus, cfg, [])
    described = manifest["tokenizer"]
    assert described["special_ids"]["pad"] == described["special_ids"]["eos"] == 0  # pads with eos, as GPT-2 does
    assert manifest["adopted"] == str(own) and read_manifest(tmp_path / "tokenizer" / "adopted") == manifest
    assert manifest["ledger"]["rows_in"] == 0  # nothing sampled
    stage_file = tmp_path / "tokenizer" / "adopted" / "tokenizer.json"
    assert described["sha256"] == file_sha256(stage_file)
    assert load_tokenizer(stage_file).encode(texts[0]).ids == load_tokenizer(own).encode(texts[0]).ids


def test_a_tokenizer_of_another_family_is_refused(tmp_path):
    texts = sample_texts(10)
    path = save_tokenizer(train_tokenizer(texts, TokenizerConfig(vocab_size=400), length=len(texts)), tmp_path, "gpt")
    with pytest.raises(TokenizerError, match=r"lacks the bert special token\(s\) \[PAD\], \[UNK\], \[CLS\]"):
        load_tokenizer(path, "bert")
    with pytest.raises(TokenizerError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "nowhere.json")


def test_the_training_sample_is_bounded_and_seeded(tmp_path):
    corpus = docs_stage(tmp_path, sample_texts(40), shard_rows=50)
    manifest = read_manifest(corpus)
    assert len(manifest["files"]) > 1

    def drawn(n, seed):
        texts, count = tokens.sample_texts(corpus, manifest, n, seed)
        texts = list(texts)
        assert len(texts) == count
        return texts

    assert drawn(30, 0) == drawn(30, 0)
    assert len(drawn(30, 0)) == 30 and drawn(30, 0) != drawn(30, 1)
    assert not Counter(drawn(30, 0)) - Counter(sample_texts(40))  # without replacement
    assert sorted(drawn(10_000, 0)) == sorted(sample_texts(40))  # the whole corpus when it is smaller

    cfg = TokenizerConfig(sample_docs=30, vocab_size=400)
    m = tokens.tokenizer_stage(StageRef(str(tmp_path), "tokenizer", "k"), corpus, cfg, [])
    assert m["ledger"]["rows_in"] == m["ledger"]["rows_out"] == 30
    assert m["sampled_docs"] == 30


def test_an_empty_corpus_trains_no_tokenizer(tmp_path):
    corpus = docs_stage(tmp_path, [])
    cfg = TokenizerConfig()
    with pytest.raises(TokenizerError, match=r"no document to train a tokenizer on: the docs stage .* kept none of its 0"):
        tokens.tokenizer_stage(StageRef(str(tmp_path), "tokenizer", "k"), corpus, cfg, [])
