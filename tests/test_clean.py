"""Cleaning: normalisation, each quality rule with its reason, PII masking."""

from __future__ import annotations

from llmcore.config import CleanConfig, PiiConfig
from llmcore.data.clean import clean_document, mask_pii, normalize, quality_problem

PROSE = (
    "The tokenizer splits text into pieces that the model can embed. Each piece is looked up in a "
    "vocabulary learned from a sample of the corpus, so frequent words stay whole."
)


def test_normalize_nfc_controls_whitespace():
    raw = "Cafe\u0301\x07  au\tlait\r\n\r\n\r\n\r\nsecond\u200b line  "
    assert normalize(raw) == "Caf\u00e9 au lait\n\nsecond line"


def test_strip_html_keeps_text_and_breaks():
    raw = "<html><style>p{color:red}</style><p>Fish &amp; chips</p><script>alert(1)</script><p>are good</p></html>"
    assert normalize(raw, strip_html=True) == "Fish & chips\nare good"


def test_prose_passes_every_rule():
    assert quality_problem(PROSE, CleanConfig())[1] is None


def test_each_rule_names_its_reason():
    cfg = CleanConfig(min_chars=20)
    assert quality_problem("too short", cfg)[1][0] == "too_short"
    assert quality_problem("x" * 100_001, CleanConfig())[1][0] == "too_long"
    assert quality_problem("Supercalifragilisticexpialidocious antidisestablishment", cfg)[1][0] == "too_few_words"
    assert quality_problem("a b c d e f g h i j k l m n o p q r s t", cfg)[1][0] == "mean_word_length"
    assert quality_problem("#### $$$$ %%%% &&&& **** @@@@ " * 6 + PROSE, cfg)[1][0] == "symbol_ratio"
    repeated = "\n".join(["click here to subscribe now"] * 4 + [PROSE])
    assert quality_problem(repeated, cfg)[1] == ("duplicate_lines", "0.60 of lines repeat > 0.3")


def test_pii_masking():
    text = "Mail jane.doe@example.org or call +49 30 1234 5678; server 192.168.10.254, version 1.2.3, year 2024."
    masked = mask_pii(text, PiiConfig(emails=True, ips=True, phones=True))
    assert masked == "Mail <EMAIL> or call <PHONE>; server <IP>, version 1.2.3, year 2024."
    assert mask_pii(text, PiiConfig()) == text


def test_clean_document_masks_only_kept_text():
    cfg = CleanConfig(pii=PiiConfig(emails=True))
    text, problem = clean_document(PROSE + " Write to team@example.com.", cfg)
    assert problem is None and text.endswith("Write to <EMAIL>.")
    assert clean_document("tiny", cfg)[1][0] == "too_short"
