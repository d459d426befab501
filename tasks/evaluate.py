"""The evaluate task: one fine-tuned model scored on its task's test split, beside the task's baseline
(llmcore.finetune.evaluate).

It writes `<data_root>/evaluate/<key>/`: `results.json` (scores and a few example outputs),
`predictions.jsonl` (every scored example's prediction and baseline output, so any metric can be
recomputed) and `manifest.json`, last and atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from llmcore.config import EvaluateConfig, FinetuneTaskConfig
from llmcore.finetune.evaluate import evaluate
from llmcore.finetune.formats import FormatError
from llmcore.locks import once
from llmcore.manifest import MANIFEST, atomic_write, atomic_write_json, describe_file
from llmcore.stage import StageRef, key_config, write_manifest
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless

RESULTS, PREDICTIONS = "results.json", "predictions.jsonl"


def write_stage(run_dir: Path, key: str, cfg: EvaluateConfig, finetune_manifest: str, finetune: dict, results: dict) -> None:
    """results.json and predictions.jsonl, then the manifest that marks the stage complete."""
    outputs = results.pop("outputs")
    atomic_write(run_dir / PREDICTIONS, "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in outputs).encode())
    atomic_write_json(run_dir / RESULTS, results)
    files = [describe_file(run_dir / RESULTS, run_dir, 1), describe_file(run_dir / PREDICTIONS, run_dir, len(outputs))]
    write_manifest(StageRef(str(run_dir.parent.parent), run_dir.parent.name, key), key_config(cfg), [finetune["key"]], files,
                   name=results["name"], task=results["task"], finetune=finetune_manifest, results=RESULTS,
                   predictions=PREDICTIONS, metrics=results["metrics"], baseline=results["baseline"])


# A malformed task file or a refused config fails the same way on every attempt.
@task(name="evaluate", task_run_name="evaluate-{name}",
      **{**STAGE_TASK, "retry_condition_fn": retry_unless(*PERMANENT, FormatError)})
def evaluate_task(data_root: str, stage: str, key: str, name: str, cfg: EvaluateConfig, finetune_manifest: str) -> str:
    """Score the fine-tuned model of `finetune_manifest` (task `name`); returns the evaluate manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            finetune = json.loads(Path(finetune_manifest).read_text())
            task_cfg = FinetuneTaskConfig.model_validate(finetune["config"])
            results = evaluate(Path(finetune_manifest).parent / finetune["model"], task_cfg, cfg)
            write_stage(run_dir, key, cfg, finetune_manifest, finetune, results)

        once(run_dir / MANIFEST, work)  # an overlapping run waits, then finds the finished results
    return str(run_dir / MANIFEST)
