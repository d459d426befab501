"""EDA edits: each operation, punctuation and case kept, determinism per document id, marked rows."""

import random

import pytest

from llmcore.augment import eda as E

SYN = {"file": ["register"], "missing": ["absent", "lacking"], "open": ["clear"]}


def one(text, op, seed=0, rate=0.25):
    return E.eda(text, SYN, random.Random(seed), rate, (op,))


def test_synonym_replacement_keeps_punctuation_and_case():
    assert one("Open the file, now.", "sr", rate=0.5) == "Clear the register, now."
    assert one("no known words here", "sr") == "no known words here"


def test_insertion_adds_synonyms_of_known_words():
    got = one("the file is missing", "ri", rate=0.5).split()
    inserted = [w for w in got if w not in {"the", "file", "is", "missing"}]
    assert len(got) == 6 and set(inserted) <= {"register", "absent", "lacking"}


def test_swap_and_deletion_keep_words_and_layout():
    text = "one two three four\n\nfive six seven eight\n"
    swapped = one(text, "rs")
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text and swapped.endswith("\n")
    deleted = one(text, "rd", rate=0.5)
    assert set(deleted.split()) < set(text.split()) and deleted.endswith("\n")
    assert one("alone", "rd", rate=1.0) == "alone"  # one word always stays


def test_bad_arguments():
    with pytest.raises(ValueError, match="operations"):
        one("a b", "xx")
    with pytest.raises(ValueError, match="rate"):
        one("a b", "rd", rate=0)


def test_augment_is_deterministic_per_document_and_marked():
    rows = [{"id": f"d{i}", "text": f"open the file number {i} if missing", "source": "s"} for i in range(20)]
    out = list(E.augment(rows, SYN, copies=2, rate=0.3, seed=7))
    again = {r["id"]: r for r in E.augment(list(reversed(rows)), SYN, copies=2, rate=0.3, seed=7)}
    assert out and all(again[r["id"]] == r for r in out)  # the same copies in any order of documents
    assert all(r["augmented"] == "eda" and r["id"] == f"{r['augmented_from']}-eda{r['id'][-1]}"
               and r["source"] == "s" for r in out)
    assert {r["text"] for r in out} != {r["text"] for r in E.augment(rows, SYN, copies=2, rate=0.3, seed=8)}


def test_shipped_table_and_bad_tables(tmp_path):
    table = E.load_synonyms()
    assert 1000 < len(table) and "register" in table["file"]
    assert E.SYNONYMS_EN.stat().st_size < 300_000
    bad = tmp_path / "syn.tsv"
    bad.write_text("# comment\nfile\tregister\nbroken line\n")
    with pytest.raises(ValueError, match=r"syn\.tsv:3: expected"):
        E.load_synonyms(bad)
