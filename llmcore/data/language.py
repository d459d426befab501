"""Language identification with langdetect's model and algorithm: deterministic, vectorised, parallel.

langdetect samples n-grams at random, so its answer changes from call to call unless the seed is
fixed; we fix it. Its time goes to per-character Python loops (text cleaning, n-gram extraction)
and to the sampling trials (55 multiplications per sampled n-gram, one document at a time). Here
the text is cleaned with regexes and a translate table, n-grams are cached per word, and the trials
of all documents of a batch run in lockstep on numpy arrays. The random draws are the same 32-bit
words of Python's Mersenne Twister that langdetect's `random.Random(seed)` consumes, and every
float operation is langdetect's, in its order: the answers are langdetect's, bit for bit.
Once there is enough work to pay for starting them, batches are shared between the calling process
and worker processes (threads would queue on the GIL), unless the main script lacks an
`if __name__ == "__main__":` guard (workers would re-run it). Only a bounded prefix of each document
is classified.
"""

from __future__ import annotations

import ast
import json
import math
import multiprocessing
import os
import random
import re
import sys
import threading
import warnings
from array import array
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np
from langdetect.detector import Detector
from langdetect.detector_factory import PROFILES_DIRECTORY
from langdetect.utils.ngram import NGram

UNKNOWN = "und"
BATCH = 1000  # documents per job: wide for the lockstep trials, narrow enough to share out and for memory
# A worker costs about a second of CPU to start (interpreter, the main module's imports, profiles,
# cold caches), the work of some 2,000 documents: from 10,000 on, a second core that is free saves
# about a third of the time; on a busy machine it saves nothing.
POOL_MIN_DOCS = 10_000
WINDOW = 30  # random draws per document fetched at once: most trials converge within 60


@lru_cache(maxsize=1)
def _profiles() -> tuple[list[str], dict[str, int], np.ndarray]:
    """langdetect's model as DetectorFactory.load_profile builds it, in its language order:
    the languages, the row of each n-gram, and the (n-grams x languages) probability matrix."""
    names = [f for f in os.listdir(PROFILES_DIRECTORY) if not f.startswith(".")]
    profiles = [json.loads(Path(PROFILES_DIRECTORY, f).read_text(encoding="utf-8")) for f in names]
    rows_of: dict[str, int] = {}
    columns = []
    for p in profiles:
        rows = [rows_of.setdefault(gram, len(rows_of)) for gram in p["freq"]]
        # every profile n-gram is 1 to 3 characters long: its frequency over that length's total
        per_length = np.array(p["n_words"], dtype=np.float64)[[len(gram) - 1 for gram in p["freq"]]]
        columns.append((rows, np.array(list(p["freq"].values()), dtype=np.float64) / per_length))
    matrix = np.zeros((len(rows_of), len(profiles)))
    for lang, (rows, probs) in enumerate(columns):
        matrix[rows, lang] = probs
    return [p["name"] for p in profiles], rows_of, matrix


_SPACES = re.compile(" {2,}")
_LATIN = re.compile("[A-z]")
_NON_LATIN = re.compile("[\u0300-\u1dff\u1f00-\U0010ffff]")  # all but Latin Extended Additional


def _cleaned(text: str) -> str:
    """Detector.append then Detector.cleaning_text, without their per-character loops."""
    text = Detector.URL_RE.sub(" ", text)
    if "@" in text:
        text = Detector.MAIL_RE.sub(" ", text)
    text = _SPACES.sub(" ", NGram.normalize_vi(text)[:10000])  # 10000: Detector.max_text_length
    non_latin = len(_NON_LATIN.findall(text))
    if non_latin and 2 * len(_LATIN.findall(text)) < non_latin:
        text = _LATIN.sub("", text)  # mostly non-Latin script: drop the Latin letters
    return text


class _Normalized(dict):
    """str.translate table: each character as NGram.normalize maps it, computed once."""

    def __missing__(self, code: int) -> str:
        self[code] = ch = NGram.normalize(chr(code))
        return ch


_NORMALIZED = _Normalized()


@lru_cache(maxsize=1 << 17)
def _word_rows(word: str, space_after: bool) -> bytes:
    """NGram.add_char's state machine over one word: the profile rows of its 1-, 2- and 3-grams,
    as packed int32.

    The state resets at every space, so a word's n-grams depend only on the word and on whether
    a space follows it: words repeat, so this is computed once per distinct word.
    """
    rows_of = _profiles()[1]
    chars = " " + word + " " * space_after
    ends = range(2, len(chars) + 1)
    if not word[1:].islower():  # no n-grams end on the second and later capitals in a row
        ends = [end for end in ends if not (chars[end - 1].isupper() and chars[end - 2].isupper())]
    grams = [chars[end - n : end] for end in ends for n in (1, 2, 3) if n <= end]
    return array("i", [row for row in map(rows_of.get, grams) if row is not None]).tobytes()


def _ngram_rows(text: str) -> bytes:
    """Detector._extract_ngrams: the profile row of each n-gram of the text, in order, as packed int32.

    No profile holds " " or "  ", the n-grams langdetect skips, so empty words give no rows."""
    *words, last = _cleaned(text).translate(_NORMALIZED).split(" ")
    return b"".join(map(_word_rows, words, repeat(True))) + _word_rows(last, False)


@lru_cache(maxsize=4)
def _stream(seed: int, size: int) -> np.ndarray:
    """The first `size` 32-bit words that random.Random(seed) draws from its Mersenne Twister."""
    state = random.Random(seed).getstate()[1]
    twister = np.random.MT19937()
    twister.state = {"bit_generator": "MT19937", "state": {"key": np.array(state[:-1], np.uint32), "pos": state[-1]}}
    return twister.random_raw(size).astype(np.int64)


def _words(seed: int, at: np.ndarray) -> np.ndarray:
    return _stream(seed, 1 << max(16, int(at.max()).bit_length()))[at]


def _gauss_pairs(seed: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """random.gauss with no cached value, at each stream position: its result and the value it caches."""
    a, b, c, d = _words(seed, pos[:, None] + np.arange(4)).T
    u = (a >> 5) * 67108864.0 + (b >> 6)  # random(): 53 bits from two words
    v = (c >> 5) * 67108864.0 + (d >> 6)
    pairs = []
    for x, y in zip((u * (1.0 / 9007199254740992.0)).tolist(), (v * (1.0 / 9007199254740992.0)).tolist()):
        x2pi, g2rad = x * random.TWOPI, math.sqrt(-2.0 * math.log(1.0 - y))  # math: numpy's may round differently
        pairs.append((math.cos(x2pi) * g2rad, math.sin(x2pi) * g2rad))
    return tuple(np.array(pairs).T)


def _choices(seed: int, pos: np.ndarray, n: np.ndarray, shift: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` calls of random.choice on sequences of lengths n from stream positions pos:
    the indices drawn and the stream position of each (documents x count).

    choice draws getrandbits(n.bit_length()), the top bits of a word (shift = 32 - n.bit_length()),
    until it is below n."""
    span = 4 * count + 16
    while True:
        at = pos[:, None] + np.arange(span)
        drawn = _words(seed, at) >> shift[:, None]
        accepted = drawn < n[:, None]
        if (accepted.sum(axis=1) >= count).all():
            break
        span *= 2
    accepted &= accepted.cumsum(axis=1) <= count
    return drawn[accepted].reshape(-1, count), at[accepted].reshape(-1, count)


def _probabilities(docs: list[bytes], seed: int) -> np.ndarray:
    """Detector._detect_block for many documents in lockstep: (documents x languages) probabilities.

    Per trial, each document draws n-grams and multiplies its probabilities by theirs, checking
    for convergence after draw 1, 6, 11, ...; converged documents leave the batch.
    """
    _, _, matrix = _profiles()
    n = np.array([len(rows) // 4 for rows in docs])
    shift = 32 - np.frexp(n)[1]  # frexp's exponent of a positive int is its bit length
    first = np.cumsum(n) - n  # where each document's rows start in `rows`
    rows = np.frombuffer(b"".join(docs), dtype=np.int32)
    n_docs, n_langs = len(docs), matrix.shape[1]
    pos = np.zeros(n_docs, dtype=np.int64)  # next unread word of each document's random stream
    total = np.zeros((n_docs, n_langs))
    n_trial = 7  # Detector.n_trial
    for trial in range(n_trial):
        if trial % 2 == 0:  # random.gauss computes two values and caches the second for the next call
            z, z_next = _gauss_pairs(seed, pos)
            pos += 4
        else:
            z = z_next
        weight = ((Detector.ALPHA_DEFAULT + z * Detector.ALPHA_WIDTH) / Detector.BASE_FREQ)[:, None]
        active = np.arange(n_docs)
        prob = np.full((n_docs, n_langs), 1.0 / n_langs)
        drawn = 0
        while active.size:
            picks, at = _choices(seed, pos[active], n[active], shift[active], WINDOW)
            picks = rows[picks + first[active, None]]
            for j in range(WINDOW):
                prob *= weight + matrix[picks[:, j]]  # one multiplication per draw, in langdetect's order
                drawn += 1
                if (drawn - 1) % 5:
                    continue
                prob /= np.add.accumulate(prob, axis=1)[:, -1:]  # left-to-right, as Python's sum()
                done = (prob.max(axis=1) > Detector.CONV_THRESHOLD) | (drawn - 1 >= Detector.ITERATION_LIMIT)
                if done.any():
                    total[active[done]] += prob[done] / n_trial
                    pos[active[done]] = at[done, j] + 1
                    active, prob, picks, at, weight = (a[~done] for a in (active, prob, picks, at, weight))
                    if not active.size:
                        break
            pos[active] = at[:, -1] + 1
    return total


def _detect_batch(texts: list[str], seed: int) -> list[tuple[str, float]]:
    langs = _profiles()[0]
    docs = [_ngram_rows(t) for t in texts]
    found = [i for i, rows in enumerate(docs) if len(rows)]
    results = [(UNKNOWN, 0.0)] * len(texts)  # no n-grams: langdetect raises "No features in text"
    if found:
        probs = _probabilities([docs[i] for i in found], seed)
        for i, p in zip(found, probs):
            best = int(p.argmax())  # the first of equals, as langdetect's stable sort
            if p[best] > Detector.PROB_THRESHOLD:
                results[i] = (langs[best], round(float(p[best]), 6))
    return results


_GUARDS = {ast.dump(ast.parse(guard, mode="eval").body) for guard in ('__name__ == "__main__"', '"__main__" == __name__')}


@lru_cache(maxsize=1)
def _workers_allowed() -> bool:
    """Whether worker processes can start without harm. Like spawn, forkserver imports the main script in them (as
    __mp_main__, as multiprocessing.spawn does: not a package's __main__), which re-runs its top-level work unless that
    is under `if __name__ == "__main__":`: the work done twice, then BrokenProcessPool. Without the guard: one warning."""
    main = sys.modules.get("__main__")
    path, name = getattr(main, "__file__", None), getattr(getattr(main, "__spec__", None), "name", "")
    if path is None or name == "__main__" or name.endswith(".__main__"):  # `python -c`, a REPL, `python -m package`
        return True
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        tree = ast.Module(body=[], type_ignores=[])  # unreadable: it cannot be checked, so it counts as unguarded
    if any(isinstance(node, ast.If) and ast.dump(node.test) in _GUARDS for node in tree.body):
        return True
    warnings.warn(f"{path}: no `if __name__ == \"__main__\":` guard found, so worker processes, which import it, would run "
                  "it again: classifying languages in this process only. Put the script's top-level work under that guard "
                  "to classify in parallel.", RuntimeWarning, stacklevel=3)
    return False


@lru_cache(maxsize=4)
def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: forking a process that runs Prefect's threads could copy a held lock
    ctx = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_profiles)


_in_flight = 0  # documents being classified by all threads of this process
_in_flight_lock = threading.Lock()


def detect_languages(texts: list[str], prefix_chars: int, seed: int = 0, workers: int = 0) -> list[tuple[str, float]]:
    """(language, probability) of each text's most likely language, from its first `prefix_chars`
    characters, on up to `workers` processes (0 = all cores); (`und`, 0.0) for text without letters.

    Worker processes are started once there are POOL_MIN_DOCS documents in flight in this process,
    and used from then on."""
    global _in_flight
    prefixes = [t[:prefix_chars] for t in texts]
    workers = workers or os.cpu_count() or 1
    batches = [prefixes[i : i + BATCH] for i in range(0, len(prefixes), BATCH)]
    with _in_flight_lock:
        _in_flight += len(prefixes)
        parallel = (workers > 1 and len(batches) > 1 and (_in_flight >= POOL_MIN_DOCS or _pool.cache_info().currsize > 0)
                    and _workers_allowed())  # under the lock: one check, one warning
    try:
        if not parallel:
            return [result for batch in batches for result in _detect_batch(batch, seed)]
        # This process classifies too, from the last batch back, every batch that no worker has
        # taken yet: it starts at once, while the workers start up.
        futures = [_pool(workers - 1).submit(_detect_batch, batch, seed) for batch in batches]
        ours = {i: _detect_batch(batches[i], seed) for i in reversed(range(len(batches))) if futures[i].cancel()}
        return [result for i, future in enumerate(futures) for result in (ours[i] if i in ours else future.result())]
    finally:
        with _in_flight_lock:
            _in_flight -= len(prefixes)
