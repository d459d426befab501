"""Evaluation metrics over lists of predictions and references (one reference per example), all on
0-100 scales except perplexity.

- BLEU, chrF: sacrebleu, corpus-level (sacrebleu's defaults: 13a tokenization, chrF with n=6, beta=2).
- ROUGE-1/2/L: rouge-score F-measure, mean over examples. rouge-score's tokenizer keeps only [a-z0-9]
  runs (lower-cased), so ROUGE suits English references only; `stem` applies the Porter stemmer.
- perplexity: exp(summed token NLL / token count), from the loss sums a model evaluation adds up.
- distinct-n (Li et al. 2016): distinct n-grams / all n-grams over all predictions (corpus-level).
- token F1 (SQuAD's, Rajpurkar et al. 2016): bag-of-tokens F1 per example, mean over examples. The
  text is lower-cased and its punctuation (every Unicode P* character) removed before whitespace
  splitting; SQuAD also drops the English articles a/an/the, which is left out here because the
  references may be in any language. distinct-n tokenizes the same way.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from typing import Sequence

import sacrebleu


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no examples to score")


def bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU; `tokenize`: sacrebleu's tokenizer name ("zh", "ja-mecab", "char", ... for languages
    without spaces)."""
    _check(predictions, references)
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize).score


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), [list(references)]).score


def rouge(predictions: Sequence[str], references: Sequence[str], stem: bool = True) -> dict[str, float]:
    """{"rouge1", "rouge2", "rougeL"}: mean F-measure x 100."""
    from rouge_score import rouge_scorer  # imports all of nltk (seconds): only when ROUGE is asked for

    _check(predictions, references)
    keys = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(keys, use_stemmer=stem)
    totals = Counter()
    for pred, ref in zip(predictions, references):
        for key, score in scorer.score(ref, pred).items():  # rouge-score takes (target, prediction)
            totals[key] += score.fmeasure
    return {key: 100 * totals[key] / len(references) for key in keys}


def perplexity(nll_sum: float, tokens: int) -> float:
    if tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(nll_sum / tokens)


def normalize(text: str) -> list[str]:
    """Lower-cased tokens with punctuation removed (the token F1 / distinct-n normalization)."""
    kept = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return kept.split()


def distinct(predictions: Sequence[str], n: int) -> float:
    grams = Counter()
    for text in predictions:
        tokens = normalize(text)
        grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return 100 * len(grams) / total if total else 0.0


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check(predictions, references)
    return 100 * sum(_f1(normalize(p), normalize(r)) for p, r in zip(predictions, references)) / len(references)


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:  # SQuAD: an empty side scores 1 only when both are empty
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
