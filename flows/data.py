"""The data flow: ingest -> clean -> language -> dedup (-> augment) -> tokenizer -> tokenize.

Each stage is a spec (llmcore/data/stages.py) whose work splits into content-addressed parts: a part's key
hashes the stage, its code version, the config fields that change output and its own input's content, so a
corpus that grew by one file computes that file's parts and finds every other part Cached. Dedup signs new
shards only and re-clusters the corpus in order (keep-first: new documents never remove older kept ones);
the tokenizer is kept as the corpus grows unless `tokenizer.refit` asks for a new one.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from llmcore.config import DataConfig, RunnerConfig, TokenizerConfig
from llmcore.data.stage import link
from llmcore.data.stages import TOKENIZER_VERSION, Augment, Clean, Dedup, DocStage, Ingest, Language, Part, Tokenize
from llmcore.housekeeping import point
from llmcore.manifest import file_sha256
from llmcore.report import funnel
from llmcore.stage import StageRef, content_key, key_config, latest
from tasks import stages
from tasks.common import bind, tagged

DEFAULT_DATA_ROOT = "./llmpipe-data"


@contextmanager
def task_runner(cfg: RunnerConfig) -> Iterator[TaskRunner]:
    """The runner the per-part tasks fan out on, chosen by the config at run time."""
    if cfg.kind == "dask":
        from prefect_dask import DaskTaskRunner

        kwargs = {"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True}
        runner = DaskTaskRunner(address=cfg.dask_address) if cfg.dask_address else DaskTaskRunner(cluster_kwargs=kwargs)
    else:
        runner = ThreadPoolTaskRunner(max_workers=cfg.workers)
    with _server_shared(), runner:
        yield runner


@contextmanager
def _server_shared() -> Iterator[None]:
    """Worker processes of a local cluster inherit this process's environment. Where this run talks to a temporary
    server (no PREFECT_API_URL), each would start one of its own (20 s each on a GPU machine's 12 workers, all at
    once); the variable points them at this process's server."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    server = SubprocessASGIServer()  # the temporary server of this process, if it started one
    if PREFECT_API_URL.value() or not server.running:
        yield
        return
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]


def run_parts(runner: TaskRunner, root: str, stage: DocStage, parts: list[Part]) -> None:
    """Every part of `stage` on the runner; raises if one failed (the finished ones stay cached)."""
    part_task = bind(stages.run_part, root)
    futures = [runner.submit(part_task, {"data_root": root, "stage_name": stage.name, "name": p.name, "key": p.key,
                                         "stage": stage, "part": p}) for p in parts]
    for future in futures:
        future.result()


def finish(root: str, stage: DocStage, parts: list[Part], upstream: StageRef | None, extra: dict | None = None) -> StageRef:
    """The stage directory of `parts`, assembled once they are all done."""
    up = upstream.manifest() if upstream else None
    key = stage.stage_key(parts)
    bind(stages.finalize, root)(root, stage.name, key, [(p.name, p.key) for p in parts], stage.config,
                                [up["key"]] if up else [], up["ledger"]["rows_out"] if up else None,
                                {**stage.extra(root), **(extra or {})})
    ref = StageRef(root, stage.name, key)
    point(ref)
    return ref


def per_part(runner: TaskRunner, root: str, stage: DocStage, upstream: StageRef | None) -> StageRef:
    """A stage of one part per upstream shard (ingest: per input file)."""
    parts = stage.plan(upstream)
    run_parts(runner, root, stage, parts)
    return finish(root, stage, parts, upstream)


def deduplicate(runner: TaskRunner, root: str, stage: Dedup, upstream: StageRef) -> StageRef:
    """Signatures of new shards, one clustering of the corpus in order, a filter per shard."""
    signatures = stage.signature_parts(upstream)
    sign = bind(stages.sign, root)
    for future in [runner.submit(sign, {"data_root": root, "name": p.name, "key": p.key, "stage": stage, "part": p})
                   for p in signatures]:
        future.result()
    cluster_key = stage.clusters(root, signatures).name
    summary = stages.report_clusters(bind(stages.cluster, root)(root, cluster_key, stage, signatures))
    parts = stage.filter_parts(root, signatures)
    run_parts(runner, root, stage, parts)
    return finish(root, stage, parts, upstream, {"dedup": summary, "clusters": cluster_key, "signatures": [p.key for p in signatures]})


def augment(runner: TaskRunner, root: str, cfg, upstream: StageRef) -> StageRef:
    """Back-translation (a reverse model, trained or given, translates target-language sentences into synthetic
    pairs; a forward model adds paraphrase round trips) over the whole corpus, then EDA copies and paraphrase
    documents beside every document, per shard."""
    bt = cfg.backtranslation
    stage = Augment(cfg)
    if bt:
        # back-translation trains and runs models: torch is imported here, not by every data run's processes
        from llmcore.augment.backtranslate import PARAPHRASES, SYNTHETIC
        from tasks.augment import augment_model, translate

        inputs = [upstream.key, f"pairs:sha256:{file_sha256(bt.pairs)}"]
        if bt.model:
            inputs += [f"model:{p.name}:{file_sha256(p)}" for p in sorted(Path(bt.model).iterdir()) if p.is_file()]
        key = content_key("augment-backtranslation", Augment.version, key_config(cfg), inputs)
        out = str(Path(root, "augment", "backtranslation", key))
        train = bind(augment_model, root)
        reverse = bt.model or train(out, key, "reverse", bt)
        forward = train(out, key, "forward", bt) if bt.paraphrase_sentences else None
        shards = [str(upstream.path / f["path"]) for f in upstream.manifest()["files"]]
        summary = Path(bind(translate, root)(out, key, shards, bt, reverse, forward)).read_text()
        stage = Augment(cfg, key, str(Path(out, PARAPHRASES)) if forward else None)
    parts = stage.plan(upstream)
    run_parts(runner, root, stage, parts)
    extra = {"synthetic": None, "pair": None}
    if bt:
        ref = StageRef(root, stage.name, stage.stage_key(parts))
        synthetic = "." + SYNTHETIC  # the pairs travel with the stage directory, under a dot-name like all but its shards
        link(Path(out, SYNTHETIC), ref.path / synthetic)
        extra = {"synthetic": synthetic, "pair": [bt.source_lang, bt.target_lang], "backtranslation": json.loads(summary),
                 "backtranslation_key": key}
    return finish(root, stage, parts, upstream, extra)


def tokenizer_key(root: str, cfg: TokenizerConfig, corpus: StageRef) -> str:
    """The tokenizer's key: the file at cfg.path adopted; or the one this root already trained with these settings
    on a corpus that today's has grown from (its parts all still there), kept so that old token shards stay valid,
    unless cfg.refit; or a new one from the corpus."""
    config = key_config(cfg)
    if cfg.path:
        return content_key("tokenizer", TOKENIZER_VERSION, config, f"sha256:{file_sha256(cfg.path)}")
    parts = {info["key"] for info in corpus.manifest()["parts"].values()}
    grown_from = lambda m: set(m.get("corpus_parts", [None])) <= parts  # noqa: E731
    kept = None if cfg.refit else latest(root, "tokenizer", {"config": config, "adopted": None}, grown_from)
    return kept.key if kept else content_key("tokenizer", TOKENIZER_VERSION, config, corpus.key)


def tokenizer(root: str, cfg: TokenizerConfig, corpus: StageRef) -> StageRef:
    key = tokenizer_key(root, cfg, corpus)
    upstream = [f"sha256:{file_sha256(cfg.path)}"] if cfg.path else [corpus.key]
    bind(stages.tokenizer, root)(root, key, cfg, str(corpus.path), upstream)
    ref = StageRef(root, "tokenizer", key)
    point(ref)
    return ref


@flow(name="data", persist_result=True, result_serializer="json")
def data_flow(config: DataConfig, data_root: str = DEFAULT_DATA_ROOT) -> list[str]:
    """Raw sources to a clean, deduplicated corpus and its token shards; returns the stages' manifest paths in order.
    The run and its task runs are tagged `llmpipe` and `root:<data root>` (a scheduled refresh included)."""
    root = os.path.abspath(data_root)
    with tagged("llmpipe", f"root:{root}"), task_runner(config.runner) as runner:
        ingested = per_part(runner, root, Ingest(config.ingest), None)
        cleaned = per_part(runner, root, Clean(config.clean), ingested)
        language = per_part(runner, root, Language(config.language), cleaned)
        deduped = deduplicate(runner, root, Dedup(config.dedup), language)
        augmenting = config.augment.backtranslation or config.augment.eda
        corpus = augment(runner, root, config.augment, deduped) if augmenting else deduped
        tok = tokenizer(root, config.tokenizer, corpus)
        tokenized = per_part(runner, root, Tokenize(config.tokenize, tok), corpus)
    stages_run = [ingested, cleaned, language, deduped, *([corpus] if augmenting else []), tok, tokenized]
    rows = funnel([s.manifest() for s in stages_run])
    create_table_artifact(rows, key="data-funnel", description="Documents in, out, dropped and quarantined per stage")
    get_run_logger().info("data: %d documents in, %d out (the funnel: artifact data-funnel)", rows[0]["rows_in"], rows[-1]["rows_out"])
    return [str(s.manifest_path) for s in stages_run]
