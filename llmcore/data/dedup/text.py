"""What deduplication compares: normalized text (exact) and word n-gram shingles (near).

Normalization is Unicode NFKC, case folding and collapsed whitespace, so copies that differ only
in those count as exact duplicates. Words are runs of letters and digits; in scripts written
without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar) every character is a
word, so their documents get character n-grams instead of one giant "word" per sentence.
"""

from __future__ import annotations

import re
import unicodedata

_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_UNSPACED}]|[^\\W{_UNSPACED}]+")
_PLAIN_WORD = re.compile(r"\w+")  # same result when no unspaced-script character occurs, faster
_HAS_UNSPACED = re.compile(f"[{_UNSPACED}]")


def normalize(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


def words(normalized: str) -> list[str]:
    return (_WORD if _HAS_UNSPACED.search(normalized) else _PLAIN_WORD).findall(normalized)


def shingles(tokens: list[str], n: int) -> list[str]:
    """Word n-grams joined by a space. A document shorter than n words is one shingle (all of
    it), so it can only match a document with exactly the same words; no words, no shingles."""
    if len(tokens) <= n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
