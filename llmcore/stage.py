"""The stage interface: where a stage's output lives, what enters its key, and its one manifest writer.

A stage writes `<root>/<stage>/<key>/` and is complete iff its manifest exists (written last,
atomically). Document stages split their work into *parts*, each stored once under
`<root>/<stage>/parts/<part key>/`, where the part key hashes the stage, its code version, the config
fields that change output and the content identity of the part's own input (an input file's bytes,
an upstream shard's sha256), never the whole input list: a new input file costs its own parts only.
A stage directory links the parts it is made of, in arrival order, and its manifest lists them.
A document stage's directory holds its shards and, under dot-names (`.manifest.json`, llmcore/data/stage.py),
everything else, so that `pd.read_parquet(dir)` and `datasets.load_dataset(..., data_dir=dir)` read its documents;
the other stages' manifest is `manifest.json`.
No Prefect here: tasks/ wraps these for the orchestrator.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from llmcore.manifest import HIDDEN_MANIFEST, MANIFEST, atomic_write_json, canonical_json, read_manifest

PARTS = "parts"  # <root>/<stage>/parts/<part key>/: the content-addressed parts of a document stage
OUTPUT_ONLY = {"key": False}  # json_schema_extra of a config field that changes how a stage runs, never what it writes
# a field out of keys that chooses what a grown corpus reuses (tokenizer.refit, pretrain.on_new_data): not output-neutral
POLICY = {"key": False, "policy": True}
# the stages whose directories read as datasets of their shards: their manifest is hidden (llmcore/data/stage.py)
DOCUMENT_STAGES = ("ingest", "clean", "language", "dedup", "augment", "tokenize")


def manifest_name(stage: str) -> str:
    return HIDDEN_MANIFEST if stage in DOCUMENT_STAGES else MANIFEST


def content_key(*items: Any) -> str:
    """A 16-hex-digit sha256 of the items' canonical JSON (order matters: arrival order is part of a stage)."""
    return hashlib.sha256(canonical_json(list(items)).encode()).hexdigest()[:16]


def key_config(section: BaseModel) -> dict:
    """The section as it enters stage keys: every field but those declared OUTPUT_ONLY (process counts,
    memory, logging), recursively, so that changing one of those reruns nothing."""
    return _without_runtime(section, section.model_dump(mode="json"))


def _without_runtime(model: Any, dumped: Any) -> Any:
    if isinstance(model, BaseModel):
        fields = type(model).model_fields
        return {name: _without_runtime(getattr(model, name), value) for name, value in dumped.items()
                if (fields[name].json_schema_extra or {}).get("key", True)}
    if isinstance(model, (list, tuple)) and isinstance(dumped, list):
        return [_without_runtime(m, d) for m, d in zip(model, dumped)]
    return dumped


def runtime_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every OUTPUT_ONLY field under `model` (the config reference and the key test list them)."""
    found = []
    for name, field in model.model_fields.items():
        if (field.json_schema_extra or {}) == OUTPUT_ONLY:
            found.append(prefix + name)
        annotation = field.annotation
        for inner in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                found += runtime_fields(inner, f"{prefix}{name}.")
    return found


@dataclass(frozen=True)
class StageRef:
    """A typed reference to one stage output: `<root>/<stage>/<key>/`."""

    root: str
    stage: str
    key: str

    @property
    def path(self) -> Path:
        return Path(self.root) / self.stage / self.key

    @property
    def manifest_path(self) -> Path:
        return self.path / manifest_name(self.stage)

    def manifest(self) -> dict | None:
        return read_manifest(self.path)

    def done(self) -> bool:
        return self.manifest_path.exists()

    @classmethod
    def at(cls, path: str | Path) -> StageRef:
        """The stage whose directory is `path` (`<root>/<stage>/<key>`, or a name pointing at it)."""
        path = Path(path).resolve()
        return cls(str(path.parent.parent), path.parent.name, path.name)

    @classmethod
    def of(cls, manifest_path: str | Path) -> StageRef:
        """The stage whose manifest is at `manifest_path`."""
        return cls.at(Path(manifest_path).parent)


def part_path(root: str | Path, stage: str, part_key: str) -> Path:
    return Path(root) / stage / PARTS / part_key


def write_manifest(ref: StageRef, config: Any, upstream: list[str], files: list[dict], **fields: Any) -> dict:
    """The manifest of every stage, written last and atomically: what it is, when, from which settings and
    inputs, its files (path relative to the stage directory, rows, bytes, sha256), then the stage's own fields."""
    manifest = {
        "stage": ref.stage, "key": ref.key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config, "upstream": upstream, "files": files, **fields,
    }
    atomic_write_json(ref.manifest_path, manifest)
    return manifest


def latest(root: str | Path, stage: str, where: dict | None = None, accept: Callable[[dict], bool] | None = None) -> StageRef | None:
    """The most recently finished output of `stage` under `root` whose manifest has the fields of `where` (and
    that `accept` accepts)."""
    found = []
    for manifest_path in (Path(root) / stage).glob(f"*/{manifest_name(stage)}"):
        manifest = read_manifest(manifest_path.parent)
        if manifest and all(manifest.get(k) == v for k, v in (where or {}).items()) and (accept is None or accept(manifest)):
            found.append((manifest_path.stat().st_mtime_ns, manifest["key"]))
    return StageRef(str(root), stage, max(found)[1]) if found else None
