"""The pipeline flow: every stage flow in order, each a subflow so a retry reuses finished ones:
data -> pretrain -> finetune (each downstream task) -> distill (when configured) -> evaluate.

`stages` runs some of them (`llmpipe run --only / --from / --until`); the others' outputs are the data root's
latest (`<root>/<stage>/latest`, `finetune/<task name>`), which an earlier run must have made.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.data import DEFAULT_DATA_ROOT, data_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from llmcore.config import PipelineConfig
from llmcore.housekeeping import LATEST
from llmcore.stage import StageRef
from tasks.common import tagged
from tasks.results import DataRootResults


def stage_of(manifest_path: str) -> str:
    """`<root>/<stage>/<key>/<manifest>` -> stage."""
    return Path(manifest_path).parent.parent.name


FLOWS = ("data", "pretrain", "finetune", "distill", "evaluate")
DATA_STAGES = ("ingest", "clean", "language", "dedup", "augment", "tokenizer", "tokenize")


def finished(root: str, flow_name: str, config: PipelineConfig) -> list[str]:
    """The manifests an earlier run left for `flow_name` (its latest outputs), or why there are none."""
    if flow_name == "data":
        paths = [StageRef(root, stage, LATEST).manifest_path for stage in DATA_STAGES]
        paths = [p for p in paths if p.exists() and (p.parent.parent.name != "augment" or config.data.augment.eda
                                                      or config.data.augment.backtranslation)]
        found = [p.parent.parent.name for p in paths]
        missing = [s for s in ("ingest", "tokenizer", "tokenize") if s not in found]
    elif flow_name == "finetune":
        paths = [StageRef(root, "finetune", task.name).manifest_path for task in config.finetune]
        missing = [str(p.parent) for p in paths if not p.exists()]
    else:
        paths = [StageRef(root, flow_name, LATEST).manifest_path]
        missing = [flow_name] if not paths[0].exists() else []
    if missing:
        raise ValueError(f"{root} holds no finished {', '.join(missing)}: run the stages before {flow_name!r} first "
                         f"(llmpipe run --until {flow_name})")
    return [str(p.resolve()) for p in paths]


def run_name() -> str:
    """`<config name>-<UTC time>` for every run of the pipeline, deployed or not: runs told apart in the UI."""
    config = flow_run.parameters.get("config")
    name = config.get("name", "llmpipe") if isinstance(config, dict) else getattr(config, "name", "llmpipe")
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


@flow(name="pipeline", flow_run_name=run_name, log_prints=True, persist_result=True, result_serializer="json")
def pipeline_flow(config: PipelineConfig, data_root: str = DEFAULT_DATA_ROOT, stages: list[str] | None = None) -> dict[str, list[str]]:
    """Raw text to the stages' manifests and the evaluation results; returns them by flow name. The run and its
    subflow and task runs are tagged `llmpipe`, `config:<name>` and `root:<data root>`, however it was started."""
    root = os.path.abspath(data_root)
    run = set(stages or FLOWS)
    name = flow_run.name or "pipeline"

    def step(flow_name: str, subflow, *args):
        """The subflow (named after this run) when selected, else the latest outputs of an earlier run."""
        if flow_name not in run:
            return finished(root, flow_name, config)
        return subflow.with_options(result_storage=DataRootResults.of(root), flow_run_name=f"{name}/{flow_name}")(*args)

    with tagged("llmpipe", f"config:{config.name}", f"root:{root}"):
        data = step("data", data_flow, config.data, root)
        out = {"data": data}
        if run & {"pretrain", "finetune", "distill", "evaluate"}:
            out["pretrain"] = step("pretrain", pretrain_flow, config.pretrain, data[-1], root)
            out["pretrain"] = out["pretrain"] if isinstance(out["pretrain"], list) else [out["pretrain"]]
        if config.finetune and run & {"finetune", "distill", "evaluate"}:
            augment = next((p for p in data if stage_of(p) == "augment"), None)
            out["finetune"] = step("finetune", finetune_flow, config.finetune, out["pretrain"][0], augment, root)
            if config.distill and "distill" in run:
                from flows.distill import distill_flow

                out["distill"] = step("distill", distill_flow, config.distill, out["finetune"], root)
            distilled = out["distill"][-1] if "distill" in out else None
            if "evaluate" in run:
                out["evaluate"] = [step("evaluate", evaluate_flow, config.evaluate, out["finetune"], root, distilled)]
    return out
