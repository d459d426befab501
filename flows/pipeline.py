"""The pipeline flow: every stage flow in order, each a subflow so a retry reuses finished ones."""

from __future__ import annotations

import os

from prefect import flow

from flows.data import DEFAULT_DATA_ROOT, data_flow
from flows.pretrain import pretrain_flow
from llmcore.config import PipelineConfig
from tasks.common import results_dir


@flow(name="pipeline", log_prints=True, persist_result=True)
def pipeline_flow(config: PipelineConfig, data_root: str = DEFAULT_DATA_ROOT) -> dict[str, list[str]]:
    """Raw text to the stages' manifests; returns them by flow name."""
    root = os.path.abspath(data_root)
    data = data_flow.with_options(result_storage=results_dir(root))(config.data, root)
    pretrain = pretrain_flow.with_options(result_storage=results_dir(root))(config.pretrain, data[-1], root)
    return {"data": data, "pretrain": [pretrain]}
