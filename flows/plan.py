"""`llmpipe run --dry-run`: which stages (and how many of their parts) a run would find done or compute,
read from the data root without running anything. A stage whose input does not exist yet runs after it."""

from __future__ import annotations

from pathlib import Path

from flows.data import tokenizer_key
from llmcore.config import PipelineConfig
from llmcore.data.dedup.steps import signature_marker
from llmcore.data.stage import PartDir
from llmcore.data.stages import Augment, Clean, Dedup, DocStage, Ingest, Language, Part, Tokenize
from llmcore.stage import StageRef

AFTER = "runs after its input"


def _row(stage: str, parts: list[Part] | None, done: int, output: StageRef | None) -> dict:
    if parts is None:
        return {"stage": stage, "parts": "-", "done": "-", "to run": "-", "would": AFTER}
    finished = output is not None and output.done()
    would = "Cached" if finished else ("assemble" if done == len(parts) else f"run {len(parts) - done} part(s)")
    return {"stage": stage, "parts": len(parts), "done": done, "to run": len(parts) - done, "would": would}


def _doc_stage(root: str, stage: DocStage, upstream: StageRef | None, rows: list[dict], parts: list[Part] | None = None) -> StageRef | None:
    """The stage's row; returns its output when it is already there (so the next stage can be planned)."""
    if parts is None:
        if stage.name != "ingest" and (upstream is None or not upstream.done()):
            rows.append(_row(stage.name, None, 0, None))
            return None
        parts = stage.plan(upstream)
    done = sum(PartDir(root, stage.name, p.key).summary() is not None for p in parts)
    output = StageRef(root, stage.name, stage.stage_key(parts))
    rows.append(_row(stage.name, parts, done, output))
    return output if output.done() else None


def _dedup(root: str, stage: Dedup, upstream: StageRef | None, rows: list[dict]) -> StageRef | None:
    if upstream is None:
        rows.append(_row("dedup", None, 0, None))
        return None
    signatures = stage.signature_parts(upstream)
    signed = sum(signature_marker(Path(root) / stage.name, p.key).exists() for p in signatures)
    rows.append({**_row("dedup-signature", signatures, signed, None), "would": f"run {len(signatures) - signed} part(s)"
                 if signed < len(signatures) else "Cached"})
    if not (stage.clusters(root, signatures) / "summary.json").exists():
        rows.append({"stage": "dedup-cluster", "parts": 1, "done": 0, "to run": 1, "would": "run"})
        rows.append(_row("dedup", None, 0, None))
        return None
    rows.append({"stage": "dedup-cluster", "parts": 1, "done": 1, "to run": 0, "would": "Cached"})
    return _doc_stage(root, stage, upstream, rows, stage.filter_parts(root, signatures))


def dry_run(config: PipelineConfig, root: str) -> list[dict]:
    """One row per step of the data flow (the training stages that follow run when their input is new)."""
    data, rows = config.data, []
    ingest = _doc_stage(root, Ingest(data.ingest), None, rows)
    clean = _doc_stage(root, Clean(data.clean), ingest, rows)
    language = _doc_stage(root, Language(data.language), clean, rows)
    corpus = _dedup(root, Dedup(data.dedup), language, rows)
    if data.augment.backtranslation:  # its models and translations come first: planned once they exist
        rows.append(_row("augment", None, 0, None))
        corpus = None
    elif data.augment.eda:
        corpus = _doc_stage(root, Augment(data.augment), corpus, rows)
    tokenizer = StageRef(root, "tokenizer", tokenizer_key(root, data.tokenizer, corpus)) if corpus else None
    if tokenizer is None or not tokenizer.done():
        pending = {"stage": "tokenizer", "parts": 1, "done": 0, "to run": 1, "would": "run"}
        rows.append(pending if tokenizer else _row("tokenizer", None, 0, None))
        rows.append(_row("tokenize", None, 0, None))
    else:
        rows.append({"stage": "tokenizer", "parts": 1, "done": 1, "to run": 0, "would": "Cached"})
        _doc_stage(root, Tokenize(data.tokenize, tokenizer), corpus, rows)
    return rows
