"""Language identification: langdetect's answers, deterministic, the same in parallel, on real text."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from langdetect import DetectorFactory, detect_langs
from langdetect.detector_factory import PROFILES_DIRECTORY

from llmcore.config import LanguageConfig
from llmcore.data import language
from llmcore.data.language import UNKNOWN, detect_languages
from llmcore.data.parts import language_part
from llmcore.data.stage import PartDir, read_rows

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample" / "docs"


def sample(per_lang: int) -> list[dict]:
    docs = []
    for lang in ("en", "de", "fr", "es"):
        lines = (SAMPLE / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()[:per_lang]
        docs += [json.loads(line) for line in lines]
    return docs


def test_same_answers_as_langdetect_itself():
    texts = [d["text"] for d in sample(40)] + ["Привет, как дела? Это тест.", "NASA and the USA", "12345 !!!"]
    DetectorFactory.seed = 0
    expected = []
    for text in texts:
        try:
            best = detect_langs(text)[0]
            expected.append((best.lang, round(best.prob, 6)))
        except Exception:
            expected.append((UNKNOWN, 0.0))
    assert detect_languages(texts, prefix_chars=10**6, seed=0, workers=1) == expected


def test_probabilities_are_langdetects_bit_for_bit():
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(3)
    texts = [d["text"][:400] for d in sample(5)] + ["Привет, как дела? Это тест.", "日本語のテキストです。"]
    expected = []
    for text in texts:
        detector = factory.create()
        detector.append(text)
        detector.get_probabilities()
        expected.append(detector.langprob)
    assert language._profiles()[0] == factory.get_lang_list()
    assert language._probabilities([language._ngram_rows(t) for t in texts], seed=3).tolist() == expected


def test_labels_of_real_documents():
    docs = sample(25)
    found = detect_languages([d["text"] for d in docs], prefix_chars=500, workers=1)
    accuracy = sum(lang == d["lang"] for (lang, _), d in zip(found, docs)) / len(docs)
    assert accuracy >= 0.95


def test_deterministic_and_parallel_equals_serial(monkeypatch):
    texts = [d["text"] for d in sample(50)]
    monkeypatch.setattr(language, "BATCH", 64)  # several batches: the pool's worker takes some
    monkeypatch.setattr(language, "POOL_MIN_DOCS", 0)
    serial = detect_languages(texts, prefix_chars=300, seed=7, workers=1)
    assert detect_languages(texts, prefix_chars=300, seed=7, workers=1) == serial
    assert detect_languages(texts, prefix_chars=300, seed=7, workers=2) == serial


def test_stage_part_keeps_allowed_and_says_why_it_drops(tmp_path):
    docs = sample(5)
    rows = [{"id": f"d{i}", "text": d["text"], "source": "s"} for i, d in enumerate(docs)]
    rows.append({"id": "digits", "text": "1234 5678 90", "source": "s"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    part = PartDir(tmp_path, "language", "k")
    summary = language_part(part, tmp_path / "in.parquet", LanguageConfig(allowed=["en", "de"], workers=1))
    assert part.summary() == summary
    kept = list(read_rows(part.path / summary["files"][0]["path"]))
    rejected = {r["id"]: r for r in read_rows(part.path / summary["rejected"][0]["path"])}
    assert {r["lang"] for r in kept} == {"en", "de"} and all(r["lang_prob"] >= 0.8 for r in kept)
    assert rejected["digits"]["reason"] == "language_not_allowed" and rejected["digits"]["lang"] == UNKNOWN
    assert {r["lang"] for r in rejected.values()} >= {"fr", "es"}
    assert summary["ledger"]["rows_in"] == len(rows) == len(kept) + len(rejected)
