"""Builds synonyms_en.tsv from WordNet 3.0 (Debian's `wordnet-base`), for the English words of the
bundled sample corpus. Standard library only; see README.md (provenance and license).

    apt-get download wordnet-base && dpkg -x wordnet-base_*.deb wn
    python llmcore/augment/build_synonyms.py wn/usr/share/wordnet [--out llmcore/augment/synonyms_en.tsv]

A key is a lower-case word of the corpus that WordNet lists as a lemma and that is not a function word;
its synonyms are the other one-word, lower-case lemmas of its first SENSES synsets per part of speech
(WordNet orders a lemma's synsets by frequency), most frequent sense first, at most MAX_SYNONYMS.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "sample"
SENSES, MAX_SYNONYMS = 3, 8
POS = ("noun", "verb", "adj", "adv")
WORD = re.compile(r"[a-z]+")
# Function words: WordNet has entries for many of them ("a": vitamin A, "in": inch, "it": information
# technology) that would make nonsense replacements.
STOP = set("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself
yourselves also may might must shall one two three first new way use used using""".split())


def corpus_words() -> set[str]:
    texts = []
    for path in sorted(SAMPLE.glob("docs/en.jsonl")):
        texts += [json.loads(line)["text"] for line in path.open()]
    texts += [json.loads(line)["document"] for line in (SAMPLE / "summarization.jsonl").open()]
    texts += [t["text"] for line in (SAMPLE / "dialogue.jsonl").open() for t in json.loads(line)["turns"]]
    for path in sorted(SAMPLE.glob("parallel/*.jsonl")):
        texts += [json.loads(line)["en"] for line in path.open()]
    return {w for text in texts for w in WORD.findall(text.lower())} - STOP


def synsets(wordnet: Path, pos: str) -> dict[str, list[list[str]]]:
    """lemma -> the word lists of its synsets, most frequent sense first."""
    data = (wordnet / f"data.{pos}").read_bytes()
    words_at = {}

    def words(offset: int) -> list[str]:
        if offset not in words_at:
            fields = data[offset : data.index(b"\n", offset)].decode().split()
            count = int(fields[3], 16)
            words_at[offset] = [re.sub(r"\(.*\)$", "", w) for w in fields[4 : 4 + 2 * count : 2]]
        return words_at[offset]

    out = {}
    for line in (wordnet / f"index.{pos}").read_text().splitlines():
        if line.startswith(" "):  # the license header
            continue
        fields = line.split()
        n = int(fields[2])
        out[fields[0]] = [words(int(o)) for o in fields[-n:][:SENSES]]
    return out


def build(wordnet: Path) -> dict[str, list[str]]:
    index = {pos: synsets(wordnet, pos) for pos in POS}
    table = {}
    for word in sorted(corpus_words()):
        found = []
        for pos in POS:
            for synset in index[pos].get(word, []):
                found += [w for w in synset if WORD.fullmatch(w) and w != word and w not in found]
        if found:
            table[word] = found[:MAX_SYNONYMS]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wordnet", type=Path, help="the directory of WordNet's index.* and data.* files")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("synonyms_en.tsv"))
    args = parser.parse_args()
    table = build(args.wordnet)
    args.out.write_text("".join(f"{w}\t{','.join(syns)}\n" for w, syns in table.items()))
    print(f"{args.out}: {len(table)} words, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
