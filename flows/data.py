"""The data flow: ingest -> clean -> language -> dedup (-> augment) -> tokenizer -> tokenize, mostly per-shard tasks.

Every stage's key hashes its code version, its config section and its inputs (the input files'
size and mtime for ingest, the upstream manifest key after that), so a rerun finds finished
stages and parts under the same key and skips them; a changed setting gets a new directory.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from llmcore.augment.backtranslate import PARAPHRASES, SYNTHETIC
from llmcore.config import AugmentConfig, DataConfig, DedupConfig, IngestConfig, RunnerConfig, TokenizerConfig
from llmcore.data.readers import list_inputs, printable_path
from llmcore.manifest import MANIFEST, file_sha256, stage_key
from llmcore.report import format_table, funnel
from tasks import augment, dedup, tokens
from tasks.common import bind, finalize_stage
from tasks.data import VERSIONS, clean_part, ingest_part, language_part

DEFAULT_DATA_ROOT = "./llmpipe-data"


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[TaskRunner]:
    """The runner the per-shard tasks fan out on, chosen by the config at run time."""
    if cfg.kind == "dask":
        from prefect_dask import DaskTaskRunner

        kwargs = {"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True}
        runner = DaskTaskRunner(address=cfg.dask_address) if cfg.dask_address else DaskTaskRunner(cluster_kwargs=kwargs)
    else:
        runner = ThreadPoolTaskRunner(max_workers=cfg.workers)
    with runner:
        yield runner


def _finish(runner_futures, data_root: str, stage: str, key: str, parts: list[str], config: dict,
            upstream: list[str], upstream_rows: int | None, extra: dict | None = None) -> dict:
    runner_futures.result()  # raises if any part failed; the finished ones stay cached
    path = bind(finalize_stage, data_root)(data_root, stage, key, parts, config, upstream, upstream_rows, extra)
    return json.loads(Path(path).read_text())


def ingest_stage(runner: TaskRunner, cfg: IngestConfig, data_root: str) -> dict:
    units = [(src, unit) for i, src in enumerate(cfg.sources) for unit in list_inputs(src, i)]
    fingerprints = [input_fingerprint(unit) for _, unit in units]
    # where a source's token is found changes nothing it reads: not in the key (existing keys stay as they were)
    config = cfg.model_dump(mode="json", exclude={"sources": {"__all__": {"token_env", "token_secret"}}})
    key = stage_key("ingest", VERSIONS["ingest"], config, fingerprints)
    parts = [f"part-{i:05d}" for i in range(len(units))]
    futures = runner.map(
        bind(ingest_part, data_root),
        {
            "data_root": unmapped(data_root),
            "stage": unmapped("ingest"),
            "key": unmapped(key),
            "part": parts,
            "src": [src for src, _ in units],
            "unit": [unit for _, unit in units],
            "cfg": unmapped(cfg),
        },
    )
    return _finish(futures, data_root, "ingest", key, parts, config, fingerprints, None)


def input_fingerprint(unit: str) -> str:
    """Identity of an input as it is now: path, size and mtime (hashing every byte would cost a read)."""
    path = Path(unit)
    if not path.exists():
        return printable_path(unit)  # a dataset named by load_dataset arguments
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    # printable: a file name of non-UTF-8 bytes would not encode into the key or the manifest
    return ";".join(f"{printable_path(str(p))}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def shard_stage(runner: TaskRunner, stage: str, part_task, cfg, data_root: str, upstream: dict,
                version: int | None = None, inputs: dict[str, dict] | None = None, extra: dict | None = None) -> dict:
    """A stage that maps one task over each shard of the upstream stage.

    `inputs`: further upstream stages' manifests by name (tokenize's tokenizer): their keys join the
    stage key and every part gets that stage's directory as the argument of that name. `extra`:
    fields for the stage manifest. `version`: for stages whose VERSION is not in tasks.data.
    """
    inputs = inputs or {}
    config = cfg.model_dump(mode="json")
    upstream_keys = [upstream["key"], *(m["key"] for m in inputs.values())]
    key = stage_key(stage, version or VERSIONS[stage], config, upstream_keys)
    upstream_dir = Path(data_root) / upstream["stage"] / upstream["key"]
    shards = [str(upstream_dir / f["path"]) for f in upstream["files"]]
    parts = [Path(s).stem for s in shards]
    futures = runner.map(
        bind(part_task, data_root),
        {
            "data_root": unmapped(data_root),
            "stage": unmapped(stage),
            "key": unmapped(key),
            "part": parts,
            "shard": shards,
            "cfg": unmapped(cfg),
            **{name: unmapped(str(Path(data_root, m["stage"], m["key"]))) for name, m in inputs.items()},
        },
    )
    return _finish(futures, data_root, stage, key, parts, config, upstream_keys, upstream["ledger"]["rows_out"], extra)


def tokenizer_stage(cfg: TokenizerConfig, data_root: str, corpus: dict) -> dict:
    """One global task: a tokenizer trained on a sample of `corpus`, or the file at cfg.path adopted."""
    config = cfg.model_dump(mode="json")
    upstream = [f"sha256:{file_sha256(cfg.path)}"] if cfg.path else [corpus["key"]]
    key = stage_key("tokenizer", tokens.VERSIONS["tokenizer"], config, upstream)
    corpus_dir = str(Path(data_root, corpus["stage"], corpus["key"]))
    path = bind(tokens.tokenizer_stage, data_root)(data_root, "tokenizer", key, cfg, corpus_dir, upstream)
    return json.loads(Path(path).read_text())


def tokenize_stage(runner: TaskRunner, config: DataConfig, data_root: str, corpus: dict) -> tuple[dict, dict]:
    """The tokenizer, then Arrow token shards of every corpus shard; returns both manifests."""
    tokenizer = tokenizer_stage(config.tokenizer, data_root, corpus)
    described = {**tokenizer["tokenizer"], "key": tokenizer["key"]}
    tokenized = shard_stage(runner, "tokenize", tokens.tokenize_part, config.tokenize, data_root, corpus,
                            tokens.VERSIONS["tokenize"], {"tokenizer": tokenizer}, {"tokenizer": described})
    return tokenizer, tokenized


def dedup_stage(runner: TaskRunner, cfg: DedupConfig, data_root: str, upstream: dict) -> dict:
    """Signatures per shard, one global clustering (cached, its output on disk), a filter per shard."""
    config = cfg.model_dump(mode="json", exclude={"sort_memory_mb"})  # changes how, not what: not in the key
    key = stage_key("dedup", dedup.VERSION, config, [upstream["key"]])
    upstream_dir = Path(data_root) / upstream["stage"] / upstream["key"]
    shards = [str(upstream_dir / f["path"]) for f in upstream["files"]]
    parts = [Path(s).stem for s in shards]
    per_shard = {
        "data_root": unmapped(data_root), "stage": unmapped("dedup"), "key": unmapped(key), "part": parts, "shard": shards,
    }
    runner.map(bind(dedup.signature_part, data_root), {**per_shard, "cfg": unmapped(cfg)}).result()
    summary = dedup.report_clusters(bind(dedup.cluster, data_root)(data_root, "dedup", key, parts, shards, cfg))
    futures = runner.map(bind(dedup.filter_part, data_root), per_shard)
    return _finish(futures, data_root, "dedup", key, parts, config, [upstream["key"]], upstream["ledger"]["rows_out"],
                   {"dedup": summary})


def augment_stage(runner: TaskRunner, cfg: AugmentConfig, data_root: str, upstream: dict) -> dict:
    """Back-translation (a reverse model, trained or given, translates target-language sentences into
    synthetic pairs; a forward model adds paraphrase round trips), then EDA copies and paraphrase
    documents beside every document, per shard."""
    bt = cfg.backtranslation
    config = cfg.model_dump(mode="json")
    inputs = [upstream["key"]]
    if bt:
        inputs.append(f"pairs:sha256:{file_sha256(bt.pairs)}")
        if bt.model:
            inputs += [f"model:{p.name}:{file_sha256(p)}" for p in sorted(Path(bt.model).iterdir()) if p.is_file()]
    key = stage_key("augment", augment.VERSION, config, inputs)
    upstream_dir = Path(data_root) / upstream["stage"] / upstream["key"]
    shards = [str(upstream_dir / f["path"]) for f in upstream["files"]]
    parts = [Path(s).stem for s in shards]
    paraphrases, extra = None, {"synthetic": None, "pair": None}
    if bt:
        train = bind(augment.train_model, data_root)
        reverse = bt.model or train(data_root, "augment", key, "reverse", bt)
        forward = train(data_root, "augment", key, "forward", bt) if bt.paraphrase_sentences else None
        summary = bind(augment.translate, data_root)(data_root, "augment", key, "translate", shards, bt, reverse, forward)
        extra = {"synthetic": SYNTHETIC, "pair": [bt.source_lang, bt.target_lang],
                 "backtranslation": json.loads(Path(summary).read_text())}
        paraphrases = str(Path(data_root, "augment", key, PARAPHRASES)) if forward else None
    futures = runner.map(
        bind(augment.augment_part, data_root),
        {
            "data_root": unmapped(data_root), "stage": unmapped("augment"), "key": unmapped(key), "part": parts,
            "shard": shards, "cfg": unmapped(cfg), "paraphrases": unmapped(paraphrases),
        },
    )
    return _finish(futures, data_root, "augment", key, parts, config, inputs, upstream["ledger"]["rows_out"], extra)


@flow(name="data", persist_result=True, result_serializer="json")
def data_flow(config: DataConfig, data_root: str = DEFAULT_DATA_ROOT) -> list[str]:
    """Raw sources to a clean, deduplicated corpus and its token shards; returns the stages' manifest paths in order."""
    root = os.path.abspath(data_root)
    with task_runner(config.runner) as runner:
        ingest = ingest_stage(runner, config.ingest, root)
        clean = shard_stage(runner, "clean", clean_part, config.clean, root, ingest)
        language = shard_stage(runner, "language", language_part, config.language, root, clean)
        deduped = dedup_stage(runner, config.dedup, root, language)
        augmenting = config.augment.backtranslation or config.augment.eda
        corpus = augment_stage(runner, config.augment, root, deduped) if augmenting else deduped
        tokenizer, tokenized = tokenize_stage(runner, config, root, corpus)
    manifests = [ingest, clean, language, deduped, *([corpus] if augmenting else []), tokenizer, tokenized]
    rows = funnel(manifests)
    create_table_artifact(rows, key="data-funnel", description="Documents in, out, dropped and quarantined per stage")
    get_run_logger().info("Data funnel\n%s", format_table(rows))
    return [str(Path(root, m["stage"], m["key"], MANIFEST)) for m in manifests]
