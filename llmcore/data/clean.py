"""Text normalisation, quality heuristics (Gopher / C4 tradition), the named filters of quality.py, PII masking."""

from __future__ import annotations

import html
import re
import unicodedata

from llmcore.config import CleanConfig, PiiConfig
from llmcore.data import quality

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SYMBOLS = re.compile(r"[^\w\s]")
_HTML_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_HTML_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.I)
_HTML_TAGS = re.compile(r"<[^>]{0,2000}>")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w])")


def normalize(text: str, strip_html: bool = False) -> str:
    """NFC, no control characters, one space between words, at most one blank line in a row."""
    if strip_html:
        text = _HTML_BLOCKS.sub(" ", text)
        text = _HTML_BREAKS.sub("\n", text)
        text = html.unescape(_HTML_TAGS.sub(" ", text))
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text.replace("\t", " "))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def quality_problem(text: str, cfg: CleanConfig) -> tuple[str, tuple[str, str] | None]:
    """The text as the quality rules leave it (C4 may remove lines) and (reason, detail) for the first rule it
    breaks, or None if it passes them all."""
    problem = _heuristic_problem(text, cfg)
    return (text, problem) if problem else quality.named_filters(text, cfg)


def _heuristic_problem(text: str, cfg: CleanConfig) -> tuple[str, str] | None:
    """The clean stage's own rules (min/max size, word length, symbols, repeated lines)."""
    n = len(text)
    if n < cfg.min_chars:
        return "too_short", f"{n} chars < {cfg.min_chars}"
    if n > cfg.max_chars:
        return "too_long", f"{n} chars > {cfg.max_chars}"
    words = text.split()
    if len(words) < cfg.min_words:
        return "too_few_words", f"{len(words)} words < {cfg.min_words}"
    mean_len = sum(map(len, words)) / len(words) if words else 0.0
    if not cfg.min_mean_word_len <= mean_len <= cfg.max_mean_word_len:
        return "mean_word_length", f"{mean_len:.1f} outside [{cfg.min_mean_word_len}, {cfg.max_mean_word_len}]"
    if n and cfg.max_symbol_ratio < 1:  # neither alphanumeric nor space: \w is str.isalnum() plus "_"
        symbols = len(_SYMBOLS.findall(text)) + text.count("_")
        if symbols / n > cfg.max_symbol_ratio:
            return "symbol_ratio", f"{symbols / n:.2f} > {cfg.max_symbol_ratio}"
    lines = [line for line in text.split("\n") if line]
    if len(lines) > 1:
        dup_frac = 1 - len(set(lines)) / len(lines)
        if dup_frac > cfg.max_dup_line_frac:
            return "duplicate_lines", f"{dup_frac:.2f} of lines repeat > {cfg.max_dup_line_frac}"
    return None


def _mask_phone(match: re.Match) -> str:
    digits = sum(ch.isdigit() for ch in match.group())
    return "<PHONE>" if 9 <= digits <= 15 else match.group()


def mask_pii(text: str, pii: PiiConfig) -> str:
    if pii.emails:
        text = _EMAIL.sub("<EMAIL>", text)
    if pii.ips:
        text = _IPV6.sub("<IP>", _IPV4.sub("<IP>", text))
    if pii.phones:
        text = _PHONE.sub(_mask_phone, text)
    return text


def clean_document(text: str, cfg: CleanConfig) -> tuple[str, tuple[str, str] | None]:
    """The cleaned text, and why it fails quality (None when it is kept)."""
    text = normalize(text, cfg.strip_html)
    kept, problem = quality_problem(text, cfg)
    if problem is not None:
        return text, problem  # the whole text, for the rejected record
    return mask_pii(kept, cfg.pii), None
