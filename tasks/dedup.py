"""Prefect tasks of the dedup stage: signatures per shard, one clustering, a filter per shard.

Each task caches on the stage key and its own step (a signature part, the clustering, a filter
part), and finds its output on disk first: a rerun after a crash in clustering reuses every
signature part, and a rerun after the stage finished does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from llmcore.config import DedupConfig
from llmcore.data import dedup
from llmcore.data.stage import StageDir
from llmcore.locks import once
from tasks.common import STAGE_TASK, maybe_fail
from tasks.data import run_part

VERSION = 1  # part of the stage key: bump when the stage's output changes meaning
CLUSTER_FAIL = "dedup-cluster"  # LLMPIPE_FAIL_STAGE value that makes the clustering step fail


def _signature_key(context: Any, params: dict) -> str:
    return f"{params['stage']}-{params['key']}-signature-{params['part']}"


def _cluster_key(context: Any, params: dict) -> str:
    return f"{params['stage']}-{params['key']}-cluster"


@task(name="dedup-signature", task_run_name="dedup-signature-{part}", **{**STAGE_TASK, "cache_key_fn": _signature_key})
def signature_part(data_root: str, stage: str, key: str, part: str, shard: str, cfg: DedupConfig) -> str:
    path = StageDir(data_root, stage, key).path
    marker = dedup.signature_marker(path, part)
    once(marker, lambda: dedup.sign_part(path, part, Path(shard), cfg))  # an overlapping run waits, then reuses it
    return str(marker)


@task(name="dedup-cluster", **{**STAGE_TASK, "cache_key_fn": _cluster_key})
def cluster(data_root: str, stage: str, key: str, parts: list[str], shards: list[str], cfg: DedupConfig) -> str:
    path = StageDir(data_root, stage, key).path
    summary = dedup.summary_path(path)
    if not summary.exists():
        maybe_fail(CLUSTER_FAIL)
        once(summary, lambda: dedup.cluster(path, parts, [Path(s) for s in shards], cfg))
    return str(summary)


@task(name="dedup-filter", task_run_name="dedup-filter-{part}", **STAGE_TASK)
def filter_part(data_root: str, stage: str, key: str, part: str, shard: str) -> str:
    return run_part(data_root, stage, key, part, lambda d: dedup.filter_part(d, part, Path(shard)))


def report_clusters(summary_path: str) -> dict:
    """The cluster-size histogram as a table artifact, the LSH choice and the counts in the log;
    returns the clustering summary (it goes into the stage manifest)."""
    summary = json.loads(Path(summary_path).read_text())
    lsh = summary["lsh"]
    curve = ", ".join(f"J={j}: {p:.3f}" for j, p in lsh["candidate_probability_at_jaccard"].items())
    choice = (
        f"LSH {lsh['bands']} bands x {lsh['rows']} rows of {lsh['num_perm']} permutations, threshold {lsh['threshold']}"
    )
    create_table_artifact(
        summary["cluster_sizes"],
        key="dedup-clusters",
        description=f"Dedup clusters by size (1 = unique documents). {choice}; P(candidate) at {curve}",
    )
    get_run_logger().info(
        "Dedup: %d documents, %d exact and %d near duplicates removed, %d clusters (largest: %s). %s; "
        "P(candidate) at %s. Candidate pairs %d, compared %d, similar %d.",
        summary["documents"],
        summary["exact_duplicate"],
        summary["near_duplicate"],
        summary["clusters"],
        summary["largest_clusters"][:1],
        choice,
        curve,
        summary["candidate_pairs"],
        summary["compared_pairs"],
        summary["similar_pairs"],
    )
    return summary
