"""The augment stage's unit of work: one deduplicated shard in, the same documents plus their augmented
rows out. Every output row has `augmented` (null for an original, "eda" or "paraphrase") and
`augmented_from` (the original's id); the ledger counts the made rows as added, by kind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from llmcore.augment import eda
from llmcore.config import AugmentConfig, EdaConfig
from llmcore.data.stage import PartDir, read_rows

MARKS = {"augmented": pa.string(), "augmented_from": pa.string()}  # typed even in a part with no augmented row


def eda_chosen(doc_id: str, cfg: EdaConfig) -> bool:
    """Whether a document gets EDA copies: a seeded hash of its id below `fraction` (any order, any shard)."""
    digest = hashlib.blake2b(f"{cfg.seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < cfg.fraction


def load_paraphrases(path: str | Path | None) -> dict[str, dict]:
    """The back-translation step's paraphrase lines (llmcore.augment.backtranslate), by original id."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        return {row["augmented_from"]: row for row in map(json.loads, fh)}


def augment_part(part: PartDir, shard: Path, cfg: AugmentConfig, paraphrases: str | None) -> dict:
    writer = part.writer(types=MARKS)
    synonyms = eda.load_synonyms(cfg.eda.synonyms or eda.SYNONYMS_EN) if cfg.eda else {}
    found = load_paraphrases(paraphrases)
    for row in read_rows(shard):
        row = {**row, "augmented": None, "augmented_from": None}
        writer.keep(row)
        if cfg.eda and eda_chosen(row["id"], cfg.eda):
            for copy in eda.augment([row], synonyms, cfg.eda.copies, cfg.eda.rate, seed=cfg.eda.seed):
                writer.add(copy, "eda")
        if row["id"] in found:
            lang = cfg.backtranslation.source_lang
            writer.add({**row, "id": f"{row['id']}-para", "text": found[row["id"]]["text"], "lang": lang,
                        "lang_prob": None, "augmented": "paraphrase", "augmented_from": row["id"]}, "paraphrase")
    return writer.finish()
