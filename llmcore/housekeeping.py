"""Names beside hashes, and garbage collection of a data root.

Each run points `<root>/<stage>/latest` (and `finetune/<task name>`) at the stage directory it used: a
relative symlink, replaced atomically, so a reader follows a name instead of grepping manifests. What
those names reach is kept: a stage directory and what its manifest names as needed to use or grow it
(any key in it, but those of its provenance: parts, dedup signatures and clusterings, the tokenizer of
token shards), recursively. Everything else under the root, and
Prefect result records that point at it, is garbage: listed by `collect`, deleted only when asked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmcore.manifest import HIDDEN_MANIFEST, MANIFEST
from llmcore.stage import PARTS, StageRef

LATEST = "latest"
RESULTS = "prefect-results"
KEY = re.compile(r"[0-9a-f]{16}")
# directories of keyed entries: parts, dedup's signatures and clusterings, augment's back-translation steps
CONTAINERS = {PARTS, "signatures", "clusters", "backtranslation"}
# fields that name what an output was made from: history, not needed to use it (a stage directory holds its files)
PROVENANCE = {"upstream", "continued_from"}
RESULT_PATH = re.compile(r"\$\{data_root\}/([^\"\\]+)")


def point(ref: StageRef, name: str = LATEST) -> Path:
    """`<root>/<stage>/<name>` -> the stage directory (relative, so the root can move)."""
    link = Path(ref.root) / ref.stage / name
    tmp = link.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(ref.key, tmp)
    os.replace(tmp, link)
    return link


def names(root: str | Path) -> dict[str, Path]:
    """Every name in the root ("tokenize/latest", "finetune/summarization") and the directory it points at."""
    return {f"{link.parent.name}/{link.name}": link.resolve() for link in Path(root).glob("*/*") if link.is_symlink()}


def _entries(root: Path) -> Iterator[tuple[str, Path]]:
    """(key, path) of everything in the root that a manifest can name; what it does not know, it leaves alone."""
    for stage in (p for p in root.iterdir() if p.is_dir() and p.name != RESULTS):
        for entry in stage.iterdir():
            if entry.is_symlink():
                continue
            if entry.name in CONTAINERS and entry.is_dir():
                yield from ((p.name.split(".")[0], p) for p in entry.iterdir() if not p.name.startswith("."))
            elif KEY.fullmatch(entry.name) and entry.is_dir():  # a stage directory, finished or not
                yield entry.name, entry


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in PROVENANCE:
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@dataclass
class Garbage:
    paths: list[Path]
    results: list[Path]
    kept: int

    @property
    def bytes(self) -> int:
        return sum(_size(p) for p in self.paths + self.results)


def collect(root: str | Path) -> Garbage:
    """What no name of the root reaches (see the module docstring)."""
    root = Path(root).resolve()
    index: dict[str, list[Path]] = {}
    for key, path in _entries(root):
        index.setdefault(key, []).append(path)
    todo = [p for p in names(root).values() if p.exists()]
    reached: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in reached:
            continue
        reached.add(path)
        for f in (path / MANIFEST, path / HIDDEN_MANIFEST, path / "results.json", path / "summary.json"):
            if f.is_file():
                keys = {k for s in _strings(json.loads(f.read_text())) for k in KEY.findall(s)}  # keys, paths with keys
                todo += [p for k in keys for p in index.get(k, [])]
    garbage = sorted({p for paths in index.values() for p in paths} - reached)
    gone = {str(p) for p in garbage}
    results = [r for r in sorted((root / RESULTS).glob("*")) if r.is_file() and _points_into(r, root, gone)]
    return Garbage(garbage, results, len(reached))


def _points_into(record: Path, root: Path, gone: set[str]) -> bool:
    """Whether a Prefect result record names a path inside something about to be deleted."""
    try:
        text = record.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    for rel in RESULT_PATH.findall(text):
        path = root / rel
        if any(str(p) in gone for p in (path, *path.parents)):
            return True
    return False


def delete(garbage: Garbage) -> None:
    for p in garbage.paths + garbage.results:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
