"""Named quality filters: Gopher quality and repetition, C4, FineWeb, as clean-stage rules.

Definitions and default thresholds are the published ones (Gopher: Rae et al. 2021, table A1 and
appendix A; C4: Raffel et al. 2020, section 2.2; FineWeb: Penedo et al. 2024) as datatrove 0.10
implements them, reason names included (prefixed with the family). Each function takes the text
and its family's settings and returns (reason, detail) for the first rule the text breaks, or None.

datatrove splits words with spaCy's blank English tokenizer; `words` re-implements that
tokenizer's algorithm (whitespace, prefixes, suffixes, special cases, infixes) and its English
rules so that spaCy is not a dependency, its letter classes included (below). Simplified: the classes
cover Unicode planes 0-1, the URL pattern skips spaCy's IP-address rules, units and currencies are the
Latin / common ones. On the 4,310 parity documents of tests/test_quality.py it gives spaCy's tokens for
every one, and every filter's decision and reason equal datatrove's; on 10,002 documents of
benchmarks/peers_corpus.py's corpus (gettext catalogs in ~200 locales among them) it gives spaCy's tokens
for all but 3 (a special case across tokens, "):"; "''s"; a URL with an IP address).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmcore.config import (
        C4Config,
        CleanConfig,
        FineWebConfig,
        GopherQualityConfig,
        GopherRepetitionConfig,
        NamedFilterConfig,
    )

Problem = tuple[str, str]

# datatrove.utils.text: PUNCTUATION (a "symbol word" has only these) and TERMINAL_PUNCTUATION
# (Unicode's sentence terminals: a FineWeb line "ends in punctuation" with one of them)
PUNCTUATION = set(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
)
TERMINAL_PUNCTUATION = tuple(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9"
    "\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049"
    "\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9"
    "\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61"
    "\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88"
    "\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143"
    "\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9"
    "\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce"
    "\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641"
    "\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c"
    "\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37"
    "\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)

# ----------------------------------------------------------------------------- words, as spaCy's blank English splits them


def _char_class(chars: list[str]) -> str:
    """The characters as regex ranges (inside [...])."""
    runs: list[list[int]] = []
    for o in map(ord, chars):
        if runs and runs[-1][1] == o - 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in runs)


# spaCy's letters (spacy/lang/char_classes.py, MIT): Latin; the Russian, Tatar, Greek, Ukrainian and Macedonian
# alphabets; and whole blocks of uncased scripts, vowel signs and viramas included (to Python those are not letters):
# Ethiopic, Bengali, Hebrew, Arabic/Persian, Sinhala, Devanagari, Kannada, Tamil, Telugu, Hangul, kana, CJK (with its
# punctuation block). Other scripts (Georgian, Armenian, Gurmukhi, Thai...) are not letters to spaCy's rules.
_SPACY_CASED = "ёа-яЁА-ЯәөүҗңһӘӨҮҖҢҺα-ωάέίόώήύΑ-ΩΆΈΊΌΏΉΎіїєґІЇЄҐѓѕјљњќѐѝЃЅЈЉЊЌЀЍ"
_SPACY_UNCASED = (
    "\u1200-\u137f\u0980-\u09ff\u0591-\u05f4\ufb1d-\ufb4f\u0620-\u064a\u066e-\u06d5\u06e5-\u06ff\u0750-\u077f"
    "\u08a0-\u08bd\ufb50-\ufbb1\ufbd3-\ufd3d\ufd50-\ufdc7\ufdf0-\ufdfb\ufe70-\ufefc\U0001ee00-\U0001eebb\u0d80-\u0dff"
    "\u0900-\u097f\u0c80-\u0cff\u0b80-\u0bff\u0c00-\u0c7f\uac00-\ud7af\u1100-\u11ff\u3040-\u309f\u30a0-\u30ffー"
    "\u4e00-\u9fff\u3400-\u4dbf\u2e80-\u2eff\u2f00-\u2fdf\u2ff0-\u2fff\u3000-\u303f\u31c0-\u31ef\u3200-\u33ff"
    "\uf900-\ufaff\ufe30-\ufe4f\U0001f200-\U0001f2ff"
)


def _letter_and_icon_classes() -> tuple[str, str, str, str]:
    """spaCy's ALPHA_LOWER, ALPHA_UPPER (the uncased scripts in both), ALPHA and LIST_ICONS (symbols, So)."""
    chars = [*map(chr, range(0x20000))]  # Unicode planes 0 and 1
    alphabets, blocks = re.compile(f"[{_SPACY_CASED}]"), re.compile(f"[{_SPACY_UNCASED}]")
    cased = [c for c in chars if unicodedata.name(c, "").startswith("LATIN ") and c.isalpha() or alphabets.match(c)]
    uncased = [c for c in chars if blocks.match(c)]
    return (_char_class(sorted([c for c in cased if c.islower()] + uncased)),
            _char_class(sorted([c for c in cased if c.isupper()] + uncased)),
            _char_class(sorted(cased + uncased)),
            _char_class([c for c in chars if unicodedata.category(c) == "So"]))


_LOWER, _UPPER, _ALPHA, _ICONS = _letter_and_icon_classes()
_PUNCT = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = r"'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_CURRENCY = r"US\$|C\$|A\$|[$£€¥฿₽﷼₠-₿]"
_UNITS = (r"km²|km³|km|m²|m³|dm²|dm³|dm|cm²|cm³|cm|mm²|mm³|mm|ha|µm|nm|yd|in|ft|kg|mg|µg|lb|oz|m/s|km/h|kmh|mph|hPa|"
          r"Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|[mgtTGMK%]")
_HYPHENS = r"---|--|——|[-–—~]"
_PREFIX = re.compile(rf"§|%|=|—|–|\+(?![0-9])|……|[{_PUNCT}]|\.\.+|[{_QUOTES}]|{_CURRENCY}|[{_ICONS}]")
_SUFFIX = re.compile(
    rf"(?:……|[{_PUNCT}]|\.\.+|[{_QUOTES}]|[{_ICONS}]|['’][sS]|[—–]|(?<=[0-9])\+|(?<=°[FfCcKk])\.|(?<=[0-9])(?:{_CURRENCY})"
    rf"|(?<=[0-9])(?:{_UNITS})|(?<=[0-9{_LOWER}%²\-+|{_PUNCT}{_QUOTES}])\.|(?<=[{_UPPER}][{_UPPER}])\.)$"
)
_INFIX = re.compile(
    rf"\.\.+|…|[{_ICONS}]|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[{_LOWER}{_QUOTES}])\.(?=[{_UPPER}{_QUOTES}])"
    rf"|(?<=[{_ALPHA}]),(?=[{_ALPHA}])|(?<=[{_ALPHA}0-9])(?:{_HYPHENS})(?=[{_ALPHA}])|(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"
)
_URL = re.compile(r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?"
                  rf"[A-Za-z0-9\u00a1-\uffff]\.)+[{_LOWER}]{{2,63}}(?::\d{{2,5}})?(?:[/?#]\S*)?$")
# spaCy's English special cases (spacy/lang/en/tokenizer_exceptions.py, MIT): kept whole ...
_WHOLE = frozenset(r"""
' '' 'Cause 'Cos 'Coz 'Cuz 'S 'bout 'cause 'cos 'coz 'cuz 'd 'em 'll 'nuff 're 's (*_*) (-8 (-: (-; (-_-)
(._.) (: (; (= (>_<) (^_^) (o: (¬_¬) (ಠ_ಠ) (╯°□°）╯︵┻━┻ )-: ): -_- -__- ._. 0.0 0.o 0_0 0_o 8) 8-) 8-D 8D :'(
:') :'-( :'-) :( :(( :((( :() :) :)) :))) :* :-( :-(( :-((( :-) :-)) :-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X
:-] :-o :-p :-x :-| :-} :/ :0 :1 :3 :> :D :O :P :X :] :o :o) :p :x :| :} :’( :’) :’-( :’-) ;) ;-) ;-D ;D ;_;
<.< </3 <3 <33 <333 =( =) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@ Adm. Ak. Ala. Apr. Ariz. Ark. Aug.
Bros. C++ Calif. Co. Colo. Conn. Corp. D.C. Dec. Del. Doin Doin' Doin’ Dr. E.G. E.g. Feb. Fla. Ga. Gen. Goin
Goin' Goin’ Gov. Havin Havin' Havin’ I.E. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La.
Lovin Lovin' Lovin’ Ltd. Ma'am Mar. Mass. Ma’am Md. Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. N.C.
N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nothin Nothin' Nothin’ Nov. Nuthin Nuthin' Nuthin’ O'clock O.O O.o
O_O O_o Oct. Okla. Ol Ol' Ol’ Ore. O’clock Pa. Ph.D. Prof. Rep. Rev. S.C. Sen. Sep. Sept. Somethin Somethin'
Somethin’ St. Tenn. V.V V_V Va. Wash. Wis. XD XDD [-: [: [= \") \n \t ]= ^_^ ^__^ ^___^ a. a.m. and/or b. c.
co. d. doin doin' doin’ e. e.g. em f. g. goin goin' goin’ h. havin havin' havin’ i. i.e. j. k. l. ll lovin
lovin' lovin’ m. ma'am ma’am n. nothin nothin' nothin’ nuff nuthin nuthin' nuthin’ o'clock o. o.0 o.O o.o o_0
o_O o_o ol ol' ol’ o’clock p. p.m. q. r. s. somethin somethin' somethin’ t. u. v. v.s. v.v v_v vs. w. w/o x.
xD xDD y. z. ¯\(ツ)/¯ ä. ö. ü. ಠ_ಠ ಠ︵ಠ — ‘S ‘s ’ ’Cause ’Cos ’Coz ’Cuz ’S ’bout ’cause ’cos ’coz ’cuz ’d ’em
’ll ’nuff ’re ’s ’’ <space>
""".split())
# ... and split, lower case or Capitalized, with or without apostrophes ("dont" -> "do", "nt"; "im" -> "i", "m")
_SPLIT = {w.replace("|", ""): w.split("|") for w in """
ai|nt are|nt can|not ca|nt ca|nt|ve could|nt could|nt|ve could|ve dare|nt did|nt did|nt|ve does|nt does|nt|ve
do|nt do|nt|ve gon|na got|ta had|nt had|nt|ve has|nt have|nt he|d he|d|ve he|ll|ve he|s how|d how|d|ve how|ll
how|ll|ve how|re how|s how|ve is|nt it|d it|d|ve it|ll it|ll|ve i|d i|d|ve i|ll|ve i|m i|m|a i|ve may|nt
may|nt|ve might|nt might|nt|ve might|ve must|nt must|nt|ve must|ve need|nt need|nt|ve not|ve ought|nt
ought|nt|ve sha|nt sha|nt|ve she|d|ve she|ll|ve she|s should|nt should|nt|ve should|ve that|d that|d|ve
that|ll that|ll|ve that|s there|d there|d|ve there|ll there|ll|ve there|re there|s there|ve these|d these|d|ve
these|ll these|ll|ve these|re these|ve they|d they|d|ve they|ll they|ll|ve they|re they|ve this|d this|d|ve
this|ll this|ll|ve this|s those|d those|d|ve those|ll those|ll|ve those|re those|ve was|nt were|nt we|d
we|d|ve we|ll|ve we|ve what|d what|d|ve what|ll what|ll|ve what|re what|s what|ve when|d when|d|ve when|ll
when|ll|ve when|re when|s when|ve where|d where|d|ve where|ll where|ll|ve where|re where|s where|ve who|d
who|d|ve who|ll who|ll|ve who|s who|ve why|d why|d|ve why|ll why|ll|ve why|re why|s why|ve would|nt
would|nt|ve would|ve wo|nt wo|nt|ve you|d you|d|ve you|ll you|ll|ve you|re you|ve y|all
""".split()}
_SPLIT_APOSTROPHE = {  # only with the apostrophe: "we're" -> "we", "'re"; "were" stays
    w.replace("|", ""): w.split("|") for w in "cm|on he|ll how|d|y it|s i|ll let|s she|d she|ll we|ll we|re who|re".split()
}
_CLOCK = re.compile(r"^(1[0-2]|[1-9])(a\.m\.|p\.m\.|am|pm)$")  # "10am" -> "10", "am"


def _special(s: str) -> list[str] | None:
    if s in _WHOLE:
        return [s]
    bare = s.replace("'", "").replace("’", "")  # "can't" splits as "cant" does: "ca", "n't"
    inner = s[:1] not in "'’" and s[-1:] not in "'’"  # apostrophes inside the word only
    if inner and (bare.islower() or bare[:1].isupper() and bare[1:].islower()):
        if parts := _SPLIT.get(bare.lower()) or (bare != s and _SPLIT_APOSTROPHE.get(bare.lower())):
            out, i = [], 0
            for part in parts:  # each part takes its letters and the apostrophes among them
                j, letters = i, 0
                while letters < len(part):
                    letters += s[j] not in "'’"
                    j += 1
                out.append(s[i:j])
                i = j
            return out
    m = _CLOCK.match(s)
    return list(m.groups()) if m else None


def _merge_specials(tokens: list[str]) -> list[str]:
    """Adjacent pieces that together are a special case become one (spaCy's special-case matcher: "):", "z.")."""
    out, i = [], 0
    while i < len(tokens):
        for j in range(min(len(tokens), i + 6), i + 1, -1):
            if "".join(tokens[i:j]) in _WHOLE:
                out.append("".join(tokens[i:j]))
                i = j
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _prefix_len(s: str) -> int:
    m = _PREFIX.match(s)
    return m.end() if m else 0


def _suffix_len(s: str) -> int:
    # Every suffix but a run of dots is at most 4 characters, so the leftmost match starts in the last 4 unless
    # the chunk ends in dots; the lookbehinds still see the characters before `pos`.
    m = _SUFFIX.search(s, 0 if s.endswith("..") else max(0, len(s) - 4))
    return len(s) - m.start() if m else 0


@lru_cache(maxsize=1 << 18)  # chunks repeat (spaCy caches them too)
def _chunk(s: str) -> tuple[str, ...]:
    """One whitespace-separated chunk: spaCy's _split_affixes, then _attach_tokens."""
    if s.isalpha():  # no affix or infix applies to letters alone
        return tuple(_special(s) or (s,))
    prefixes, suffixes, last = [], [], 0
    while s and len(s) != last:
        if _special(s):
            break
        last = len(s)
        pre = _prefix_len(s)
        if pre and s[pre:] and _special(s[pre:]):
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        suf = _suffix_len(s[pre:])
        if suf and s[:-suf] and _special(s[:-suf]):
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
    middle = []
    if s:
        special = _special(s)
        if special:
            middle = special
        elif _URL.match(s):
            middle = [s]
        else:
            start = 0
            for m in _INFIX.finditer(s):
                if m.start() == 0:
                    continue
                if m.start() != start:
                    middle.append(s[start : m.start()])
                if m.end() != m.start():
                    middle.append(m.group())
                start = m.end()
            if start < len(s):
                middle.append(s[start:])
    tokens = prefixes + middle + suffixes[::-1]
    return tuple(_merge_specials(tokens) if len(tokens) > 1 else tokens)


@lru_cache(maxsize=4)  # the filters judging one document split the same text
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(w for chunk in text.split() for w in _chunk(chunk))


def words(text: str) -> list[str]:
    """The words of `text` as datatrove's English word tokenizer (spaCy, blank "en") gives them."""
    return list(_tokens(text))


def _is_punct(token: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in token)


def sentence_count(text: str) -> int:
    """Sentences as spaCy's sentencizer splits them: the first word starts one, and so does each word after end
    punctuation (a line opening with "." is two)."""
    tokens = _tokens(text)
    count, seen_end = 1, False
    for token in tokens:
        ends = token in TERMINAL_PUNCTUATION
        if seen_end and not ends and not _is_punct(token):
            count, seen_end = count + 1, False
        elif ends:
            seen_end = True
    return count if tokens else 0


# ----------------------------------------------------------------------------- Gopher quality
def gopher_quality(text: str, cfg: GopherQualityConfig) -> Problem | None:
    """Rae et al. 2021, appendix A.1.1; the thresholds are theirs."""
    tokens = _tokens(text)
    n_words = len(tokens)
    counted = [w for w in tokens if not PUNCTUATION.issuperset(w)]  # not a symbol
    n = len(counted)
    if cfg.min_doc_words is not None and n < cfg.min_doc_words:
        return "gopher_short_doc", f"{n} words < {cfg.min_doc_words}"
    if cfg.max_doc_words is not None and n > cfg.max_doc_words:
        return "gopher_long_doc", f"{n} words > {cfg.max_doc_words}"
    if not counted:
        return "gopher_short_doc", "no words"
    mean = sum(map(len, counted)) / n
    if cfg.min_avg_word_length is not None and mean < cfg.min_avg_word_length:
        return "gopher_below_avg_threshold", f"mean word length {mean:.2f} < {cfg.min_avg_word_length}"
    if cfg.max_avg_word_length is not None and mean > cfg.max_avg_word_length:
        return "gopher_above_avg_threshold", f"mean word length {mean:.2f} > {cfg.max_avg_word_length}"
    if cfg.max_symbol_word_ratio is not None:
        if (ratio := text.count("#") / n_words) > cfg.max_symbol_word_ratio:
            return "gopher_too_many_hashes", f"{ratio:.3f} '#' per word > {cfg.max_symbol_word_ratio}"
        if (ratio := (text.count("...") + text.count("…")) / n_words) > cfg.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis", f"{ratio:.3f} ellipses per word > {cfg.max_symbol_word_ratio}"
    lines = text.splitlines()
    if cfg.max_bullet_lines_ratio is not None:
        ratio = sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines)
        if ratio > cfg.max_bullet_lines_ratio:
            return "gopher_too_many_bullets", f"{ratio:.2f} of lines start with a bullet > {cfg.max_bullet_lines_ratio}"
    if cfg.max_ellipsis_lines_ratio is not None:
        ratio = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
        if ratio > cfg.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis", f"{ratio:.2f} of lines end in an ellipsis > {cfg.max_ellipsis_lines_ratio}"
    if cfg.min_alpha_words_ratio is not None:
        ratio = sum(w.isalpha() or any(c.isalpha() for c in w) for w in tokens) / n_words
        if ratio < cfg.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold", f"{ratio:.3f} of words have a letter < {cfg.min_alpha_words_ratio}"
    if cfg.min_stop_words is not None:
        found = set(cfg.stop_words).intersection(tokens)
        if len(found) < cfg.min_stop_words:
            return "gopher_too_few_stop_words", f"{len(found)} of {sorted(cfg.stop_words)} < {cfg.min_stop_words}"
    return None


# ----------------------------------------------------------------------------- Gopher repetition
def _duplicates(items: list[str]) -> tuple[int, int]:
    """(repeats of an earlier item, their characters)."""
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def _ngrams(joined: str, starts: list[int], n: int, sep: int) -> list[str]:
    """Every word n-gram, as slices of the words joined by a separator of `sep` characters; `starts` holds each
    word's offset in `joined` and, last, len(joined) + sep."""
    return [joined[a : b - sep] for a, b in zip(starts, starts[n:])]


def _offsets(tokens: tuple[str, ...], sep: int) -> list[int]:
    starts, at = [], 0
    for w in tokens:
        starts.append(at)
        at += len(w) + sep
    return [*starts, at]


def _duplicated_ngram_chars(grams: list[str], n: int) -> int:
    """Characters (spaces excluded) of word n-grams repeating an earlier one; a repeat is skipped whole."""
    if len(set(grams)) == len(grams):
        return 0
    seen, chars, i = set(), 0, 0
    while i < len(grams):
        gram = grams[i]
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def gopher_repetition(text: str, cfg: GopherRepetitionConfig) -> Problem | None:
    """Rae et al. 2021, table A1: duplicate lines and paragraphs, top and duplicated word n-grams."""
    if not text:
        return "empty_document", "no text"
    size = len(text)
    paragraphs = re.split(r"\n{2,}", text.strip())
    count, chars = _duplicates(paragraphs)
    if cfg.dup_para_frac is not None and count / len(paragraphs) > cfg.dup_para_frac:
        return "gopher_dup_para_frac", f"{count}/{len(paragraphs)} paragraphs repeat > {cfg.dup_para_frac}"
    if cfg.dup_para_char_frac is not None and chars / size > cfg.dup_para_char_frac:
        return "gopher_dup_para_char_frac", f"{chars / size:.3f} of characters in repeated paragraphs > {cfg.dup_para_char_frac}"
    lines = re.split(r"\n+", text)
    count, chars = _duplicates(lines)
    if cfg.dup_line_frac is not None and count / len(lines) > cfg.dup_line_frac:
        return "gopher_dup_line_frac", f"{count}/{len(lines)} lines repeat > {cfg.dup_line_frac}"
    if cfg.dup_line_char_frac is not None and chars / size > cfg.dup_line_char_frac:
        return "gopher_dup_line_char_frac", f"{chars / size:.3f} of characters in repeated lines > {cfg.dup_line_char_frac}"
    tokens = _tokens(text)
    spaced, spaced_starts = " ".join(tokens), _offsets(tokens, 1)
    for n, limit in sorted(cfg.top_n_grams.items()):
        grams = _ngrams(spaced, spaced_starts, n, 1)
        if grams:
            gram, times = Counter(grams).most_common(1)[0]
            if (frac := len(gram) * times / size) > limit:
                return f"gopher_top_{n}_gram", f"{gram!r} x{times}: {frac:.3f} of characters > {limit}"
    joined, starts = "".join(tokens), _offsets(tokens, 0)
    for n, limit in sorted(cfg.dup_n_grams.items()):
        if (frac := _duplicated_ngram_chars(_ngrams(joined, starts, n, 0), n) / size) > limit:
            return f"gopher_duplicated_{n}_n_grams", f"{frac:.3f} of characters in repeated {n}-grams > {limit}"
    return None


# ----------------------------------------------------------------------------- C4
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_END = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def c4_lines(text: str, cfg: C4Config) -> tuple[list[str], Problem | None]:
    """Raffel et al. 2020, section 2.2: the lines C4 keeps, and why the whole page goes (None: it stays)."""
    kept, sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        tokens = line.split()
        if cfg.max_word_length is not None and any(len(w) > cfg.max_word_length for w in tokens):
            continue
        if cfg.remove_citations:
            line = _CITATION.sub("", line)
        if cfg.filter_no_terminal_punct and (not line.endswith(_C4_END) or line.endswith("...")):
            continue
        if cfg.min_words_per_line is not None and len(tokens) < cfg.min_words_per_line:
            continue
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return [], ("c4_lorem_ipsum", f"'lorem ipsum' in {line[:60]!r}")
        if cfg.filter_javascript and "javascript" in lower:
            continue
        if cfg.filter_curly_bracket and "{" in line:
            return [], ("c4_curly_bracket", f"'{{' in {line[:60]!r}")
        if cfg.filter_policy and any(p in lower for p in POLICY_PHRASES):
            continue
        if cfg.min_num_sentences is not None:
            sentences += sentence_count(line)
        kept.append(line)
    if cfg.min_num_sentences is not None and sentences < cfg.min_num_sentences:
        return kept, ("c4_too_few_sentences", f"{sentences} sentences in kept lines < {cfg.min_num_sentences}")
    return kept, None


def c4(text: str, cfg: C4Config) -> Problem | None:
    return c4_lines(text, cfg)[1]


# ----------------------------------------------------------------------------- FineWeb
def fineweb(text: str, cfg: FineWebConfig) -> Problem | None:
    """Penedo et al. 2024, section 3.3 (FineWeb's own filters)."""
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return "empty_document", "no text"
    ratio = sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines)
    if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
        return "fineweb_line_punct_ratio", f"{ratio:.3f} of lines end in punctuation < {cfg.line_punct_thr}"
    ratio = sum(len(line) <= cfg.short_line_length for line in lines) / len(lines)
    if ratio > cfg.short_line_thr:
        return "fineweb_short_line_ratio", f"{ratio:.3f} of lines <= {cfg.short_line_length} chars > {cfg.short_line_thr}"
    ratio = _duplicates(lines)[1] / len(text.replace("\n", ""))
    if ratio > cfg.char_duplicates_ratio:
        return "fineweb_char_dup_ratio", f"{ratio:.4f} of characters in repeated lines > {cfg.char_duplicates_ratio}"
    ratio = text.count("\n") / len(_tokens(text))
    if ratio > cfg.new_line_ratio:
        return "fineweb_list_ratio", f"{ratio:.3f} newlines per word > {cfg.new_line_ratio}"
    return None


# ----------------------------------------------------------------------------- which documents a filter judges
# The clean stage runs before language identification, so a filter's `languages` are matched against a cheap guess:
# the language with the most distinct function words among the text's first 2,000 characters.
FUNCTION_WORDS = {
    "en": "the of and to is that for with are this be by not from was have it which on as",
    "de": "der die und das ist nicht mit den von zu sich des auf für ein eine dem im wird auch",
    "fr": "le les et des est une du que pour dans pas qui sur au avec ce sont il elle",
    "es": "el los las y que es por con para una del se no al lo su como más está son",
    "it": "il di che per non sono della con gli anche del una questo come alla nel si",
    "pt": "o os que em um uma para não da dos das se mais como ao pelo também são",
    "nl": "het een van en is dat niet op te voor met zijn wordt ook aan bij deze",
}
_VOTES: dict[str, list[str]] = {}
for _lang, _words in FUNCTION_WORDS.items():
    for _w in _words.split():
        _VOTES.setdefault(_w, []).append(_lang)
_WORD = re.compile(r"[^\W\d_]+")
OTHER = "other"  # written mainly in a script other than Latin


def guess_language(text: str) -> str | None:
    """A code of FUNCTION_WORDS, OTHER, or None when no language stands out (fewer than 3 of its function words)."""
    head = text[:2000]
    letters = [c for c in head if c.isalpha()]
    if letters and sum(c < "\u0250" for c in letters) < len(letters) / 2:
        return OTHER
    votes = Counter(lang for w in set(_WORD.findall(head.lower())) for lang in _VOTES.get(w, ()))
    ranked = votes.most_common(2) + [("", 0), ("", 0)]
    (best, top), (_, second) = ranked[0], ranked[1]
    return best if top >= 3 and top > second else None


def judged(cfg: NamedFilterConfig, lang: str | None) -> bool:
    """Whether a filter judges a document of this guessed language: one of its languages, or no evident one."""
    return not cfg.languages or lang is None or lang in cfg.languages


def named_filters(text: str, cfg: CleanConfig) -> tuple[str, Problem | None]:
    """The named filters in FineWeb's order (Gopher repetition, Gopher quality, C4, FineWeb): the text as they leave it
    (C4's `remove_lines` keeps its lines, and FineWeb judges those, as in datatrove's FineWeb pipeline) and the first
    filter that drops it (None: kept)."""
    families = ((cfg.gopher_repetition, gopher_repetition), (cfg.gopher_quality, gopher_quality), (cfg.c4, c4),
                (cfg.fineweb, fineweb))
    active = [(sub, rule) for sub, rule in families if sub.enabled]
    lang = guess_language(text) if any(sub.languages for sub, _ in active) else None
    for sub, rule in active:
        if not judged(sub, lang):
            continue
        if rule is c4:
            kept, problem = c4_lines(text, sub)
            if problem is None and sub.remove_lines:
                text = "\n".join(kept)
        else:
            problem = rule(text, sub)
        if problem is not None:
            return text, problem
    return text, None
