"""The pretrain task: trains in this process, or launches torchrun and follows its metrics file, and shows
the run in the Prefect UI while it trains: a progress artifact, a table of evaluation metrics and the
loss curve (a PNG embedded in a markdown artifact: the UI renders that, not inline SVG).

A retry of a failed attempt (an OOM, a lost node) resumes from the run's latest checkpoint: it costs the
steps since that checkpoint, not the whole run.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import task_run

from llmcore.data.tokens import TokenShardError
from llmcore.locks import once
from llmcore.manifest import MANIFEST, describe_file, relative_paths
from llmcore.stage import StageRef, write_manifest
from llmcore.train import pretrain
from llmcore.train.checks import TrainConfigError
from llmcore.train.metrics_log import CURVE, METRICS, describe, latest_by_step, now, read_events
from llmcore.train.trainer import NonFiniteLoss
from tasks.common import PERMANENT, STAGE_TASK, maybe_fail, retry_unless

CRASH_ENV = "LLMPIPE_CRASH_AT_STEP"  # tests: the first attempt dies at this step (a preempted node), the retry resumes


class InjectedCrash(RuntimeError):
    """A first attempt killed on purpose at the step in $LLMPIPE_CRASH_AT_STEP; retried like a real crash."""


# Retry crashes; a refused configuration, NaN loss or bad shards would fail the same way again.
_worth_retrying = retry_unless(*PERMANENT, TrainConfigError, NonFiniteLoss, TokenShardError)


def _crash_due(event: dict) -> bool:
    step = os.environ.get(CRASH_ENV)
    return bool(step) and event["event"] == "train" and event["step"] >= int(step) and task_run.run_count <= 1


class Reporter:
    """A trainer callback: log lines and Prefect artifacts, throttled so a fast loop does not flood the API."""

    def __init__(self, run_dir: Path, label: str = "pretrain", every_s: float = 2.0, curve_every_s: float = 30.0):
        """label: what the run is (pretrain, finetune-<name>); it prefixes the artifact keys."""
        self.run_dir, self.label, self.every_s, self.curve_every_s = run_dir, label, every_s, curve_every_s
        self.logger = get_run_logger()
        self.progress = None
        self.max_steps = 1
        self.updated = self.curve_shown = 0.0

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        (self.logger.error if kind == "error" else self.logger.info)(describe(event))
        if kind == "start":
            self.max_steps = event["max_steps"]
            self.progress = create_progress_artifact(self._percent(event), description=f"{self.label}: {self.run_dir}")
        elif kind == "train" and time.monotonic() - self.updated >= self.every_s:
            self._update(event)
        elif kind == "eval":
            self._update(event)
            self._eval_table()
            if time.monotonic() - self.curve_shown >= self.curve_every_s:
                self._curve()
        elif kind == "end":
            update_progress_artifact(self.progress, 100.0)
            self._eval_table()
            self._curve()
        if _crash_due(event):
            raise InjectedCrash(f"crashed on purpose at step {event['step']} ({CRASH_ENV})")

    def _percent(self, event: dict) -> float:
        return round(100.0 * event["step"] / self.max_steps, 1)

    def _update(self, event: dict) -> None:
        if self.progress is not None:
            update_progress_artifact(self.progress, self._percent(event))
        self.updated = time.monotonic()

    def _eval_table(self) -> None:
        rows = [{k: v for k, v in e.items() if k not in ("event", "time", "patience", "best_value")}
                for e in latest_by_step(read_events(self.run_dir / METRICS)[0], "eval")]
        if rows:
            create_table_artifact(rows, key=f"{self.label}-eval", description=f"Evaluations of {self.run_dir}")

    def _curve(self) -> None:
        path = self.run_dir / CURVE
        if path.exists():
            png = base64.b64encode(path.read_bytes()).decode()
            create_markdown_artifact(f"## Loss curve\n\n![loss curve](data:image/png;base64,{png})\n\n`{path}`",
                                     key=f"{self.label}-loss-curve", description="training and validation loss against steps")
        self.curve_shown = time.monotonic()


def pretrain_manifest(run_dir: Path, key: str, job: pretrain.PretrainJob, settings: dict, corpus: dict, summary: dict) -> dict:
    """The pretrain stage manifest: the final checkpoint's files (sha256), the best one, the run's summary, and what
    it trained on (`corpus`: the tokenize stage and its parts, the tokenizer, the model it continued from).
    `settings`: the config as it enters keys (a continued run trains with fewer steps than it says)."""
    final = Path(summary["final"])
    ref = StageRef(str(run_dir.parent.parent), run_dir.parent.name, key)
    return write_manifest(
        ref, settings, [corpus["key"]], [describe_file(p, run_dir, 0) for p in sorted(final.iterdir()) if p.is_file()],
        checkpoint=str(final.relative_to(run_dir)),
        best=str(Path(summary["best"]).relative_to(run_dir)) if summary["best"] else None,
        corpus=corpus, steps=job.config.train.max_steps,
        metrics=METRICS, loss_curve=CURVE, tensorboard="tb", summary=relative_paths(summary, run_dir), finished=now(),
    )


@task(name="pretrain", task_run_name="pretrain-{key}", **{**STAGE_TASK, "retry_condition_fn": _worth_retrying})
def pretrain_task(data_root: str, stage: str, key: str, job: pretrain.PretrainJob, settings: dict, corpus: dict) -> str:
    """Train (or resume) `job` (its run directory: `<data_root>/<stage>/<key>`); returns the checkpoint manifest's path."""
    run_dir = Path(data_root) / stage / key
    if not (run_dir / MANIFEST).exists():
        maybe_fail(stage)

        def work() -> None:
            reporter = Reporter(run_dir)
            many = job.config.train.distributed.world_size > 1
            summary = pretrain.run_torchrun(job, reporter, key) if many else pretrain.run(job, callbacks=[reporter])
            pretrain_manifest(run_dir, key, job, settings, corpus, summary)

        once(run_dir / MANIFEST, work)  # an overlapping run waits, then finds the finished model
    return str(run_dir / MANIFEST)
