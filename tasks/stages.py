"""Prefect tasks of the document stages: one generic part task, the global steps (dedup signatures and
clustering, the tokenizer), and the task that assembles a stage directory. Back-translation's: tasks/augment.py.

A part task is cached under its content key (llmcore/data/stages.py), so a part computed by any earlier
run, in any corpus it belonged to, comes back Cached; its output is found on disk first as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.blocks.system import Secret

from llmcore.config import SourceConfig, TokenizerConfig
from llmcore.data import tokens
from llmcore.data.dedup import steps as dedup
from llmcore.data.readers import SourceError, hf_token
from llmcore.data.stage import PartDir, assemble
from llmcore.data.stages import Dedup, DocStage, Ingest, Part
from llmcore.locks import once
from llmcore.stage import StageRef
from tasks.common import STAGE_TASK, maybe_fail

CLUSTER_FAIL = "dedup-cluster"  # LLMPIPE_FAIL_STAGE value that makes the clustering step fail


def _keyed(kind: str):
    """A cache key function: the step's kind and the content key parameter `key`."""
    return lambda context, params: f"{kind}-{params['key']}"


@task(name="part", task_run_name="{stage_name}-{name}", **{**STAGE_TASK, "cache_key_fn": lambda c, p: f"{p['stage_name']}-{p['key']}"})
def run_part(data_root: str, stage_name: str, name: str, key: str, stage: DocStage, part: Part) -> str:
    """One part of `stage` (names and key repeated as parameters for the run name and cache key); returns its summary."""
    part_dir = PartDir(data_root, stage_name, key)
    if part_dir.summary() is None:
        maybe_fail(stage_name)
        # a source's token is resolved here, when it reads: never in a parameter, key or manifest
        token = source_token(stage.cfg.sources[part.source]) if isinstance(stage, Ingest) else None
        with hf_token(token):
            once(part_dir.summary_path, lambda: stage.run(part_dir, part))  # an overlapping run waits, then reuses it
    return str(part_dir.summary_path)


def source_token(src: SourceConfig) -> str | None:
    """The token that the source's config names: an environment variable (token_env) or a Prefect Secret block (token_secret)."""
    if src.token_env:
        token = os.environ.get(src.token_env)
        if not token:
            raise SourceError(f"source {src.name!r}: environment variable {src.token_env} (token_env) is not set where "
                              "this task runs; set it there, or name a Prefect Secret block with token_secret")
        return token
    if src.token_secret:
        try:
            return Secret.load(src.token_secret).get()
        except ValueError as exc:  # no such block
            raise SourceError(f"source {src.name!r}: token_secret: {exc}; create the Secret block (prefect block "
                              "create secret) or fix the name") from None
    return None


@task(name="dedup-signature", task_run_name="dedup-signature-{name}", **{**STAGE_TASK, "cache_key_fn": _keyed("signature")})
def sign(data_root: str, name: str, key: str, stage: Dedup, part: Part) -> str:
    marker = dedup.signature_marker(Path(data_root) / stage.name, key)
    once(marker, lambda: stage.sign(data_root, part))
    return str(marker)


@task(name="dedup-cluster", task_run_name="dedup-cluster", **{**STAGE_TASK, "cache_key_fn": _keyed("cluster")})
def cluster(data_root: str, key: str, stage: Dedup, signatures: list[Part]) -> str:
    summary = dedup.summary_path(stage.clusters(data_root, signatures))
    if not summary.exists():
        maybe_fail(CLUSTER_FAIL)
        once(summary, lambda: stage.cluster(data_root, signatures))
    return str(summary)


@task(name="tokenizer", task_run_name="tokenizer", **{**STAGE_TASK, "cache_key_fn": _keyed("tokenizer")})
def tokenizer(data_root: str, key: str, cfg: TokenizerConfig, corpus: str, upstream: list[str]) -> str:
    """Train (or adopt) the tokenizer from the corpus stage directory `corpus`; returns the manifest path."""
    ref = StageRef(data_root, "tokenizer", key)
    if not ref.done():
        maybe_fail("tokenizer")
        once(ref.manifest_path, lambda: tokens.tokenizer_stage(ref, Path(corpus), cfg, upstream))
    return str(ref.manifest_path)


@task(name="finalize", task_run_name="finalize-{stage}", **{**STAGE_TASK, "cache_key_fn": lambda c, p: f"{p['stage']}-{p['key']}-manifest"})
def finalize(data_root: str, stage: str, key: str, parts: list[tuple[str, str]], config: Any, upstream: list[str],
             upstream_rows: int | None, extra: dict | None = None) -> str:
    """The stage directory of `parts` ((name, part key) in order) and its manifest, once every part is done."""
    ref = StageRef(data_root, stage, key)
    once(ref.manifest_path, lambda: assemble(ref, parts, config, upstream, upstream_rows, extra))  # one writer at a time
    return str(ref.manifest_path)


def report_clusters(summary_path: str) -> dict:
    """The cluster-size histogram as a table artifact, the LSH choice and the counts in the log; returns the
    clustering summary (it goes into the stage manifest)."""
    summary = json.loads(Path(summary_path).read_text())
    lsh = summary["lsh"]
    curve = ", ".join(f"J={j}: {p:.3f}" for j, p in lsh["candidate_probability_at_jaccard"].items())
    create_table_artifact(summary["cluster_sizes"], key="dedup-clusters",
                          description=f"Dedup clusters by size (1 = unique documents). LSH {lsh['bands']} bands x "
                                      f"{lsh['rows']} rows, threshold {lsh['threshold']}; P(candidate) at {curve}")
    get_run_logger().info(
        "Dedup: %d documents, %d exact and %d near duplicates removed. LSH %d bands x %d rows of %d permutations, "
        "threshold %s; P(candidate) at %s. Candidate pairs %d, similar %d.",
        summary["documents"], summary["exact_duplicate"], summary["near_duplicate"], lsh["bands"], lsh["rows"],
        lsh["num_perm"], lsh["threshold"], curve, summary["candidate_pairs"], summary["similar_pairs"],
    )
    return summary
