#!/usr/bin/env python3
"""Rebuild llmpipe's bundled sample corpus (configs/sample/) from installed Debian packages.

Everything here is real text shipped by Debian 12 (bookworm) packages; nothing is downloaded.
Standard library only; needs `man` (man-db) and groff to render manual pages.

Packages it reads (install them first, as root):

    apt-get update
    apt-get install -y man-db groff-base manpages manpages-dev manpages-de manpages-fr \
        manpages-es python3.11-doc git git-man coreutils tar grep sed findutils diffutils \
        bash make wget dpkg libdpkg-perl apt libapt-pkg6.0 gettext gettext-base gnupg-l10n \
        libc-l10n procps psmisc login man-db xz-utils libglib2.0-data libgtk2.0-common \
        krb5-locales binutils-common postgresql-15 postgresql-client-15

(COPYRIGHT_PACKAGES below lists the further base packages whose /usr/share/doc/<pkg>/copyright
files are read; they are installed on any Debian system.)

Usage:
    python3 configs/sample/build.py            # rebuild every file, then print the stats
    python3 configs/sample/build.py --stats    # only print the stats of the files as they are
    python3 configs/sample/build.py --cache /tmp/mancache   # keep rendered pages between runs

Output is deterministic for a given set of package versions (inputs are sorted, sampling uses
fixed seeds); sources.json records the versions that were read.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- sizes and seeds
DOC_MIN, DOC_MAX = 300, 850           # characters per monolingual document
DOCS_PER_LANG = 680                   # documents kept per language (sampled with a fixed seed)
DOCS_PER_PAGE = 6                     # at most this many documents from one manual page
COPYRIGHT_DOC_MIN, COPYRIGHT_DOC_MAX = 300, 2000
COPYRIGHT_DOCS_PER_FILE = 4          # sampled with a seed taken from the file's content
PAIRS_PER_DIRECTION = 3000            # parallel pairs kept per language pair
PAIRS_PER_DOMAIN = 300                # at most this many pairs from one gettext catalog
SUMMARIES = 500                       # summarization pairs kept
SUMMARY_DOC_MAX = 1200
FAQ_ANSWER_MIN, FAQ_ANSWER_MAX = 250, 1500   # characters of an answer
NEAR_DUP_THRESHOLD = 0.8              # word 5-gram Jaccard reported as a near duplicate
SEED = 20240601

# ----------------------------------------------------------------------------- sources
MAN_SOURCES = {                       # lang -> Debian packages holding the manual pages
    "en": ["manpages", "manpages-dev"],
    "de": ["manpages-de"],
    "fr": ["manpages-fr"],
    "es": ["manpages-es"],
}
SUMMARY_SOURCES = ["manpages", "manpages-dev"]

# gettext text domain -> Debian package that ships /usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo
MO_DOMAINS = {
    "apt": "apt",
    "bash": "bash",
    "coreutils": "coreutils",
    "diffutils": "diffutils",
    "dpkg": "dpkg",
    "dpkg-dev": "libdpkg-perl",
    "findutils": "findutils",
    "gettext-runtime": "gettext-base",
    "gettext-tools": "gettext",
    "git": "git",
    "glib20": "libglib2.0-data",
    "gnupg2": "gnupg-l10n",
    "gprof": "binutils-common",
    "grep": "grep",
    "gtk20": "libgtk2.0-common",
    "gtk20-properties": "libgtk2.0-common",
    "ld": "binutils-common",
    "libapt-pkg6.0": "libapt-pkg6.0",
    "libc": "libc-l10n",
    "make": "make",
    "man-db": "man-db",
    "mit-krb5": "krb5-locales",
    "postgres-15": "postgresql-15",
    "procps-ng": "procps",
    "psmisc": "psmisc",
    "psql-15": "postgresql-client-15",
    "sed": "sed",
    "shadow": "login",
    "tar": "tar",
    "wget": "wget",
    "xz": "xz-utils",
}
GUI_DOMAINS = {"gtk20", "gtk20-properties"}   # their strings carry _ / & keyboard accelerators
PARALLEL_LANGS = ["de", "fr"]

# packages whose /usr/share/doc/<pkg>/copyright files become docs/copyright.jsonl
COPYRIGHT_PACKAGES = sorted(set("""
adduser apt base-files base-passwd bash binutils-common bsdutils bzip2 ca-certificates
coreutils curl dash debconf debianutils diffutils dpkg e2fsprogs file findutils gettext
gettext-base git git-man gnupg gnupg-l10n gpgv grep groff-base gzip hostname
init-system-helpers krb5-locales less libacl1 libapt-pkg6.0 libassuan0 libattr1 libaudit1
libblkid1 libbz2-1.0 libc-l10n libc6 libcap2 libcrypt1 libcurl4 libdb5.3 libdpkg-perl
libexpat1 libffi8 libgcc-s1 libgcrypt20 libgdbm6 libglib2.0-0 libglib2.0-data libgmp10
libgnutls30 libgpg-error0 libgtk2.0-common libhogweed6 libidn2-0 libkrb5-3 libksba8 liblz4-1
liblzma5 libmount1 libmpfr6 libnettle8 libnpth0 libp11-kit0 libpam-modules libpam-runtime
libpam0g libpcre2-8-0 libpq5 libreadline8 libselinux1 libsemanage2 libsmartcols1 libsqlite3-0
libssl3 libstdc++6 libsystemd0 libtasn1-6 libudev1 libunistring2 libuuid1 libxxhash0 libzstd1
login lsb-release make man-db manpages manpages-de manpages-dev manpages-es manpages-fr mawk
mount ncurses-base ncurses-bin openssh-client openssl passwd perl-base postgresql-15
postgresql-client-15 procps psmisc python3.11 python3.11-doc readline-common sed
sensible-utils systemd sysvinit-utils tar tzdata util-linux wget xz-utils zlib1g
""".split()))

PYTHON_FAQ_DIR = "/usr/share/doc/python3.11/html/_sources/faq"
PYTHON_FAQ_PACKAGE = "python3.11-doc"
GITFAQ_PAGE = "/usr/share/man/man7/gitfaq.7.gz"
GITFAQ_PACKAGE = "git-man"

# man page section headings that are boilerplate or not prose (all four languages, upper case)
SKIP_SECTIONS = {
    "NAME", "BEZEICHNUNG", "NOM", "NOMBRE",
    "SYNOPSIS", "ÜBERSICHT", "SINOPSIS", "RESUMEN",
    "SEE ALSO", "SIEHE AUCH", "VOIR AUSSI", "VÉASE TAMBIÉN", "VEASE TAMBIEN", "VÉASE TAMBIEN",
    "COLOPHON", "KOLOPHON",
    "ÜBERSETZUNG", "TRADUCTION", "TRADUCCIÓN",
    "AUTHOR", "AUTHORS", "AUTOR", "AUTOREN", "AUTEUR", "AUTEURS", "AUTORES",
    "COPYRIGHT", "REPORTING BUGS", "FEHLER MELDEN", "SIGNALER DES BOGUES",
    "INFORMAR DE ERRORES", "REPORTAR ERRORES", "INFORMES DE ERRORES",
}
DESCRIPTION_SECTION = "DESCRIPTION"


# ============================================================================= helpers
def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def pkg_version(pkg: str) -> str | None:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
                       capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.startswith("install ok installed"):
        return None
    return p.stdout.split("\t")[1]


def pkg_files(pkg: str) -> list[str]:
    return sorted(sh("dpkg", "-L", pkg).splitlines())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def sample_sorted(items: list, k: int, name: str) -> list:
    """A fixed-seed sample of k items, returned in the input order."""
    if len(items) <= k:
        return list(items)
    idx = sorted(rng(name).sample(range(len(items)), k))
    return [items[i] for i in idx]


# ============================================================================= manual pages
MAN_ENV = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", MANWIDTH="1000",
               MAN_KEEP_FORMATTING="", MANPAGER="cat", PAGER="cat", MANOPT="")
MAN_ENV.pop("MANROFFOPT", None)


def man_pages(pkg: str) -> list[str]:
    """Real (non-link, non-.so) manual page files of a package, sorted."""
    out = []
    for f in pkg_files(pkg):
        if not f.startswith("/usr/share/man/") or not f.endswith(".gz"):
            continue
        if os.path.islink(f) or not os.path.isfile(f):
            continue
        with gzip.open(f, "rb") as g:
            head = g.read(4096).decode("utf-8", "replace")
        body = [ln for ln in head.splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
        if body and body[0].startswith(".so ") and len(body) <= 2:
            continue                                   # a page that only includes another one
        out.append(f)
    return out


def render_page(path: str, cache: Path | None) -> str:
    if cache is not None:
        key = cache / (hashlib.sha256(path.encode()).hexdigest() + ".txt")
        if key.exists():
            return key.read_text(encoding="utf-8")
    p = subprocess.run(["man", "--nh", "--nj", "-E", "UTF-8", "-l", path],
                       env=MAN_ENV, capture_output=True, cwd="/usr/share/man")
    text = p.stdout.decode("utf-8", "replace")
    text = re.sub(".\b", "", text)                     # backspace overstrikes, if any
    text = text.replace("\u00ad", "")                  # soft hyphens
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        key.write_text(text, encoding="utf-8")
    return text


def render_all(paths: list[str], cache: Path | None) -> dict[str, str]:
    with cf.ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as ex:
        return dict(zip(paths, ex.map(lambda p: render_page(p, cache), paths)))


def man_sections(text: str) -> list[tuple[str, list[list[str]]]]:
    """[(HEADING, [paragraph lines, ...]), ...] of a page rendered by `man`."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    lines = lines[1:-1]                                # running header and footer
    secs: list[tuple[str, list[str]]] = []
    for ln in lines:
        if ln and not ln[0].isspace():
            secs.append((ln.strip(), []))
        elif secs:
            secs[-1][1].append(ln.rstrip())
    out = []
    for head, body in secs:
        paras, cur = [], []
        for ln in body + [""]:
            if ln.strip():
                cur.append(ln)
            elif cur:
                paras.append(cur)
                cur = []
        out.append((head, paras))
    return out


def para_text(lines: list[str]) -> str:
    return "\n".join(" ".join(ln.split()) for ln in lines)


WORD = re.compile(r"^[(«»\"'“„‚¿¡]*[^\W\d_]+(?:[-'’][^\W\d_]+)*[)»«\"'”“.,;:!?]*$")


def is_prose(text: str) -> bool:
    toks = text.split()
    words = sum(1 for t in toks if WORD.match(t))
    return words >= 6 and words >= 0.6 * len(toks)


# Frequent function words. Translated pages (po4a) keep paragraphs that were never translated in
# English; such a paragraph is dropped from a de/fr/es page when one of its lines holds at least
# 2 English function words (that are not also words of the page's language) and more than twice
# as many of them as of the page's own function words. This only filters; the `lang` label is the package's.
FUNCTION_WORDS = {
    "en": set("the and of to in is that for with are be this by an as or on it not if which from "
              "can will when has have was these its then than all any may such should must only "
              "used been there would at you your we do does into also but other more each see".split()),
    "de": set("der die das und in ist nicht ein eine zu den dem mit von für auf wird werden sich des "
              "im wenn auch oder kann bei als wie nur durch einen einer dass sind aus zum zur ob".split()),
    "fr": set("le la les de des du et est un une pour dans qui que pas sur avec sont ou par ce "
              "cette au aux être peut si il elle ne sa son ses lorsque lors été".split()),
    "es": set("el la los las de del y es un una para en que por con se no su sus al lo como si "
              "puede este esta son cuando también más ser está".split()),
}
UNTRANSLATED = Counter()              # lang -> paragraphs dropped as untranslated English


def untranslated(text: str, lang: str) -> bool:
    """True if any line of the paragraph reads as English (a translated tag line can head an
    untranslated body line)."""
    for line in text.split("\n"):
        words = re.findall(r"[^\W\d_]+", line.lower())
        en = sum(1 for w in words if w in FUNCTION_WORDS["en"] and w not in FUNCTION_WORDS[lang])
        own = sum(1 for w in words if w in FUNCTION_WORDS[lang])
        if en >= 2 and en > 2 * own:
            return True
    return False


def split_long(text: str, limit: int) -> list[str]:
    """Split a too long paragraph at sentence ends."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-ZÄÖÜÀ-ÝÉ¿¡])", text)
    out, cur = [], ""
    for p in parts:
        if cur and len(cur) + 1 + len(p) > limit:
            out.append(cur)
            cur = p
        else:
            cur = f"{cur} {p}" if cur else p
    if cur:
        out.append(cur)
    return [o for o in out if len(o) <= limit]


def page_docs(text: str, lang: str = "en") -> list[str]:
    """Section-sized documents (DOC_MIN..DOC_MAX chars) of prose paragraphs from one page."""
    docs = []
    for head, paras in man_sections(text):
        if head.upper() in SKIP_SECTIONS:
            continue
        chunks: list[str] = []
        for p in paras:
            t = para_text(p)
            if not is_prose(t):
                continue
            if lang != "en" and untranslated(t, lang):
                UNTRANSLATED[lang] += 1
                continue
            chunks.extend(split_long(t, DOC_MAX) if len(t) > DOC_MAX else [t])
        cur: list[str] = []
        for c in chunks + [None]:
            size = sum(len(x) + 2 for x in cur)
            if c is None or (cur and size + len(c) > DOC_MAX):
                doc = "\n\n".join(cur)
                if len(doc) >= DOC_MIN:
                    docs.append(doc)
                cur = []
            if c is not None:
                cur.append(c)
    return docs


def build_docs(rendered: dict[str, str], page_pkg: dict[str, str]) -> dict[str, list[dict]]:
    out = {}
    for lang, pkgs in MAN_SOURCES.items():
        cands = []
        for path in sorted(p for p in rendered if page_pkg[p] in pkgs):
            docs = page_docs(rendered[path], lang)
            for d in docs[:DOCS_PER_PAGE]:
                cands.append({"text": d, "lang": lang, "origin": f"{page_pkg[path]}:{path}"})
        out[lang] = sample_sorted(cands, DOCS_PER_LANG, f"docs-{lang}")
        print(f"docs/{lang}: {len(cands)} candidates, kept {len(out[lang])}", file=sys.stderr)
    return out


# ============================================================================= copyright files
def copyright_docs() -> list[dict]:
    """License texts and notices from debian/copyright files: blank-line separated blocks,
    a `License:` stanza starting a new document, metadata stanzas (Files:, Format:, ...) left out."""
    rows = []
    for pkg in COPYRIGHT_PACKAGES:
        path = f"/usr/share/doc/{pkg}/copyright"
        if not os.path.isfile(path):
            print(f"warning: {path} missing, skipped", file=sys.stderr)
            continue
        text = open(path, encoding="utf-8", errors="replace").read().replace("\r\n", "\n")
        blocks = [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]
        docs: list[str] = []
        cur: list[str] = []
        for b in blocks + [None]:
            meta = b is not None and re.match(
                r"(Files|Format|Upstream-[\w-]+|Source|Comment|Disclaimer|Copyright):", b)
            size = sum(len(x) + 2 for x in cur)
            if (b is None or meta or b.startswith("License:")
                    or (cur and size + len(b) > COPYRIGHT_DOC_MAX)):
                doc = "\n\n".join(cur)
                if COPYRIGHT_DOC_MIN <= len(doc) <= COPYRIGHT_DOC_MAX:
                    docs.append(doc)
                cur = []
            if b is not None and not meta:
                cur.append(b)
        # identical copyright files (packages of one source) give identical picks: exact dups
        seed = hashlib.sha256(text.encode()).hexdigest()
        for doc in sample_sorted(docs, COPYRIGHT_DOCS_PER_FILE, f"copyright-{seed}"):
            rows.append({"text": doc, "lang": "en", "origin": f"{pkg}:{path}"})
    return rows


# ============================================================================= gettext catalogs
def read_mo(path: str) -> list[tuple[bytes, bytes]]:
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic == 0x950412DE else ">"
    _rev, n, ooff, toff = struct.unpack(e + "4I", data[4:20])
    out = []
    for i in range(n):
        ml, mo = struct.unpack(e + "2I", data[ooff + 8 * i: ooff + 8 * i + 8])
        tl, to = struct.unpack(e + "2I", data[toff + 8 * i: toff + 8 * i + 8])
        out.append((data[mo:mo + ml], data[to:to + tl]))
    return out


def mo_charset(entries: list[tuple[bytes, bytes]]) -> str:
    for mid, tr in entries:
        if mid == b"":
            m = re.search(rb"charset=([\w-]+)", tr)
            return m.group(1).decode() if m else "utf-8"
    return "utf-8"


PLACEHOLDER = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|L|q|j|z|t|I)?[diouxXeEfFgGaAcspmnS%]"
    r"|%\([A-Za-z_]+\)[sdr]|\{[A-Za-z0-9_]*\}|\$\{?[A-Za-z_]+\}?|<[A-Za-z_/][^<>]*>")


def strip_accel(s: str) -> str | None:
    if s.count("_") > 1 or "__" in s:
        return None
    s = re.sub(r"_(?=\w)", "", s, count=1)
    s = re.sub(r"&(?=[^\W\d_])(?![A-Za-z]+;)", "", s, count=1)
    return s


def clean_msg(s: str, gui: bool) -> str | None:
    s = s.strip()
    if re.match(r"\S+ {2,}", s):                     # "KEY    help text": aligned option help
        return None
    if not s or "\n" in s or "\t" in s or "|" in s or "\x00" in s:
        return None
    if gui:
        s = strip_accel(s)
        if s is None:
            return None
    s = " ".join(s.split())
    toks = s.split()
    if len(toks) < 3 or len(toks) > 40:
        return None
    ph = len(PLACEHOLDER.findall(s))
    if ph > 1:
        return None
    plain = [t for t in toks if not PLACEHOLDER.search(t)]
    if len(plain) < 3 or sum(1 for t in plain if WORD.match(t)) < 3:
        return None
    if s.startswith(("-", "%", "(", "[")) or re.search(r"[<>]|https?://|\\\\", s):
        return None
    return s


def build_parallel() -> tuple[dict[str, list[dict]], dict]:
    out, per_domain = {}, {}
    for lang in PARALLEL_LANGS:
        seen_en = set()
        pairs = []
        counts = {}
        for domain in sorted(MO_DOMAINS):
            path = f"/usr/share/locale/{lang}/LC_MESSAGES/{domain}.mo"
            if not os.path.isfile(path):
                continue
            entries = read_mo(path)
            cs = mo_charset(entries)
            cands = []
            for mid, tr in sorted(entries):
                if not mid or b"\x00" in mid:          # header, plural forms
                    continue
                mid = mid.split(b"\x04")[-1]           # drop msgctxt
                en = clean_msg(mid.decode("utf-8", "replace"), domain in GUI_DOMAINS)
                xx = clean_msg(tr.decode(cs, "replace"), domain in GUI_DOMAINS)
                if en is None or xx is None or en == xx:
                    continue
                if len(PLACEHOLDER.findall(en)) != len(PLACEHOLDER.findall(xx)):
                    continue
                n_en, n_xx = len(en.split()), len(xx.split())
                if not (0.4 <= n_xx / n_en <= 2.5):
                    continue
                cands.append((en, xx))
            cands = sample_sorted(cands, PAIRS_PER_DOMAIN, f"mo-{lang}-{domain}")
            kept = 0
            for en, xx in cands:
                if en in seen_en:
                    continue
                seen_en.add(en)
                pairs.append({"en": en, lang: xx, "origin": f"{MO_DOMAINS[domain]}:{domain}.mo"})
                kept += 1
            counts[domain] = kept
        pairs = sample_sorted(pairs, PAIRS_PER_DIRECTION, f"pairs-{lang}")
        final = Counter(p["origin"].split(":")[1][:-3] for p in pairs)
        per_domain[f"en-{lang}"] = dict(sorted(final.items()))
        out[f"en-{lang}"] = pairs
        print(f"parallel/en-{lang}: {sum(counts.values())} candidates, kept {len(pairs)}",
              file=sys.stderr)
    return out, per_domain


# ============================================================================= summarization
def build_summaries(rendered: dict[str, str], page_pkg: dict[str, str]) -> list[dict]:
    cands = []
    seen = set()
    for path in sorted(p for p in rendered if page_pkg[p] in SUMMARY_SOURCES):
        secs = man_sections(rendered[path])
        if not secs or secs[0][0].upper() != "NAME" or not secs[0][1]:
            continue
        name = " ".join(" ".join(ln.split()) for p in secs[0][1] for ln in p)
        m = re.match(r"^(.*?)\s[-\u2010\u2011\u2212\u2013]\s(.+)$", name)
        if not m:
            continue
        summary = m.group(2).strip()
        if len(summary.split()) < 3:
            continue
        desc = next((p for h, p in secs if h.upper() == DESCRIPTION_SECTION), None)
        if not desc:
            continue
        parts = []
        for p in desc:
            t = para_text(p)
            if not is_prose(t):
                continue
            if len(t) > SUMMARY_DOC_MAX:
                t = (split_long(t, SUMMARY_DOC_MAX) or [""])[0]
            if parts and sum(len(x) + 2 for x in parts) + len(t) > SUMMARY_DOC_MAX:
                break
            if t:
                parts.append(t)
        doc = "\n\n".join(parts)
        if len(doc) < 200 or doc in seen:
            continue
        seen.add(doc)
        cands.append({"document": doc, "summary": summary, "origin": f"{page_pkg[path]}:{path}"})
    kept = sample_sorted(cands, SUMMARIES, "summaries")
    print(f"summarization: {len(cands)} candidates, kept {len(kept)}", file=sys.stderr)
    return kept


# ============================================================================= dialogue
def rst_inline(s: str) -> str:
    s = re.sub(r":[\w:.+-]+:`~?([^`<]*?)\s*<[^`>]*>`", r"\1", s)      # :ref:`text <target>`
    s = re.sub(r":(?:\w+:)?(?:func|meth):`~?\.?([^`]+?)(?:\(\))?`", r"\1()", s)
    s = re.sub(r":[\w:.+-]+:`~?\.?([^`]+)`", r"\1", s)                 # :mod:`x` etc.
    s = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", s)                   # `text <url>`_
    s = re.sub(r"``([^`]+)``", r"\1", s)
    s = re.sub(r"`([^`]+)`_?", r"\1", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\1", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"\1", s)
    s = re.sub(r"\s*\[#\]_", "", s)
    s = s.replace("\\", "")
    return " ".join(s.split())


def faq_entries(path: str) -> list[tuple[str, str]]:
    lines = open(path, encoding="utf-8").read().split("\n")
    heads = []                                         # (line index of heading, text)
    for i in range(len(lines) - 1):
        t, u = lines[i], lines[i + 1]
        if t.strip() and u and re.fullmatch(r"([=\-~^\"*+#])\1+", u) and len(u) >= len(t.rstrip()) \
                and not t.startswith(" ") and not re.fullmatch(r"([=\-~^\"*+#])\1+", t):
            heads.append((i, t.strip()))
    out = []
    for k, (i, q) in enumerate(heads):
        if not q.endswith("?"):
            continue
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        body = lines[i + 2:end]
        paras, cur = [], []
        for ln in body + [""]:
            if ln.strip():
                cur.append(ln)
            elif cur:
                paras.append(cur)
                cur = []
        answer: list[str] = []
        expect_code = False
        for p in paras:
            first = p[0]
            if first.startswith(".."):
                # `.. code-block::` introduces code; other directives (notes, labels) are skipped
                expect_code = bool(answer) and re.match(r"\.\. (code-block|sourcecode)::", first)
                continue
            size = sum(len(a) + 2 for a in answer)
            if first.startswith((" ", "\t", ">>>")):
                if not (answer and (expect_code or answer[-1].endswith(":"))):
                    if answer:
                        break
                    continue
                ind = min(len(x) - len(x.lstrip()) for x in p if x.strip())
                code = "\n".join(x[ind:].rstrip() for x in p)
                if size + len(code) > FAQ_ANSWER_MAX:
                    break
                answer.append(code)
                expect_code = False
                continue
            if re.match(r"([*+-]|#\.|\d+\.) ", first):
                item = "\n".join(rst_inline(x.strip()) if re.match(r"\s*([*+-]|#\.|\d+\.) ", x)
                                 else " " + rst_inline(x) for x in p)
                text = re.sub(r"\n (?! )", " ", item)
                if not answer or size + len(text) > FAQ_ANSWER_MAX:
                    break
                answer.append(text)
                continue
            if answer and size >= FAQ_ANSWER_MIN and not answer[-1].endswith(":"):
                break
            t = rst_inline(" ".join(x.strip() for x in p))
            t = re.sub(r"\s*::$", ":", t)
            if answer and size + len(t) > FAQ_ANSWER_MAX:
                break
            answer.append(t)
            expect_code = False
        while answer and answer[-1].endswith(":"):   # never end on an introduction to code
            answer.pop()
        a = "\n\n".join(answer)
        if len(a) < 40 or a.startswith("See the "):      # a pointer, not an answer
            continue
        out.append((rst_inline(q), a))
    return out


def gitfaq_entries(text: str) -> list[tuple[str, str]]:
    out = []
    for head, paras in man_sections(text):
        if head.upper() in SKIP_SECTIONS:
            continue
        q, answer = None, []
        for p in paras + [None]:
            starts_q = p is not None and len(p) >= 2 and p[0].rstrip().endswith("?") \
                and len(p[0]) - len(p[0].lstrip()) < len(p[1]) - len(p[1].lstrip())
            if p is None or starts_q:
                while answer and answer[-1].endswith(":"):
                    answer.pop()
                if q and answer:
                    out.append((q, "\n\n".join(answer)))
                q, answer = None, []
                if p is not None:
                    q = " ".join(p[0].split())
                    t = " ".join(" ".join(ln.split()) for ln in p[1:])
                    answer = [t] if is_prose(t) else []
            elif q and answer and sum(len(a) for a in answer) < 200 and is_prose(para_text(p)) \
                    and not answer[-1].endswith(":"):
                answer.append(" ".join(" ".join(ln.split()) for ln in p))
    return out


def build_dialogue(cache: Path | None) -> list[dict]:
    rows = []
    for f in sorted(os.listdir(PYTHON_FAQ_DIR)):
        if not f.endswith(".rst.txt"):
            continue
        path = os.path.join(PYTHON_FAQ_DIR, f)
        for q, a in faq_entries(path):
            rows.append({"turns": [{"speaker": "user", "text": q},
                                   {"speaker": "assistant", "text": a}],
                         "origin": f"{PYTHON_FAQ_PACKAGE}:{path}"})
    if os.path.isfile(GITFAQ_PAGE):
        for q, a in gitfaq_entries(render_page(GITFAQ_PAGE, cache)):
            rows.append({"turns": [{"speaker": "user", "text": q},
                                   {"speaker": "assistant", "text": a}],
                         "origin": f"{GITFAQ_PACKAGE}:{GITFAQ_PAGE}"})
    print(f"dialogue: {len(rows)}", file=sys.stderr)
    return rows


# ============================================================================= duplicates
def shingles(text: str, n: int = 5) -> set[int]:
    toks = re.findall(r"\w+", text.lower())
    if len(toks) < n:
        toks = [" ".join(toks)] if toks else []
        n = 1
    return {int.from_bytes(hashlib.blake2b(" ".join(toks[i:i + n]).encode(), digest_size=8)
                           .digest(), "big") for i in range(len(toks) - n + 1)}


def near_duplicate_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """All pairs with word-5-gram Jaccard >= threshold, exactly (prefix filtering + verify)."""
    sets = [shingles(t) for t in texts]
    df = Counter(s for st in sets for s in st)
    order = [sorted(st, key=lambda s: (df[s], s)) for st in sets]
    index: dict[int, list[int]] = defaultdict(list)
    cands = set()
    for i, toks in enumerate(order):
        m = len(toks)
        if m == 0:
            continue
        prefix = m - int(-(-threshold * m // 1)) + 1       # m - ceil(t*m) + 1
        for s in toks[:prefix]:
            for j in index[s]:
                cands.add((j, i))
            index[s].append(i)
    out = []
    for i, j in sorted(cands):
        a, b = sets[i], sets[j]
        if min(len(a), len(b)) < threshold * max(len(a), len(b)):
            continue
        jac = len(a & b) / len(a | b)
        if jac >= threshold:
            out.append((i, j, round(jac, 3)))
    return out


def groups_of(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    g = defaultdict(list)
    for i in range(n):
        g[find(i)].append(i)
    return sorted((v for v in g.values() if len(v) > 1), key=lambda v: v[0])


def duplicate_report(out_dir: Path) -> dict:
    refs, texts = [], []
    for f in sorted((out_dir / "docs").glob("*.jsonl")):
        for ln, row in enumerate(read_jsonl(f), 1):
            refs.append(f"{f.relative_to(out_dir)}:{ln}")
            texts.append(row["text"])
    by_text = defaultdict(list)
    for i, t in enumerate(texts):
        by_text[t].append(i)
    exact = [v for v in by_text.values() if len(v) > 1]
    exact.sort(key=lambda v: v[0])
    near = near_duplicate_pairs(texts, NEAR_DUP_THRESHOLD)
    near_only = [(i, j, s) for i, j, s in near if texts[i] != texts[j]]
    near_groups = groups_of([(i, j) for i, j, _ in near], len(texts))
    return {
        "method": "exact: identical text field; near: Jaccard of lower-cased word 5-gram sets "
                  f">= {NEAR_DUP_THRESHOLD}, all pairs (prefix filtering, then exact check)",
        "docs": len(texts),
        "exact_groups": [[refs[i] for i in g] for g in exact],
        "near_pairs": [[refs[i], refs[j], s] for i, j, s in near_only],
        "near_groups": [[refs[i] for i in g] for g in near_groups],
    }


# ============================================================================= stats
def stats(out_dir: Path) -> None:
    print("== files")
    total = 0
    for f in sorted(out_dir.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            extra = ""
            if f.suffix == ".jsonl":
                rows = read_jsonl(f)
                extra = f"{len(rows):6d} rows"
                if "text" in rows[0]:
                    langs = Counter(r["lang"] for r in rows)
                    extra += "  " + " ".join(f"{k}={v}" for k, v in sorted(langs.items()))
                    lens = sorted(len(r["text"]) for r in rows)
                    extra += f"  chars min/median/max={lens[0]}/{lens[len(lens) // 2]}/{lens[-1]}"
            print(f"{str(f.relative_to(out_dir)):32s} {f.stat().st_size:9d} B  {extra}")
    print(f"{'total':32s} {total:9d} B")
    langs = Counter(r["lang"] for f in sorted((out_dir / "docs").glob("*.jsonl"))
                    for r in read_jsonl(f))
    print("== docs per language:", dict(sorted(langs.items())), "total", sum(langs.values()))
    rep = duplicate_report(out_dir)
    print(f"== duplicates among {rep['docs']} docs ({rep['method']})")
    print(f"exact duplicate groups: {len(rep['exact_groups'])} "
          f"(docs in them: {sum(len(g) for g in rep['exact_groups'])})")
    print(f"near-duplicate pairs (not identical): {len(rep['near_pairs'])}")
    print(f"near-duplicate groups (incl. exact): {len(rep['near_groups'])} "
          f"(docs in them: {sum(len(g) for g in rep['near_groups'])})")
    by_file = Counter(r.split(":")[0] for g in rep["near_groups"] for r in g)
    print("docs in near-duplicate groups by file:", dict(sorted(by_file.items())))


# ============================================================================= main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stats", action="store_true", help="only print stats of existing files")
    ap.add_argument("--cache", type=Path, help="directory to keep rendered man pages in")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: here)")
    args = ap.parse_args()
    out = args.out
    if args.stats:
        stats(out)
        return

    needed = sorted({p for ps in MAN_SOURCES.values() for p in ps} | set(SUMMARY_SOURCES)
                    | set(MO_DOMAINS.values()) | set(COPYRIGHT_PACKAGES)
                    | {PYTHON_FAQ_PACKAGE, GITFAQ_PACKAGE, "man-db", "groff-base"})
    versions = {p: pkg_version(p) for p in needed}
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        sys.exit("missing packages, install them first: apt-get install -y " + " ".join(missing))

    page_pkg = {}
    for pkg in sorted({p for ps in MAN_SOURCES.values() for p in ps} | set(SUMMARY_SOURCES)):
        for f in man_pages(pkg):
            page_pkg.setdefault(f, pkg)
    print(f"rendering {len(page_pkg)} manual pages ...", file=sys.stderr)
    rendered = render_all(sorted(page_pkg), args.cache)

    docs = build_docs(rendered, page_pkg)
    for lang, rows in docs.items():
        write_jsonl(out / "docs" / f"{lang}.jsonl", rows)
    write_jsonl(out / "docs" / "copyright.jsonl", copyright_docs())

    pairs, per_domain = build_parallel()
    for name, rows in pairs.items():
        write_jsonl(out / "parallel" / f"{name}.jsonl", rows)
    write_jsonl(out / "summarization.jsonl", build_summaries(rendered, page_pkg))
    write_jsonl(out / "dialogue.jsonl", build_dialogue(args.cache))

    rep = duplicate_report(out)
    with open(out / "duplicates.json", "w", encoding="utf-8") as f:   # one group/pair per line
        f.write("{\n" + ",\n".join(
            f"{json.dumps(k)}: " + (json.dumps(v) if not isinstance(v, list) else
                                    "[\n" + ",\n".join(json.dumps(x, ensure_ascii=False)
                                                         for x in v) + "\n]")
            for k, v in rep.items()) + "\n}\n")
    with open(out / "sources.json", "w", encoding="utf-8") as f:
        json.dump({"debian_packages": versions, "parallel_pairs_by_domain": per_domain,
                   "untranslated_paragraphs_dropped": dict(sorted(UNTRANSLATED.items())),
                   "settings": {k: v for k, v in globals().items()
                                if re.fullmatch(r"[A-Z_]+", k) and isinstance(v, (int, float))}},
                  f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    stats(out)


if __name__ == "__main__":
    main()
