"""The document stages as specs: a name, a code version, the config that enters keys, how the work splits
into content-addressed parts and how one part runs. The data flow is the list of them; tasks/ runs
their parts as Prefect tasks, `run_local` runs them in this process (notebooks, tests, benchmarks).

Bump a stage's `version` when its code changes what it outputs: the version is part of every part key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcore.augment.parts import augment_part
from llmcore.config import AugmentConfig, TokenizeConfig
from llmcore.data import parts as work
from llmcore.data import tokens
from llmcore.data.dedup import steps as dedup
from llmcore.data.readers import doc_base, list_inputs, printable_path
from llmcore.data.stage import LAYOUT, PartDir, assemble
from llmcore.manifest import file_sha256
from llmcore.stage import StageRef, content_key, key_config


@dataclass(frozen=True)
class Part:
    """One unit of work: its name in the stage (its position), its content key, and what it reads."""

    name: str
    key: str
    input: str  # an upstream shard's path, or ingest's input file / directory / dataset
    source: int = 0  # ingest: which source of the config
    removed: str = ""  # dedup: the file of the shard's removed rows


class DocStage:
    """A stage of document shards with one part per upstream shard (ingest: per input file)."""

    name: str
    version: int

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @property
    def config(self) -> dict:
        return key_config(self.cfg)

    def inputs(self) -> list[str]:
        """Keys of further inputs every part depends on (the tokenizer's key for tokenize)."""
        return []

    def part_key(self, identity: Any) -> str:
        return content_key(self.name, self.version, self.config, self.inputs(), identity)

    def plan(self, upstream: StageRef) -> list[Part]:
        files = upstream.manifest()["files"]
        return [Part(f"part-{i:05d}", self.part_key(f["sha256"]), str(upstream.path / f["path"])) for i, f in enumerate(files)]

    def stage_key(self, parts: list[Part]) -> str:
        """The stage output: these parts in this order (a new input file makes a new stage directory of links)."""
        return content_key(self.name, self.version, LAYOUT, [p.key for p in parts])

    def run(self, part_dir: PartDir, part: Part) -> dict:
        raise NotImplementedError

    def extra(self, root: str) -> dict:
        """Fields this stage adds to its manifest."""
        return {}


class Ingest(DocStage):
    name, version = "ingest", 3  # 3: parts keyed by their input file's bytes

    def plan(self, upstream: StageRef | None = None) -> list[Part]:
        units = [(i, src, unit) for i, src in enumerate(self.cfg.sources) for unit in list_inputs(src, i)]
        return [Part(f"part-{n:05d}", self.part_key(input_identity(src, unit)), unit, i)
                for n, (i, src, unit) in enumerate(units)]

    def part_key(self, identity: Any) -> str:  # a part depends on its own source, not on the others
        config = {k: v for k, v in self.config.items() if k != "sources"}
        return content_key(self.name, self.version, config, identity)

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return work.ingest_part(part_dir, self.cfg.sources[part.source], part.input, self.cfg)


def input_identity(src, unit: str) -> dict:
    """What an ingest part's key depends on: its source's settings, the input's name as document ids use it,
    and the sha256 of its bytes (a copied or touched file keeps its identity; an edited one does not)."""
    path = Path(unit)
    config = key_config(src)
    if not path.exists():
        return {"source": config, "dataset": printable_path(unit)}  # a dataset named by load_dataset arguments
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    base = doc_base(src)
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{printable_path(str(p.relative_to(path)))}\0{file_sha256(p)}\0".encode())
    name = printable_path(path.relative_to(base).as_posix()) if path.is_relative_to(base) else printable_path(unit)
    return {"source": config, "name": name, "sha256": digest.hexdigest()}


class Clean(DocStage):
    name, version = "clean", 1

    @property
    def config(self) -> dict:
        config = key_config(self.cfg)
        if self.cfg.c4.enabled and self.cfg.c4.remove_lines and self.cfg.fineweb.enabled:
            # FineWeb judges the lines C4 kept since this key: only these configs' outputs changed
            config["fineweb_after_c4_lines"] = True
        return config

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return work.clean_part(part_dir, Path(part.input), self.cfg)


class Language(DocStage):
    name, version = "language", 1

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return work.language_part(part_dir, Path(part.input), self.cfg)


class Dedup(DocStage):
    """Signatures per shard (keyed by the shard alone), one clustering of the corpus in order (keyed by
    its shards' signatures), a filter per shard (keyed by the shard and its removed rows)."""

    name, version = "dedup", 2  # 2: greedy keep-first, content-addressed parts
    SIGNATURE = ("ngram", "num_perm", "seed")  # what a signature depends on

    def signature_parts(self, upstream: StageRef) -> list[Part]:
        config = {k: self.config[k] for k in self.SIGNATURE}
        return [Part(p.name, content_key("dedup-signature", self.version, config, p.key), p.input)
                for p in DocStage.plan(self, upstream)]

    def sign(self, root: str, part: Part) -> Path:
        return dedup.sign_part(Path(root) / self.name, part.key, Path(part.input), self.cfg)

    def clusters(self, root: str, signatures: list[Part]) -> Path:
        """Where the clustering of these signatures (in this order) goes."""
        return Path(root) / self.name / dedup.CLUSTERS / content_key(self.version, self.config, [p.key for p in signatures])

    def cluster(self, root: str, signatures: list[Part]) -> dict:
        return dedup.cluster(Path(root) / self.name, [p.key for p in signatures], [Path(p.input) for p in signatures],
                             self.cfg, self.clusters(root, signatures))

    def filter_parts(self, root: str, signatures: list[Part]) -> list[Part]:
        out = self.clusters(root, signatures)
        removed = [dedup.removed_path(out, p.key) for p in signatures]
        return [Part(p.name, self.part_key([p.key, file_sha256(r)]), p.input, removed=str(r))
                for p, r in zip(signatures, removed)]

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return dedup.filter_part(part_dir, Path(part.removed), Path(part.input))


class Augment(DocStage):
    """EDA copies and back-translated paraphrases beside each document, per shard. With back-translation,
    the global step's output (models, synthetic pairs, paraphrases: `global_key`) enters every part key."""

    name, version = "augment", 2

    def __init__(self, cfg: AugmentConfig, global_key: str | None = None, paraphrases: str | None = None):
        super().__init__(cfg)
        self.global_key, self.paraphrases = global_key, paraphrases

    def inputs(self) -> list[str]:
        return [self.global_key] if self.global_key else []

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return augment_part(part_dir, Path(part.input), self.cfg, self.paraphrases)


TOKENIZER_VERSION = 2  # the tokenizer stage (a global step, no parts): 2: kept as the corpus grows


class Tokenize(DocStage):
    """Arrow token shards of each corpus shard, with the tokenizer of `tokenizer`."""

    name, version = "tokenize", 2

    def __init__(self, cfg: TokenizeConfig, tokenizer: StageRef):
        super().__init__(cfg)
        self.tokenizer = tokenizer

    def inputs(self) -> list[str]:
        return [self.tokenizer.key]

    def run(self, part_dir: PartDir, part: Part) -> dict:
        return tokens.tokenize_part(part_dir, Path(part.input), self.tokenizer.path, self.cfg)

    def extra(self, root: str) -> dict:
        return {"tokenizer": {**self.tokenizer.manifest()["tokenizer"], "key": self.tokenizer.key}}


def run_local(stage: DocStage, root: str | Path, upstream: StageRef | None) -> dict:
    """The stage run in this process, part after part (finished parts reused); returns its manifest."""
    root = str(Path(root).resolve())
    parts = stage.plan(upstream)
    for part in parts:
        part_dir = PartDir(root, stage.name, part.key)
        if part_dir.summary() is None:
            stage.run(part_dir, part)
    ref = StageRef(root, stage.name, stage.stage_key(parts))
    up = upstream.manifest() if upstream else None
    return ref.manifest() or assemble(ref, [(p.name, p.key) for p in parts], stage.config, [up["key"]] if up else [],
                                      up["ledger"]["rows_out"] if up else None, stage.extra(root))
