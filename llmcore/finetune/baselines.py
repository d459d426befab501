"""Trivial baselines, scored on the same examples as a model so its numbers have a floor to stand on.

- translation: copy the source (credits placeholders, names and words shared across languages);
- summarization: the lead sentences of the document (lead-1 by default: the bundled summaries are one line);
- dialogue: one fixed reply for every context, the most frequent reply in the training examples.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from llmcore.finetune.formats import Example
from llmcore.metrics import token_f1

# A sentence ends at . ! or ? followed by whitespace, or at a blank line (paragraph break).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def copy_source(examples: Sequence[Example]) -> list[str]:
    return [ex.source for ex in examples]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def lead(examples: Sequence[Example], k: int = 1) -> list[str]:
    return [" ".join(sentences(ex.source)[:k]) for ex in examples]


def frequent_reply(examples: Sequence[Example], train: Sequence[Example]) -> list[str]:
    return [pick_reply(train)] * len(examples)


def pick_reply(train: Sequence[Example], candidates: int = 200) -> str:
    """The most frequent training target. Among ties (every reply, when no reply repeats) the one with
    the best mean token F1 against all training targets wins: the best constant answer for that
    metric. Only the first `candidates` tied replies in sorted order are compared, to stay cheap."""
    if not train:
        raise ValueError("the frequent-reply baseline needs training examples")
    counts = Counter(ex.target for ex in train)
    top = max(counts.values())
    tied = sorted(reply for reply, n in counts.items() if n == top)[:candidates]
    if len(tied) == 1:
        return tied[0]
    targets = [ex.target for ex in train]
    return max(tied, key=lambda reply: token_f1([reply] * len(targets), targets))

