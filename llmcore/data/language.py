"""Language identification with langdetect, deterministic and parallel.

langdetect samples n-grams at random, so its answer changes from call to call unless the
factory's seed is fixed; we fix it. Its cost grows with the text (a Python loop per character),
so only a bounded prefix is classified, and documents are spread over worker processes (the
work is pure Python: threads would queue on the GIL).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

from langdetect import DetectorFactory
from langdetect.detector_factory import init_factory
from langdetect.lang_detect_exception import LangDetectException

UNKNOWN = "und"
CHUNK = 64  # documents per job sent to a worker: large enough to amortise the IPC


def _init(seed: int) -> None:
    DetectorFactory.seed = seed
    init_factory()  # loads the 55 language profiles once per process


def detect_one(text: str) -> tuple[str, float]:
    """(language, probability) of the most likely language; (`und`, 0.0) for text without letters."""
    from langdetect import detector_factory

    detector = detector_factory._factory.create()
    detector.append(text)
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):
        return UNKNOWN, 0.0
    return best.lang, round(best.prob, 6)


def _detect_chunk(texts: list[str]) -> list[tuple[str, float]]:
    return [detect_one(t) for t in texts]


@lru_cache(maxsize=4)
def _pool(workers: int, seed: int) -> ProcessPoolExecutor:
    # forkserver: forking a process that runs Prefect's threads could copy a held lock
    ctx = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(seed,))


def detect_languages(texts: list[str], prefix_chars: int, seed: int = 0, workers: int = 0) -> list[tuple[str, float]]:
    """Classify each text by its first `prefix_chars` characters, on `workers` processes (0 = all cores)."""
    prefixes = [t[:prefix_chars] for t in texts]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(prefixes) <= CHUNK:
        _init(seed)
        return _detect_chunk(prefixes)
    chunks = [prefixes[i : i + CHUNK] for i in range(0, len(prefixes), CHUNK)]
    return [result for chunk in _pool(workers, seed).map(_detect_chunk, chunks) for result in chunk]
