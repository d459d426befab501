"""Task formats: loading with clear errors, the stable split, rendering, token examples and masks."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from llmcore.finetune import formats as F
from llmcore.objectives import IGNORE


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def word_tokenizer(words):
    """A word-level tokenizer: one id per whitespace word, so lengths are easy to count by hand."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "<pad>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


@pytest.fixture
def data(tmp_path):
    pairs = write(tmp_path / "en-de.jsonl", [{"en": "the file is missing", "de": "die Datei fehlt", "origin": "x"}])
    summ = write(tmp_path / "summ.jsonl", [{"document": "It sets an alarm. It is old.", "summary": "set an alarm"}])
    dia = write(tmp_path / "dia.jsonl", [{"turns": [
        {"speaker": "user", "text": "hi there"}, {"speaker": "assistant", "text": "hello"},
        {"speaker": "user", "text": "how are you"}, {"speaker": "assistant", "text": "fine thanks"}]}])
    return F.load_translation(pairs, "en", "de")[0], F.load_summarization(summ)[0], F.load_dialogue(dia)[0]


def test_render(data):
    pair, summ, dia = data
    assert F.render(pair) == ("<2de> the file is missing", "die Datei fehlt")
    assert F.render(summ) == ("<summarize> It sets an alarm. It is old.", "set an alarm")
    assert F.render(dia) == ("<user> hi there <assistant> hello <user> how are you <assistant>", "fine thanks")
    assert F.task_tokens([pair, summ, dia]) == ["<2de>", "<assistant>", "<sep>", "<summarize>", "<user>"]


@pytest.mark.parametrize("row, message", [
    ("{not json", "malformed JSON"),
    ('["a list"]', "must be an object, not list"),
    ({"en": "hello"}, "field 'de' must be a non-empty string; it is missing"),
    ({"en": "hello", "de": 3}, "it is a int"),
    ({"en": "hello", "de": " "}, "it is empty"),
])
def test_bad_records_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "p.jsonl", [{"en": "fine", "de": "gut"}, "", row])
    with pytest.raises(F.FormatError, match=rf"p\.jsonl:3: .*{message}"):
        F.load_translation(path, "en", "de")


def test_bad_dialogue(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"turns": [{"speaker": "user", "text": "hi"}, {"speaker": "assistant"}]}])
    with pytest.raises(F.FormatError, match=r"d\.jsonl:1: turn 1: field 'text'"):
        F.load_dialogue(path)
    with pytest.raises(F.FormatError, match=r"d\.jsonl:1: 'turns' must be a list"):
        F.load_dialogue(write(path, [{"turns": [{"speaker": "user", "text": "hi"}]}]))


def test_split_is_stable_shared_by_directions_and_sized(tmp_path):
    rows = [{"en": f"sentence {i}", "de": f"Satz {i}"} for i in range(2000)]
    path = write(tmp_path / "p.jsonl", rows)
    forward, backward = F.load_translation(path, "en", "de"), F.load_translation(path, "de", "en")
    splits = [F.split_of(ex) for ex in forward]
    assert splits == [F.split_of(ex) for ex in backward]  # back-translation never trains on a test pair
    sizes = {name: splits.count(name) for name in F.SPLITS}
    assert 150 < sizes["test"] < 250 and 150 < sizes["validation"] < 250
    # blake2b, not Python's salted hash: the same answer in every process (golden value)
    assert "".join({"train": ".", "validation": "v", "test": "T"}[s] for s in splits[:30]) == ".v....T....v.......v..v.v..v.T"
    with pytest.raises(ValueError):
        F.split_of(forward[0], validation=0.5, test=0.5)


def test_seq2seq_example_and_batch(data):
    pair = data[0]
    tok = word_tokenizer("the file is missing die Datei fehlt".split())
    F.add_task_tokens(tok, [pair])
    enc = F.Encoder(tok, eos_id=2, max_source_length=4, max_target_length=3)

    def ids(text):
        return [tok.token_to_id(w) for w in text.split()]

    ex = enc.seq2seq(pair)
    assert ex == {"input_ids": ids("<2de> the file") + [2], "labels": ids("die Datei") + [2]}  # right-truncated
    batch = F.collate_seq2seq([ex, {"input_ids": ex["input_ids"][:2], "labels": [2]}], pad_id=1)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [ex["labels"], [2, IGNORE, IGNORE]]
    assert batch["decoder_input_ids"].tolist() == [[1, *ex["labels"][:2]], [1, 2, 1]]
    assert F.Encoder(tok, eos_id=2).seq2seq(pair)["input_ids"] == ids("<2de> the file is missing") + [2]


def test_dialogue_context_loses_its_oldest_tokens(data):
    dia = data[2]
    tok = word_tokenizer("hi there hello how are you fine thanks".split())
    F.add_task_tokens(tok, [dia])
    ex = F.Encoder(tok, eos_id=2, max_source_length=6, source_eos=False).seq2seq(dia)
    assert tok.decode(ex["input_ids"], skip_special_tokens=False) == "hello <user> how are you <assistant>"


def test_decoder_only_prompt_is_masked(data):
    pair = data[0]
    tok = word_tokenizer("the file is missing die Datei fehlt".split())
    added = F.add_task_tokens(tok, [pair])
    assert added == 2  # <2de>, <sep>: the model's embedding grows by as many
    assert tok.encode("<2de>the").tokens == ["<2de>", "the"]  # special tokens are never split
    enc = F.Encoder(tok, eos_id=2)
    ex = enc.causal(pair)
    prompt = enc.prompt_ids(pair)
    assert tok.decode(prompt, skip_special_tokens=False) == "<2de> the file is missing <sep>"
    assert ex["input_ids"] == prompt + [tok.token_to_id(w) for w in "die Datei fehlt".split()] + [2]
    assert ex["labels"] == [IGNORE] * len(prompt) + ex["input_ids"][len(prompt):]
    other = {"input_ids": [5, 6, 7], "labels": [IGNORE, 7, 2]}
    batch = F.collate_causal([ex, other], pad_id=1)
    n = len(ex["input_ids"])
    assert batch["labels"][1].tolist() == [IGNORE, 7, 2] + [IGNORE] * (n - 3)  # padding is never a label
    assert batch["input_ids"][1].tolist() == [5, 6, 7] + [1] * (n - 3)
    assert batch["attention_mask"].sum(1).tolist() == [n, 3]
    # the loss counts exactly the target tokens: position t predicts labels[t + 1]
    counted = (batch["labels"][0, 1:] != IGNORE).nonzero().flatten() + 1
    assert counted.tolist() == list(range(len(prompt), n))
    left = F.collate_prompts([prompt, [5]], pad_id=1)
    assert left["input_ids"][1].tolist() == [1] * (len(prompt) - 1) + [5]
    assert left["attention_mask"][1].tolist() == [0] * (len(prompt) - 1) + [1]


def test_prompt_needs_sep(data):
    tok = word_tokenizer(["the"])
    with pytest.raises(ValueError, match="add_task_tokens"):
        F.Encoder(tok, eos_id=2).prompt_ids(data[0])


def test_bundled_files_load():
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs" / "sample"
    assert len(F.load_translation(root / "parallel" / "en-fr.jsonl", "en", "fr")) == 3000
    assert len(F.load_summarization(root / "summarization.jsonl")) == 500
    dia = F.load_dialogue(root / "dialogue.jsonl")
    assert len(dia) == 185 and {ex.speaker for ex in dia} == {"assistant"}
