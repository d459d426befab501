"""EDA (Wei & Zou 2019, "Easy Data Augmentation"): cheap edits that make noisy copies of a text.

Each copy gets one operation, drawn among `ops`, on n = max(1, round(rate x words)) words:
- "sr" synonym replacement: n distinct words that the synonym table knows take a random synonym;
- "ri" random insertion: n times, a random synonym of a random known word goes to a random position;
- "rs" random swap: n times, two random words trade places;
- "rd" random deletion: each word is dropped with probability `rate` (one word always stays).
Words are whitespace-separated; a word's punctuation stays where it was ("file," -> "register,")
and a capitalized word's synonym is capitalized. Layout (newlines) is kept: each word keeps the
whitespace that followed it.

Randomness: copy k of document `id` draws from `random.Random(f"{seed}:{id}:{k}")` (seeded by a string,
hashed with sha512, so every process and rerun makes the same copies, whatever order documents come in).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterable, Iterator

SYNONYMS_EN = Path(__file__).with_name("synonyms_en.tsv")
OPS = ("sr", "ri", "rs", "rd")
_TOKEN = re.compile(r"(\S+)(\s*)")
_CORE = re.compile(r"^(\W*)([A-Za-z]+)(\W*)$")  # leading punctuation, the word, trailing punctuation


def load_synonyms(path: str | Path = SYNONYMS_EN) -> dict[str, list[str]]:
    """A table of `word<TAB>syn1,syn2,...` lines (lower-case words); errors name the line."""
    table = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        word, tab, syns = line.partition("\t")
        synonyms = [s.strip() for s in syns.split(",") if s.strip()]
        if not tab or not word.strip() or not synonyms:
            raise ValueError(f"{path}:{line_no}: expected 'word<TAB>syn1,syn2,...', got {line[:80]!r}")
        table[word.strip().lower()] = synonyms
    return table


def _known(word: str, synonyms: dict[str, list[str]]) -> re.Match | None:
    """The parts of `word` (punctuation, letters, punctuation) when the table has its letters."""
    m = _CORE.match(word)
    return m if m and m[2].lower() in synonyms else None


def _synonym(m: re.Match, synonyms: dict[str, list[str]], rng: random.Random) -> str:
    """A random synonym of the matched word, with its punctuation and capital kept."""
    syn = rng.choice(synonyms[m[2].lower()])
    return m[1] + (syn[:1].upper() + syn[1:] if m[2][:1].isupper() else syn) + m[3]


def eda(text: str, synonyms: dict[str, list[str]], rng: random.Random, rate: float = 0.1,
        ops: tuple[str, ...] = OPS) -> str:
    """One EDA copy of `text` (the text itself when the drawn operation finds nothing to change)."""
    if not ops or set(ops) - set(OPS):
        raise ValueError(f"EDA operations must be some of {', '.join(OPS)}; got {ops}")
    if not 0 < rate <= 1:
        raise ValueError(f"the EDA rate is a fraction of the words, in (0, 1]; got {rate}")
    tokens = [[word, space or " "] for word, space in _TOKEN.findall(text)]  # [word, whitespace after]
    if not tokens:
        return text
    op, n = rng.choice(ops), max(1, round(rate * len(tokens)))
    if op == "sr":
        known = [i for i, (word, _) in enumerate(tokens) if _known(word, synonyms)]
        for i in rng.sample(known, min(n, len(known))):
            tokens[i][0] = _synonym(_known(tokens[i][0], synonyms), synonyms, rng)
    elif op == "ri":
        known = [m[2].lower() for word, _ in tokens if (m := _known(word, synonyms))]
        for _ in range(n if known else 0):
            tokens.insert(rng.randrange(len(tokens) + 1), [rng.choice(synonyms[rng.choice(known)]), " "])
    elif op == "rs" and len(tokens) > 1:
        for _ in range(n):
            i, j = rng.sample(range(len(tokens)), 2)
            tokens[i][0], tokens[j][0] = tokens[j][0], tokens[i][0]
    elif op == "rd" and len(tokens) > 1:
        tokens = [t for t in tokens if rng.random() >= rate] or [rng.choice(tokens)]
    tokens[-1][1] = text[len(text.rstrip()):]  # the text's own trailing whitespace
    return text[: len(text) - len(text.lstrip())] + "".join(word + space for word, space in tokens)


def augment(rows: Iterable[dict], synonyms: dict[str, list[str]], copies: int = 1, rate: float = 0.1,
            ops: tuple[str, ...] = OPS, seed: int = 0, text_field: str = "text", id_field: str = "id") -> Iterator[dict]:
    """`copies` EDA copies of each row (originals are not repeated): the row with the edited text, id
    `<id>-eda<k>`, `augmented: "eda"` and `augmented_from: <id>`. A copy equal to its original (no
    known word to replace, a one-word text) is left out."""
    for row in rows:
        doc_id, text = row[id_field], row[text_field]
        for k in range(copies):
            new = eda(text, synonyms, random.Random(f"{seed}:{doc_id}:{k}"), rate, ops)
            if new != text:
                yield {**row, id_field: f"{doc_id}-eda{k}", text_field: new, "augmented": "eda", "augmented_from": doc_id}
