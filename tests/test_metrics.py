"""Each metric against a case computed by hand."""

import math

import pytest

from llmcore import metrics


def test_bleu_by_hand():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 ("the" clipped to one match), equal lengths: no brevity penalty
    got = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)


def test_chrf_by_hand():
    # "abc" vs "abd": character 1-gram F 2/3, 2-gram F 1/2, 3-gram F 0; orders 4-6 have no n-grams and
    # do not count, so chrF = mean of the three = 7/18
    assert metrics.chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18, abs=1e-6)


def test_rouge_by_hand():
    got = metrics.rouge(["the cat sat"], ["the cat sat down"], stem=False)
    # unigrams: P 3/3, R 3/4 -> F 6/7; bigrams: P 2/2, R 2/3 -> F 4/5; LCS 3 -> as unigrams
    assert got == pytest.approx({"rouge1": 600 / 7, "rouge2": 80.0, "rougeL": 600 / 7})
    assert metrics.rouge(["cats running"], ["cat run"], stem=True)["rouge1"] == pytest.approx(100)
    assert metrics.rouge(["cats running"], ["cat run"], stem=False)["rouge1"] == 0
    # a mean over examples, not a pooled count
    assert metrics.rouge(["a b", "x"], ["a b", "y"])["rouge1"] == pytest.approx(50)


def test_perplexity():
    assert metrics.perplexity(3 * math.log(2), 3) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_distinct_by_hand():
    preds = ["a b a b", "A, c."]  # tokens: a b a b / a c
    assert metrics.distinct(preds, 1) == pytest.approx(100 * 3 / 6)
    assert metrics.distinct(preds, 2) == pytest.approx(100 * 3 / 4)  # ab ba ab ac
    assert metrics.distinct([""], 2) == 0.0


def test_token_f1_by_hand():
    # [the cat sat] vs [the cat is here]: 2 common, P 2/3, R 2/4 -> F1 4/7; an empty pair scores 1
    got = metrics.token_f1(["The cat, sat!", ""], ["the cat is here", ""])
    assert got == pytest.approx(100 * (4 / 7 + 1) / 2)
    assert metrics.token_f1(["„Datei“ fehlt."], ["datei fehlt"]) == pytest.approx(100)  # Unicode punctuation
    assert metrics.token_f1(["something"], [""]) == 0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.bleu(["a", "b"], ["a"])
