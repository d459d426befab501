"""Atomic writes, ledgers and manifests of stage directories (keys and the manifest writer: llmcore/stage.py).

A stage writes `<data_root>/<stage>/<key>/`; it is complete iff its manifest exists, and the manifest is
always the last file written, atomically. A document stage's manifest is `.manifest.json` (see llmcore/stage.py),
the others' `manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# a document stage's: pandas, pyarrow and datasets skip dot-names, so that its directory reads as a dataset of its shards
HIDDEN_MANIFEST = "." + MANIFEST


class ManifestError(ValueError):
    """A manifest that cannot be read: the stage must be recomputed (its directory deleted)."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_mode() -> int:
    """The mode a new file gets from the umask (0o644 under the usual 022). mkstemp makes 0o600 files, which
    a worker running as another user could not read on a shared root."""
    try:
        umask = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("Umask:")), 8)
    except (OSError, StopIteration):
        umask = 0o022  # no /proc: the common default (os.umask would change it process-wide to read it)
    return 0o666 & ~umask


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def relative_paths(value: Any, base: str | Path) -> Any:
    """`value` with every path string inside `base` made relative to it: what a manifest stores, so that a data
    root still reads right after a move or a copy."""
    if isinstance(value, dict):
        return {k: relative_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, base) for v in value]
    if isinstance(value, str) and value.startswith(str(base) + os.sep):
        return os.path.relpath(value, base)
    return value


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode())


def temp_path_for(path: str | Path) -> Path:
    """A sibling temp name for writers (pyarrow, torch) that need a path rather than bytes."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def commit_file(tmp: str | Path, path: str | Path) -> None:
    """Make a fully written temp file visible under its final name (fsync, then rename)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Ledger:
    """Counts by fate. Invariant: rows_in + sum(added.values()) == rows_out + sum(dropped.values()) + quarantined.

    `added` counts rows a stage made itself, by kind (augment's EDA copies and paraphrases); it is left
    out of the dict form while empty, so stages that only keep or drop show the four fields of the ledger's invariant.
    """

    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    added: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def add(self, kind: str, n: int = 1) -> None:
        self.added[kind] = self.added.get(kind, 0) + n

    def __add__(self, other: Ledger) -> Ledger:
        return Ledger(
            self.rows_in + other.rows_in,
            self.rows_out + other.rows_out,
            dict(Counter(self.dropped) + Counter(other.dropped)),
            self.quarantined + other.quarantined,
            dict(Counter(self.added) + Counter(other.added)),
        )

    def check(self, where: str) -> Ledger:
        accounted = self.rows_out + sum(self.dropped.values()) + self.quarantined
        made = self.rows_in + sum(self.added.values())
        if accounted != made:
            raise AssertionError(f"{where}: ledger does not balance: {self.rows_in} in + {made - self.rows_in} added, "
                                 f"{accounted} accounted for")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.added:
            del d["added"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Ledger:
        return cls(d["rows_in"], d["rows_out"], dict(d["dropped"]), d["quarantined"], dict(d.get("added", {})))


def describe_file(path: Path, root: Path, rows: int) -> dict:
    return {"path": str(path.relative_to(root)), "rows": rows, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def read_manifest(stage_dir: str | Path) -> dict | None:
    """The manifest of a stage directory (a document stage's or another's), or None while the stage is unfinished."""
    path = next((p for p in (Path(stage_dir) / HIDDEN_MANIFEST, Path(stage_dir) / MANIFEST) if p.exists()), None)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # not JSON, or not UTF-8: the stage's record of its files is lost
        raise ManifestError(f"{path} is not a valid manifest ({exc}): delete the stage directory {path.parent} "
                         "so that the stage is recomputed") from None
