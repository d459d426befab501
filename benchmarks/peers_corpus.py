"""The corpus of benchmarks/peers.py, built reproducibly from real text installed on this machine.

Sources (nothing is downloaded; Debian package descriptions and their Translation-* files are not read):
  man       manual pages under /usr/share/man (every section and language), roff markup stripped here
            (macros dropped, their text arguments kept, escapes mapped), one document per run of sections
  gettext   translations (msgstr) of the gettext catalogs /usr/share/locale/*/LC_MESSAGES/*.mo, 199 locales:
            consecutive messages of a catalog joined line by line into documents
  doc       package documentation under /usr/share/doc: README, NEWS, changelogs, copyright files, .txt /
            .md / .rst, HTML with its tags stripped
  python    the installed Python distributions' descriptions (*.dist-info/METADATA bodies) and the docstrings
            (triple-quoted strings of 200+ characters) of their modules, this interpreter's site-packages
  sample    the bundled configs/sample/docs documents

Each source text is cut at paragraph boundaries into documents of 300-2,500 characters (seeded lengths).
`--docs` / `--bytes` larger than the real text: the rest are documents recombined from paragraphs of
real documents of one source kind (said in the stats: `real_share`). On top, `--near-copies` of the
documents are copies of an earlier one with a small edit (1-3 spots of 1-3 words replaced, inserted or
deleted: word 5-gram Jaccard about 0.7-0.97) and `--exact-copies` verbatim copies, placed after their
original, so dedup has work. The text is stored as llmpipe's clean stage normalises it (NFC, one space
between words, no control characters): both pipelines then judge the same text.

The output is a directory: jsonl/ with the JSONL files ({"id", "text"}), copies.json (copy id -> original
id) and corpus.json with the stats and a fingerprint of the inputs read (file list and sizes); the same
machine image and arguments give the same bytes.

    python benchmarks/peers_corpus.py OUT [--docs 1000000] [--bytes 1000000000] [--files N] [--seed 0]
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import hashlib
import html
import json
import random
import re
import sys
from inspect import cleandoc
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcore.data.clean import normalize  # noqa: E402

MAN, LOCALE, DOC = Path("/usr/share/man"), Path("/usr/share/locale"), Path("/usr/share/doc")
SAMPLE = ROOT / "configs" / "sample" / "docs"
DOC_MIN, DOC_MAX = 300, 2500
DOC_NAMES = re.compile(r"^(readme|news|changelog|changes|copyright|authors|todo|faq|history|thanks|bugs)", re.I)
DOC_SUFFIXES = {".txt", ".md", ".rst", ".html", ".htm", ".text", ""}

# ----------------------------------------------------------------------------- roff to text
_ROFF_CHARS = {
    "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "bu": "•", "hy": "-",
    "co": "©", "rg": "®", "tm": "™", "mi": "-", "pl": "+", "mu": "×", "de": "°", "ga": "`", "ha": "^", "ti": "~",
    "rs": "\\", "ba": "|", "or": "|", "<=": "≤", ">=": "≥", "->": "→", "<-": "←", "Fo": "«", "Fc": "»", "ss": "ß",
    "a:": "ä", "o:": "ö", "u:": "ü", "A:": "Ä", "O:": "Ö", "U:": "Ü", "e'": "é", "e`": "è", "a`": "à", "c,": "ç",
}
_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[+-]?(?:\d+|\(\d\d|\[\d+\])|\*(?:\(..|\[[^\]]*\]|.)|\((..)|\[([^\]]*)\]"
                     r"|[kmnz](?:\(..|\[[^\]]*\]|.)|[hvwlLoDbx]'[^']*'|(.))")
_SIMPLE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "&": "", "|": "", "^": "", "c": "", "%": "",
           ".": ".", "'": "'", "`": "`", "t": " ", "}": "", "{": "", ":": "", "/": "", ",": "", "p": "", "\"": ""}
_HEADINGS = {"SH", "SS", "Sh", "Ss"}
_BREAKS = {"PP", "P", "LP", "TP", "IP", "HP", "sp", "br", "Pp", "Bl", "El", "It", "Bd", "Ed", "nf", "fi", "RS", "RE",
           "TQ", "EX", "EE", "Dl", "D1"}
_SKIP = {"TH", "Dd", "Dt", "Os", "so", "ds", "nr", "ig", "ad", "na", "ne", "hy", "nh", "ll", "in", "ti", "ft", "ps",
         "ta", "tr", "ie", "if", "el", "de", "am", "rm", "als", "cc", "ec", "eo", "mso", "pc", "UC", "PD", "ce", "fam",
         "cs", "ss", "lf", "\\\"", "TS", "TE", "T{", "T}", "Vb", "Ve", "IX", "AT"}


def _escape(m: re.Match) -> str:
    if m.group(1):
        return _ROFF_CHARS.get(m.group(1), "")
    if m.group(2) is not None:
        return _ROFF_CHARS.get(m.group(2), "")
    if m.group(3) is not None:
        return _SIMPLE.get(m.group(3), m.group(3) if m.group(3).isalnum() else "")
    return ""


def _args(rest: str) -> str:
    """A macro's arguments as text: quotes dropped, alternating-font macros (.BR a b) joined."""
    parts = re.findall(r'"([^"]*)"|(\S+)', rest)
    return " ".join(a or b for a, b in parts)


def roff_text(source: str) -> list[str]:
    """The paragraphs of a manual page's roff source (headings are paragraphs too)."""
    paragraphs, current, skipping, in_table = [], [], False, False

    def flush():
        if current:
            text = " ".join(current).strip()
            if text:
                paragraphs.append(text)
            current.clear()

    for line in source.splitlines():
        if skipping:  # inside .de ... ..
            skipping = not line.startswith("..")
            continue
        if line.startswith((".", "'")):
            cmd, _, rest = line[1:].strip().partition(" ")
            if cmd.startswith('\\"') or cmd == "":
                continue
            if cmd in ("de", "am", "ig"):
                skipping = True
                continue
            if cmd == "TS":
                in_table = True
            if cmd == "TE":
                in_table = False
            if cmd in _SKIP:
                continue
            if cmd in _HEADINGS:
                flush()
                current.append(_ESCAPE.sub(_escape, _args(rest)))
                flush()
            elif cmd in _BREAKS:
                flush()
                if cmd in ("IP", "It") and rest:
                    current.append(_ESCAPE.sub(_escape, _args(rest)))
            elif cmd in ("BR", "RB", "BI", "IB", "RI", "IR"):
                current.append(_ESCAPE.sub(_escape, "".join(a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', rest))))
            elif len(cmd) <= 3 and rest:  # .B, .I, .SM and mdoc's .Nm, .Ar, .Fl ...: their words
                current.append(_ESCAPE.sub(_escape, _args(rest)))
            continue
        if in_table:
            continue
        text = _ESCAPE.sub(_escape, line).strip()
        if not text:
            flush()
        else:
            current.append(text)
    flush()
    return paragraphs


# ----------------------------------------------------------------------------- sources: (kind, name, paragraphs)
def read_raw(path: Path) -> bytes | None:
    """A file's bytes, gunzipped where it ends in .gz; None where it cannot be read (skipped by the readers)."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def man_texts(files: list[Path]) -> Iterator[tuple[str, list[str]]]:
    for path in files:
        raw = read_raw(path)
        if raw is None:
            continue
        source = raw.decode("utf-8", errors="replace")
        if source.lstrip().startswith(".so "):  # a link to another page
            continue
        yield str(path), roff_text(source)


def mo_catalog(path: Path) -> dict | None:
    """A gettext catalog's messages (msgid, or (msgid, plural index) -> msgstr); None where it is malformed or oddly
    encoded."""
    try:
        with path.open("rb") as fh:
            return gettext.GNUTranslations(fh)._catalog
    except Exception:
        return None


def mo_texts(files: list[Path]) -> Iterator[tuple[str, list[str]]]:
    for path in files:
        catalog = mo_catalog(path)
        if catalog is None:  # skipped
            continue
        messages = []
        for key, value in catalog.items():
            if key == "" or (isinstance(key, tuple) and key[0] == ""):
                continue  # the header
            value = value.strip()
            if value and "\n" not in value:
                messages.append(value)
            elif value:
                messages += [v.strip() for v in value.split("\n") if v.strip()]
        yield str(path), messages


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", re.S | re.I)


def doc_texts(files: list[Path]) -> Iterator[tuple[str, list[str]]]:
    for path in files:
        raw = read_raw(path)
        if raw is None:
            continue
        if b"\0" in raw[:4096]:
            continue
        text = raw.decode("utf-8", errors="replace")
        if ".htm" in path.name:
            text = html.unescape(_TAGS.sub("\n", text))
        yield str(path), [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


_DOCSTRING = re.compile(r'"""(.{200,}?)"""', re.S)


def python_texts(files: list[Path]) -> Iterator[tuple[str, list[str]]]:
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.name == "METADATA":
            body = text.partition("\n\n")[2]
            yield str(path), [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
            continue
        paragraphs = []
        for m in _DOCSTRING.finditer(text):
            paragraphs += [p.strip() for p in re.split(r"\n\s*\n", cleandoc(m.group(1))) if p.strip()]
        yield str(path), paragraphs


def sample_texts(files: list[Path]) -> Iterator[tuple[str, list[str]]]:
    for path in files:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            yield f"{path}:{i}", [p for p in json.loads(line)["text"].split("\n") if p.strip()]


def source_files() -> dict[str, tuple[list[Path], callable]]:
    """Every source kind's input files, sorted."""
    packages = sorted({Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()})
    py = sorted(f for sp in packages for f in sp.rglob("*") if f.is_file() and (f.suffix == ".py" or f.name == "METADATA"))
    docs = sorted(f for f in DOC.rglob("*") if f.is_file() and not f.is_symlink()
                  and (DOC_NAMES.match(f.name) or Path(f.name.removesuffix(".gz")).suffix in DOC_SUFFIXES - {""}))
    return {
        "man": (sorted(f for f in MAN.rglob("*") if f.is_file() and not f.is_symlink()), man_texts),
        "gettext": (sorted(LOCALE.glob("*/LC_MESSAGES/*.mo")), mo_texts),
        "doc": (docs, doc_texts),
        "python": (py, python_texts),
        "sample": (sorted(SAMPLE.glob("*.jsonl")), sample_texts),
    }


def fingerprint(files: dict[str, tuple[list[Path], callable]]) -> str:
    digest = hashlib.sha256()
    for kind, (paths, _) in sorted(files.items()):
        for p in paths:
            digest.update(f"{kind}\0{p}\0{p.stat().st_size}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- documents
def cut(paragraphs: list[str], rng: random.Random, mean: int, joiner: str = "\n") -> list[str]:
    """Consecutive paragraphs joined into documents of about `mean` characters (a target drawn per document
    between DOC_MIN and twice the mean less DOC_MIN; a paragraph longer than DOC_MAX is cut)."""
    low, high = DOC_MIN, max(DOC_MIN + 1, 2 * mean - DOC_MIN)
    docs, current, size, target = [], [], 0, rng.randint(low, high)
    for p in paragraphs:
        p = p[:DOC_MAX]
        if current and size + len(p) > high:  # this paragraph would overshoot: the document ends before it
            docs.append(joiner.join(current))
            current, size, target = [], 0, rng.randint(low, high)
        current.append(p)
        size += len(p) + 1
        if size >= target:
            docs.append(joiner.join(current))
            current, size, target = [], 0, rng.randint(low, high)
    if current and size >= DOC_MIN // 2:
        docs.append(joiner.join(current))
    return docs


def real_documents(want_bytes: int, want_docs: int, seed: int) -> tuple[list[tuple[str, str]], dict, str]:
    """(kind, text) of real documents, read from the sources' files in a seeded order, round robin over the kinds,
    until the wanted size is reached or every file is read."""
    files = source_files()
    order = {}
    for kind, (paths, reader) in files.items():
        shuffled = list(paths)
        random.Random(f"{seed}-{kind}").shuffle(shuffled)
        order[kind] = reader(shuffled)
    rng = random.Random(seed)
    docs, size, stats = [], 0, {k: {"files": 0, "docs": 0, "bytes": 0} for k in files}
    while order and (size < want_bytes or len(docs) < want_docs):
        for kind in list(order):
            for _ in range(8):  # a few files of each kind per turn
                try:
                    _, paragraphs = next(order[kind])
                except StopIteration:
                    del order[kind]
                    break
                stats[kind]["files"] += 1
                for text in cut(paragraphs, rng, max(DOC_MIN, want_bytes // max(want_docs, 1))):
                    text = normalize(text)
                    if len(text) >= DOC_MIN // 2:
                        docs.append((kind, text))
                        n = len(text.encode("utf-8"))
                        size += n
                        stats[kind]["docs"] += 1
                        stats[kind]["bytes"] += n
    return docs, stats, fingerprint(files)


def edited(text: str, rng: random.Random, vocab: list[str]) -> str:
    """A near copy: 1-3 spots of 1-3 words replaced, inserted or deleted."""
    words = text.split(" ")
    for _ in range(rng.randint(1, 3)):
        at, n = rng.randrange(len(words)), rng.randint(1, 3)
        op = rng.choice(("replace", "insert", "delete"))
        if op == "replace":
            words[at:at + n] = rng.sample(vocab, n)
        elif op == "insert":
            words[at:at] = rng.sample(vocab, n)
        elif len(words) > n + 10:
            del words[at:at + n]
    return " ".join(words)


def build(out: Path, docs: int, size: int, files: int | None = None, seed: int = 0, near: float = 0.03,
          exact: float = 0.01) -> dict:
    (out / "jsonl").mkdir(parents=True, exist_ok=True)
    originals_wanted = int(docs * (1 - near - exact))
    real, by_kind, inputs = real_documents(int(size * (1 - near - exact)), originals_wanted, seed)
    rng = random.Random(seed)
    rng.shuffle(real)
    originals = real[:originals_wanted] if len(real) >= originals_wanted else real
    real_bytes = sum(len(t.encode("utf-8")) for _, t in originals)
    # recombined documents up to the size: paragraphs of real documents of one kind, each document sized to
    # what is left (bytes left / documents left); the originals' bytes leave room for the copies'
    recombined, new = 0, []
    want_bytes = int(size * originals_wanted / docs * 1.005)
    if len(originals) < originals_wanted or real_bytes < want_bytes:
        pools: dict[str, list[str]] = {}
        for kind, text in originals:
            pools.setdefault(kind, []).extend(p for p in text.split("\n") if len(p) > 40)
        kinds = sorted(pools)
        weights = [len(pools[k]) for k in kinds]
        total = real_bytes
        while len(originals) + len(new) < originals_wanted or total < want_bytes:
            left = max(originals_wanted - len(originals) - len(new), 1)
            per_doc = max((want_bytes - total) // left, DOC_MIN)
            kind = rng.choices(kinds, weights)[0]
            pool, parts, n = pools[kind], [], 0
            while n < per_doc:
                p = pool[rng.randrange(len(pool))]
                parts.append(p)
                n += len(p.encode("utf-8")) + 1
            text = "\n".join(parts)
            new.append((kind, text))
            total += len(text.encode("utf-8"))
        recombined = len(new)
        originals = originals + new
        rng.shuffle(originals)
    rows = [{"id": f"d{i:08d}", "kind": k, "text": t} for i, (k, t) in enumerate(originals)]
    made = {id(t) for _, t in new} if recombined else set()
    for row, (_, t) in zip(rows, originals):
        row["recombined"] = id(t) in made
    vocab = sorted({w for r in rows[:2000] for w in r["text"].split(" ") if w.isalpha()})
    # copies after their original: a copy of row i goes at a later position
    copies: list[tuple[int, dict]] = []
    n_near, n_exact = int(docs * near), int(docs * exact)
    for c in range(n_near + n_exact):
        src = rng.randrange(len(rows))
        text = rows[src]["text"] if c >= n_near else edited(rows[src]["text"], rng, vocab)
        copies.append((rng.randint(src + 1, len(rows)), {"id": f"c{c:08d}", "kind": "near" if c < n_near else "exact",
                                                         "of": rows[src]["id"], "text": normalize(text)}))
    copies.sort(key=lambda x: x[0])
    ordered, j = [], 0
    for i, row in enumerate(rows + [None]):
        while j < len(copies) and copies[j][0] == i:
            ordered.append(copies[j][1])
            j += 1
        if row is not None:
            ordered.append(row)
    files = files or max(2, len(ordered) // 10_000)
    per_file = -(-len(ordered) // files)
    total_bytes = 0
    digest = hashlib.sha256()
    for f in range(files):
        chunk = ordered[f * per_file:(f + 1) * per_file]
        data = "".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in chunk).encode()
        (out / "jsonl" / f"part-{f:05d}.jsonl").write_bytes(data)
        digest.update(data)
        total_bytes += sum(len(r["text"].encode("utf-8")) for r in chunk)
    (out / "copies.json").write_text(json.dumps({r["id"]: r["of"] for r in ordered if "of" in r}))
    stats = {
        "docs": len(ordered),
        "bytes": total_bytes,
        "files": files,
        "real_docs": len(ordered) - recombined - len(copies),
        "recombined_docs": recombined,
        "near_copies": n_near,
        "exact_copies": n_exact,
        # text as found on disk (not recombined, not a copy), as a share of all bytes
        "real_share": round(sum(len(r["text"].encode()) for r in ordered
                                if not r.get("recombined") and "of" not in r) / max(total_bytes, 1), 4),
        "read_from": by_kind,
        "inputs_fingerprint": inputs,
        "sha256": digest.hexdigest(),
        "seed": seed,
    }
    (out / "corpus.json").write_text(json.dumps(stats, indent=1))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--bytes", type=int, default=1_000_000_000)
    ap.add_argument("--files", type=int, default=None, help="JSONL files (default: one per 10,000 documents, at least 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(build(args.out, args.docs, args.bytes, args.files, args.seed)))


if __name__ == "__main__":
    main()
