"""The evaluate flow: fine-tuned models (finetune stage manifests) + an EvaluateConfig -> one results file.

Each model is scored by its own cached task (tasks/evaluate.py); the flow gathers their results into
`<data_root>/evaluation/<key>/results.json`, keyed by the config and the evaluate stages' keys, and shows
them as a table artifact ("evaluation": each metric of the model beside its baseline) and a markdown
artifact ("evaluation-examples": a few outputs per task).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.data import DEFAULT_DATA_ROOT
from llmcore.config import EvaluateConfig
from llmcore.finetune.evaluate import VERSION
from llmcore.housekeeping import point
from llmcore.manifest import atomic_write_json
from llmcore.stage import StageRef, content_key, key_config
from tasks.common import bind
from tasks.evaluate import PREDICTIONS, RESULTS, evaluate_task

SHOWN_CHARS = 120  # example texts are cut to this length in the markdown artifact
SHOWN = (("source", "source"), ("reference", "reference"), ("model", "prediction"), ("baseline", "baseline"))


def table_rows(results: list[dict]) -> list[dict]:
    """One row per task and metric: the model's score, the baseline's, and the difference (2 decimals)."""
    rows = []
    for r in results:
        for metric, value in r["metrics"].items():
            base = r["baseline"]["metrics"].get(metric)  # perplexity: the baseline has none
            rows.append({"task": r["name"], "metric": metric, "model": round(value, 2),
                         "baseline": None if base is None else round(base, 2),
                         "model - baseline": None if base is None else round(value - base, 2)})
    return rows


def _text(text: str) -> str:
    """On one line, cut short, with the task tokens (<2de>, <user>) shown rather than read as HTML."""
    text = " ".join(text.split())
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " ..."
    return html.escape(text, quote=False) or "(empty)"


def examples_markdown(results: list[dict]) -> str:
    """A few examples per task, each a list of its texts: the UI never wraps a table cell, so a table of them
    would run far past the page, whereas list items wrap."""
    parts = ["# Example outputs"]
    for r in results:
        full = Path(r["manifest"]).parent / PREDICTIONS
        lines = [f"## {r['name']} ({r['task']}, baseline: {r['baseline']['name']})", "",
                 f"Cut to {SHOWN_CHARS} characters; every example in full: `{full}`"]
        for i, sample in enumerate(r["samples"], 1):
            lines += ["", f"**Example {i}**", "", *(f"- **{label}**: {_text(sample[key])}" for label, key in SHOWN)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


@flow(name="evaluate", persist_result=True, result_serializer="json")
def evaluate_flow(config: EvaluateConfig, finetune_manifests: list[str], data_root: str = DEFAULT_DATA_ROOT,
                  distill_manifest: str | None = None) -> str:
    """Score each fine-tuned model on its task's test split (and, given the distill flow's set manifest, its
    teacher, students and compressed models side by side); returns the combined results.json's path."""
    if not finetune_manifests:
        raise ValueError("no fine-tuned models to evaluate: pass finetune stage manifests")
    root = os.path.abspath(data_root)
    paths = [os.path.abspath(p) for p in finetune_manifests]
    finetunes = [json.loads(Path(p).read_text()) for p in paths]
    section = key_config(config)
    keys = [content_key("evaluate", VERSION, section, f["key"]) for f in finetunes]
    futures = bind(evaluate_task, root).map(unmapped(root), unmapped("evaluate"), keys, [f["name"] for f in finetunes],
                                            unmapped(config), paths)
    manifests = futures.result()
    results = [{**json.loads((Path(m).parent / RESULTS).read_text()), "manifest": m} for m in manifests]

    compression = None
    if distill_manifest:  # the distill flow's teacher, students and compressed models, side by side
        from flows.distill import compression_table

        compression = compression_table(config, distill_manifest, root)
    run_key = content_key("evaluation", VERSION, section, keys + ([compression] if compression else []))
    combined = Path(root, "evaluation", run_key, RESULTS)
    atomic_write_json(combined, {"key": run_key, "config": section, "tasks": results,
                                 **({"compression": compression} if compression else {})})
    point(StageRef(root, "evaluation", run_key))
    rows = table_rows(results)
    create_table_artifact(rows, key="evaluation", description="Each fine-tuned model's test scores beside its task's "
                          f"trivial baseline, on the same examples ({combined})")
    create_markdown_artifact(examples_markdown(results), key="evaluation-examples",
                             description="A few test examples per task: the model's output and the baseline's")
    get_run_logger().info("evaluation: %s (the table: artifact evaluation)", combined)
    return str(combined)
