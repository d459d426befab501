"""The unit of work of each data stage: one input file or one upstream shard in, one part out."""

from __future__ import annotations

from pathlib import Path

from llmcore.config import CleanConfig, IngestConfig, LanguageConfig, SourceConfig
from llmcore.data.clean import clean_document
from llmcore.data.language import detect_languages
from llmcore.data.readers import Bad, printable_path, read_input
from llmcore.data.stage import PartDir, read_rows


def ingest_part(part: PartDir, src: SourceConfig, unit: str, cfg: IngestConfig) -> dict:
    writer = part.writer(shard_rows=cfg.shard_rows)
    name = printable_path(unit)  # a non-UTF-8 file name cannot go into JSON as it is
    count = 0
    for record in read_input(src, unit, cfg.invalid_utf8):
        if isinstance(record, Bad):
            writer.quarantine(name, record.line, record.error, record.raw)
        else:
            writer.keep(record)
        count += 1
    return writer.finish({"input": name, "source": src.name, "empty_input": count == 0})


def clean_part(part: PartDir, shard: Path, cfg: CleanConfig) -> dict:
    writer = part.writer()
    for row in read_rows(shard):
        text, problem = clean_document(row["text"], cfg)
        if problem is None:
            writer.keep({**row, "text": text})
        else:
            writer.reject({**row, "text": text}, *problem)
    return writer.finish()


def language_part(part: PartDir, shard: Path, cfg: LanguageConfig) -> dict:
    writer = part.writer()
    rows = list(read_rows(shard))
    allowed = set(cfg.allowed)
    for row, (lang, prob) in zip(rows, detect_languages([r["text"] for r in rows], cfg.prefix_chars, cfg.seed, cfg.workers)):
        row = {**row, "lang": lang, "lang_prob": prob}
        if lang not in allowed:
            writer.reject(row, "language_not_allowed", f"{lang} ({prob:.2f})")
        elif prob < cfg.min_prob:
            writer.reject(row, "language_uncertain", f"{lang} {prob:.2f} < {cfg.min_prob}")
        else:
            writer.keep(row)
    return writer.finish()
