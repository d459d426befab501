"""The pipeline flow: every stage flow in order, each a subflow so a retry reuses finished ones:
data -> pretrain -> finetune (each downstream task) -> evaluate."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow

from flows.data import DEFAULT_DATA_ROOT, data_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from llmcore.config import PipelineConfig
from tasks.results import DataRootResults


def stage_of(manifest_path: str) -> str:
    """`<root>/<stage>/<key>/manifest.json` -> stage."""
    return Path(manifest_path).parent.parent.name


@flow(name="pipeline", log_prints=True, persist_result=True, result_serializer="json")
def pipeline_flow(config: PipelineConfig, data_root: str = DEFAULT_DATA_ROOT) -> dict[str, list[str]]:
    """Raw text to the stages' manifests and the evaluation results; returns them by flow name."""
    root = os.path.abspath(data_root)
    stored = DataRootResults.of(root)
    data = data_flow.with_options(result_storage=stored)(config.data, root)
    pretrain = pretrain_flow.with_options(result_storage=stored)(config.pretrain, data[-1], root)
    out = {"data": data, "pretrain": [pretrain]}
    if config.finetune:
        augment = next((p for p in data if stage_of(p) == "augment"), None)
        out["finetune"] = finetune_flow.with_options(result_storage=stored)(config.finetune, pretrain, augment, root)
        out["evaluate"] = [evaluate_flow.with_options(result_storage=stored)(config.evaluate, out["finetune"], root)]
    return out
