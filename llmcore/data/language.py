"""Language identification with langdetect, deterministic, vectorised and parallel.

langdetect samples n-grams at random, so its answer changes from call to call unless the
factory's seed is fixed; we fix it. Its time goes to two pure-Python loops: n-gram extraction (one
Unicode-block lookup per character) and the sampling trials (55 multiplications per sampled
n-gram). `_Detector` keeps langdetect's profiles, algorithm and random-number sequence, and runs
those loops with a per-character cache and numpy over blocks of samples. Documents are spread
over worker processes (threads would queue on the GIL), and only a bounded prefix is classified.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
from langdetect import detector_factory
from langdetect.detector import Detector
from langdetect.detector_factory import init_factory
from langdetect.lang_detect_exception import ErrorCode, LangDetectException
from langdetect.utils.ngram import NGram

UNKNOWN = "und"
CHUNK = 64  # documents per job sent to a worker: large enough to amortise the IPC


_LOAD_LOCK = threading.Lock()  # langdetect's init_factory publishes its factory before filling it


def _profiles() -> tuple[dict[str, int], np.ndarray]:
    """Row index of each profile n-gram, and the (n-grams x languages) probability matrix."""
    with _LOAD_LOCK:
        return _load_profiles()


@lru_cache(maxsize=1)
def _load_profiles() -> tuple[dict[str, int], np.ndarray]:
    init_factory()
    word_probs = detector_factory._factory.word_lang_prob_map
    return {w: i for i, w in enumerate(word_probs)}, np.array(list(word_probs.values()), dtype=np.float64)


class _Normalized(dict):
    """str.translate table: each character as NGram.normalize maps it, computed once."""

    def __missing__(self, code: int) -> str:
        self[code] = ch = NGram.normalize(chr(code))
        return ch


_NORMALIZED = _Normalized()


@lru_cache(maxsize=1 << 17)
def _word_rows(word: str, space_after: bool) -> tuple[int, ...]:
    """NGram.add_char's state machine over one word: the profile rows of its 1-, 2- and 3-grams.

    The state resets at every space, so a word's n-grams depend only on the word and on whether
    a space follows it: words repeat, so this is computed once per distinct word.
    """
    rows_of, _ = _profiles()
    rows, grams, capital = [], " ", False
    for ch in word + " " * space_after:
        last = grams[-1]
        if last == " ":
            grams = " "
        elif len(grams) >= NGram.N_GRAM:
            grams = grams[1:]
        grams += ch
        capital = ch.isupper() and (capital or last.isupper())
        if capital:
            continue
        for n in range(1, min(len(grams), NGram.N_GRAM) + 1):
            row = rows_of.get(grams[-n:])
            if row is not None and grams[-n:] != " ":
                rows.append(row)
    return tuple(rows)


class _Detector(Detector):
    """langdetect's Detector with its two hot loops rewritten; same inputs, same random draws."""

    def _ngram_rows(self) -> list[int]:
        words = self.text.translate(_NORMALIZED).split(" ")
        last = len(words) - 1
        return [row for i, word in enumerate(words) if word for row in _word_rows(word, i < last)]

    def _detect_block(self) -> None:
        self.cleaning_text()
        rows = self._ngram_rows()
        if not rows:
            raise LangDetectException(ErrorCode.CantDetectError, "No features in text.")
        _, matrix = _profiles()
        n_langs = len(self.langlist)
        total = np.zeros(n_langs)
        self.random.seed(self.seed)
        for _ in range(self.n_trial):
            prob = np.array(self.prior_map) if self.prior_map is not None else np.full(n_langs, 1.0 / n_langs)
            alpha = self.alpha + self.random.gauss(0.0, 1.0) * self.ALPHA_WIDTH
            weight = alpha / self.BASE_FREQ
            # langdetect checks convergence after update 1, 6, 11, ...: sample those blocks at once
            done, block = 0, 1
            while True:
                picks = [self.random.choice(rows) for _ in range(block)]
                prob *= np.prod(weight + matrix[picks], axis=0)
                done += block
                prob /= prob.sum()
                if prob.max() > self.CONV_THRESHOLD or done - 1 >= self.ITERATION_LIMIT:
                    break
                block = 5
            total += prob / self.n_trial
        self.langprob = total.tolist()


def detect_one(text: str, seed: int = 0) -> tuple[str, float]:
    """(language, probability) of the most likely language; (`und`, 0.0) for text without letters."""
    _profiles()  # loads the 55 language profiles, once per process
    detector = _Detector(detector_factory._factory)
    detector.seed = seed
    detector.append(text)
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):
        return UNKNOWN, 0.0
    return best.lang, round(best.prob, 6)


def _detect_chunk(texts: list[str], seed: int) -> list[tuple[str, float]]:
    return [detect_one(t, seed) for t in texts]


@lru_cache(maxsize=4)
def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: forking a process that runs Prefect's threads could copy a held lock
    ctx = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_profiles)


def detect_languages(texts: list[str], prefix_chars: int, seed: int = 0, workers: int = 0) -> list[tuple[str, float]]:
    """Classify each text by its first `prefix_chars` characters, on `workers` processes (0 = all cores)."""
    prefixes = [t[:prefix_chars] for t in texts]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(prefixes) <= CHUNK:
        return _detect_chunk(prefixes, seed)
    chunks = [prefixes[i : i + CHUNK] for i in range(0, len(prefixes), CHUNK)]
    results = _pool(workers).map(_detect_chunk, chunks, [seed] * len(chunks))
    return [result for chunk in results for result in chunk]
