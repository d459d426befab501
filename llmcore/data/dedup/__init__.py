"""Exact and near-duplicate removal (MinHash + LSH) in bounded memory; see `steps` for the stage."""

from llmcore.data.dedup.steps import cluster, filter_part, sign_part, signature_marker, summary_path

__all__ = ["cluster", "filter_part", "sign_part", "signature_marker", "summary_path"]
