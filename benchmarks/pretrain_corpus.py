"""A pretraining corpus of the kind the fine-tuning tasks use, built reproducibly from real text installed on this
machine, with the tasks' validation and test examples kept out of it: what configs/cpu-pretrain.yaml ingests.

Sources (nothing is downloaded; the readers are benchmarks/peers_corpus.py's):
  man-en, man-de, man-fr, man-es   manual pages: /usr/share/man/man*/ (English) and /usr/share/man/{de,fr,es}/,
                                   roff markup stripped (peers_corpus.roff_text)
  gettext-en, -de, -fr, -es        messages of the gettext catalogs /usr/share/locale/{de,fr,es}/LC_MESSAGES/*.mo:
                                   each catalog's translations, and the English originals (msgids) once per domain;
                                   consecutive messages joined line by line. Monolingual: no document holds a
                                   message beside its translation.
  doc-en                           package documentation under /usr/share/doc (READMEs, changelogs, copyright
                                   files, .txt/.md/.rst, the Python 3.11 HTML manual with its tags stripped)
  python-en                        docstrings (200+ characters) of this interpreter's standard library modules,
                                   tests left out (peers_corpus.python_texts): prose about Python, the dialogue
                                   task's domain
Each source file is cut at paragraph boundaries into documents of 300-2,500 characters (peers_corpus.cut); files
are read in a seeded order until a kind reaches its share of --bytes (man-en and doc-en are capped, the other
kinds are small and read whole).

Kept out, for every fine-tuning task of --config (default configs/tiny.yaml), its validation and test examples:
  - summarization: the manual page each example comes from, in every language (e.g. alarm.2 in man2, de/man2,
    fr/man2, ...): neither the document nor its NAME line (the summary) is read;
  - dialogue: the Python FAQ (/usr/share/doc/python3.11/html/faq, _sources/faq) and gitfaq(7) in every language;
  - translation: a gettext message equal to either side of a held-out pair (case, whitespace and `_`/`&`
    accelerators folded) is dropped;
  - then every document that still contains a held-out text (`needles`: a translation side, a summary, a
    paragraph opening of a summarization document, a dialogue question or answer opening; 20+ characters,
    folded) is dropped. `leaks()` repeats that search over the finished corpus: corpus.json records 0 found.
The training examples of the tasks may appear (fine-tuning sees them anyway).

Output: OUT/<kind>.jsonl ({"text", "lang", "kind", "origin"}) and OUT/corpus.json (sizes per kind, what was
excluded, the leak check, a fingerprint of the inputs read and the sha256 of the files). The same machine image
and arguments give the same bytes.

    python benchmarks/pretrain_corpus.py [OUT] [--bytes 40000000] [--config configs/tiny.yaml] [--seed 0]
    python benchmarks/pretrain_corpus.py --check CONFIG      # only the leak check of a config's own corpus
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import re
import sys
import sysconfig
import unicodedata
from glob import glob
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers_corpus as pc  # noqa: E402
from llmcore.config import FinetuneTaskConfig, PipelineConfig, load_config  # noqa: E402
from llmcore.data.clean import normalize  # noqa: E402
from llmcore.finetune.formats import task_examples  # noqa: E402

DEFAULT_OUT = ROOT / "build" / "pretrain-corpus"
LANGS = ("de", "fr", "es")
NEEDLE_MIN = 20                 # characters: shorter held-out texts ("Invalid argument") are common phrases
SHARES = {"man-en": 0.4, "doc-en": 0.35}   # of --bytes; the other kinds are read whole
FAQ_PATHS = ("/usr/share/doc/python3.11/html/faq", "/usr/share/doc/python3.11/html/_sources/faq")
FAQ_PAGES = {"gitfaq.7"}
TESTS = {"site-packages", "test", "tests", "idle_test"}   # stdlib folders that are not the library's own prose


def fold(text: str) -> str:
    """Case, whitespace and gettext accelerators folded: how held-out texts are searched for."""
    return " ".join(text.replace("_", "").replace("&", "").casefold().split())


def held_out(tasks: list[FinetuneTaskConfig], splits: tuple[str, ...] = ("validation", "test")) -> dict:
    """What must not be in the corpus: {"pages": man page names, "messages": folded gettext texts,
    "needles": {folded text: example ids}} of the tasks' `splits`."""
    pages, messages, needles = set(FAQ_PAGES), set(), {}

    def needle(text: str, ex_id: str) -> None:
        text = fold(text)
        if len(text) >= NEEDLE_MIN:
            needles.setdefault(text, set()).add(ex_id)

    for task in tasks:
        examples = task_examples(task)
        records = {}
        if task.task == "summarization":
            lines = Path(task.path).read_text(encoding="utf-8").splitlines()
            records = {i + 1: json.loads(line) for i, line in enumerate(lines)}
        for ex in (ex for split in splits for ex in examples[split]):
            ex_id = f"{task.name}:{ex.id}"
            if task.task == "translation":
                messages |= {fold(ex.source), fold(ex.target)}
                needle(ex.source, ex_id)
                needle(ex.target, ex_id)
            elif task.task == "summarization":
                origin = records[int(ex.where.rsplit(":", 1)[1])].get("origin", "")
                if origin:
                    pages.add(Path(origin.split(":", 1)[1]).name.removesuffix(".gz"))
                needle(ex.target, ex_id)
                for paragraph in ex.source.split("\n\n"):
                    needle(paragraph[:80], ex_id)
            else:
                for _, text in ex.context:
                    needle(text[:80], ex_id)
                needle(ex.target[:80], ex_id)
    return {"pages": pages, "messages": messages, "needles": needles}


def find(texts: list[str], needles: dict[str, set[str]]) -> tuple[set[int], set[str]]:
    """(indexes of the texts holding a needle, the example ids found): one search per needle over all texts."""
    folded = [fold(t) for t in texts]
    starts, pos = [], 0
    for t in folded:
        starts.append(pos)
        pos += len(t) + 1
    big = "\0".join(folded)
    hit_docs, hit_examples = set(), set()
    for text, ids in needles.items():
        at = big.find(text)
        while at >= 0:
            hit_docs.add(bisect.bisect_right(starts, at) - 1)
            hit_examples |= ids
            at = big.find(text, at + 1)
    return hit_docs, hit_examples


def corpus_texts(cfg: PipelineConfig) -> list[str]:
    """The texts of the config's jsonl and text sources (what ingest reads)."""
    texts = []
    for src in cfg.data.ingest.sources:
        if src.format not in ("jsonl", "text") or not src.path:
            continue
        for path in sorted(glob(src.path)) if any(c in src.path for c in "*?[") else [src.path]:
            with open(path, encoding="utf-8") as fh:
                if src.format == "text":
                    texts += fh.read().splitlines() if src.text_unit == "line" else [fh.read()]
                else:
                    texts += [json.loads(line).get(src.text_field, "") for line in fh if line.strip()]
    return texts


def leaks(cfg: PipelineConfig, tasks: list[FinetuneTaskConfig] | None = None) -> dict:
    """Per task: how many test examples have a source or target text (20+ characters, folded) somewhere in the
    documents the config ingests, and their example ids."""
    tasks = cfg.finetune if tasks is None else tasks
    texts = corpus_texts(cfg)
    out = {}
    for task in tasks:
        found = held_out([task], ("test",))
        _, hit = find(texts, found["needles"])
        out[task.name] = {"test_examples": len(task_examples(task)["test"]), "found_in_corpus": len(hit)}
        if hit:
            out[task.name]["ids"] = sorted(i.split(":", 1)[1] for i in hit)
    return out


_ACCENT = re.compile(r"\\(?:\(([:'`^,~])([A-Za-z])|\[([:'`^,~])([A-Za-z])\]|\[u([0-9A-Fa-f]{4,5}(?:_[0-9A-Fa-f]{4,5})*)\])")
_MARKS = {":": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", ",": "\u0327", "~": "\u0303"}


def _accent(m: re.Match) -> str:
    if m.group(5):
        return unicodedata.normalize("NFC", "".join(chr(int(h, 16)) for h in m.group(5).split("_")))
    mark, letter = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return unicodedata.normalize("NFC", letter + _MARKS[mark])


def man_texts(files: list[Path]):
    """peers_corpus.man_texts with groff's accented letters kept (\\(:a, \\('e, \\[u00E9]: the translated pages
    use them; peers_corpus.roff_text drops them)."""
    for path in files:
        raw = pc.read_raw(path)
        if raw is None:
            continue
        source = raw.decode("utf-8", errors="replace")
        if not source.lstrip().startswith(".so "):
            yield str(path), pc.roff_text(_ACCENT.sub(_accent, source))


def mo_messages(files: list[Path]):
    """(path, msgids, msgstrs) of each catalog; plural forms give every form."""
    for path in files:
        catalog = pc.mo_catalog(path)
        if catalog is None:  # skipped
            continue
        ids, strs = [], []
        for key, value in sorted(catalog.items(), key=lambda kv: str(kv[0])):
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid:
                continue  # the header
            if not isinstance(key, tuple) or key[1] == 0:
                ids += [v.strip() for v in msgid.split("\n") if v.strip()]
            strs += [v.strip() for v in value.split("\n") if v.strip()]
        yield str(path), ids, strs


def sources(seed: int) -> dict[str, list[Path]]:
    """Every kind's input files in a seeded order."""
    man = pc.MAN
    files = {"man-en": sorted(f for d in sorted(man.glob("man*")) for f in d.rglob("*") if f.is_file() and not f.is_symlink())}
    for lang in LANGS:
        files[f"man-{lang}"] = sorted(f for f in (man / lang).rglob("*") if f.is_file() and not f.is_symlink())
    for lang in LANGS:
        files[f"gettext-{lang}"] = sorted((pc.LOCALE / lang / "LC_MESSAGES").glob("*.mo"))
    files["doc-en"] = sorted(f for f in pc.DOC.rglob("*") if f.is_file() and not f.is_symlink()
                             and (pc.DOC_NAMES.match(f.name) or Path(f.name.removesuffix(".gz")).suffix in pc.DOC_SUFFIXES - {""})
                             and not str(f).startswith(FAQ_PATHS))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files["python-en"] = sorted(f for f in stdlib.rglob("*.py") if not TESTS.intersection(f.relative_to(stdlib).parts))
    for kind, paths in files.items():
        random.Random(f"{seed}-{kind}").shuffle(paths)
    return files


def page_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def build(out: Path, size: int, config: Path, seed: int = 0) -> dict:
    cfg = load_config(config)
    excluded = held_out(cfg.finetune)
    files = sources(seed)
    rng = random.Random(seed)
    docs: dict[str, list[tuple[str, str]]] = {}   # kind -> (origin, text)
    stats = {"pages_skipped": 0, "messages_dropped": 0}

    def add(kind: str, origin: str, paragraphs: list[str]) -> int:
        n = 0
        for text in pc.cut(paragraphs, rng, 900):
            text = normalize(text).strip()
            if len(text) >= pc.DOC_MIN // 2:
                docs.setdefault(kind, []).append((origin, text))
                n += len(text.encode("utf-8"))
        return n

    for kind in [k for k in files if k.startswith("man-")]:
        cap, total = SHARES.get(kind, 1.0) * size, 0
        kept = [p for p in files[kind] if page_name(p) not in excluded["pages"]]
        stats["pages_skipped"] += len(files[kind]) - len(kept)
        for origin, paragraphs in man_texts(kept):
            if total >= cap:
                break
            total += add(kind, origin, paragraphs)
    english_domains = set()
    for lang in LANGS:
        for origin, ids, strs in mo_messages(files[f"gettext-{lang}"]):
            for kind, messages in ((f"gettext-{lang}", strs), ("gettext-en", ids)):
                if kind == "gettext-en":
                    if Path(origin).name in english_domains:
                        continue
                    english_domains.add(Path(origin).name)
                kept = [m for m in dict.fromkeys(messages) if fold(m) not in excluded["messages"]]
                stats["messages_dropped"] += len(set(messages)) - len(kept)
                add(kind, origin, kept)
    cap, total = SHARES["doc-en"] * size, 0
    for origin, paragraphs in pc.doc_texts(files["doc-en"]):
        if total >= cap:
            break
        total += add("doc-en", origin, paragraphs)
    for origin, paragraphs in pc.python_texts(files["python-en"]):
        add("python-en", origin, paragraphs)

    # the last net: documents holding a held-out text
    flat = [(kind, origin, text) for kind in sorted(docs) for origin, text in docs[kind]]
    hit, hit_examples = find([t for _, _, t in flat], excluded["needles"])
    stats["docs_dropped_holding_held_out_text"] = len(hit)
    stats["held_out_examples_found_before_drop"] = len(hit_examples)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    kinds, digest = {}, hashlib.sha256()
    for kind in sorted(docs):
        rows = []
        for i, (k, o, t) in enumerate(flat):
            if k == kind and i not in hit:
                rows.append({"text": t, "lang": kind.split("-")[1], "kind": kind, "origin": o})
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        (out / f"{kind}.jsonl").write_bytes(data)
        digest.update(data)
        kinds[kind] = {"docs": len(rows), "bytes": sum(len(r["text"].encode("utf-8")) for r in rows),
                       "files_available": len(files[kind]) if kind in files else None}
    fingerprint = hashlib.sha256()
    for kind, paths in sorted(files.items()):
        for p in sorted(paths):
            fingerprint.update(f"{kind}\0{p}\0{p.stat().st_size}\n".encode())
    kept_texts = [t for i, (_, _, t) in enumerate(flat) if i not in hit]
    check = {}
    for task in cfg.finetune:
        found = held_out([task], ("validation", "test"))
        _, ids = find(kept_texts, found["needles"])
        check[task.name] = len(ids)
    summary = {"docs": sum(k["docs"] for k in kinds.values()), "bytes": sum(k["bytes"] for k in kinds.values()),
               "kinds": kinds, "config": str(config), "seed": seed, "target_bytes": size,
               "excluded": {"man_pages": sorted(excluded["pages"]), **stats,
                            "held_out_needles": len(excluded["needles"])},
               "held_out_found_after": check, "inputs_fingerprint": fingerprint.hexdigest(), "sha256": digest.hexdigest()}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--bytes", type=int, default=40_000_000, help="about this much text (man-en and doc-en are capped)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml", help="whose fine-tuning tasks are held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=Path, metavar="CONFIG", help="only report the test examples found in CONFIG's corpus")
    args = ap.parse_args()
    if args.check:
        print(json.dumps(leaks(load_config(args.check))))
        return
    summary = build(args.out, args.bytes, args.config, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "excluded"} | {"excluded": {
        k: (len(v) if isinstance(v, list) else v) for k, v in summary["excluded"].items()}}))


if __name__ == "__main__":
    main()
